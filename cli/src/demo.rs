//! `paystream demo`: the whole pipeline on embedded defaults, with live progress and a
//! checked summary.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use paystream_domain::money::format_minor_units_wide;
use paystream_domain::{Currency, Outcome};
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{RunControl, RunMode, RunReport};

use crate::inspect::OutputSummary;
use crate::log_args::LogArgs;
use crate::pipeline_args::PipelineArgs;
use crate::simulator_args::{PublishArgs, SimulatorArgs};
use crate::{inspect, publish};

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    simulator: SimulatorArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    publish: PublishArgs,
    /// Keep the data here instead of a temporary directory that is deleted at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Disable the live progress bars (for logs and CI).
    #[arg(long)]
    no_progress: bool,
    /// Before running, train this kind of model (`gbt` or `logistic`) on a separate
    /// simulated history and score with it; `rules` scores with rules-v1 instead.
    /// Ignored when `--model FILE` is given.
    #[arg(long, default_value = "gbt")]
    train: String,
    /// Days of that training history (same population, another seed).
    #[arg(long, default_value_t = 21)]
    train_days: u32,
    /// After the simulation's events, users of the HTTP API (each signs up, logs in and
    /// tops up) through the gateway started in this process; 0 leaves the API out.
    #[arg(long, default_value_t = 20)]
    http_users: u32,
    /// Payments those users make through `POST /v1/payments`, each read back.
    #[arg(long, default_value_t = 1_000)]
    http_payments: u32,
}

/// Simulated days of the demo unless `--days` says otherwise: the reference run.
pub const DEMO_DAYS: u32 = 183;

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn money(minor: i128, currency: &str) -> String {
    let digits = Currency::from_code(currency).map(|c| c.minor_unit_digits()).unwrap_or(2);
    format!("{} {currency}", format_minor_units_wide(minor, digits))
}

pub fn demo(args: DemoArgs) -> Result<()> {
    // The full reference data set by default (about 1.75 million payments): publishing
    // and the pipeline run concurrently and finish in well under a minute.
    let sim_config = args.simulator.config(DEMO_DAYS)?;
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("paystream-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let log_args = embedded_log_args(&data_dir, args.partitions);
    println!(
        "paystream demo: {} days of {} customers at {} terminals (seed {}), {} partitions, data in {}",
        sim_config.days,
        sim_config.customers,
        sim_config.terminals,
        sim_config.seed,
        args.partitions,
        data_dir.display()
    );

    let started = Instant::now();
    let transactions = paystream_simulator::simulate(&sim_config);
    let simulate_seconds = started.elapsed().as_secs_f64();
    let log = log_args.open()?;
    let metrics = Arc::new(Metrics::new());
    let runtime = crate::process::io_runtime()?;
    let control = Arc::new(RunControl::new(false));
    if let Some(addr) = crate::process::start_metrics_server(&runtime, &args.pipeline, &metrics, &control) {
        println!("metrics: http://{addr}/metrics");
    }
    crate::process::stop_on_signals(&runtime, control.clone());
    let mut config = args.pipeline.config(&log_args, "memory")?;
    if config.model_file.is_none() && args.train != "rules" {
        config.model_file = Some(train_model(&args, &sim_config, &data_dir, config.operators.label_delay_ms)?);
    }
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &config)?;
    let velocity_store = config.operators.velocity.enabled.then_some(match config.velocity_store {
        paystream_pipeline::VelocityStore::Memory => "counted in this process",
        paystream_pipeline::VelocityStore::Redis { .. } => "counted in Redis",
    });
    let pipeline = crate::process::pipeline(log.clone(), &data_dir, config, metrics.clone())?;
    let model_version = pipeline.model.version().to_string();
    let options = args.publish.options(20)?;

    let total = transactions.len() as u64;
    let pipeline_started = Instant::now();
    let published = AtomicU64::new(0);
    let stop_publishing = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (publish_report, run_report) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let result = publish::publish_simulation(
                log.as_ref(),
                &topics,
                &sim_config,
                &transactions,
                &options,
                &published,
                &stop_publishing,
            );
            // Then an app's share through the HTTP API, on the same log.
            let http = match (&result, args.http_users) {
                (Ok(_), users) if users > 0 && !stop_publishing.load(Ordering::SeqCst) => {
                    Some(crate::http_share::drive(log.clone(), &topics, &data_dir, users, args.http_payments))
                }
                _ => None,
            };
            control.close_input();
            (result, http.transpose())
        });
        let progress =
            scope.spawn(|| show_progress(args.no_progress, total, &published, &control.processed_records, &done));
        let run = pipeline.run(RunMode::UntilIdle, &control);
        if run.is_err() {
            stop_publishing.store(true, Ordering::SeqCst);
        }
        let published = producer.join().expect("producer thread");
        done.store(true, Ordering::SeqCst);
        progress.join().expect("progress thread");
        (published, run)
    });
    let (publish, http) = publish_report;
    let publish = publish?;
    let http = http?;
    let run = run_report?;
    let pipeline_seconds = pipeline_started.elapsed().as_secs_f64();
    if control.stopped() {
        println!("stopped early by a signal; the summary covers what was committed");
    }

    let summary = inspect::summarize_outputs(log.as_ref(), &topics)?;
    let fraud = FraudCounts::of(&summary, &transactions);
    let report = Report {
        summary: &summary,
        publish: &publish,
        http: http.as_ref(),
        run: &run,
        wallet_customers_percent: options.wallet_customers_percent,
        transactions: total,
        simulate_seconds,
        pipeline_seconds,
    };
    println!();
    report.print_flow(&fraud, &model_version, args.publish.label_delay_days, velocity_store);
    report.print_books(args.data_dir.is_none());
    report.check(control.stopped())
}

