//! Analysts' SQL over paystream's topics (DataFusion), served on the PostgreSQL wire
//! protocol.
//!
//! - [`tables`]: the tables, one per topic, and their typed columns.
//! - [`decode`]: records → Arrow batches.
//! - [`cut`]: a statement's consistent view of the log.
//! - [`topic_table`]: a topic as a DataFusion `TableProvider`, with `_partition` and
//!   `_offset` filters pushed down to the reads.
//! - `partition_scan`: one partition's part of a scan, through the cache.
//! - [`scan_cache`]: decoded columns kept between statements, within a byte budget.
//! - [`as_of`]: `balances_as_of` and `open_settlements_as_of`, state at an event or log time or at positions in the topics.
//! - [`context`]: the session with every table, the views and `pg_catalog`, and each
//!   connection's own session over it.
//! - [`guard`]: the server's limits on a statement (deadline, cancel, row cap).
//! - [`information_schema`]: `information_schema.columns` in PostgreSQL's type names.
//! - [`metrics`]: statements by outcome and duration, each view's progress.
//! - [`output`]: rows as a table, CSV or JSON lines for `paystream query`.
//! - [`views`]: continuous views, windowed in event time, each window emitted once.
//! - [`server`]: the PostgreSQL wire endpoint, SCRAM login, read-only.
//! - [`ddl`]: `CREATE`/`DROP MATERIALIZED VIEW` for the views author, through the view
//!   catalog every endpoint follows.

pub mod as_of;
pub mod context;
pub mod cut;
pub mod ddl;
pub mod decode;
pub mod error;
pub mod guard;
mod handlers;
pub mod information_schema;
pub mod metrics;
pub mod output;
mod partition_scan;
pub mod scan_cache;
pub mod server;
pub mod tables;
pub mod topic_table;
pub mod views;

pub use context::{DATABASE, connection_context, session_context, shared_session};
pub use cut::LogSource;
pub use error::SqlError;
pub use guard::StatementLimits;
pub use metrics::SqlMetrics;
pub use scan_cache::{SCAN_CACHE_BYTES_MAX_DEFAULT, ScanCache};
pub use server::{SqlServerConfig, ViewCatalogAccess, serve_sql};
pub use topic_table::ScanLimits;

pub use arrow_array::RecordBatch;
pub use arrow_schema::SchemaRef;
pub use datafusion::prelude::SessionContext;
