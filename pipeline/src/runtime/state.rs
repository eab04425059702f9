//! A partition's state across restarts: restore (snapshot, then the changelog after it)
//! and snapshot (the state with the changelog position it covers).
//!
//! Each batch's `StateOp`s go to partition `p` of `paystream-changelog` in the batch's
//! transaction. Every `snapshot_interval_batches`, and on shutdown, the worker waits for
//! its in-flight commits, writes each partition's snapshot
//! (`snapshots/<group>-p<partition>.snapshot`, with the changelog offset it covers) and
//! commits that offset as the position of group [`SNAPSHOT_GROUP`], so retention keeps
//! the changelog a restore needs. Restore = load the snapshot + apply the changelog from
//! its offset to the written end; its time is bounded by the snapshot interval
//! (`paystream_restore_seconds`). What a partition's state holds is documented on
//! `paystream_operators::PartitionState`.

use std::time::Instant;

use paystream_operators::PartitionProcessor;
use paystream_storage::Snapshot;

use super::task::{PartitionTask, WorkerContext};
use crate::error::RuntimeError;
use crate::log::{Topic, Transaction, read_to_written_end};

/// Consumer group whose positions in the changelog mark the last snapshot, so retention
/// keeps every changelog record a restore still needs.
pub const SNAPSHOT_GROUP: &str = "paystream-snapshots";

pub(super) fn snapshot_name(group: &str, partition: u32) -> String {
    format!("{group}-p{partition}")
}

impl WorkerContext<'_> {
    pub(super) fn restore(&self, processor: &mut PartitionProcessor) -> Result<(), RuntimeError> {
        let topics = self.run.topics;
        let started = Instant::now();
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
        offset = read_to_written_end(self.run.log, &topics.changelog, partition, offset, 1_024, |record| {
            ops += processor.apply_changelog(&record.value)?;
            Ok::<(), RuntimeError>(())
        })?;
        self.run.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            partition,
            changelog_offset = offset,
            ops,
            seconds = started.elapsed().as_secs_f64(),
            "restored partition state"
        );
        Ok(())
    }

    pub(super) fn snapshot(&self, tasks: &[PartitionTask]) -> Result<(), RuntimeError> {
        let topics = self.run.topics;
        // The snapshot group's positions only keep retention off the changelog still needed.
        let protect_changelog = self.run.log.retention_keeps_unread();
        let mut transaction = Transaction::new();
        for task in tasks {
            let started = Instant::now();
            let partition = task.processor.partition();
            // After every record of this partition's committed batches (the worker waited
            // for its commits), even where the log has not made them visible yet.
            let changelog_offset = self.run.log.written_end(&topics.changelog, partition)?;
            let snapshot = Snapshot { changelog_offset, state: task.processor.snapshot() };
            self.run.snapshots.save(&snapshot_name(&self.run.config.group_id, partition), &snapshot)?;
            if protect_changelog {
                transaction.set_position(SNAPSHOT_GROUP, &topics.changelog, partition, changelog_offset);
            }
            self.run.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.run.log.commit(transaction)?;
        Ok(())
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
