//! A partition's state across restarts: restore (snapshot, then the changelog after it)
//! and the final snapshot at shutdown. The snapshots taken while the worker runs are the
//! snapshotter's (`snapshotter.rs`).
//!
//! Each batch's `StateOp`s go to partition `p` of `paystream-changelog` in the batch's
//! transaction. A snapshot (`snapshots/<group>-p<partition>.<generation>.snapshot`)
//! holds a partition's state with the changelog offset it covers; the store keeps the
//! newest and the one before it, and the lowest offset they cover is committed as the
//! position of group [`SNAPSHOT_GROUP`], so retention keeps the changelog a restore
//! needs. Restore = load the newest snapshot that reads back whole (a torn or corrupt one
//! is skipped for the one before) + apply the changelog from its offset to the written
//! end; its time is bounded by the snapshot interval (`paystream_restore_seconds`). What
//! a partition's state holds is documented on `paystream_operators::PartitionState`.

use std::time::Instant;

use paystream_operators::PartitionProcessor;
use paystream_storage::Snapshot;

use super::task::{PartitionTask, WorkerContext};
use crate::error::RuntimeError;
use crate::log::{Topic, Transaction, read_to_written_end};

/// Consumer group whose positions in the changelog mark the oldest snapshot kept, so
/// retention keeps every changelog record a restore still needs.
pub const SNAPSHOT_GROUP: &str = "paystream-snapshots";

/// Changelog records read per fetch on restore and by the snapshotter.
pub(super) const CHANGELOG_FETCH_RECORDS_MAX: usize = 1_024;

pub(super) fn snapshot_name(group: &str, partition: u32) -> String {
    format!("{group}-p{partition}")
}

impl WorkerContext<'_> {
    /// Restores `processor`'s partition: its snapshot, then the changelog to the written
    /// end. Returns the changelog offset the state covers.
    pub(super) fn restore(&self, processor: &mut PartitionProcessor) -> Result<u64, RuntimeError> {
        let started = Instant::now();
        let (offset, ops) = self.load_state(processor)?;
        self.run.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            partition = processor.partition(),
            changelog_offset = offset,
            ops,
            seconds = started.elapsed().as_secs_f64(),
            "restored partition state"
        );
        Ok(offset)
    }

    /// Loads the partition's snapshot and applies the changelog after it, up to the
    /// written end. Returns the changelog offset reached and the ops applied.
    pub(super) fn load_state(&self, processor: &mut PartitionProcessor) -> Result<(u64, usize), RuntimeError> {
        let topics = self.run.topics;
        let partition = processor.partition();
        let changelog_start = self.run.log.offsets(&topics.changelog, partition)?.start;
        let mut offset = match self.run.snapshots.load(&snapshot_name(&self.run.config.group_id, partition))? {
            Some(snapshot) => {
                processor.restore_snapshot(&snapshot.state)?;
                snapshot.changelog_offset
            }
            None => 0,
        };
        if offset < changelog_start {
            return Err(RuntimeError::Restore {
                partition,
                why: format!("changelog starts at {changelog_start} but the snapshot covers only up to {offset}"),
            });
        }
        let mut ops = 0usize;
        // Every transaction its previous owner committed, markers written or not.
        let records_max = CHANGELOG_FETCH_RECORDS_MAX;
        offset = read_to_written_end(self.run.log, &topics.changelog, partition, offset, records_max, |record| {
            ops += processor.apply_changelog(&record.value)?;
            Ok::<(), RuntimeError>(())
        })?;
        Ok((offset, ops))
    }

    /// Snapshots every partition from the worker's own state, after its last batch is
    /// committed (shutdown): the snapshot covers the whole changelog.
    pub(super) fn snapshot(&self, tasks: &[PartitionTask]) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let topics = self.run.topics;
        let mut transaction = Transaction::new();
        for task in tasks {
            let partition = task.processor.partition();
            // After every record of this partition's committed batches (the committer has
            // finished), even where the log has not made them visible yet.
            let changelog_offset = self.run.log.written_end(&topics.changelog, partition)?;
            let state = task.processor.snapshot();
            let keep_from = self.save_snapshot(partition, Snapshot { changelog_offset, state })?;
            self.protect_changelog(&mut transaction, partition, keep_from);
        }
        self.run.log.commit(transaction)?;
        self.run.metrics.snapshot_wait_seconds.inc_by(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Saves a partition's snapshot. Returns the changelog offset from which the
    /// snapshots kept need the changelog.
    pub(super) fn save_snapshot(&self, partition: u32, snapshot: Snapshot) -> Result<u64, RuntimeError> {
        self.run.save_snapshot(&snapshot_name(&self.run.config.group_id, partition), &snapshot)
    }

    /// Commits, with `transaction`, the changelog position retention must keep for
    /// `partition` (where the log's retention consults positions).
    pub(super) fn protect_changelog(&self, transaction: &mut Transaction, partition: u32, keep_from: u64) {
        if self.run.log.retention_keeps_unread() {
            transaction.set_position(SNAPSHOT_GROUP, &self.run.topics.changelog, partition, keep_from);
        }
    }

    /// Where the group resumes reading `topic`'s `partition`: its committed position, or
    /// the log start; an error if retention deleted input it had not read.
    pub(super) fn start_position(&self, topic: &Topic, partition: u32) -> Result<u64, RuntimeError> {
        let offsets = self.run.log.offsets(topic, partition)?;
        let next_offset =
            self.run.log.committed_position(&self.run.config.group_id, topic, partition)?.unwrap_or(offsets.start);
        if next_offset < offsets.start {
            return Err(RuntimeError::Restore {
                partition,
                why: format!(
                    "committed position {next_offset} of {} is below the log start {}: input was lost to retention",
                    topic.name, offsets.start
                ),
            });
        }
        Ok(next_offset)
    }
}
