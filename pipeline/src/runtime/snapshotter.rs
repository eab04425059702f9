//! The snapshotter: one thread per worker that snapshots the worker's partitions without
//! the worker ever waiting for it.
//!
//! It keeps a standby copy of each partition's state (as Kafka Streams' standby tasks
//! do): restored like the worker's own (snapshot + changelog), then fed each committed
//! batch's ops, which it applies with the same `PartitionState::apply` the worker ran.
//! On the embedded log the worker hands them over in process (`feed.rs`); on Kafka,
//! whose transaction markers make offsets unpredictable, the snapshotter tails the
//! partition's committed changelog. A standby copy is therefore always a
//! consistent cut, exactly the state after the changelog record it last applied, and a
//! snapshot of it records the offset after that record. It serializes and saves its copy
//! on this thread, while the worker goes on deciding.
//!
//! Snapshots are incremental in the way of a log-structured store: what changed since a
//! full snapshot is already durable in the changelog (written with each batch's
//! transaction), and the snapshotter compacts it into the next full snapshot in the
//! background once the changelog since the last holds both `snapshot_interval_batches`
//! records and `snapshot_changelog_min_percent` of the last snapshot's bytes. So writing
//! snapshots of a large state costs disk bandwidth in proportion to the changelog, not
//! to the state times the batch rate, and a restore reads one snapshot plus a bounded
//! changelog: at most the larger of those two amounts (more only while the snapshotter
//! lags, `paystream_snapshot_lag_records`).
//!
//! The cost: a second copy of each partition's state in memory, and the CPU to apply
//! every op twice. The thread runs at the lowest CPU priority ([`SNAPSHOTTER_NICE`]):
//! where it competes with workers for a core, the workers go first.
//!
//! The lowest changelog offset the kept snapshots need goes back to the worker
//! ([`KeptChangelog`]), which commits it as the snapshot group's position with its next
//! batch: the snapshotter itself never commits, so on Kafka it never touches the worker's
//! transactional producer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use paystream_operators::PartitionProcessor;
use paystream_storage::Snapshot;

use super::commit::CommitTracker;
use super::feed::FeedBatch;
use super::state::CHANGELOG_FETCH_RECORDS_MAX;
use super::task::WorkerContext;
use crate::config::PipelineConfig;
use crate::error::RuntimeError;
use crate::limits::LAG_UPDATE_INTERVAL;

/// How long the snapshotter waits at a time for a fed batch's commit (it looks at the
/// stop flag in between).
const FEED_COMMIT_WAIT: Duration = Duration::from_millis(10);

/// Per partition of a worker (by task index): the changelog offset from which the
/// snapshots kept need the changelog, published by the snapshotter after a save and
/// taken by the worker into its next transaction.
pub(super) struct KeptChangelog {
    offsets: Vec<AtomicU64>,
}

const NOT_CHANGED: u64 = u64::MAX;

/// The snapshotter thread's nice value (Linux: per thread), the lowest priority: it
/// gives way to workers, committers and the rest of the process wherever they compete.
pub(super) const SNAPSHOTTER_NICE: i32 = 19;

/// Lowers the calling thread's CPU priority to [`SNAPSHOTTER_NICE`].
fn give_way_to_workers() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their arguments; a thread id is a
        // valid PRIO_PROCESS target on Linux, where nice values are per thread.
        let failed = unsafe {
            let thread = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, SNAPSHOTTER_NICE) != 0
        };
        if failed {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the snapshotter's priority");
        }
    }
}

impl KeptChangelog {
    pub(super) fn new(partitions: usize) -> KeptChangelog {
        KeptChangelog { offsets: (0..partitions).map(|_| AtomicU64::new(NOT_CHANGED)).collect() }
    }

    fn publish(&self, task: usize, keep_from: u64) {
        self.offsets[task].store(keep_from, Ordering::Release);
    }

    /// The offset published for `task` since the last call, if any.
    pub(super) fn take(&self, task: usize) -> Option<u64> {
        let offset = self.offsets[task].swap(NOT_CHANGED, Ordering::AcqRel);
        (offset != NOT_CHANGED).then_some(offset)
    }
}

/// A standby copy of one partition's state.
struct Standby {
    processor: PartitionProcessor,
    /// The changelog offset after the last record applied.
    offset: u64,
    /// Changelog records and bytes applied since the last snapshot.
    since_snapshot: u32,
    since_snapshot_bytes: u64,
    /// Bytes of the last snapshot taken here (0 before the first).
    snapshot_bytes: u64,
}

impl Standby {
    /// Whether the changelog since the last snapshot calls for the next.
    fn due(&self, config: &PipelineConfig) -> bool {
        let bytes_min = self.snapshot_bytes.saturating_mul(u64::from(config.snapshot_changelog_min_percent)) / 100;
        self.since_snapshot >= config.snapshot_interval_batches && self.since_snapshot_bytes >= bytes_min
    }
}

