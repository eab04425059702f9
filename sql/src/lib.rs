//! Analysts' SQL over paystream's topics (DataFusion), served on the PostgreSQL wire
//! protocol.
//!
//! - [`tables`]: the tables, one per topic, and their typed columns.
//! - [`decode`]: records → Arrow batches.
//! - [`cut`]: a statement's consistent view of the log.
//! - [`topic_table`]: a topic as a DataFusion `TableProvider`, with `_partition` and
//!   `_offset` filters pushed down to the reads.
//! - [`context`]: the session with every table, the views and `pg_catalog`.
//! - [`server`]: the PostgreSQL wire endpoint, SCRAM login, read-only.

pub mod context;
pub mod cut;
pub mod decode;
pub mod error;
pub mod server;
pub mod tables;
pub mod topic_table;

pub use context::session_context;
pub use cut::LogSource;
pub use error::SqlError;
pub use server::{SqlServerConfig, serve_sql};
pub use topic_table::ScanLimits;

pub use arrow_array::RecordBatch;

/// `batches` as a text table, as psql prints one.
pub fn pretty(batches: &[RecordBatch]) -> Result<String, SqlError> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}
