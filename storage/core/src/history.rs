//! The long-window store: payment history per account and daily aggregates per entity,
//! in ScyllaDB/Cassandra in production (`paystream-storage-scylla`) or in memory
//! ([`MemoryHistoryStore`], embedded and for tests). Both implement [`HistoryStore`] with
//! the same semantics:
//! - a history row is keyed by (account, event time, payment id): writing it again (a
//!   replay) rewrites the same row; an account's history reads newest first;
//! - an aggregate row (entity, day, source partition) holds that partition's running
//!   totals for the day, written as of a *version* (the source position it covers: it
//!   only grows). A write at an older version than the stored one changes nothing
//!   (Cassandra's `USING TIMESTAMP`, last write wins); a replay writes the same totals
//!   at the same version. No counter columns: counters are not idempotent.

use std::collections::{BTreeMap, HashMap};

use crate::error::StorageError;

/// One payment in an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub account_id: String,
    pub event_time_ms: i64,
    pub payment_id: String,
    /// The event type (`payment`, `refund`, …).
    pub kind: String,
    /// The merchant, if any.
    pub counterparty: String,
    pub amount_minor: i64,
    pub currency: String,
    pub outcome: String,
}

/// A source partition's running totals of one entity and day: scored payments
/// (payments and authorizations), their amount in minor units (all currencies added:
/// a volume indicator, not money to settle) and how many were declined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayTotals {
    pub payments: i64,
    pub amount_minor: i64,
    pub declines: i64,
}

impl DayTotals {
    pub fn add(&mut self, other: DayTotals) {
        self.payments += other.payments;
        self.amount_minor += other.amount_minor;
        self.declines += other.declines;
    }
}

/// One row of the daily aggregates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateRow {
    pub entity: String,
    /// Days since the epoch (UTC).
    pub day: i64,
    pub source_partition: u32,
    pub totals: DayTotals,
}

/// Sums the source partitions' rows into one total per day, newest day first.
pub fn totals_by_day(rows: impl IntoIterator<Item = (i64, DayTotals)>) -> Vec<(i64, DayTotals)> {
    let mut days: BTreeMap<i64, DayTotals> = BTreeMap::new();
    for (day, totals) in rows {
        days.entry(day).or_default().add(totals);
    }
    days.into_iter().rev().collect()
}

pub trait HistoryStore: Send {
    /// Writes payments into their accounts' histories (idempotent by row key).
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError>;
    /// Replaces each row's totals as of `version`, unless the stored row is newer.
    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError>;
    /// The stored totals of (entity, day, source partition) and their version.
    fn aggregate(
        &mut self,
        entity: &str,
        day: i64,
        source_partition: u32,
    ) -> Result<Option<(DayTotals, i64)>, StorageError>;
    /// The account's latest `limit` payments, newest first.
    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError>;
    /// An entity's totals per day since `since_day`, summed over source partitions,
    /// newest first.
    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError>;
}

/// Per (day, source partition): the totals and the version they were written at.
type EntityAggregates = BTreeMap<(i64, u32), (DayTotals, i64)>;

/// The embedded history store (a process's memory; what tests run the sink against).
#[derive(Debug, Default)]
pub struct MemoryHistoryStore {
    /// Per account: (event time, payment id) → row.
    histories: HashMap<String, BTreeMap<(i64, String), HistoryRow>>,
    /// Per entity: (day, source partition) → (totals, version).
    aggregates: HashMap<String, EntityAggregates>,
}

impl MemoryHistoryStore {
    pub fn new() -> MemoryHistoryStore {
        MemoryHistoryStore::default()
    }

    /// Every aggregate row and its version, ordered (for comparisons in tests).
    pub fn all_aggregates(&self) -> BTreeMap<(String, i64, u32), (DayTotals, i64)> {
        self.aggregates
            .iter()
            .flat_map(|(entity, rows)| {
                rows.iter().map(move |((day, partition), row)| ((entity.clone(), *day, *partition), *row))
            })
            .collect()
    }

    /// How many history rows are stored.
    pub fn history_rows(&self) -> usize {
        self.histories.values().map(BTreeMap::len).sum()
    }
}

impl HistoryStore for MemoryHistoryStore {
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        for row in rows {
            self.histories
                .entry(row.account_id.clone())
                .or_default()
                .insert((row.event_time_ms, row.payment_id.clone()), row.clone());
        }
        Ok(())
    }

    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
        for row in rows {
            let stored = self
                .aggregates
                .entry(row.entity.clone())
                .or_default()
                .entry((row.day, row.source_partition))
                .or_insert((row.totals, version));
            if version >= stored.1 {
                *stored = (row.totals, version);
            }
        }
        Ok(())
    }

    fn aggregate(
        &mut self,
        entity: &str,
        day: i64,
        source_partition: u32,
    ) -> Result<Option<(DayTotals, i64)>, StorageError> {
        Ok(self.aggregates.get(entity).and_then(|rows| rows.get(&(day, source_partition))).copied())
    }

    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        let Some(rows) = self.histories.get(account_id) else { return Ok(Vec::new()) };
        // Newest first; within one millisecond by payment id, as the CQL clustering order.
        let mut newest: Vec<&HistoryRow> = rows.values().collect();
        newest.sort_by(|a, b| b.event_time_ms.cmp(&a.event_time_ms).then_with(|| a.payment_id.cmp(&b.payment_id)));
        Ok(newest.into_iter().take(limit).cloned().collect())
    }

    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        let rows = self.aggregates.get(entity).into_iter().flatten();
        Ok(totals_by_day(rows.filter(|((day, _), _)| *day >= since_day).map(|((day, _), (totals, _))| (*day, *totals))))
    }
}
