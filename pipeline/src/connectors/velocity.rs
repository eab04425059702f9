//! The velocity feature store as the workers reach it: the process's shared in-memory
//! counters, or Redis (one connection per worker), with retry and reconnect.

use std::time::{Duration, Instant};

use paystream_operators::{VELOCITY_BUCKET_MS, VELOCITY_BUCKETS, VelocityEvent, VelocityTotals};
use paystream_storage::StorageError;
use paystream_storage::counters::{CounterConfig, CounterEvent, SharedMemoryCounters, WindowedCounters};
use paystream_storage_redis::{Blocking, RedisCounters};

use crate::config::VelocityStore;
use crate::context::RunContext;
use crate::error::RuntimeError;

/// A worker's way to the velocity store (a connection, or the process's shared counters).
pub(crate) enum VelocitySource {
    Memory(SharedMemoryCounters),
    Redis { url: String, prefix: String, config: CounterConfig },
}

impl VelocitySource {
    pub(crate) fn new(store: &VelocityStore, retention_ms: i64) -> Result<VelocitySource, StorageError> {
        let config = CounterConfig { bucket_ms: VELOCITY_BUCKET_MS, retention_ms };
        Ok(match store {
            VelocityStore::Memory => VelocitySource::Memory(SharedMemoryCounters::new(config)?),
            VelocityStore::Redis { url, prefix } => {
                VelocitySource::Redis { url: url.clone(), prefix: prefix.clone(), config }
            }
        })
    }

    fn connect(&self) -> Result<Box<dyn WindowedCounters>, StorageError> {
        Ok(match self {
            VelocitySource::Memory(shared) => Box::new(shared.clone()),
            VelocitySource::Redis { url, prefix, config } => {
                Box::new(Blocking::<RedisCounters>::connect(url, prefix, *config)?)
            }
        })
    }

    /// A worker's own connection.
    pub(crate) fn connection(&self) -> Result<VelocityConnection<'_>, StorageError> {
        Ok(VelocityConnection { source: self, counters: self.connect()? })
    }
}

/// One worker's connection to the velocity store.
pub(crate) struct VelocityConnection<'a> {
    source: &'a VelocitySource,
    counters: Box<dyn WindowedCounters>,
}

impl VelocityConnection<'_> {
    /// Counts a batch's velocity events in the feature store and reads their windows (one
    /// round trip). An unreachable store is retried, reconnecting, with backoff for
    /// `velocity_store_retry_ms`; then the run stops with the error (the batch is not
    /// committed; counts it made are idempotent, so its replay counts nothing twice).
    pub(crate) fn count(
        &mut self,
        events: &[VelocityEvent],
        run: &RunContext<'_>,
    ) -> Result<Vec<VelocityTotals>, RuntimeError> {
        let events: Vec<CounterEvent<'_>> = events
            .iter()
            .map(|e| CounterEvent {
                entity: &e.entity,
                event_id: &e.event_id,
                event_time_ms: e.event_time_ms,
                amount_minor: e.amount_minor,
            })
            .collect();
        let deadline = Instant::now() + Duration::from_millis(run.config.velocity_store_retry_ms);
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let error = match self.counters.add_and_windows(&events, VELOCITY_BUCKETS) {
                Ok(windows) => {
                    run.metrics.velocity_store_seconds.observe(started.elapsed().as_secs_f64());
                    return Ok(windows
                        .into_iter()
                        .map(|w| VelocityTotals { count: w.count, amount_minor: w.sum_minor })
                        .collect());
                }
                Err(error) => error,
            };
            run.metrics.velocity_store_errors.inc();
            if Instant::now() + backoff > deadline || run.control.stopped() {
                return Err(error.into());
            }
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "velocity feature store failed; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            // A broken connection stays broken: start a new one (if that fails, so will the next try).
            if let Ok(fresh) = self.source.connect() {
                self.counters = fresh;
            }
        }
    }
}
