//! The record sink: copies the committed `decisions` and `ledger` topics into a
//! [`RecordStore`] (PostgreSQL in production) exactly once.
//!
//! The store keeps, per topic partition, the offset it has applied through, updated in
//! the same database transaction as the rows ([`RecordStore::apply`]), so after a crash
//! the sink resumes from the store's positions and a slice applied twice is recognised.
//! The sink also commits those positions as consumer group [`RECORD_SINK_GROUP`] in the
//! log, so retention never deletes outputs the store has not received. It reads only
//! committed records and never blocks the workers; it lags them by at most a round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use paystream_domain::{Decision, LedgerTransaction};
use paystream_storage::StorageError;
use paystream_storage::records::{OutputSlice, RecordStore, SliceApplied};

use crate::log::{Topic, Transaction};
use crate::runtime::{Pipeline, PipelineTopics, RunControl, RuntimeError};

/// Consumer group whose positions in the output topics mark what the store has.
pub const RECORD_SINK_GROUP: &str = "paystream-record-sink";
/// Most records per slice (one database transaction).
pub const SINK_SLICE_RECORDS_MAX: usize = 4_096;
/// Pauses between attempts while the store is unavailable.
const SINK_BACKOFF_MIN: Duration = Duration::from_millis(100);
const SINK_BACKOFF_MAX: Duration = Duration::from_secs(5);

enum Kind {
    Decisions,
    Ledger,
}

/// Runs until `finished` is set and everything committed before has been applied.
pub(crate) fn run_sink(
    pipeline: &Pipeline,
    topics: &PipelineTopics,
    store: &mut dyn RecordStore,
    control: &RunControl,
    finished: &AtomicBool,
) -> Result<(), RuntimeError> {
    let log = pipeline.log.as_ref();
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

    let mut backoff = SINK_BACKOFF_MIN;
    loop {
        // Read the flag first: a round that starts after it sees every committed output.
        let done = finished.load(Ordering::SeqCst) || control.stopped();
        let sequence = log.commit_sequence();
        let mut read_any = false;
        let mut progress = Transaction::new();
        let mut slot = 0;
        'inputs: for (topic, kind) in &inputs {
            for partition in 0..topic.partitions {
                let position = &mut positions[slot];
                slot += 1;
                let records = log.fetch(topic, partition, *position, SINK_SLICE_RECORDS_MAX)?;
                let Some(last) = records.last() else { continue };
                let mut slice = OutputSlice {
                    topic: topic.name.to_string(),
                    partition,
                    from_offset: *position,
                    to_offset: last.offset + 1,
                    ..OutputSlice::default()
                };
                for record in &records {
                    let corrupt = |e: serde_json::Error| RuntimeError::Restore {
                        partition,
                        why: format!("{} offset {} is not a valid output record: {e}", topic.name, record.offset),
                    };
                    match kind {
                        Kind::Decisions => {
                            slice.decisions.push(serde_json::from_slice::<Decision>(&record.value).map_err(corrupt)?)
                        }
                        Kind::Ledger => slice
                            .ledger
                            .push(serde_json::from_slice::<LedgerTransaction>(&record.value).map_err(corrupt)?),
                    }
                }
                let applied = match store.apply(&slice) {
                    Ok(applied) => applied,
                    // The database is down or restarting: the outputs wait in the log
                    // (retention keeps them), the pipeline goes on; retry with backoff.
                    Err(error @ StorageError::Database { .. }) if !done => {
                        pipeline.metrics.sink_errors.inc();
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "record store unavailable");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(SINK_BACKOFF_MAX);
                        read_any = true; // not idle: try again at once after the pause
                        break 'inputs;
                    }
                    Err(error) => return Err(error.into()),
                };
                backoff = SINK_BACKOFF_MIN;
                if applied == SliceApplied::Applied {
                    pipeline.metrics.sink_records.inc_by(records.len() as u64);
                }
                *position = slice.to_offset;
                progress.set_position(RECORD_SINK_GROUP, topic, partition, *position);
                read_any = true;
            }
        }
        if !progress.is_empty() {
            log.commit(progress)?;
        }
        if done && !read_any {
            return Ok(());
        }
        if !read_any {
            log.wait_for_commit(sequence, Duration::from_millis(pipeline.config.idle_wait_ms));
        }
    }
}
