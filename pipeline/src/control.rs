//! How a run is driven and what it reports: the stop and input-closed switches, the run
//! report, and the thread helpers that turn one thread's failure into a stop for all.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use paystream_operators::BatchCounters;

use crate::error::RuntimeError;

/// When the pipeline stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until [`RunControl::stop`].
    Forever,
    /// Until every input partition is read to its end and the input is closed
    /// ([`RunControl::close_input`]), or stopped earlier.
    UntilIdle,
}

/// Shared switches between the runtime and whoever drives it (signals, the demo).
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    input_closed: AtomicBool,
    /// Input records processed so far, for progress displays.
    pub processed_records: AtomicU64,
    /// Set when a run starts.
    started: AtomicBool,
    /// Workers that have not restored their partitions yet.
    workers_restoring: AtomicUsize,
}

impl RunControl {
    pub fn new(input_closed: bool) -> RunControl {
        RunControl { input_closed: AtomicBool::new(input_closed), ..RunControl::default() }
    }
    /// Stop intake; workers finish and commit the batch in flight, then return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// No more input will arrive (lets [`RunMode::UntilIdle`] finish).
    pub fn close_input(&self) {
        self.input_closed.store(true, Ordering::SeqCst);
    }
    pub(crate) fn input_closed(&self) -> bool {
        self.input_closed.load(Ordering::SeqCst)
    }
    /// A run starts with `workers` workers to restore.
    pub(crate) fn begin_restore(&self, workers: usize) {
        self.workers_restoring.store(workers, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
    }
    /// A worker restored its partitions (saturating: after a rebalance, workers restore
    /// again while the process stays ready).
    pub(crate) fn worker_restored(&self) {
        let _ = self.workers_restoring.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
    }
    /// Readiness (`/readyz`): the run started, every worker restored its state, and the
    /// run is not stopping.
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) && self.workers_restoring.load(Ordering::SeqCst) == 0 && !self.stopped()
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub input_records: u64,
    pub counters: BatchCounters,
    pub dead_letters: u64,
    pub commits: u64,
}

impl RunReport {
    pub fn add(&mut self, other: &RunReport) {
        self.input_records += other.input_records;
        self.counters.add(&other.counters);
        self.dead_letters += other.dead_letters;
        self.commits += other.commits;
    }
}

/// Spawns a pipeline thread whose failure stops the whole run.
pub(crate) fn spawn_stopping_on_error<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: String,
    control: &'scope RunControl,
    body: impl FnOnce() -> Result<T, RuntimeError> + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, Result<T, RuntimeError>> {
    std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || {
            let result = body();
            if result.is_err() {
                control.stop();
            }
            result
        })
        .expect("spawn a pipeline thread")
}

/// A pipeline thread's result; a panic becomes an error.
pub(crate) fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T, RuntimeError>>) -> Result<T, RuntimeError> {
    handle.join().unwrap_or_else(|panic| Err(RuntimeError::WorkerPanicked(format!("{panic:?}"))))
}
