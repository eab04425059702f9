//! `paystream views` keeps the materialized views alone, without the pipeline: those of
//! `--views FILE` and those of the view catalog (created over the wire), which it
//! follows while it runs. On Kafka it is the one process that keeps them (a second one given the same view fences the
//! first, whose view then stops); on the embedded log it owns the log, so it runs while
//! no `run` or `serve` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use paystream_pipeline::log::Log;

use crate::log_args::LogArgs;
use crate::sql::{SqlMetricsArgs, ViewsArgs};

/// How often the command looks whether every view has stopped.
const VIEWS_POLL_INTERVAL_MS: u64 = 200;

#[derive(Args)]
pub struct ViewsRunArgs {
    #[command(flatten)]
    views: ViewsArgs,
    /// Stop once every view has read its source to the end and the source stayed silent
    /// for the view's idle timeout.
    #[arg(long)]
    until_idle: bool,
    #[command(flatten)]
    metrics: SqlMetricsArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// Runs until SIGINT/SIGTERM or (with `--until-idle`) until every view drained its source
/// or stopped; fails when any view stopped on an error. A view that stopped stays stopped
/// meanwhile (its metrics say so): a restart resumes it from its last commit.
pub fn views(args: ViewsRunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let metrics = args.metrics.serve(&runtime)?;
    // On Kafka each view opens a log of its own; on the embedded log this process owns it.
    let embedded: Option<Arc<dyn Log>> = match args.log.kafka.kafka_brokers {
        Some(_) => None,
        None => Some(args.log.open()?),
    };
    let (stop, drain) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(args.until_idle)));
    let keeper = args.views.start(true, &args.log, embedded, (stop.clone(), drain), Some(metrics))?;
    runtime.block_on(async {
        let mut poll = tokio::time::interval(Duration::from_millis(VIEWS_POLL_INTERVAL_MS));
        let stop_signal = crate::process::stop_signal();
        tokio::pin!(stop_signal);
        loop {
            tokio::select! {
                _ = &mut stop_signal => break,
                // A view that stopped stays stopped (`paystream_view_running` 0) while the
                // process serves its metrics; with --until-idle the command ends once
                // every view has read its source.
                _ = poll.tick(), if args.until_idle => {
                    if keeper.all_finished() {
                        break;
                    }
                }
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    let failed = keeper.join();
    if !failed.is_empty() {
        bail!("materialized views stopped on an error: {}", failed.join(", "));
    }
    Ok(())
}
