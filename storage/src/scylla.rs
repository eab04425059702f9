//! Cassandra/ScyllaDB store (the `scylla` driver): payment history per account and
//! long-window daily aggregates per entity.
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
//! consistency. Integration tests run when `SCYLLA_NODES` is set (see README).

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp};

use crate::StorageError;
pub use crate::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore, totals_by_day};

/// Most rows written concurrently by one call (one round trip each, in flight together).
pub const WRITES_IN_FLIGHT_MAX: usize = 256;

/// Where and how to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes (the driver discovers the rest).
    pub nodes: Vec<String>,
    /// `[a-z][a-z0-9_]{0,47}`.
    pub keyspace: String,
    pub replication_factor: u32,
    pub consistency: ConsistencyLevel,
}

impl ScyllaConfig {
    /// `nodes`: comma-separated `host:port` (the form of `SCYLLA_NODES`).
    pub fn new(nodes: &str, keyspace: &str) -> Result<ScyllaConfig, StorageError> {
        let nodes: Vec<String> = nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if nodes.is_empty() {
            return Err(StorageError::InvalidConfig("no ScyllaDB node given (host:port, comma-separated)".into()));
        }
        check_keyspace(keyspace)?;
        Ok(ScyllaConfig {
            nodes,
            keyspace: keyspace.to_string(),
            replication_factor: 1,
            consistency: ConsistencyLevel::LocalQuorum,
        })
    }
}

fn check_keyspace(keyspace: &str) -> Result<(), StorageError> {
    let valid = keyspace.len() <= 48
        && keyspace.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && keyspace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidConfig(format!(
            "keyspace {keyspace:?}: use 1 to 48 of [a-z0-9_], starting with a letter"
        )))
    }
}

/// The consistency levels paystream offers (reads and writes alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyLevel {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    All,
}

impl ConsistencyLevel {
    pub fn parse(text: &str) -> Result<ConsistencyLevel, StorageError> {
        match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "one" => Ok(ConsistencyLevel::One),
            "local_one" => Ok(ConsistencyLevel::LocalOne),
            "quorum" => Ok(ConsistencyLevel::Quorum),
            "local_quorum" => Ok(ConsistencyLevel::LocalQuorum),
            "all" => Ok(ConsistencyLevel::All),
            other => Err(StorageError::InvalidConfig(format!(
                "consistency {other:?}: one, local_one, quorum, local_quorum or all"
            ))),
        }
    }

    fn driver(self) -> Consistency {
        match self {
            ConsistencyLevel::One => Consistency::One,
            ConsistencyLevel::LocalOne => Consistency::LocalOne,
            ConsistencyLevel::Quorum => Consistency::Quorum,
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::All => Consistency::All,
        }
    }
}

/// The CQL that creates the keyspace and tables (idempotent: `IF NOT EXISTS`).
pub fn schema_statements(keyspace: &str, replication_factor: u32) -> Vec<String> {
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.payments_by_account (\
             account_id text, event_time timestamp, payment_id text, kind text, counterparty text, \
             amount_minor bigint, currency text, outcome text, \
             PRIMARY KEY ((account_id), event_time, payment_id)) \
             WITH CLUSTERING ORDER BY (event_time DESC, payment_id ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.daily_aggregates (\
             entity text, day date, source_partition int, payments bigint, amount_minor bigint, declines bigint, \
             PRIMARY KEY ((entity), day, source_partition)) \
             WITH CLUSTERING ORDER BY (day DESC, source_partition ASC)"
        ),
    ]
}

fn insert_payment(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.payments_by_account \
         (account_id, event_time, payment_id, kind, counterparty, amount_minor, currency, outcome) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
}

fn select_history(keyspace: &str) -> String {
    format!(
        "SELECT account_id, event_time, payment_id, kind, counterparty, amount_minor, currency, outcome \
         FROM {keyspace}.payments_by_account WHERE account_id = ? LIMIT ?"
    )
}

fn upsert_aggregate(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.daily_aggregates (entity, day, source_partition, payments, amount_minor, declines) \
         VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
    )
}

fn select_aggregates(keyspace: &str) -> String {
    format!(
        "SELECT day, source_partition, payments, amount_minor, declines \
         FROM {keyspace}.daily_aggregates WHERE entity = ? AND day >= ?"
    )
}

