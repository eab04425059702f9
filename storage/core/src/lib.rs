//! The store layer every other paystream crate sees: [`StorageError`] (the one error type
//! of every store, the backends' included), operator-state snapshots
//! ([`SnapshotStore`], [`FileSnapshotStore`]: checksummed generations, each installed
//! atomically, the one before kept as a fallback), and
//! for each kind of store its synchronous trait, row types and in-memory implementation:
//! [`records`] (decisions, postings, balances applied exactly once by `OutputSlice`),
//! [`history`] (payment history, versioned daily aggregates), [`counters`] (idempotent
//! windowed counters), [`users`]. The backends are crates of their own, one per server:
//! `paystream-storage-postgres`, `paystream-storage-redis`, `paystream-storage-scylla`.
//! [`blocking::BlockingRuntime`] is how their async APIs serve the synchronous traits.
//!
//! Invariants: this crate depends on no database client and does no network IO; no store
//! here hides a runtime (only a [`blocking::BlockingRuntime`] a caller creates owns one,
//! and it refuses to block inside a tokio runtime). A store never returns a snapshot that
//! fails its checksum: a torn or corrupt file is an error, never silently an empty state.

pub mod blocking;
pub mod counters;
mod error;
pub mod history;
pub mod records;
mod snapshot;
pub mod users;

pub use error::StorageError;
pub use snapshot::{FileSnapshotStore, SNAPSHOT_GENERATIONS_KEPT, Snapshot, SnapshotStore};