/// The demo's log: embedded, durable, compressed, in `data_dir`.
fn embedded_log_args(data_dir: &Path, partitions: u32) -> LogArgs {
    LogArgs {
        data_dir: data_dir.to_path_buf(),
        partitions,
        retention_mib: None,
        retention_hours: None,
        no_fsync: false,
        no_compression: false,
        topics: Vec::new(),
        kafka: crate::log_args::KafkaArgs::default(),
    }
}

/// Trains the model the demo scores with on another stretch of history (its features
/// computed by the pipeline's own operators) and writes it as a model file.
fn train_model(
    args: &DemoArgs,
    sim_config: &paystream_simulator::SimulatorConfig,
    data_dir: &Path,
    label_delay_ms: i64,
) -> Result<PathBuf> {
    let started = Instant::now();
    let history_config = paystream_simulator::SimulatorConfig {
        days: args.train_days,
        seed: sim_config.seed.wrapping_add(1_000_003),
        ..sim_config.clone()
    };
    let history = paystream_simulator::simulate(&history_config);
    let model = crate::backtest::train_on_simulation(&history, &history_config, &args.train, label_delay_ms)?;
    let path = data_dir.join("model.json");
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&path, model.to_json())?;
    println!(
        "trained {} on a separate {}-day history ({} transactions, {} frauds) in {:.1} s: {}",
        model.version(),
        args.train_days,
        thousands(history.len() as u64),
        thousands(model.training_frauds() as u64),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(path)
}

/// Decisions against the simulator's ground truth: flagged is review or decline.
struct FraudCounts {
    caught: u64,
    missed: u64,
    false_alarms: u64,
    frauds: u64,
}

impl FraudCounts {
    fn of(summary: &OutputSummary, transactions: &[paystream_simulator::Transaction]) -> FraudCounts {
        let mut counts = FraudCounts { caught: 0, missed: 0, false_alarms: 0, frauds: 0 };
        for (payment_id, outcome) in &summary.decided {
            let Some(t) = payment_id.parse::<usize>().ok().and_then(|i| transactions.get(i)) else {
                continue;
            };
            let flagged = *outcome != Outcome::Approve;
            match (t.is_fraud, flagged) {
                (true, true) => counts.caught += 1,
                (true, false) => counts.missed += 1,
                (false, true) => counts.false_alarms += 1,
                (false, false) => {}
            }
            counts.frauds += u64::from(t.is_fraud);
        }
        counts
    }
}