/// One row and its version (the write timestamp it was written `USING`).
fn select_aggregate(keyspace: &str) -> String {
    format!(
        "SELECT payments, amount_minor, declines, WRITETIME(payments) \
         FROM {keyspace}.daily_aggregates WHERE entity = ? AND day = ? AND source_partition = ?"
    )
}

/// The CQL `date` of days since the epoch (the driver's 2^31-centred encoding).
pub fn cql_date(days_since_epoch: i64) -> Result<CqlDate, StorageError> {
    let raw = days_since_epoch + (1i64 << 31);
    u32::try_from(raw)
        .map(CqlDate)
        .map_err(|_| StorageError::InvalidRecord(format!("day {days_since_epoch} out of range")))
}

fn days_since_epoch(date: CqlDate) -> i64 {
    i64::from(date.0) - (1i64 << 31)
}

struct Statements {
    insert_payment: PreparedStatement,
    select_history: PreparedStatement,
    upsert_aggregate: PreparedStatement,
    select_aggregates: PreparedStatement,
    select_aggregate: PreparedStatement,
}

/// A connected store.
pub struct ScyllaStore {
    // Dropped before the runtime it runs on (fields drop in order).
    session: Session,
    statements: Option<Statements>,
    config: ScyllaConfig,
    runtime: tokio::runtime::Runtime,
}

fn scylla(context: &str) -> impl Fn(String) -> StorageError + '_ {
    move |why| StorageError::Scylla { context: context.to_string(), why }
}

impl ScyllaStore {
    /// Connects (the driver then discovers the cluster). Call [`ScyllaStore::migrate`]
    /// before the first use of a keyspace.
    pub fn connect(config: ScyllaConfig) -> Result<ScyllaStore, StorageError> {
        check_keyspace(&config.keyspace)?;
        // One worker thread of its own: the driver's background tasks (the control
        // connection, reconnecting the pool after the node restarts) run between calls,
        // not only inside them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("paystream-scylla")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Io { context: "start the ScyllaDB runtime".into(), source: e })?;
        let session = runtime
            .block_on(
                SessionBuilder::new().known_nodes(&config.nodes).connection_timeout(Duration::from_secs(10)).build(),
            )
            .map_err(|e| scylla("connect")(e.to_string()))?;
        let mut store = ScyllaStore { runtime, session, config, statements: None };
        // The tables may not exist yet: statements are prepared once they do.
        let _ = store.prepare();
        Ok(store)
    }

    /// Creates the keyspace and tables if missing, waits for schema agreement, and
    /// prepares the statements.
    pub fn migrate(&mut self) -> Result<(), StorageError> {
        let statements = schema_statements(&self.config.keyspace, self.config.replication_factor);
        self.runtime.block_on(async {
            for statement in statements {
                self.session.query_unpaged(statement, ()).await.map_err(|e| scylla("migrate")(e.to_string()))?;
            }
            self.session.await_schema_agreement().await.map_err(|e| scylla("schema agreement")(e.to_string()))?;
            Ok::<(), StorageError>(())
        })?;
        self.prepare()
    }

    fn prepare(&mut self) -> Result<(), StorageError> {
        let keyspace = &self.config.keyspace;
        let consistency = self.config.consistency.driver();
        let session = &self.session;
        let prepare = |cql: String| async move {
            let mut statement = session.prepare(cql).await.map_err(|e| scylla("prepare")(e.to_string()))?;
            statement.set_consistency(consistency);
            Ok::<PreparedStatement, StorageError>(statement)
        };
        let statements = self.runtime.block_on(async {
            Ok::<Statements, StorageError>(Statements {
                insert_payment: prepare(insert_payment(keyspace)).await?,
                select_history: prepare(select_history(keyspace)).await?,
                upsert_aggregate: prepare(upsert_aggregate(keyspace)).await?,
                select_aggregates: prepare(select_aggregates(keyspace)).await?,
                select_aggregate: prepare(select_aggregate(keyspace)).await?,
            })
        })?;
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
}

/// Statements prepared once, routed token-aware at the configured consistency.
impl HistoryStore for ScyllaStore {
    /// Writes payments into their accounts' histories (idempotent by row key), at most
    /// [`WRITES_IN_FLIGHT_MAX`] in flight at once.
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        let (statement, session) = (&self.statements()?.insert_payment, &self.session);
        self.runtime.block_on(async {
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
        })
    }

