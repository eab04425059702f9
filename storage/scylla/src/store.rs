//! [`ScyllaStore`]: the history store on Cassandra/ScyllaDB, async (the schema and its
//! reasons are in the crate docs).

use std::time::Duration;

use paystream_storage::StorageError;
use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, totals_by_day};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp};

use crate::config::{ScyllaConfig, check_keyspace};
use crate::schema::{
    cql_date, days_since_epoch, insert_payment, schema_statements, select_aggregate, select_aggregates, select_history,
    upsert_aggregate,
};

/// Most rows written concurrently by one call (one round trip each, in flight together).
pub const WRITES_IN_FLIGHT_MAX: usize = 256;

struct Statements {
    insert_payment: PreparedStatement,
    select_history: PreparedStatement,
    upsert_aggregate: PreparedStatement,
    select_aggregates: PreparedStatement,
    select_aggregate: PreparedStatement,
}

/// A connected store, with the semantics of `paystream_storage::history::HistoryStore`.
/// Async: use `Blocking` where the synchronous `HistoryStore` is needed.
pub struct ScyllaStore {
    session: Session,
    statements: Option<Statements>,
    config: ScyllaConfig,
}

fn scylla(context: &str) -> impl Fn(String) -> StorageError + '_ {
    move |why| StorageError::Scylla { context: context.to_string(), why }
}

impl ScyllaStore {
    /// Connects (the driver then discovers the cluster; its background tasks run on the
    /// calling runtime). Call [`ScyllaStore::migrate`] before the first use of a keyspace.
    pub async fn connect(config: ScyllaConfig) -> Result<ScyllaStore, StorageError> {
        check_keyspace(&config.keyspace)?;
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(Duration::from_secs(10))
            .build()
            .await
            .map_err(|e| scylla("connect")(e.to_string()))?;
        let mut store = ScyllaStore { session, config, statements: None };
        // The tables may not exist yet: statements are prepared once they do.
        let _ = store.prepare().await;
        Ok(store)
    }

    /// Creates the keyspace and tables if missing, waits for schema agreement, and
    /// prepares the statements.
    pub async fn migrate(&mut self) -> Result<(), StorageError> {
        for statement in schema_statements(&self.config.keyspace, self.config.replication_factor) {
            self.session.query_unpaged(statement, ()).await.map_err(|e| scylla("migrate")(e.to_string()))?;
        }
        self.session.await_schema_agreement().await.map_err(|e| scylla("schema agreement")(e.to_string()))?;
        self.prepare().await
    }

    async fn prepare(&mut self) -> Result<(), StorageError> {
        let keyspace = &self.config.keyspace;
        let consistency = self.config.consistency.driver();
        let session = &self.session;
        let prepare = |cql: String| async move {
            let mut statement = session.prepare(cql).await.map_err(|e| scylla("prepare")(e.to_string()))?;
            statement.set_consistency(consistency);
            Ok::<PreparedStatement, StorageError>(statement)
        };
        let statements = Statements {
            insert_payment: prepare(insert_payment(keyspace)).await?,
            select_history: prepare(select_history(keyspace)).await?,
            upsert_aggregate: prepare(upsert_aggregate(keyspace)).await?,
            select_aggregates: prepare(select_aggregates(keyspace)).await?,
            select_aggregate: prepare(select_aggregate(keyspace)).await?,
        };
        self.statements = Some(statements);
        Ok(())
    }

    fn statements(&self) -> Result<&Statements, StorageError> {
        self.statements.as_ref().ok_or_else(|| {
            StorageError::InvalidConfig(format!(
                "keyspace {} has no paystream tables: run `paystream store scylla-migrate`",
                self.config.keyspace
            ))
        })
    }

