//! What every thread of a run shares: the log, the snapshot store, the metrics, the
//! settings, the resolved topics and the run's switches. Workers and connectors get
//! this, never the [`crate::Pipeline`] itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paystream_storage::{Snapshot, SnapshotStore};

use crate::config::PipelineConfig;
use crate::control::RunControl;
use crate::error::RuntimeError;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::topics::PipelineTopics;

#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    pub log: &'a dyn Log,
    pub snapshots: &'a dyn SnapshotStore,
    pub metrics: &'a Arc<Metrics>,
    pub config: &'a PipelineConfig,
    pub topics: &'a PipelineTopics,
    pub control: &'a RunControl,
    /// Set once every worker has committed its last batch: connectors finish what was
    /// committed before and return.
    pub workers_finished: &'a AtomicBool,
}

impl RunContext<'_> {
    /// Whether the workers are done or the run was stopped.
    pub fn finishing(&self) -> bool {
        self.workers_finished.load(Ordering::SeqCst) || self.control.stopped()
    }

    /// Saves a snapshot, timed and sized in the metrics. Returns the changelog offset from
    /// which the snapshots kept need the changelog ([`SnapshotStore::save`]).
    pub fn save_snapshot(&self, name: &str, snapshot: &Snapshot) -> Result<u64, RuntimeError> {
        let started = Instant::now();
        let keep_from = self.snapshots.save(name, snapshot)?;
        self.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.snapshot_bytes.observe(snapshot.state.len() as f64);
        Ok(keep_from)
    }

    /// How long an idle thread waits for new commits before looking again.
    pub fn idle_wait(&self) -> Duration {
        Duration::from_millis(self.config.idle_wait_ms)
    }
}
