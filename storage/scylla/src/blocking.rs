//! [`Blocking`]: [`ScyllaStore`] behind the synchronous `HistoryStore`, for plain threads
//! such as the pipeline's history sink. It owns a [`BlockingRuntime`] with one worker
//! thread (`paystream-scylla`), so the driver's background tasks — the control
//! connection, reconnecting the pool after a node restarts — run between calls, not only
//! inside them; each call runs with `block_on`. Called from inside a tokio runtime, it
//! refuses with `StorageError::InsideRuntime`.

use paystream_storage::StorageError;
use paystream_storage::blocking::BlockingRuntime;
use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore};

use crate::config::ScyllaConfig;
use crate::store::ScyllaStore;

/// A ScyllaDB store `S` with the runtime that drives it.
pub struct Blocking<S> {
    // Dropped before the runtime its session runs on (fields drop in order).
    store: S,
    runtime: BlockingRuntime,
}

impl Blocking<ScyllaStore> {
    /// [`ScyllaStore::connect`] on a runtime of the store's own.
    pub fn connect(config: ScyllaConfig) -> Result<Blocking<ScyllaStore>, StorageError> {
        let runtime = BlockingRuntime::with_worker_thread("paystream-scylla")?;
        let store = runtime.block_on("connect to ScyllaDB", ScyllaStore::connect(config))??;
        Ok(Blocking { store, runtime })
    }

    /// [`ScyllaStore::migrate`].
    pub fn migrate(&mut self) -> Result<(), StorageError> {
        self.runtime.block_on("migrate the keyspace", self.store.migrate())?
    }
}

impl HistoryStore for Blocking<ScyllaStore> {
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        self.runtime.block_on("write payment history", self.store.record_payments(rows))?
    }

    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
        self.runtime.block_on("write daily aggregates", self.store.write_aggregates(rows, version))?
    }

    fn aggregate(
        &mut self,
        entity: &str,
        day: i64,
        source_partition: u32,
    ) -> Result<Option<(DayTotals, i64)>, StorageError> {
        self.runtime.block_on("read a daily aggregate", self.store.aggregate(entity, day, source_partition))?
    }

    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        self.runtime.block_on("read payment history", self.store.history(account_id, limit))?
    }

    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        self.runtime.block_on("read daily aggregates", self.store.daily_totals(entity, since_day))?
    }
}
