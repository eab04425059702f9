//! The record sink: copies the committed `decisions` and `ledger` topics into a
//! [`RecordStore`] (PostgreSQL in production) exactly once.
//!
//! The store keeps, per topic partition, the offset it has applied through, updated in
//! the same database transaction as the rows ([`RecordStore::apply`]), so after a crash
//! the sink resumes from the store's positions and a slice applied twice is recognised.
//! The sink also commits those positions as consumer group [`RECORD_SINK_GROUP`] in the
//! log, so retention never deletes outputs the store has not received. It reads only
//! committed records and never blocks the workers; it lags them by at most a round.

use paystream_domain::{Decision, LedgerTransaction};
use paystream_storage::StorageError;
use paystream_storage::records::{OutputSlice, RecordStore, SliceApplied};

use super::sink_driver::{SinkReporting, drive_sink};
use crate::context::RunContext;
use crate::error::RuntimeError;
use crate::log::{Topic, Transaction};

/// Consumer group whose positions in the output topics mark what the store has.
pub const RECORD_SINK_GROUP: &str = "paystream-record-sink";

enum Kind {
    Decisions,
    Ledger,
}

/// Runs until the workers finish and everything committed before has been applied.
pub(crate) fn run_sink(run: &RunContext<'_>, store: &mut dyn RecordStore) -> Result<(), RuntimeError> {
    let (log, topics) = (run.log, run.topics);
    let inputs: Vec<(&Topic, Kind)> = vec![(&topics.decisions, Kind::Decisions), (&topics.ledger, Kind::Ledger)];
    let mut positions = Vec::new();
    let mut registration = Transaction::new();
    for (topic, _) in &inputs {
        for partition in 0..topic.partitions {
            let position = store.position(&topic.name, partition)?;
            let start = log.offsets(topic, partition)?.start;
            if position < start {
                return Err(RuntimeError::Restore {
                    partition,
                    why: format!(
                        "the record store has {} up to offset {position} but the log starts at {start}: outputs were deleted by retention before they were stored",
                        topic.name
                    ),
                });
            }
            registration.set_position(RECORD_SINK_GROUP, topic, partition, position);
            positions.push(position);
        }
    }
    log.commit(registration)?;

    drive_sink(
        run,
        RECORD_SINK_GROUP,
        &inputs.iter().map(|(topic, _)| *topic).collect::<Vec<_>>(),
        positions,
        SinkReporting {
            store: "record store",
            records: &run.metrics.sink_records,
            errors: &run.metrics.sink_errors,
            write_seconds: &run.metrics.sink_write_seconds,
        },
        |e| matches!(e, StorageError::Database { .. }),
        |input, partition, records, (from_offset, to_offset)| {
            let (topic, kind) = &inputs[input];
            let mut slice = OutputSlice {
                topic: topic.name.to_string(),
                partition,
                from_offset,
                to_offset,
                ..OutputSlice::default()
            };
            for record in records {
                let corrupt = |e: serde_json::Error| {
                    StorageError::InvalidRecord(format!(
                        "{} partition {partition} offset {} is not a valid output record: {e}",
                        topic.name, record.offset
                    ))
                };
                match kind {
                    Kind::Decisions => {
                        slice.decisions.push(serde_json::from_slice::<Decision>(&record.value).map_err(corrupt)?)
                    }
                    Kind::Ledger => {
                        slice.ledger.push(serde_json::from_slice::<LedgerTransaction>(&record.value).map_err(corrupt)?)
                    }
                }
            }
            // A replayed slice is recognised by the store and counts nothing.
            Ok(match store.apply(&slice)? {
                SliceApplied::Applied => records.len() as u64,
                _ => 0,
            })
        },
    )
}
