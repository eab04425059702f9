//! The committer: a thread per worker that commits its batches in order, overlapping
//! one batch's write and fsync with the processing of the next, and records latency.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::task::WorkerContext;
use crate::clock::now_ms;
use crate::control::RunReport;
use crate::error::RuntimeError;
use crate::limits::LATENCY_US_MAX;
use crate::log::Transaction;

/// One batch's transaction on its way to the log.
pub(super) struct CommitJob {
    pub(super) transaction: Transaction,
    /// Producer timestamps of the batch's input records, for latency.
    pub(super) timestamps: Vec<i64>,
    pub(super) started: Instant,
}

/// Counts committed batches so a worker can wait until all it submitted are durable.
#[derive(Default)]
pub(super) struct CommitTracker {
    pub(super) state: Mutex<(u64, Option<String>)>,
    pub(super) changed: Condvar,
}

impl CommitTracker {
    pub(super) fn done(&self) {
        self.state.lock().expect("tracker lock").0 += 1;
        self.changed.notify_all();
    }

    pub(super) fn fail(&self, why: &str) {
        self.state.lock().expect("tracker lock").1 = Some(why.to_string());
        self.changed.notify_all();
    }

    /// Waits at most `timeout` until `submitted` batches are committed: whether they are;
    /// Err if the committer failed.
    pub(super) fn wait_for_timeout(&self, submitted: u64, timeout: std::time::Duration) -> Result<bool, String> {
        let state = self.state.lock().expect("tracker lock");
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |(done, failed)| *done < submitted && failed.is_none())
            .expect("tracker lock");
        match &state.1 {
            Some(why) => Err(why.clone()),
            None => Ok(state.0 >= submitted),
        }
    }

    /// Waits until `submitted` batches are committed; Err if the committer failed.
    pub(super) fn wait_for(&self, submitted: u64) -> Result<(), String> {
        let state = self.state.lock().expect("tracker lock");
        let state = self
            .changed
            .wait_while(state, |(done, failed)| *done < submitted && failed.is_none())
            .expect("tracker lock");
        match &state.1 {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

impl WorkerContext<'_> {
    /// Commits batches in order as the worker hands them over, overlapping the disk
    /// write and fsync of one batch with the processing of the next.
    pub(super) fn commit_loop(
        &self,
        receiver: Receiver<CommitJob>,
        tracker: &CommitTracker,
    ) -> Result<RunReport, RuntimeError> {
        let (control, idle) = (self.run.control, &self.idle);
        let mut report = RunReport::default();
        for job in receiver {
            let commit_started = Instant::now();
            if let Err(error) = self.run.log.commit(job.transaction) {
                tracker.fail(&error.to_string());
                control.stop();
                return Err(error.into());
            }
            self.record_batch(job.started, commit_started, &job.timestamps);
            report.input_records += job.timestamps.len() as u64;
            report.commits += 1;
            control.processed_records.fetch_add(job.timestamps.len() as u64, Ordering::Relaxed);
            idle.committed();
            tracker.done();
        }
        Ok(report)
    }

    pub(super) fn record_batch(&self, started: Instant, commit_started: Instant, timestamps: &[i64]) {
        let now = now_ms();
        self.run.metrics.commit_seconds.observe(commit_started.elapsed().as_secs_f64());
        self.run.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        self.run.metrics.commits.inc();
        self.run.metrics.input_records.inc_by(timestamps.len() as u64);
        let local = self.run.metrics.event_to_decision_seconds.local();
        let mut exact = self.run.metrics.latency_us.lock().expect("latency lock");
        for &timestamp in timestamps {
            let latency_ms = (now - timestamp).max(0);
            local.observe(latency_ms as f64 / 1_000.0);
            let _ = exact.record((latency_ms as u64 * 1_000).clamp(1, LATENCY_US_MAX));
        }
        local.flush();
    }
}
