//! Which partitions the workers run: all of them (static assignment), or a consumer
//! group's assignment, one generation at a time.

use std::sync::Arc;
use std::time::Duration;

use super::idle::IdleBarrier;
use super::task::WorkerContext;
use crate::control::{RunMode, RunReport, joined, spawn_stopping_on_error};
use crate::error::RuntimeError;
use crate::log::Membership;

/// Runs worker threads over `partitions` (partition i of the list goes to worker
/// i % workers) until they stop; one report per worker.
pub(super) fn run_workers<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    partitions: &[u32],
    context: &WorkerContext<'scope>,
) -> Vec<Result<RunReport, RuntimeError>> {
    let workers = context.workers.min(partitions.len()).max(1);
    let idle = Arc::new(IdleBarrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let context = WorkerContext { workers, worker, idle: idle.clone(), ..context.clone() };
            let mine: Vec<u32> =
                partitions.iter().enumerate().filter(|(i, _)| i % workers == worker).map(|(_, p)| *p).collect();
            // One worker failing stops the others cleanly.
            let control = context.run.control;
            spawn_stopping_on_error(scope, format!("paystream-worker-{worker}"), control, move || {
                context.run_worker(&mine)
            })
        })
        .collect();
    handles.into_iter().map(joined).collect()
}

impl WorkerContext<'_> {
    /// Runs the partitions the consumer group gives this process, one generation at a
    /// time: when the assignment moves, every worker finishes its batch, commits and
    /// snapshots, the generation is released (a revocation may then complete), and the
    /// workers start again on the new set, restoring state for partitions new to them.
    pub(super) fn run_generations(&self, membership: &dyn Membership) -> Result<RunReport, RuntimeError> {
        let control = self.run.control;
        let mut report = RunReport::default();
        let mut seen = 0;
        let result = loop {
            if control.stopped() {
                break Ok(());
            }
            let (generation, partitions) =
                membership.wait_for_change(seen, Duration::from_millis(self.run.config.idle_wait_ms.max(100)));
            if generation == seen {
                continue;
            }
            seen = generation;
            self.run.metrics.assigned_partitions.set(partitions.len() as i64);
            self.run.metrics.rebalances.inc();
            if partitions.is_empty() {
                membership.released(generation);
                continue;
            }
            tracing::info!(generation, ?partitions, "running assigned partitions");
            if let Err(error) = self.run.log.refresh_positions() {
                break Err(error.into());
            }
            let context = WorkerContext { generation: Some((membership, generation)), ..self.clone() };
            let results = std::thread::scope(|scope| run_workers(scope, &partitions, &context));
            membership.released(generation);
            let mut failed = None;
            for result in results {
                match result {
                    Ok(worker) => report.add(&worker),
                    Err(error) => failed = Some(error),
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            if self.mode == RunMode::UntilIdle && membership.generation() == generation {
                break Ok(()); // our partitions are drained and nobody moved them
            }
        };
        membership.released(u64::MAX);
        result.map(|()| report)
    }
}
