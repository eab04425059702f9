//! The record store on PostgreSQL: tables `decisions`, `postings`, `balances` and
//! `sink_positions` in a schema of the caller's choice, created by the record chain of
//! migrations (`migrations/records`). Each slice is one SQL transaction: position check
//! (row lock), bulk inserts through `UNNEST` (one round trip per table), balance
//! upserts, position update, commit.

use std::collections::BTreeMap;

use paystream_storage::StorageError;
use paystream_storage::records::{OutputSlice, SliceApplied, StoreTotals, StoredDecision, check_sequence};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use crate::connection::{SchemaConnection, database};
use crate::slice_rows::SliceRows;

/// The record sink's chain. Version 2 is not in it: it created the users table when
/// users shared the sink's schema (they have a chain and schema of their own now), so a
/// schema migrated then still lists it, and it is ignored.
fn records_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/records");
    migrator.set_ignore_missing(true);
    migrator
}

/// The record store (see the module docs). Async: use `Blocking` from threads
/// that are not in a tokio runtime and need the synchronous `RecordStore`.
pub struct PostgresRecordStore {
    connection: SchemaConnection,
}

impl PostgresRecordStore {
    /// Connects to `url` (e.g. `postgres://paystream:paystream@127.0.0.1:5432/test`), creates
    /// `schema` if missing and migrates it.
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresRecordStore, StorageError> {
        let connection = SchemaConnection::open(url, schema, &records_migrator()).await?;
        Ok(PostgresRecordStore { connection })
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub async fn drop_schema(self) -> Result<(), StorageError> {
        self.connection.drop_schema().await
    }

    /// The schema this store works in.
    pub fn schema(&self) -> &str {
        self.connection.schema()
    }

    /// Applies a slice exactly once (see `paystream_storage::records`).
    pub async fn apply(&mut self, slice: &OutputSlice) -> Result<SliceApplied, StorageError> {
        // Everything is checked and converted before the transaction starts.
        let rows = SliceRows::from_slice(slice)?;
        self.connection.run(async |connection| apply_rows(connection, slice, &rows).await).await
    }

    /// The offset of `topic` partition `partition` the store has applied through.
    pub async fn position(&mut self, topic: &str, partition: u32) -> Result<u64, StorageError> {
        let position: Option<i64> = self
            .connection
            .run(async |connection| {
                sqlx::query_scalar("SELECT next_offset FROM sink_positions WHERE topic = $1 AND partition = $2")
                    .bind(topic)
                    .bind(partition as i32)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(database("read a position"))
            })
            .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    pub async fn decision(&mut self, payment_id: &str) -> Result<Option<StoredDecision>, StorageError> {
        let row = self
            .connection
            .run(async |connection| {
                sqlx::query(
                    "SELECT payment_id, payer_account_id, merchant_id, amount_minor, currency::text AS currency, \
                     (extract(epoch FROM event_time) * 1000)::bigint AS event_time_ms, outcome, score, reasons, \
                     model_version, kind, original_payment_id FROM decisions WHERE payment_id = $1",
                )
                .bind(payment_id)
                .fetch_optional(&mut *connection)
                .await
                .map_err(database("read a decision"))
            })
            .await?;
        row.map(|row| decision_from_row(&row)).transpose()
    }

    /// Debits minus credits of an account in one currency, in minor units.
    pub async fn balance_minor(&mut self, account_id: &str, currency: &str) -> Result<i64, StorageError> {
        let balance: Option<i64> = self
            .connection
            .run(async |connection| {
                sqlx::query_scalar("SELECT balance_minor FROM balances WHERE account_id = $1 AND currency = $2")
                    .bind(account_id)
                    .bind(currency)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(database("read a balance"))
            })
            .await?;
        Ok(balance.unwrap_or(0))
    }

    pub async fn totals(&mut self) -> Result<StoreTotals, StorageError> {
        self.connection.run(async |connection| totals(connection).await).await
    }
}

/// One slice's SQL transaction; a replayed slice is recognised under the position's row
/// lock and rolled back.
async fn apply_rows(
    connection: &mut PgConnection,
    slice: &OutputSlice,
    rows: &SliceRows,
) -> Result<SliceApplied, StorageError> {
    let mut tx = connection.begin().await.map_err(database("begin"))?;
    let position: Option<i64> =
        sqlx::query_scalar("SELECT next_offset FROM sink_positions WHERE topic = $1 AND partition = $2 FOR UPDATE")
            .bind(&slice.topic)
            .bind(slice.partition as i32)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database("read the position"))?;
    if check_sequence(slice, position.unwrap_or(0) as u64)? == SliceApplied::AlreadyApplied {
        return Ok(SliceApplied::AlreadyApplied); // dropping `tx` rolls back
    }
    rows.insert(&mut tx).await?;
    sqlx::query(
        "INSERT INTO sink_positions (topic, partition, next_offset) VALUES ($1, $2, $3) \
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
    )
    .bind(&slice.topic)
    .bind(slice.partition as i32)
    .bind(slice.to_offset as i64)
    .execute(&mut *tx)
    .await
    .map_err(database("update the position"))?;
    tx.commit().await.map_err(database("commit"))?;
    Ok(SliceApplied::Applied)
}

fn decision_from_row(row: &PgRow) -> Result<StoredDecision, StorageError> {
    let get = |e: sqlx::Error| StorageError::Database { context: "decode a decision".into(), why: e.to_string() };
    let reasons: String = row.try_get("reasons").map_err(get)?;
    Ok(StoredDecision {
        kind: row.try_get("kind").map_err(get)?,
        original_payment_id: row.try_get("original_payment_id").map_err(get)?,
        payment_id: row.try_get("payment_id").map_err(get)?,
        payer_account_id: row.try_get("payer_account_id").map_err(get)?,
        merchant_id: row.try_get("merchant_id").map_err(get)?,
        amount_minor: row.try_get("amount_minor").map_err(get)?,
        currency: row.try_get("currency").map_err(get)?,
        event_time_ms: row.try_get("event_time_ms").map_err(get)?,
        outcome: row.try_get("outcome").map_err(get)?,
        score: row.try_get("score").map_err(get)?,
        reasons: if reasons.is_empty() { Vec::new() } else { reasons.split(',').map(str::to_string).collect() },
        model_version: row.try_get("model_version").map_err(get)?,
    })
}

/// (currency, sum as text) rows as exact sums.
fn sums_by_currency(rows: Vec<PgRow>) -> Result<BTreeMap<String, i128>, StorageError> {
    let get = |e: sqlx::Error| StorageError::Database { context: "decode sums".into(), why: e.to_string() };
    rows.iter()
        .map(|r| {
            let currency: String = r.try_get(0).map_err(get)?;
            let sum: String = r.try_get(1).map_err(get)?;
            let sum = sum
                .parse::<i128>()
                .map_err(|e| StorageError::Database { context: "decode sums".into(), why: e.to_string() })?;
            Ok((currency, sum))
        })
        .collect()
}

async fn totals(connection: &mut PgConnection) -> Result<StoreTotals, StorageError> {
    let decisions: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&mut *connection)
        .await
        .map_err(database("count decisions"))?;
    let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM postings")
        .fetch_one(&mut *connection)
        .await
        .map_err(database("count postings"))?;
    let mut totals = StoreTotals { decisions: decisions as u64, postings: postings as u64, ..StoreTotals::default() };
    // Sums as text: numeric has no fixed-width Rust type, and i128 holds any sum.
    let rows = sqlx::query(
        "SELECT currency::text, sum(CASE direction WHEN 'debit' THEN amount_minor::numeric \
         ELSE -amount_minor::numeric END)::text FROM postings GROUP BY currency",
    )
    .fetch_all(&mut *connection)
    .await
    .map_err(database("sum postings"))?;
    totals.posting_sums_minor = sums_by_currency(rows)?;
    let rows = sqlx::query("SELECT currency::text, sum(balance_minor::numeric)::text FROM balances GROUP BY currency")
        .fetch_all(&mut *connection)
        .await
        .map_err(database("sum balances"))?;
    totals.balance_sums_minor = sums_by_currency(rows)?;
    Ok(totals)
}
