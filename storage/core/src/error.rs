//! [`StorageError`]: the one error type of every paystream store, the backends'
//! included, saying whose fault a failure is.

use thiserror::Error;

/// Every store's error: the embedded stores' and the PostgreSQL, Redis and ScyllaDB
/// backends' alike, so the pipeline handles one type whatever the store.
#[derive(Debug, Error)]
pub enum StorageError {
    /// External: the disk failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// Internal: stored bytes fail their checksum.
    #[error("snapshot {name} is corrupt: {why}")]
    Corrupt { name: String, why: String },
    /// The caller's fault.
    #[error("invalid snapshot name {0:?}: use [a-zA-Z0-9._-]")]
    InvalidName(String),
    #[error("invalid schema name {0:?}: use 1 to 63 of [a-z0-9_], not starting with a digit")]
    InvalidSchema(String),
    /// The caller's configuration is invalid.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// External: the database refused or failed.
    #[error("PostgreSQL: {context}: {why}")]
    Database { context: String, why: String },
    /// External: Redis refused or failed.
    #[error("Redis: {context}: {why}")]
    Redis { context: String, why: String },
    /// External: ScyllaDB/Cassandra refused or failed.
    #[error("ScyllaDB: {context}: {why}")]
    Scylla { context: String, why: String },
    /// Internal: records offered out of order (a gap or a partial overlap).
    #[error("record store: {topic}/{partition}: {why}")]
    Sequence { topic: String, partition: u32, why: String },
    /// The record itself is invalid (it cannot come from the pipeline).
    #[error("record store: invalid record: {0}")]
    InvalidRecord(String),
    /// The caller's: the key exists already (a user id, an e-mail address).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's (a bug): a blocking store was called on a thread that runs a tokio
    /// runtime, where blocking would stall or panic the runtime. Use the async API there.
    #[error("{operation}: a blocking store may not be called from inside a tokio runtime; use its async API")]
    InsideRuntime { operation: &'static str },
}
