//! The history sink: copies the committed `decisions` topic into a [`HistoryStore`]
//! (ScyllaDB in production): every decision into its payer's payment history, and the
//! daily aggregates per entity (`customer:<payer>`, `merchant:<id>`) and source
//! partition of the scored ones (payments and authorizations: count, amount, declines).
//!
//! ScyllaDB has no transactions, so the sink is idempotent instead of atomic. History
//! rows are keyed by payment, so a replay rewrites them. Aggregate rows are written as
//! of a *version*: the decisions offset up to which (exclusive) the row counts its
//! partition's records. The sink keeps the rows it is updating in memory; a row it does
//! not hold is read back from the store with its version, and records below that
//! version are already in it and skipped. The sink's position (consumer group
//! [`HISTORY_SINK_GROUP`], which also keeps retention off unsent decisions) is committed
//! after the store took the slice, so a crash in between replays the slice: it rewrites
//! the same rows, and each aggregate row counts each record once.

use std::collections::HashMap;

use paystream_domain::time::{MILLIS_PER_DAY, parse_rfc3339_ms};
use paystream_domain::{Decision, Outcome};
use paystream_storage::StorageError;
use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore};

use super::sink_driver::{SinkReporting, drive_sink};
use crate::context::RunContext;
use crate::error::RuntimeError;
use crate::log::Transaction;

/// Consumer group whose positions in the decisions topic mark what the store has.
pub const HISTORY_SINK_GROUP: &str = "paystream-history-sink";
/// Aggregate rows of days this far before a partition's newest day leave the sink's
/// memory (a late decision for one reads it back from the store).
pub const HISTORY_DAYS_HELD: i64 = 2;

/// An aggregate row the sink holds: its totals and the offset they count up to.
#[derive(Clone, Copy, Debug)]
struct Held {
    totals: DayTotals,
    version: i64,
}

/// The sink's state between slices: the aggregate rows it holds, per source partition.
#[derive(Default)]
pub(crate) struct HistorySink {
    /// (entity, day) → row, per decisions partition.
    held: Vec<HashMap<(String, i64), Held>>,
}

/// What one slice writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SliceWrites {
    pub history: Vec<HistoryRow>,
    pub aggregates: Vec<AggregateRow>,
    /// The version the aggregates are written at: the slice's end offset.
    pub version: i64,
}

/// The entities a decision counts for.
fn entities(decision: &Decision) -> impl Iterator<Item = String> + '_ {
    std::iter::once(format!("customer:{}", decision.payer_account_id))
        .chain(decision.merchant_id.as_ref().map(|m| format!("merchant:{m}")))
}

