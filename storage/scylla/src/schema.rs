//! The CQL of the store: the keyspace and tables ([`schema_statements`]), the statements
//! the store prepares, and CQL dates.

use paystream_storage::StorageError;
use scylla::value::CqlDate;

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

pub(crate) fn insert_payment(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.payments_by_account \
         (account_id, event_time, payment_id, kind, counterparty, amount_minor, currency, outcome) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
}

pub(crate) fn select_history(keyspace: &str) -> String {
    format!(
        "SELECT account_id, event_time, payment_id, kind, counterparty, amount_minor, currency, outcome \
         FROM {keyspace}.payments_by_account WHERE account_id = ? LIMIT ?"
    )
}

pub(crate) fn upsert_aggregate(keyspace: &str) -> String {
    format!(
        "INSERT INTO {keyspace}.daily_aggregates (entity, day, source_partition, payments, amount_minor, declines) \
         VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
    )
}

pub(crate) fn select_aggregates(keyspace: &str) -> String {
    format!(
        "SELECT day, source_partition, payments, amount_minor, declines \
         FROM {keyspace}.daily_aggregates WHERE entity = ? AND day >= ?"
    )
}

/// One row and its version (the write timestamp it was written `USING`).
pub(crate) fn select_aggregate(keyspace: &str) -> String {
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

pub(crate) fn days_since_epoch(date: CqlDate) -> i64 {
    i64::from(date.0) - (1i64 << 31)
}

#[cfg(test)]
mod tests {
    use paystream_storage::history::{DayTotals, totals_by_day};

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
