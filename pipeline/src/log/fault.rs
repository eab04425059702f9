//! Fault injection for tests and simulations: a [`Log`] that behaves like the one it
//! wraps until a chosen commit, and from then on fails every commit *before* it reaches
//! the log — what a process dying between two transactions leaves behind.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{Log, LogError, PartitionOffsets, Record, Topic, Transaction};

pub struct CommitFault<L> {
    pub inner: L,
    /// Commits still allowed; at zero and below every commit fails.
    pub commits_left: AtomicI64,
    /// Says offsets are not dense even where they are (so the runtime takes the paths
    /// it takes on Kafka: snapshotters read the changelog back).
    pub sparse_offsets: bool,
}

impl<L: Log> CommitFault<L> {
    /// Fails from commit number `commits + 1` on.
    pub fn after(inner: L, commits: i64) -> CommitFault<L> {
        CommitFault { inner, commits_left: AtomicI64::new(commits), sparse_offsets: false }
    }

    /// Says offsets are not dense, whatever the log wrapped.
    pub fn with_sparse_offsets(mut self) -> CommitFault<L> {
        self.sparse_offsets = true;
        self
    }

    /// Fails every commit from now on.
    pub fn fail_now(&self) {
        self.commits_left.store(0, Ordering::SeqCst);
    }
}

impl<L: Log> Log for CommitFault<L> {
    fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, LogError> {
        self.inner.create_topic(name, partitions)
    }
    fn topic(&self, name: &str) -> Result<Topic, LogError> {
        self.inner.topic(name)
    }
    fn topics(&self) -> Vec<Topic> {
        self.inner.topics()
    }
    fn fetch(&self, topic: &Topic, partition: u32, offset: u64, records_max: usize) -> Result<Vec<Record>, LogError> {
        self.inner.fetch(topic, partition, offset, records_max)
    }
    fn offsets(&self, topic: &Topic, partition: u32) -> Result<PartitionOffsets, LogError> {
        self.inner.offsets(topic, partition)
    }
    fn written_end(&self, topic: &Topic, partition: u32) -> Result<u64, LogError> {
        self.inner.written_end(topic, partition)
    }
    fn resume_offset(&self, topic: &Topic, partition: u32, offset: u64) -> u64 {
        self.inner.resume_offset(topic, partition, offset)
    }
    fn offset_for_time(&self, topic: &Topic, partition: u32, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        self.inner.offset_for_time(topic, partition, timestamp_ms)
    }
    fn committed_position(&self, group: &str, topic: &Topic, partition: u32) -> Result<Option<u64>, LogError> {
        self.inner.committed_position(group, topic, partition)
    }
    fn refresh_positions(&self) -> Result<(), LogError> {
        self.inner.refresh_positions()
    }
    fn retention_keeps_unread(&self) -> bool {
        self.inner.retention_keeps_unread()
    }
    fn commit(&self, transaction: Transaction) -> Result<(), LogError> {
        // A transaction that writes nothing is no commit to die before.
        if !transaction.is_empty() && self.commits_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(LogError::Poisoned("injected fault: the process died before this commit".into()));
        }
        self.inner.commit(transaction)
    }
    fn dense_offsets(&self) -> bool {
        !self.sparse_offsets && self.inner.dense_offsets()
    }
    fn commit_sequence(&self) -> u64 {
        self.inner.commit_sequence()
    }
    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64 {
        self.inner.wait_for_commit(seen, timeout)
    }
}