impl HistorySink {
    /// The writes of decisions `[from_offset, to_offset)` of `partition` (each record's
    /// offset and decision), reading rows it does not hold from `store`.
    pub(crate) fn slice(
        &mut self,
        store: &mut dyn HistoryStore,
        partition: u32,
        records: &[(u64, Decision)],
        to_offset: u64,
    ) -> Result<SliceWrites, StorageError> {
        if self.held.len() <= partition as usize {
            self.held.resize_with(partition as usize + 1, HashMap::new);
        }
        let held = &mut self.held[partition as usize];
        let version = i64::try_from(to_offset).map_err(|_| StorageError::InvalidRecord("offset overflows".into()))?;
        let mut writes = SliceWrites { version, ..SliceWrites::default() };
        let mut touched: Vec<(String, i64)> = Vec::new();
        let mut newest_day = i64::MIN;
        for (offset, decision) in records {
            let event_time_ms = parse_rfc3339_ms(&decision.event_time).map_err(|e| {
                StorageError::InvalidRecord(format!("decision {} event_time: {e}", decision.payment_id))
            })?;
            let amount_minor = paystream_domain::money::Money::parse(&decision.amount, decision.currency)
                .map_err(|e| StorageError::InvalidRecord(format!("decision {} amount: {e}", decision.payment_id)))?
                .minor_units();
            writes.history.push(HistoryRow {
                account_id: decision.payer_account_id.clone(),
                event_time_ms,
                payment_id: decision.payment_id.clone(),
                kind: decision.kind.as_str().to_string(),
                counterparty: decision.merchant_id.clone().unwrap_or_default(),
                amount_minor,
                currency: decision.currency.code().to_string(),
                outcome: decision.outcome.as_str().to_string(),
            });
            if !decision.kind.is_scored() {
                continue;
            }
            let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
            newest_day = newest_day.max(day);
            for entity in entities(decision) {
                let key = (entity, day);
                let row = match held.get_mut(&key) {
                    Some(row) => row,
                    None => {
                        let stored = store.aggregate(&key.0, day, partition)?;
                        let (totals, version) = stored.unwrap_or_default();
                        held.entry(key.clone()).or_insert(Held { totals, version })
                    }
                };
                // Records below the row's version are counted in it already (a replay).
                if (*offset as i64) < row.version {
                    continue;
                }
                row.totals.add(DayTotals {
                    payments: 1,
                    amount_minor,
                    declines: i64::from(decision.outcome == Outcome::Decline),
                });
                touched.push(key);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let row = held.get_mut(&key).expect("touched rows are held");
            row.version = version;
            writes.aggregates.push(AggregateRow {
                entity: key.0,
                day: key.1,
                source_partition: partition,
                totals: row.totals,
            });
        }
        if newest_day != i64::MIN {
            held.retain(|(_, day), _| *day >= newest_day - HISTORY_DAYS_HELD);
        }
        Ok(writes)
    }

    /// Forgets every held row (after a failed write: the store is the truth again).
    fn forget(&mut self) {
        self.held.clear();
    }
}

/// Runs until the workers finish and everything committed before has been stored.
pub(crate) fn run_history_sink(run: &RunContext<'_>, store: &mut dyn HistoryStore) -> Result<(), RuntimeError> {
    let log = run.log;
    let topic = &run.topics.decisions;
    let mut positions = Vec::with_capacity(topic.partitions as usize);
    let mut registration = Transaction::new();
    for partition in 0..topic.partitions {
        let start = log.offsets(topic, partition)?.start;
        let position = match log.committed_position(HISTORY_SINK_GROUP, topic, partition)? {
            Some(position) if position < start => {
                return Err(RuntimeError::Restore {
                    partition,
                    why: format!(
                        "the history store has {} up to offset {position} but the log starts at {start}: decisions \
                         were deleted by retention before they were stored",
                        topic.name
                    ),
                });
            }
            Some(position) => position,
            None => {
                registration.set_position(HISTORY_SINK_GROUP, topic, partition, start);
                start
            }
        };
        positions.push(position);
    }
    log.commit(registration)?;

    let mut sink = HistorySink::default();
    drive_sink(
        run,
        HISTORY_SINK_GROUP,
        &[topic],
        positions,
        SinkReporting {
            store: "history store",
            records: &run.metrics.history_sink_records,
            errors: &run.metrics.history_sink_errors,
            write_seconds: &run.metrics.history_sink_write_seconds,
        },
        |e| matches!(e, StorageError::Scylla { .. }),
        |_, partition, records, (_, to_offset)| {
            let mut decisions = Vec::with_capacity(records.len());
            for record in records {
                let decision = serde_json::from_slice::<Decision>(&record.value).map_err(|e| {
                    StorageError::InvalidRecord(format!(
                        "{} partition {partition} offset {} is not a valid decision: {e}",
                        topic.name, record.offset
                    ))
                })?;
                decisions.push((record.offset, decision));
            }
            let written = sink.slice(store, partition, &decisions, to_offset).and_then(|writes| {
                store.record_payments(&writes.history)?;
                store.write_aggregates(&writes.aggregates, writes.version)?;
                Ok(writes.history.len() as u64)
            });
            if written.is_err() {
                sink.forget(); // the store is the truth again: rows are read back
            }
            written
        },
    )
}
