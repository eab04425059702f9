//! paystream's history store on Cassandra/ScyllaDB (the `scylla` driver): payment
//! history per account and long-window daily aggregates per entity. [`ScyllaStore`] is
//! async; [`Blocking`] serves it to plain threads through `paystream-storage`'s
//! synchronous `HistoryStore`; [`ScyllaConfig`] says where and how to reach the cluster.
//!
//! Schema (`schema_statements`, applied by [`ScyllaStore::migrate`] / `paystream store
//! scylla-migrate`):
//! - `payments_by_account`: partition by account, clustered by event time descending —
//!   an account's latest payments are one partition read. A row is keyed by (account,
//!   event time, payment id), so writing it again (a replay) rewrites the same row.
//! - `daily_aggregates`: per (entity, day, source partition) the running totals of that
//!   partition's events for the day (payments, amount, declines). No counter columns
//!   (counters are not idempotent): each write replaces the row with the partition's
//!   total `USING TIMESTAMP <version>`, where the version is the source's position (it
//!   only grows). A replay writes the same totals with the same timestamp, and an older
//!   write never overrides a newer one (last write wins by timestamp). A day's total for
//!   an entity is the sum over its source partitions' rows.
//!
//! Statements are prepared once; the driver routes each to a replica owning its
//! partition key (token-aware, its default load balancing), at the configured
//! consistency. Integration tests run against the test CQL node (`SCYLLA_NODES`).
//!
//! Invariants: every write is idempotent (rows by key, aggregates by version), so a
//! replayed slice changes nothing; the async API never blocks and owns no runtime (only
//! [`Blocking`] does, and it refuses inside a tokio runtime).

mod blocking;
mod config;
mod schema;
mod store;

pub use blocking::Blocking;
pub use config::{ConsistencyLevel, ScyllaConfig};
pub use schema::{cql_date, schema_statements};
pub use store::{ScyllaStore, WRITES_IN_FLIGHT_MAX};