impl WorkerContext<'_> {
    /// Restores a standby copy of each of `partitions`, then follows their changelog (from
    /// `feed` where there is one, else from the log) and snapshots them until `stop` is set.
    pub(super) fn snapshot_loop(
        &self,
        partitions: &[u32],
        kept: &KeptChangelog,
        feed: Option<Receiver<FeedBatch>>,
        tracker: &CommitTracker,
        stop: &AtomicBool,
    ) -> Result<(), RuntimeError> {
        give_way_to_workers();
        let (_, model) = self.model.current();
        let mut standbys = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let mut processor = PartitionProcessor::new(self.operator_config.clone(), model.clone(), partition);
            let (offset, _) = self.load_state(&mut processor)?;
            standbys.push(Standby { processor, offset, since_snapshot: 0, since_snapshot_bytes: 0, snapshot_bytes: 0 });
        }
        let mut lag_updated: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            match &feed {
                Some(feed) => self.follow_feed(feed, &mut standbys, kept, tracker, stop)?,
                None => self.follow_log(&mut standbys, kept)?,
            }
            if lag_updated.is_none_or(|at| at.elapsed() >= LAG_UPDATE_INTERVAL) {
                self.update_snapshot_lag(&standbys)?;
                lag_updated = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Applies the next batch of the feed once it is committed (waiting at most the idle
    /// wait for one), after reading from the log what the feed dropped before it.
    fn follow_feed(
        &self,
        feed: &Receiver<FeedBatch>,
        standbys: &mut [Standby],
        kept: &KeptChangelog,
        tracker: &CommitTracker,
        stop: &AtomicBool,
    ) -> Result<(), RuntimeError> {
        let batch = match feed.recv_timeout(Duration::from_millis(self.run.config.idle_wait_ms)) {
            Ok(batch) => batch,
            Err(_) => return Ok(()), // nothing yet, or the worker is done: see `stop`
        };
        // Never ahead of the durable changelog: wait for the batch's commit.
        loop {
            match tracker.wait_for_timeout(batch.job, FEED_COMMIT_WAIT) {
                Ok(true) => break,
                Ok(false) if !stop.load(Ordering::Acquire) => continue,
                // Stopping before it committed, or the committer failed (its error is the run's).
                _ => return Ok(()),
            }
        }
        let standby = &mut standbys[batch.task];
        if batch.offset < standby.offset {
            return Ok(()); // restored with it already
        }
        // The feed was full: what it dropped before this batch is in the log, committed.
        let (log, changelog) = (self.run.log, &self.run.topics.changelog);
        let partition = standby.processor.partition();
        while standby.offset < batch.offset {
            let missing = (batch.offset - standby.offset).min(CHANGELOG_FETCH_RECORDS_MAX as u64) as usize;
            let records = log.fetch(changelog, partition, standby.offset, missing)?;
            if records.is_empty() {
                return Err(RuntimeError::Restore {
                    partition,
                    why: format!("changelog offset {} of a committed batch is not in the log", standby.offset),
                });
            }
            for record in records.iter().take_while(|r| r.offset < batch.offset) {
                standby.processor.apply_changelog(&record.value)?;
                self.applied(standby, batch.task, record.offset + 1, record.value.len() as u64, kept)?;
            }
        }
        standby.processor.apply_ops(&batch.ops);
        self.applied(standby, batch.task, batch.offset + 1, batch.bytes, kept)
    }

    /// Applies what the log holds after each standby copy, up to
    /// [`CHANGELOG_FETCH_RECORDS_MAX`] records a partition; waits for a commit if none.
    fn follow_log(&self, standbys: &mut [Standby], kept: &KeptChangelog) -> Result<(), RuntimeError> {
        let (log, topics) = (self.run.log, self.run.topics);
        let sequence = log.commit_sequence();
        let mut read_any = false;
        for (task, standby) in standbys.iter_mut().enumerate() {
            let partition = standby.processor.partition();
            let records = log.fetch(&topics.changelog, partition, standby.offset, CHANGELOG_FETCH_RECORDS_MAX)?;
            for record in &records {
                standby.processor.apply_changelog(&record.value)?;
                self.applied(standby, task, record.offset + 1, record.value.len() as u64, kept)?;
            }
            read_any |= !records.is_empty();
            standby.offset = log.resume_offset(&topics.changelog, partition, standby.offset);
        }
        if !read_any {
            log.wait_for_commit(sequence, Duration::from_millis(self.run.config.idle_wait_ms));
        }
        Ok(())
    }

    /// Counts a changelog record of `bytes` applied to `standby` (now at `next_offset`),
    /// and snapshots it if that makes a snapshot due.
    fn applied(
        &self,
        standby: &mut Standby,
        task: usize,
        next_offset: u64,
        bytes: u64,
        kept: &KeptChangelog,
    ) -> Result<(), RuntimeError> {
        standby.offset = next_offset;
        standby.since_snapshot += 1;
        standby.since_snapshot_bytes += bytes;
        if standby.due(self.run.config) {
            let state = standby.processor.snapshot();
            standby.snapshot_bytes = state.len() as u64;
            let partition = standby.processor.partition();
            let keep_from = self.save_snapshot(partition, Snapshot { changelog_offset: standby.offset, state })?;
            kept.publish(task, keep_from);
            (standby.since_snapshot, standby.since_snapshot_bytes) = (0, 0);
        }
        Ok(())
    }

    fn update_snapshot_lag(&self, standbys: &[Standby]) -> Result<(), RuntimeError> {
        let changelog = &self.run.topics.changelog;
        for standby in standbys {
            let partition = standby.processor.partition();
            let end = self.run.log.offsets(changelog, partition)?.end;
            self.run
                .metrics
                .snapshot_lag_records
                .with_label_values(&[&partition.to_string()])
                .set(end.saturating_sub(standby.offset) as i64);
        }
        Ok(())
    }
}