    /// The account's latest `limit` payments, newest first.
    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        let statement = &self.statements()?.select_history;
        let result = self
            .runtime
            .block_on(self.session.execute_unpaged(statement, (account_id, i32::try_from(limit).unwrap_or(i32::MAX))))
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
    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
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
        self.runtime.block_on(async {
            for chunk in bound.chunks(WRITES_IN_FLIGHT_MAX) {
                let writes = chunk.iter().map(|values| async move { session.execute_unpaged(statement, values).await });
                for result in futures::future::join_all(writes).await {
                    result.map_err(|e| scylla("write daily aggregates")(e.to_string()))?;
                }
            }
            Ok(())
        })
    }

    /// An entity's totals per day since `since_day` (days since the epoch), summed over
    /// source partitions, newest first.
    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        let statement = &self.statements()?.select_aggregates;
        let result = self
            .runtime
            .block_on(self.session.execute_unpaged(statement, (entity, cql_date(since_day)?)))
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
    fn aggregate(
        &mut self,
        entity: &str,
        day: i64,
        source_partition: u32,
    ) -> Result<Option<(DayTotals, i64)>, StorageError> {
        let statement = &self.statements()?.select_aggregate;
        let partition = i32::try_from(source_partition)
            .map_err(|_| StorageError::InvalidRecord(format!("partition {source_partition}")))?;
        let result = self
            .runtime
            .block_on(self.session.execute_unpaged(statement, (entity, cql_date(day)?, partition)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_partitions_history_by_account_newest_first_and_aggregates_without_counters() {
        let schema = schema_statements("paystream", 3);
        assert!(schema[0].contains("'replication_factor': 3"), "{}", schema[0]);
        assert!(schema[1].contains("PRIMARY KEY ((account_id), event_time, payment_id)"));
        assert!(schema[1].contains("CLUSTERING ORDER BY (event_time DESC"));
        assert!(schema[2].contains("PRIMARY KEY ((entity), day, source_partition)"));
        let counter_column = |s: &str| s.contains(" counter,") || s.contains(" counter)");
        assert!(schema.iter().all(|s| s.contains("IF NOT EXISTS") && !counter_column(s)));
        assert!(upsert_aggregate("ks").ends_with("USING TIMESTAMP ?"), "aggregates are written last-write-wins");
        assert_eq!(insert_payment("ks").matches('?').count(), 8);
        assert!(select_aggregate("ks").contains("WRITETIME(payments)"), "the version comes back with the row");
        assert!(select_aggregate("ks").ends_with("WHERE entity = ? AND day = ? AND source_partition = ?"));
        assert!(select_history("ks").contains("WHERE account_id = ? LIMIT ?"));
    }

    #[test]
    fn configuration_is_checked() {
        let config = ScyllaConfig::new("10.0.0.1:9042, 10.0.0.2:9042", "paystream_1").unwrap();
        assert_eq!(config.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(config.consistency, ConsistencyLevel::LocalQuorum);
        assert!(ScyllaConfig::new(" , ", "ks").is_err());
        for bad in ["", "1ks", "Paystream", "pay-stream", &"k".repeat(49)] {
            assert!(ScyllaConfig::new("h:9042", bad).is_err(), "{bad:?}");
        }
        assert_eq!(ConsistencyLevel::parse("LOCAL-QUORUM").unwrap(), ConsistencyLevel::LocalQuorum);
        assert_eq!(ConsistencyLevel::parse("one").unwrap(), ConsistencyLevel::One);
        assert!(ConsistencyLevel::parse("most").is_err());
    }

    #[test]
    fn dates_and_daily_totals() {
        assert_eq!(cql_date(0).unwrap(), CqlDate(1 << 31));
        assert_eq!(days_since_epoch(cql_date(17_622).unwrap()), 17_622);
        assert_eq!(days_since_epoch(cql_date(-5).unwrap()), -5);
        let t = |payments, amount_minor, declines| DayTotals { payments, amount_minor, declines };
        // Two source partitions on day 10, one on day 11: summed, newest first.
        let totals = totals_by_day([(10, t(2, 500, 0)), (11, t(1, 100, 1)), (10, t(3, 700, 1))]);
        assert_eq!(totals, vec![(11, t(1, 100, 1)), (10, t(5, 1_200, 1))]);
    }
}
