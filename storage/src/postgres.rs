//! The record store on PostgreSQL (sqlx): tables `decisions`, `postings`, `balances`
//! and `sink_positions` in a schema of the caller's choice, created by embedded
//! migrations (`storage/migrations`). Each slice is one SQL transaction: position check
//! (row lock), bulk inserts through `UNNEST` (one round trip per table), balance
//! upserts, position update, commit. The API is blocking (a private current-thread
//! tokio runtime), so pipeline threads call it like the embedded store.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::StorageError;
use crate::records::{
    OutputSlice, RecordStore, SliceApplied, StoreTotals, StoredDecision, balance_changes, check_sequence,
    decision_amount_minor, event_time_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct PostgresRecordStore {
    runtime: tokio::runtime::Runtime,
    options: PgConnectOptions,
    schema: String,
    /// `None` after a failure: the next call reconnects (the server may have restarted).
    connection: Option<PgConnection>,
}

fn database(context: &str) -> impl FnOnce(sqlx::Error) -> StorageError + '_ {
    move |e| StorageError::Database { context: context.to_string(), why: e.to_string() }
}

/// A schema name paystream accepts (it is interpolated into `CREATE SCHEMA`).
fn check_schema(schema: &str) -> Result<(), StorageError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok { Ok(()) } else { Err(StorageError::InvalidSchema(schema.to_string())) }
}