    /// Writes payments into their accounts' histories (idempotent by row key), at most
    /// [`WRITES_IN_FLIGHT_MAX`] in flight at once.
    pub async fn record_payments(&self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        let (statement, session) = (&self.statements()?.insert_payment, &self.session);
        for chunk in rows.chunks(WRITES_IN_FLIGHT_MAX) {
            let writes = chunk.iter().map(|row| {
                let values = (
                    row.account_id.as_str(),
                    CqlTimestamp(row.event_time_ms),
                    row.payment_id.as_str(),
                    row.kind.as_str(),
                    row.counterparty.as_str(),
                    row.amount_minor,
                    row.currency.as_str(),
                    row.outcome.as_str(),
                );
                async move { session.execute_unpaged(statement, values).await }
            });
            for result in futures::future::join_all(writes).await {
                result.map_err(|e| scylla("write payment history")(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The account's latest `limit` payments, newest first.
    pub async fn history(&self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        let statement = &self.statements()?.select_history;
        let result = self
            .session
            .execute_unpaged(statement, (account_id, i32::try_from(limit).unwrap_or(i32::MAX)))
            .await
            .map_err(|e| scylla("read payment history")(e.to_string()))?;
        let rows = result.into_rows_result().map_err(|e| scylla("read payment history")(e.to_string()))?;
        let typed = rows
            .rows::<(String, CqlTimestamp, String, String, String, i64, String, String)>()
            .map_err(|e| scylla("decode payment history")(e.to_string()))?;
        let mut history = Vec::new();
        for row in typed {
            let (account_id, time, payment_id, kind, counterparty, amount_minor, currency, outcome) =
                row.map_err(|e| scylla("decode payment history")(e.to_string()))?;
            history.push(HistoryRow {
                account_id,
                event_time_ms: time.0,
                payment_id,
                kind,
                counterparty,
                amount_minor,
                currency,
                outcome,
            });
        }
        Ok(history)
    }

    /// Replaces each row's totals as of `version` (the source's position: it must grow
    /// with every write of a source partition). Writing the same rows again at the same
    /// version changes nothing; at an older version, nothing either.
    pub async fn write_aggregates(&self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
        let (statement, session) = (&self.statements()?.upsert_aggregate, &self.session);
        let mut bound = Vec::with_capacity(rows.len());
        for row in rows {
            let partition = i32::try_from(row.source_partition)
                .map_err(|_| StorageError::InvalidRecord(format!("partition {}", row.source_partition)))?;
            bound.push((
                row.entity.as_str(),
                cql_date(row.day)?,
                partition,
                row.totals.payments,
                row.totals.amount_minor,
                row.totals.declines,
                version,
            ));
        }
        for chunk in bound.chunks(WRITES_IN_FLIGHT_MAX) {
            let writes = chunk.iter().map(|values| async move { session.execute_unpaged(statement, values).await });
            for result in futures::future::join_all(writes).await {
                result.map_err(|e| scylla("write daily aggregates")(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// An entity's totals per day since `since_day` (days since the epoch), summed over
    /// source partitions, newest first.
    pub async fn daily_totals(&self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        let statement = &self.statements()?.select_aggregates;
        let result = self
            .session
            .execute_unpaged(statement, (entity, cql_date(since_day)?))
            .await
            .map_err(|e| scylla("read daily aggregates")(e.to_string()))?;
        let rows = result.into_rows_result().map_err(|e| scylla("read daily aggregates")(e.to_string()))?;
        let typed = rows
            .rows::<(CqlDate, i32, i64, i64, i64)>()
            .map_err(|e| scylla("decode daily aggregates")(e.to_string()))?;
        let mut days = Vec::new();
        for row in typed {
            let (day, _, payments, amount_minor, declines) =
                row.map_err(|e| scylla("decode daily aggregates")(e.to_string()))?;
            days.push((days_since_epoch(day), DayTotals { payments, amount_minor, declines }));
        }
        Ok(totals_by_day(days))
    }

    /// The stored row of (entity, day, source partition) and its write timestamp (the
    /// version it was written at).
    pub async fn aggregate(
        &self,
        entity: &str,
        day: i64,
        source_partition: u32,
    ) -> Result<Option<(DayTotals, i64)>, StorageError> {
        let statement = &self.statements()?.select_aggregate;
        let partition = i32::try_from(source_partition)
            .map_err(|_| StorageError::InvalidRecord(format!("partition {source_partition}")))?;
        let result = self
            .session
            .execute_unpaged(statement, (entity, cql_date(day)?, partition))
            .await
            .map_err(|e| scylla("read a daily aggregate")(e.to_string()))?;
        let rows = result.into_rows_result().map_err(|e| scylla("read a daily aggregate")(e.to_string()))?;
        let mut typed =
            rows.rows::<(i64, i64, i64, i64)>().map_err(|e| scylla("decode a daily aggregate")(e.to_string()))?;
        match typed.next() {
            None => Ok(None),
            Some(row) => {
                let (payments, amount_minor, declines, version) =
                    row.map_err(|e| scylla("decode a daily aggregate")(e.to_string()))?;
                Ok(Some((DayTotals { payments, amount_minor, declines }, version)))
            }
        }
    }
}