/// What the demo prints and checks at the end.
struct Report<'a> {
    summary: &'a OutputSummary,
    publish: &'a publish::PublishReport,
    http: Option<&'a crate::http_share::HttpReport>,
    run: &'a RunReport,
    wallet_customers_percent: u32,
    transactions: u64,
    simulate_seconds: f64,
    pipeline_seconds: f64,
}

impl Report<'_> {
    /// Simulation, publishing, the pipeline's pace, decisions and fraud caught.
    fn print_flow(&self, fraud: &FraudCounts, model_version: &str, label_delay_days: u32, velocity: Option<&str>) {
        let (summary, publish, run) = (self.summary, self.publish, self.run);
        println!("  simulated        {} transactions in {:.1} s", thousands(self.transactions), self.simulate_seconds);
        println!(
            "  published        {} payments as {} events ({}% of customers pay from wallets: top-ups, authorizations + captures, refunds, transfers), {} labels",
            thousands(publish.payments),
            thousands(publish.events),
            self.wallet_customers_percent,
            thousands(publish.labels)
        );
        if let Some(http) = self.http {
            println!(
                "  http api         {} users signed up, logged in and topped up; {} payments through the gateway in {:.1} s: {} answered with their decision, {} pending, {} read back · POST /v1/payments p50 {:.1} ms, p99 {:.1} ms",
                http.users,
                thousands(u64::from(http.payments)),
                http.seconds,
                thousands(u64::from(http.decided)),
                thousands(u64::from(http.pending)),
                thousands(u64::from(http.read_backs)),
                http.p50_ms,
                http.p99_ms
            );
        }
        println!(
            "  pipeline         {} events in {:.2} s = {} events/s end to end, sharing the CPU with the producer (durable: fdatasync per commit, {} commits)",
            thousands(run.input_records),
            self.pipeline_seconds,
            thousands((run.input_records as f64 / self.pipeline_seconds.max(1e-9)) as u64),
            thousands(run.commits)
        );
        let count = |o| summary.decisions.get(&o).copied().unwrap_or(0);
        println!(
            "  decisions        approve {} · review {} · decline {} · client retries {}",
            thousands(count(Outcome::Approve)),
            thousands(count(Outcome::Review)),
            thousands(count(Outcome::Decline)),
            thousands(run.counters.retries)
        );
        let declines: Vec<String> =
            summary.ledger_declines.iter().map(|(reason, n)| format!("{reason} {}", thousands(*n))).collect();
        if !declines.is_empty() {
            println!("                   declined by the ledger: {}", declines.join(", "));
        }
        println!(
            "  fraud            caught {} of {} ({:.1} %) · missed {} · false alarms {} (precision {:.1} %; {model_version}; labels arrive {} days late)",
            thousands(fraud.caught),
            thousands(fraud.frauds),
            100.0 * fraud.caught as f64 / fraud.frauds.max(1) as f64,
            thousands(fraud.missed),
            thousands(fraud.false_alarms),
            100.0 * fraud.caught as f64 / (fraud.caught + fraud.false_alarms).max(1) as f64,
            label_delay_days
        );
        if let Some(velocity_store) = velocity {
            println!(
                "  velocity         {} decisions with velocity features ({velocity_store}); busiest merchant hour {} payments{}",
                thousands(summary.velocity_decisions),
                thousands(summary.merchant_tx_1h_max),
                if summary.device_tx_1h_max > 0 {
                    format!(", busiest device hour {}", thousands(summary.device_tx_1h_max))
                } else {
                    String::new()
                }
            );
        }
    }

    /// Dead letters, the ledger, settlement and its reconciliation.
    fn print_books(&self, data_deleted: bool) {
        let summary = self.summary;
        let dead_letters: u64 = summary.dead_letters.values().sum();
        let reasons: Vec<String> = summary.dead_letters.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "  dead letters     {}{}",
            thousands(dead_letters),
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
        );
        let sums: Vec<String> = summary.posting_sums.iter().map(|(c, s)| money(*s, c)).collect();
        let kinds: Vec<String> =
            summary.ledger_by_kind.iter().map(|(kind, n)| format!("{} {}", kind.as_str(), thousands(*n))).collect();
        println!(
            "  ledger           {} transactions ({}) · balanced: {} (sum of postings per currency: {})",
            thousands(summary.ledger_transactions),
            kinds.join(" · "),
            if summary.ledger_balanced() { "yes" } else { "NO" },
            if sums.is_empty() { "none".to_string() } else { sums.join(", ") }
        );
        for (currency, totals) in &summary.settlements {
            println!(
                "  settlement       {currency}: {} merchant windows closed, {} payments ({} late): gross {} · fees {} · refunds {} · net paid out {}",
                thousands(totals.windows),
                thousands(totals.payments),
                thousands(totals.late_payments),
                money(totals.gross_minor, currency),
                money(totals.fees_minor, currency),
                money(totals.returns_minor, currency),
                money(totals.net_minor, currency)
            );
        }
        let reconciliation = &summary.reconciliation;
        println!(
            "                   reconciled: {} settlements against the postings that name them: {}",
            thousands(reconciliation.settlements as u64),
            if reconciliation.mismatches.is_empty() {
                "all match".to_string()
            } else {
                format!("{} DIFFERENCES", reconciliation.mismatches.len())
            }
        );
        println!(
            "                   {} transactions still in open windows (they close as event time advances)",
            thousands(reconciliation.open_transactions as u64)
        );
        if data_deleted {
            println!(
                "  data             deleted (use --data-dir DIR to keep it and inspect with `paystream log dump`)"
            );
        }
    }

    /// Fails the demo if a payment was decided twice, the books do not balance, or an
    /// event is unaccounted for.
    fn check(&self, stopped: bool) -> Result<()> {
        let summary = self.summary;
        let decided: HashSet<&str> = summary.decided.iter().map(|(id, _)| id.as_str()).collect();
        let duplicates = summary.decided.len() - decided.len();
        if duplicates > 0 {
            bail!("{duplicates} payments have more than one decision");
        }
        if !summary.ledger_balanced() {
            bail!("the ledger does not balance");
        }
        if let Some(first) = summary.reconciliation.mismatches.first() {
            bail!("{} settlements differ from their postings, e.g. {first}", summary.reconciliation.mismatches.len());
        }
        let dead_letters: u64 = summary.dead_letters.values().sum();
        let accounted = summary.decided.len() as u64 + dead_letters + self.run.counters.retries;
        let events = self.publish.events + self.http.map_or(0, |http| http.events);
        if !stopped && accounted != events {
            bail!("{events} events published but {accounted} decided, dead-lettered or retried");
        }
        Ok(())
    }
}

fn show_progress(disabled: bool, total: u64, published: &AtomicU64, processed: &AtomicU64, done: &AtomicBool) {
    if disabled {
        return;
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let publish_bar = bars.add(ProgressBar::new(total).with_style(style.clone()).with_prefix("published"));
    let decide_bar = bars.add(ProgressBar::new(total).with_style(style).with_prefix("decided"));
    while !done.load(Ordering::SeqCst) {
        publish_bar.set_position(published.load(Ordering::Relaxed));
        decide_bar.set_position(processed.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    publish_bar.set_position(published.load(Ordering::Relaxed));
    decide_bar.set_position(processed.load(Ordering::Relaxed));
    publish_bar.finish();
    decide_bar.finish();
}
