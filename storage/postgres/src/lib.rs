//! paystream's PostgreSQL stores (sqlx), async: [`PostgresRecordStore`] (the record
//! sink's decisions, postings, balances and positions, one SQL transaction per slice) and
//! [`PostgresUserStore`] (users for the auth and customer services). [`Blocking`] serves
//! them to plain threads through the synchronous traits of `paystream-storage`.
//!
//! **Two migration chains that cannot collide.** Each store lives in a schema of its own
//! (the connection's `search_path`), migrated by its own embedded chain —
//! `migrations/records` (sink tables) and `migrations/users` — into that schema's own
//! `_sqlx_migrations` table. Both chains start at version 1 with different checksums,
//! so a store pointed at the other's schema fails to migrate instead of mixing tables.
//!
//! Invariants: the async API never blocks and owns no runtime (only [`Blocking`] does,
//! and it refuses inside a tokio runtime); a slice applies whole or not at all, with its
//! position, so a replay is recognised and a gap is an error.

mod blocking;
mod connection;
mod records;
mod slice_rows;
mod users;

pub use blocking::{Blocking, SchemaStore};
pub use records::PostgresRecordStore;
pub use users::PostgresUserStore;
