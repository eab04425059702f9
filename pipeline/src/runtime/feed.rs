//! The feed: a worker hands each batch's state ops for a partition to its snapshotter in
//! process, tagged with the changelog offset of the record that holds them, so the
//! standby copy need not read the changelog back and decode it.
//!
//! Only on a log with dense offsets ([`Log::dense_offsets`](crate::log::Log), the
//! embedded one), where the worker, the only writer of its partitions' changelog, knows
//! each record's offset: the offset after its restore, plus one per record since. The
//! snapshotter applies a batch only once its commit job is committed. The worker never
//! waits on the feed: a batch that finds it full (`snapshot_feed_batches_max`, by
//! default [`FEED_BATCHES_MAX`](crate::limits::FEED_BATCHES_MAX)) is dropped, and
//! the snapshotter, finding the gap before the next batch of that partition, reads the
//! missing records from the changelog.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use paystream_operators::state::StateOp;

/// One partition's state ops of one batch.
pub(super) struct FeedBatch {
    /// The partition's index among the worker's tasks.
    pub(super) task: usize,
    /// The changelog offset of the record holding these ops.
    pub(super) offset: u64,
    /// The commit job (1-based, in the order the worker submits them) that holds it.
    pub(super) job: u64,
    /// Bytes of the changelog record.
    pub(super) bytes: u64,
    pub(super) ops: Vec<StateOp>,
}

/// The worker's end of the feed.
pub(super) struct FeedSender {
    sender: Option<SyncSender<FeedBatch>>,
    /// Per task: the changelog offset its next record takes.
    next_offsets: Vec<u64>,
}

impl FeedSender {
    /// A feed from partitions restored up to `restored_offsets` (changelog offsets, by
    /// task) holding up to `batches_max` batches (`snapshot_feed_batches_max`); where
    /// offsets are not dense, [`FeedSender::none`].
    pub(super) fn new(restored_offsets: Vec<u64>, batches_max: usize) -> (FeedSender, Receiver<FeedBatch>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(batches_max);
        (FeedSender { sender: Some(sender), next_offsets: restored_offsets }, receiver)
    }

    pub(super) fn none() -> FeedSender {
        FeedSender { sender: None, next_offsets: Vec::new() }
    }

    /// Hands over the ops of the changelog record of `bytes` the worker just added for
    /// `task` to job `job`; drops them if the feed is full (the snapshotter reads them
    /// from the log).
    pub(super) fn send(&mut self, task: usize, job: u64, bytes: u64, ops: Vec<StateOp>) {
        let Some(sender) = &self.sender else { return };
        let offset = self.next_offsets[task];
        self.next_offsets[task] += 1;
        match sender.try_send(FeedBatch { task, offset, job, bytes, ops }) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.sender = None,
        }
    }
}
