//! [`Blocking`]: [`RedisCounters`] behind the synchronous `WindowedCounters`, for plain
//! threads such as the pipeline's workers. It owns a current-thread [`BlockingRuntime`],
//! connects on it and runs each call with `block_on`; called from inside a tokio
//! runtime, it refuses with `StorageError::InsideRuntime`.

use paystream_storage::StorageError;
use paystream_storage::blocking::BlockingRuntime;
use paystream_storage::counters::{CounterConfig, CounterEvent, WindowQuery, WindowTotals, WindowedCounters};

use crate::counters::RedisCounters;

/// A Redis store `S` with the runtime that drives it.
pub struct Blocking<S> {
    // Dropped before the runtime its connection belongs to (fields drop in order).
    store: S,
    runtime: BlockingRuntime,
}

impl Blocking<RedisCounters> {
    /// [`RedisCounters::connect`] on a runtime of the store's own.
    pub fn connect(url: &str, prefix: &str, config: CounterConfig) -> Result<Blocking<RedisCounters>, StorageError> {
        let runtime = BlockingRuntime::current_thread()?;
        let store = runtime.block_on("connect to Redis", RedisCounters::connect(url, prefix, config))??;
        Ok(Blocking { store, runtime })
    }

    /// The counts of an entity's bucket ([`RedisCounters::counts_key`]).
    pub fn counts_key(&self, entity: &str, bucket: i64) -> String {
        self.store.counts_key(entity, bucket)
    }

    /// The id set of an entity's bucket ([`RedisCounters::ids_key`]).
    pub fn ids_key(&self, entity: &str, bucket: i64) -> String {
        self.store.ids_key(entity, bucket)
    }
}

impl WindowedCounters for Blocking<RedisCounters> {
    fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        self.runtime.block_on("add events", self.store.add(events))?
    }

    fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        self.runtime.block_on("query windows", self.store.windows(queries))?
    }

    fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        self.runtime.block_on("add events and query windows", self.store.add_and_windows(events, buckets))?
    }
}
