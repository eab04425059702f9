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
use std::time::{Duration, Instant};

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
/// How long a sink keeps retrying an unavailable store once the workers have finished
/// (a run until idle): a passing timeout must not fail the run, a store that stays down
/// must not hold it forever.
const SINK_FINAL_RETRY: Duration = Duration::from_secs(30);

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

    drive_sink(
        pipeline,
        RECORD_SINK_GROUP,
        &inputs.iter().map(|(topic, _)| *topic).collect::<Vec<_>>(),
        positions,
        SinkReporting {
            store: "record store",
            records: &pipeline.metrics.sink_records,
            errors: &pipeline.metrics.sink_errors,
        },
        |e| matches!(e, StorageError::Database { .. }),
        control,
        finished,
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

/// Whether an unavailable store may be retried: always while the workers run, for
/// [`SINK_FINAL_RETRY`] from the first failure after they finished.
fn may_retry(done: bool, final_deadline: &mut Option<Instant>) -> bool {
    !done || *final_deadline.get_or_insert_with(|| Instant::now() + SINK_FINAL_RETRY) > Instant::now()
}

/// How a sink reports: its store's name (in logs), records stored, failed attempts.
pub(crate) struct SinkReporting<'a> {
    pub store: &'static str,
    pub records: &'a prometheus::IntCounter,
    pub errors: &'a prometheus::IntCounter,
}

/// The loop every output sink runs: from `positions` (one per partition of each input,
/// in order), read committed records slice by slice, hand each slice to `store` (input
/// index, partition, records, offsets `[from, to)` it covers — `from` is the position,
/// which may precede the first record, e.g. after Kafka transaction markers; it returns
/// how many records it stored), and commit the new positions as `group` once
/// per round. An error `unavailable` says is transient (the store is down) is retried
/// with backoff while the pipeline goes on — from the same slice, so `store` must take a
/// slice again idempotently; any other error ends the sink, and so does an unavailable
/// store still failing [`SINK_FINAL_RETRY`] after `finished` was set. Returns when
/// `finished` is set and everything committed before has been stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive_sink(
    pipeline: &Pipeline,
    group: &str,
    inputs: &[&Topic],
    mut positions: Vec<u64>,
    reporting: SinkReporting<'_>,
    unavailable: fn(&StorageError) -> bool,
    control: &RunControl,
    finished: &AtomicBool,
    mut store: impl FnMut(usize, u32, &[crate::log::Record], (u64, u64)) -> Result<u64, StorageError>,
) -> Result<(), RuntimeError> {
    let log = pipeline.log.as_ref();
    let mut backoff = SINK_BACKOFF_MIN;
    // Set at the first failure after `finished`: when to stop retrying.
    let mut final_deadline: Option<Instant> = None;
    loop {
        // Read the flag first: a round that starts after it sees every committed output.
        let done = finished.load(Ordering::SeqCst) || control.stopped();
        let sequence = log.commit_sequence();
        let mut read_any = false;
        let mut progress = Transaction::new();
        let mut slot = 0;
        'inputs: for (input, topic) in inputs.iter().enumerate() {
            for partition in 0..topic.partitions {
                let position = &mut positions[slot];
                slot += 1;
                let records = log.fetch(topic, partition, *position, SINK_SLICE_RECORDS_MAX)?;
                let Some(last) = records.last() else { continue };
                let to_offset = last.offset + 1;
                match store(input, partition, &records, (*position, to_offset)) {
                    Ok(stored) => {
                        backoff = SINK_BACKOFF_MIN;
                        reporting.records.inc_by(stored);
                    }
                    // The store is down or restarting: the outputs wait in the log
                    // (retention keeps them), the pipeline goes on; retry with backoff.
                    Err(error) if unavailable(&error) && may_retry(done, &mut final_deadline) => {
                        reporting.errors.inc();
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "{} unavailable", reporting.store);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(SINK_BACKOFF_MAX);
                        read_any = true; // not idle: try again at once after the pause
                        break 'inputs;
                    }
                    Err(error) => return Err(error.into()),
                }
                *position = to_offset;
                progress.set_position(group, topic, partition, to_offset);
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
