//! The loop every output sink runs: read committed records slice by slice from its
//! positions, hand each slice to the store, commit the new positions as the sink's
//! consumer group, and retry an unavailable store with backoff.

use std::time::{Duration, Instant};

use paystream_storage::StorageError;

use crate::context::RunContext;
use crate::error::RuntimeError;
use crate::limits::SINK_SLICE_RECORDS_MAX;
use crate::log::{Record, Topic, Transaction};

/// Pauses between attempts while the store is unavailable.
const SINK_BACKOFF_MIN: Duration = Duration::from_millis(100);
const SINK_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a sink keeps retrying an unavailable store once the workers have finished
/// (a run until idle): a passing timeout must not fail the run, a store that stays down
/// must not hold it forever.
const SINK_FINAL_RETRY: Duration = Duration::from_secs(30);

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
    pub write_seconds: &'a prometheus::Histogram,
}

/// The loop every output sink runs: from `positions` (one per partition of each input,
/// in order), read committed records slice by slice, hand each slice to `store` (input
/// index, partition, records, offsets `[from, to)` it covers — `from` is the position,
/// which may precede the first record, e.g. after Kafka transaction markers; it returns
/// how many records it stored), and commit the new positions as `group` once
/// per round. An error `unavailable` says is transient (the store is down) is retried
/// with backoff while the pipeline goes on — from the same slice, so `store` must take a
/// slice again idempotently; any other error ends the sink, and so does an unavailable
/// store still failing [`SINK_FINAL_RETRY`] after the workers finished. Returns when
/// they have finished and everything committed before has been stored.
pub(crate) fn drive_sink(
    run: &RunContext<'_>,
    group: &str,
    inputs: &[&Topic],
    mut positions: Vec<u64>,
    reporting: SinkReporting<'_>,
    unavailable: fn(&StorageError) -> bool,
    mut store: impl FnMut(usize, u32, &[Record], (u64, u64)) -> Result<u64, StorageError>,
) -> Result<(), RuntimeError> {
    let log = run.log;
    let mut backoff = SINK_BACKOFF_MIN;
    // Set at the first failure after the workers finished: when to stop retrying.
    let mut final_deadline: Option<Instant> = None;
    loop {
        // Read the flag first: a round that starts after it sees every committed output.
        let done = run.finishing();
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
                let started = std::time::Instant::now();
                let stored = store(input, partition, &records, (*position, to_offset));
                reporting.write_seconds.observe(started.elapsed().as_secs_f64());
                match stored {
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
            log.wait_for_commit(sequence, run.idle_wait());
        }
    }
}