impl PostgresRecordStore {
    /// Connects to `url` (e.g. `postgres://paystream:paystream@127.0.0.1:5432/test`), creates
    /// `schema` if missing and migrates it.
    pub fn connect(url: &str, schema: &str) -> Result<PostgresRecordStore, StorageError> {
        check_schema(schema)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StorageError::Io { context: "start the PostgreSQL client runtime".into(), source })?;
        let options = PgConnectOptions::from_str(url)
            .map_err(database("parse the PostgreSQL URL"))?
            .options([("search_path", schema)])
            // Names the connection in pg_stat_activity: `paystream:<schema>`.
            .application_name(&format!("paystream:{schema}"));
        let connection = runtime.block_on(async {
            let mut connection =
                PgConnection::connect_with(&options).await.map_err(database("connect to PostgreSQL"))?;
            // Concurrent first connections (two tests, two processes) must not race on
            // creating the schema or migrating it.
            sqlx::query("SELECT pg_advisory_lock(7220)").execute(&mut connection).await.map_err(database("lock"))?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut connection)
                .await
                .map_err(database("create the schema"))?;
            MIGRATOR
                .run(&mut connection)
                .await
                .map_err(|e| StorageError::Database { context: "migrate the schema".into(), why: e.to_string() })?;
            sqlx::query("SELECT pg_advisory_unlock(7220)")
                .execute(&mut connection)
                .await
                .map_err(database("unlock"))?;
            Ok::<_, StorageError>(connection)
        })?;
        Ok(PostgresRecordStore { runtime, options, schema: schema.to_string(), connection: Some(connection) })
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub fn drop_schema(mut self) -> Result<(), StorageError> {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        self.with_connection(async |connection| {
            sqlx::query(&sql).execute(&mut *connection).await.map_err(database("drop the schema"))?;
            Ok(())
        })
    }

    /// Runs `f` on the connection (reconnecting first if the last call failed); a
    /// database error drops the connection so the next call starts afresh.
    fn with_connection<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let PostgresRecordStore { runtime, options, connection, .. } = self;
        runtime.block_on(async {
            if connection.is_none() {
                *connection =
                    Some(PgConnection::connect_with(options).await.map_err(database("reconnect to PostgreSQL"))?);
            }
            let result = f(connection.as_mut().expect("connected above")).await;
            if matches!(result, Err(StorageError::Database { .. })) {
                *connection = None;
            }
            result
        })
    }

    async fn apply_async(connection: &mut PgConnection, slice: &OutputSlice) -> Result<SliceApplied, StorageError> {
        // Everything is checked and converted before the transaction starts.
        let mut d = DecisionColumns::default();
        for decision in &slice.decisions {
            d.kind.push(decision.kind.as_str().to_string());
            d.original.push(decision.original_payment_id.clone());
            d.payment_id.push(decision.payment_id.clone());
            d.payer.push(decision.payer_account_id.clone());
            d.merchant.push(decision.merchant_id.clone());
            d.amount_minor.push(decision_amount_minor(decision)?);
            d.currency.push(decision.currency.code().to_string());
            d.event_time_ms.push(event_time_ms("decision", &decision.payment_id, &decision.event_time)?);
            d.outcome.push(decision.outcome.as_str().to_string());
            d.score.push(decision.score);
            d.reasons.push(decision.reasons.join(","));
            d.model_version.push(decision.model_version.to_string());
        }
        let mut p = PostingColumns::default();
        for transaction in &slice.ledger {
            let time = event_time_ms("transaction", &transaction.transaction_id, &transaction.event_time)?;
            for (seq, posting) in transaction.postings.iter().enumerate() {
                p.kind.push(transaction.kind.as_str().to_string());
                p.original.push(transaction.original_payment_id.clone());
                p.transaction_id.push(transaction.transaction_id.clone());
                p.seq.push(seq as i32);
                p.payment_id.push(transaction.payment_id.clone());
                p.account_id.push(posting.account_id.clone());
                p.direction.push(match posting.direction {
                    paystream_domain::Direction::Debit => "debit".to_string(),
                    paystream_domain::Direction::Credit => "credit".to_string(),
                });
                p.amount_minor.push(posting.amount_minor);
                p.currency.push(transaction.currency.code().to_string());
                p.event_time_ms.push(time);
            }
        }
        let changes = balance_changes(&slice.ledger)?;
        let (mut accounts, mut currencies, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
        for ((account, currency), delta) in changes {
            accounts.push(account);
            currencies.push(currency);
            deltas.push(delta);
        }

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
        if !d.payment_id.is_empty() {
            sqlx::query(
                "INSERT INTO decisions (payment_id, payer_account_id, merchant_id, amount_minor, currency, event_time, \
                 outcome, score, reasons, model_version, kind, original_payment_id) \
                 SELECT p, y, m, a, c, to_timestamp(t::double precision / 1000), o, s, r, v, k, g \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], \
                 $8::real[], $9::text[], $10::text[], $11::text[], $12::text[]) AS u(p, y, m, a, c, t, o, s, r, v, k, g) \
                 ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(&d.payment_id)
            .bind(&d.payer)
            .bind(&d.merchant)
            .bind(&d.amount_minor)
            .bind(&d.currency)
            .bind(&d.event_time_ms)
            .bind(&d.outcome)
            .bind(&d.score)
            .bind(&d.reasons)
            .bind(&d.model_version)
            .bind(&d.kind)
            .bind(&d.original)
            .execute(&mut *tx)
            .await
            .map_err(database("insert decisions"))?;
        }
        if !p.transaction_id.is_empty() {
            sqlx::query(
                "INSERT INTO postings (transaction_id, seq, payment_id, account_id, direction, amount_minor, currency, \
                 event_time, kind, original_payment_id) \
                 SELECT i, q, p, a, d, m, c, to_timestamp(t::double precision / 1000), k, g \
                 FROM UNNEST($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], \
                 $8::bigint[], $9::text[], $10::text[]) AS u(i, q, p, a, d, m, c, t, k, g)",
            )
            .bind(&p.transaction_id)
            .bind(&p.seq)
            .bind(&p.payment_id)
            .bind(&p.account_id)
            .bind(&p.direction)
            .bind(&p.amount_minor)
            .bind(&p.currency)
            .bind(&p.event_time_ms)
            .bind(&p.kind)
            .bind(&p.original)
            .execute(&mut *tx)
            .await
            .map_err(database("insert postings"))?;
            sqlx::query(
                "INSERT INTO balances (account_id, currency, balance_minor) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
                 ON CONFLICT (account_id, currency) DO UPDATE SET balance_minor = balances.balance_minor + EXCLUDED.balance_minor",
            )
            .bind(&accounts)
            .bind(&currencies)
            .bind(&deltas)
            .execute(&mut *tx)
            .await
            .map_err(database("update balances"))?;
        }
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
}

#[derive(Default)]
struct DecisionColumns {
    kind: Vec<String>,
    original: Vec<Option<String>>,
    payment_id: Vec<String>,
    payer: Vec<String>,
    merchant: Vec<Option<String>>,
    amount_minor: Vec<i64>,
    currency: Vec<String>,
    event_time_ms: Vec<i64>,
    outcome: Vec<String>,
    score: Vec<f32>,
    reasons: Vec<String>,
    model_version: Vec<String>,
}

#[derive(Default)]
struct PostingColumns {
    kind: Vec<String>,
    original: Vec<Option<String>>,
    transaction_id: Vec<String>,
    seq: Vec<i32>,
    payment_id: Vec<String>,
    account_id: Vec<String>,
    direction: Vec<String>,
    amount_minor: Vec<i64>,
    currency: Vec<String>,
    event_time_ms: Vec<i64>,
}

impl RecordStore for PostgresRecordStore {
    fn apply(&mut self, slice: &OutputSlice) -> Result<SliceApplied, StorageError> {
        self.with_connection(async |connection| PostgresRecordStore::apply_async(connection, slice).await)
    }

    fn position(&mut self, topic: &str, partition: u32) -> Result<u64, StorageError> {
        let position: Option<i64> = self.with_connection(async |connection| {
            sqlx::query_scalar("SELECT next_offset FROM sink_positions WHERE topic = $1 AND partition = $2")
                .bind(topic)
                .bind(partition as i32)
                .fetch_optional(&mut *connection)
                .await
                .map_err(database("read a position"))
        })?;
        Ok(position.unwrap_or(0) as u64)
    }

    fn decision(&mut self, payment_id: &str) -> Result<Option<StoredDecision>, StorageError> {
        let row = self.with_connection(async |connection| {
            sqlx::query(
                "SELECT payment_id, payer_account_id, merchant_id, amount_minor, currency::text AS currency, \
                     (extract(epoch FROM event_time) * 1000)::bigint AS event_time_ms, outcome, score, reasons, \
                     model_version, kind, original_payment_id FROM decisions WHERE payment_id = $1",
            )
            .bind(payment_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(database("read a decision"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StorageError::Database { context: "decode a decision".into(), why: e.to_string() };
        let reasons: String = row.try_get("reasons").map_err(get)?;
        Ok(Some(StoredDecision {
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
        }))
    }

    fn balance_minor(&mut self, account_id: &str, currency: &str) -> Result<i64, StorageError> {
        let balance: Option<i64> = self.with_connection(async |connection| {
            sqlx::query_scalar("SELECT balance_minor FROM balances WHERE account_id = $1 AND currency = $2")
                .bind(account_id)
                .bind(currency)
                .fetch_optional(&mut *connection)
                .await
                .map_err(database("read a balance"))
        })?;
        Ok(balance.unwrap_or(0))
    }

    fn totals(&mut self) -> Result<StoreTotals, StorageError> {
        self.with_connection(async |connection| {
            let decisions: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
                .fetch_one(&mut *connection)
                .await
                .map_err(database("count decisions"))?;
            let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM postings")
                .fetch_one(&mut *connection)
                .await
                .map_err(database("count postings"))?;
            let mut totals =
                StoreTotals { decisions: decisions as u64, postings: postings as u64, ..StoreTotals::default() };
            let collect = |rows: Vec<sqlx::postgres::PgRow>| -> Result<BTreeMap<String, i128>, StorageError> {
                let get = |e: sqlx::Error| StorageError::Database { context: "decode sums".into(), why: e.to_string() };
                rows.iter()
                    .map(|r| {
                        let currency: String = r.try_get(0).map_err(get)?;
                        let sum: String = r.try_get(1).map_err(get)?;
                        let sum = sum.parse::<i128>().map_err(|e| StorageError::Database {
                            context: "decode sums".into(),
                            why: e.to_string(),
                        })?;
                        Ok((currency, sum))
                    })
                    .collect()
            };
            // Sums as text: numeric has no fixed-width Rust type, and i128 holds any sum.
            let rows = sqlx::query(
                "SELECT currency::text, sum(CASE direction WHEN 'debit' THEN amount_minor::numeric \
                 ELSE -amount_minor::numeric END)::text FROM postings GROUP BY currency",
            )
            .fetch_all(&mut *connection)
            .await
            .map_err(database("sum postings"))?;
            totals.posting_sums_minor = collect(rows)?;
            let rows =
                sqlx::query("SELECT currency::text, sum(balance_minor::numeric)::text FROM balances GROUP BY currency")
                    .fetch_all(&mut *connection)
                    .await
                    .map_err(database("sum balances"))?;
            totals.balance_sums_minor = collect(rows)?;
            Ok(totals)
        })
    }
}

/// Users live in the record store's schema (`users`, migration `0002_users.sql`).
impl crate::users::UserStore for PostgresRecordStore {
    fn create_user(&mut self, user: &crate::users::User) -> Result<(), StorageError> {
        let user = user.clone();
        self.with_connection(async move |connection| {
            let inserted = sqlx::query(
                "INSERT INTO users (user_id, email, display_name, kyc_status, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&user.user_id)
            .bind(&user.email)
            .bind(&user.display_name)
            .bind(user.kyc_status.as_str())
            .bind(user.created_at_ms)
            .execute(&mut *connection)
            .await
            .map_err(database("insert a user"))?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            let by_id = sqlx::query("SELECT 1 FROM users WHERE user_id = $1")
                .bind(&user.user_id)
                .fetch_optional(&mut *connection)
                .await
                .map_err(database("look a user up"))?;
            Err(StorageError::Conflict(match by_id {
                Some(_) => format!("user {:?} exists", user.user_id),
                None => format!("e-mail {:?} is taken", user.email),
            }))
        })
    }

    fn user(&mut self, user_id: &str) -> Result<Option<crate::users::User>, StorageError> {
        self.user_where("user_id", user_id.to_string())
    }

    fn user_by_email(&mut self, email: &str) -> Result<Option<crate::users::User>, StorageError> {
        self.user_where("email", email.trim().to_lowercase())
    }

    fn set_kyc_status(&mut self, user_id: &str, status: crate::users::KycStatus) -> Result<bool, StorageError> {
        let user_id = user_id.to_string();
        self.with_connection(async move |connection| {
            let updated = sqlx::query("UPDATE users SET kyc_status = $2 WHERE user_id = $1")
                .bind(&user_id)
                .bind(status.as_str())
                .execute(&mut *connection)
                .await
                .map_err(database("update a user's KYC status"))?;
            Ok(updated.rows_affected() == 1)
        })
    }
}

impl PostgresRecordStore {
    /// The user whose `column` (a unique one: `user_id` or `email`) equals `value`.
    fn user_where(&mut self, column: &'static str, value: String) -> Result<Option<crate::users::User>, StorageError> {
        let sql =
            format!("SELECT user_id, email, display_name, kyc_status, created_at_ms FROM users WHERE {column} = $1");
        self.with_connection(async move |connection| {
            let row = sqlx::query(&sql)
                .bind(&value)
                .fetch_optional(&mut *connection)
                .await
                .map_err(database("read a user"))?;
            row.map(|row| user_from_row(&row)).transpose()
        })
    }
}

fn user_from_row(row: &sqlx::postgres::PgRow) -> Result<crate::users::User, StorageError> {
    let column = |e: sqlx::Error| StorageError::Database { context: "read a user row".into(), why: e.to_string() };
    Ok(crate::users::User {
        user_id: row.try_get("user_id").map_err(column)?,
        email: row.try_get("email").map_err(column)?,
        display_name: row.try_get("display_name").map_err(column)?,
        kyc_status: crate::users::KycStatus::parse(row.try_get::<&str, _>("kyc_status").map_err(column)?)?,
        created_at_ms: row.try_get("created_at_ms").map_err(column)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_before_they_reach_sql() {
        for bad in ["", "1abc", "a-b", "A", "x; DROP TABLE decisions", &"s".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
        for good in ["paystream", "test_42", "_x"] {
            assert!(check_schema(good).is_ok(), "{good:?}");
        }
    }
}
