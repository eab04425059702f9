//! The log abstraction: Kafka's model of topics, partitions and offsets, with one atomic
//! commit of (output records + consumer positions). Operator state changes travel as
//! records of a changelog topic, so they are part of the same commit.
//!
//! Contract of every [`Log`] implementation:
//! - A topic has a fixed number of partitions; a record's partition is
//!   [`partitioner::partition_for_key`] of its key unless the producer names one.
//! - Offsets in a partition are dense and increase by one per record.
//! - [`Log::commit`] is all or nothing: after it returns Ok, every record and position of
//!   the transaction is durable; after a crash at any moment, either all of a
//!   transaction is visible or none of it. Readers MUST NOT see uncommitted records.
//! - Consumer positions are the next offset to read, per (group, topic, partition).

pub mod embedded;
pub mod fault;
pub mod kafka;
pub mod partitioner;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub use crate::limits::{OPEN_TRANSACTION_WAIT_MS_MAX, RECORD_BYTES_MAX};
/// Bytes of a record's header in a transaction buffer: timestamp, key and value lengths.
pub const RECORD_HEADER_BYTES: usize = 16;

#[derive(Debug, Error)]
pub enum LogError {
    /// External: the disk or the broker failed. Retrying after a restart may help.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// Internal: stored bytes fail their checksum or do not parse.
    #[error("log data is corrupt: {0}")]
    Corrupt(String),
    /// The caller's fault.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition { topic: String, partition: u32, partitions: u32 },
    #[error("topic {topic:?} exists with {existing} partitions, not {requested}")]
    TopicExists { topic: String, existing: u32, requested: u32 },
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    #[error("offset {requested} of {topic}/{partition} is out of range [{start}, {end}]")]
    OffsetOutOfRange { topic: String, partition: u32, requested: u64, start: u64, end: u64 },
    #[error("data directory {0} is in use by another paystream process")]
    Locked(String),
    #[error("the log was opened read-only")]
    ReadOnly,
    #[error("the log failed earlier and refuses writes until restarted: {0}")]
    Poisoned(String),
    /// External: a Kafka request failed.
    #[error("{context}: {source}")]
    Kafka { context: String, source: rdkafka::error::KafkaError },
    /// Another process opened the log with the same transactional ids: this one is a
    /// zombie and may not write again.
    #[error("fenced: another paystream process took over this one's transactional id ({0})")]
    Fenced(String),
}

impl LogError {
    pub fn offset_out_of_range(topic: &Topic, partition: u32, requested: u64, offsets: PartitionOffsets) -> LogError {
        LogError::OffsetOutOfRange {
            topic: topic.name.to_string(),
            partition,
            requested,
            start: offsets.start,
            end: offsets.end,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
        let context = context.into();
        move |source| LogError::Io { context, source }
    }
}

/// A topic: its name and partition count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Topic {
    pub name: Arc<str>,
    pub partitions: u32,
}

impl Topic {
    /// `UnknownPartition` unless `partition` is one of the topic's.
    pub fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        if partition >= self.partitions {
            return Err(LogError::UnknownPartition {
                topic: self.name.to_string(),
                partition,
                partitions: self.partitions,
            });
        }
        Ok(())
    }
}

/// A committed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Milliseconds since the epoch set by the producer (Kafka's CreateTime).
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub value: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The oldest offset still stored (retention moves it).
    pub start: u64,
    /// One past the newest committed offset (Kafka's high watermark).
    pub end: u64,
}

/// Bytes reserved at the front of every [`PartitionBatch`] so a log can put its frame
/// header there and write the batch without copying it (the embedded log uses all of it).
pub const BATCH_HEADER_RESERVED_BYTES: usize = 37;

/// Records for one partition inside a transaction, encoded back to back as
/// `timestamp i64 | key length u32 | value length u32 | key | value` (little endian),
/// after [`BATCH_HEADER_RESERVED_BYTES`] reserved bytes.
#[derive(Debug)]
pub struct PartitionBatch {
    pub count: u32,
    bytes: Vec<u8>,
    /// The latest timestamp of its records (`i64::MIN` while it has none).
    max_timestamp_ms: i64,
}

impl Default for PartitionBatch {
    fn default() -> Self {
        PartitionBatch { count: 0, bytes: vec![0; BATCH_HEADER_RESERVED_BYTES], max_timestamp_ms: i64::MIN }
    }
}

impl PartitionBatch {
    /// The latest timestamp of its records (`i64::MIN` while it has none).
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter { bytes: self.records_bytes() }
    }

    /// The encoded records, without the reserved header.
    pub fn records_bytes(&self) -> &[u8] {
        &self.bytes[BATCH_HEADER_RESERVED_BYTES..]
    }

    /// The whole buffer, reserved header first, for a log to fill in and write.
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

/// Iterates encoded records as (timestamp, key, value).
pub struct RecordIter<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordIter<'a> {
    pub fn new(bytes: &'a [u8]) -> RecordIter<'a> {
        RecordIter { bytes }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = (i64, &'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (header, rest) = self.bytes.split_at_checked(RECORD_HEADER_BYTES)?;
        let timestamp = i64::from_le_bytes(header[0..8].try_into().ok()?);
        let key_len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
        let value_len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
        let (key, rest) = rest.split_at_checked(key_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        self.bytes = rest;
        Some((timestamp, key, value))
    }
}

/// A consumer position to commit: the next offset `group` will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerPosition {
    pub group: String,
    pub topic: Arc<str>,
    pub partition: u32,
    pub next_offset: u64,
}

/// Everything one commit makes durable at once.
#[derive(Debug, Default)]
pub struct Transaction {
    batches: Vec<(Topic, u32, PartitionBatch)>,
    positions: Vec<ConsumerPosition>,
    bytes: usize,
}

impl Transaction {
    pub fn new() -> Transaction {
        Transaction::default()
    }

    fn batch(&mut self, topic: &Topic, partition: u32) -> &mut PartitionBatch {
        let found = self
            .batches
            .iter()
            .position(|(t, p, _)| *p == partition && (Arc::ptr_eq(&t.name, &topic.name) || t.name == topic.name));
        let index = match found {
            Some(index) => index,
            None => {
                self.batches.push((topic.clone(), partition, PartitionBatch::default()));
                self.batches.len() - 1
            }
        };
        &mut self.batches[index].2
    }

    /// Adds a record to the partition its key hashes to; the value is written by `write`.
    pub fn send_with<E>(
        &mut self,
        topic: &Topic,
        key: &[u8],
        timestamp_ms: i64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<LogError>,
    {
        let partition = partitioner::partition_for_key(key, topic.partitions);
        self.send_to_partition_with(topic, partition, key, timestamp_ms, write)
    }

    /// Adds a record to a given partition; the value is written by `write`.
    pub fn send_to_partition_with<E>(
        &mut self,
        topic: &Topic,
        partition: u32,
        key: &[u8],
        timestamp_ms: i64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<LogError>,
    {
        topic.check_partition(partition)?;
        let batch = self.batch(topic, partition);
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(&timestamp_ms.to_le_bytes());
        batch.bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        batch.bytes.extend_from_slice(&[0; 4]);
        batch.bytes.extend_from_slice(key);
        let value_start = batch.bytes.len();
        if let Err(error) = write(&mut batch.bytes) {
            batch.bytes.truncate(start);
            return Err(error);
        }
        let value_len = batch.bytes.len() - value_start;
        if key.len() + value_len > RECORD_BYTES_MAX {
            batch.bytes.truncate(start);
            return Err(LogError::RecordTooLarge { bytes: key.len() + value_len, limit: RECORD_BYTES_MAX }.into());
        }
        batch.bytes[start + 12..start + 16].copy_from_slice(&(value_len as u32).to_le_bytes());
        batch.count += 1;
        batch.max_timestamp_ms = batch.max_timestamp_ms.max(timestamp_ms);
        self.bytes += batch.bytes.len() - start;
        Ok(())
    }

    /// Adds a record with a ready value to the partition its key hashes to.
    pub fn send(&mut self, topic: &Topic, key: &[u8], value: &[u8], timestamp_ms: i64) -> Result<(), LogError> {
        self.send_with(topic, key, timestamp_ms, |buf| {
            buf.extend_from_slice(value);
            Ok::<(), LogError>(())
        })
    }

    pub fn send_to_partition(
        &mut self,
        topic: &Topic,
        partition: u32,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        self.send_to_partition_with(topic, partition, key, timestamp_ms, |buf| {
            buf.extend_from_slice(value);
            Ok::<(), LogError>(())
        })
    }

    /// Commits `group`'s position in `topic`/`partition` with this transaction.
    pub fn set_position(&mut self, group: &str, topic: &Topic, partition: u32, next_offset: u64) {
        self.positions.retain(|p| !(p.group == group && p.partition == partition && p.topic == topic.name));
        self.positions.push(ConsumerPosition {
            group: group.to_string(),
            topic: topic.name.clone(),
            partition,
            next_offset,
        });
    }

    pub fn record_count(&self) -> u64 {
        self.batches.iter().map(|(_, _, b)| u64::from(b.count)).sum()
    }

    /// Encoded bytes of all records so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.positions.is_empty()
    }

    pub fn batches(&self) -> &[(Topic, u32, PartitionBatch)] {
        &self.batches
    }

    pub(crate) fn batches_mut(&mut self) -> &mut [(Topic, u32, PartitionBatch)] {
        &mut self.batches
    }

    pub fn positions(&self) -> &[ConsumerPosition] {
        &self.positions
    }
}

/// The counter behind [`Log::commit_sequence`] and [`Log::wait_for_commit`].
#[derive(Debug, Default)]
pub struct CommitSequence {
    sequence: std::sync::Mutex<u64>,
    changed: std::sync::Condvar,
}

impl CommitSequence {
    /// One more commit; wakes the waiters.
    pub fn advance(&self) {
        *self.sequence.lock().expect("commit sequence lock") += 1;
        self.changed.notify_all();
    }

    pub fn get(&self) -> u64 {
        *self.sequence.lock().expect("commit sequence lock")
    }

    /// Waits until the sequence passes `seen` or `timeout` elapses; returns it.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let sequence = self.sequence.lock().expect("commit sequence lock");
        let (sequence, _) =
            self.changed.wait_timeout_while(sequence, timeout, |s| *s <= seen).expect("commit sequence lock");
        *sequence
    }
}

/// Reads `partition` of `topic` from `offset` to its [`Log::written_end`] as of the
/// call, handing every committed record to `visit` (the log skips aborted ones); waits
/// while transactions still open, or committed with their markers not yet written, hide
/// the rest (at most [`OPEN_TRANSACTION_WAIT_MS_MAX`]). Returns where reading stopped.
pub fn read_to_written_end<E: From<LogError>>(
    log: &dyn Log,
    topic: &Topic,
    partition: u32,
    offset: u64,
    records_max: usize,
    visit: impl FnMut(&Record) -> Result<(), E>,
) -> Result<u64, E> {
    let until = log.written_end(topic, partition)?;
    let wait_max = Duration::from_millis(OPEN_TRANSACTION_WAIT_MS_MAX);
    read_until(log, topic, partition, offset, until, wait_max, records_max, visit)
}

/// Reads `partition` of `topic` from `offset` until `until`, handing every committed
/// record to `visit`; waits at most `wait_max` while records before `until` stay hidden
/// (an open transaction, or markers not yet written). Returns where reading stopped.
#[allow(clippy::too_many_arguments)]
pub fn read_until<E: From<LogError>>(
    log: &dyn Log,
    topic: &Topic,
    partition: u32,
    mut offset: u64,
    until: u64,
    wait_max: Duration,
    records_max: usize,
    mut visit: impl FnMut(&Record) -> Result<(), E>,
) -> Result<u64, E> {
    let deadline = std::time::Instant::now() + wait_max;
    loop {
        let records = log.fetch(topic, partition, offset, records_max)?;
        if let Some(last) = records.last() {
            offset = last.offset + 1;
            records.iter().try_for_each(&mut visit)?;
            continue;
        }
        offset = log.resume_offset(topic, partition, offset);
        if offset >= until {
            return Ok(offset);
        }
        if std::time::Instant::now() > deadline {
            return Err(LogError::Io {
                context: format!("read {}/{partition} up to {until}", topic.name),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("records stayed hidden at {offset}")),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A durable, partitioned log: embedded files ([`embedded`]) or Kafka ([`kafka`]).
pub trait Log: Send + Sync {
    /// Creates a topic, or returns it if it exists with the same partition count.
    fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, LogError>;
    fn topic(&self, name: &str) -> Result<Topic, LogError>;
    fn topics(&self) -> Vec<Topic>;
    /// Up to `records_max` committed records of a partition from `offset` on. An offset
    /// at the end returns nothing; one below the start is an error.
    fn fetch(&self, topic: &Topic, partition: u32, offset: u64, records_max: usize) -> Result<Vec<Record>, LogError>;
    fn offsets(&self, topic: &Topic, partition: u32) -> Result<PartitionOffsets, LogError>;
    /// The end of a partition counting every record written to it, committed or not:
    /// Kafka's high watermark, where [`Log::offsets`] gives the end of what is committed
    /// and visible (the last stable offset, which trails a transaction until the broker
    /// has written its markers, a moment after the commit returned). A reader that must
    /// see every transaction committed before now reads until here, waiting out the
    /// transactions still open (see [`read_to_written_end`]).
    fn written_end(&self, topic: &Topic, partition: u32) -> Result<u64, LogError> {
        Ok(self.offsets(topic, partition)?.end)
    }
    fn committed_position(&self, group: &str, topic: &Topic, partition: u32) -> Result<Option<u64>, LogError>;
    /// Makes the whole transaction durable and visible, atomically.
    fn commit(&self, transaction: Transaction) -> Result<(), LogError>;
    /// Where to read after having read everything before `offset`: `offset` itself,
    /// unless the log knows the offsets from there on hold no records (Kafka's transaction
    /// markers and aborted records take offsets). Compare this, not `offset`, with the end.
    fn resume_offset(&self, _topic: &Topic, _partition: u32, offset: u64) -> u64 {
        offset
    }
    /// An offset of a partition before which every record is earlier than `timestamp_ms`:
    /// where a reader of the records at or after that time may start. On Kafka the first
    /// record at or after it (its time index); on the embedded log the first offset of the
    /// first frame holding one (each frame keeps its records' latest timestamp, so
    /// timestamps need not grow). The partition's end when no record is that late; `None`
    /// when the log cannot tell: a reader scans.
    fn offset_for_time(&self, _topic: &Topic, _partition: u32, _timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        Ok(None)
    }
    /// Makes [`Log::committed_position`] current with positions other processes
    /// committed (called before taking over partitions). Waits for transactions other
    /// processes left open to finish or be aborted.
    fn refresh_positions(&self) -> Result<(), LogError> {
        Ok(())
    }
    /// Whether retention consults consumer positions (the embedded log keeps what a group
    /// has not read; Kafka's retention is by time and size only).
    fn retention_keeps_unread(&self) -> bool {
        true
    }
    /// Whether every record of a partition takes the offset after the one before (no
    /// transaction markers or aborted records in between), so one who is the only writer
    /// of a partition knows the offset of each record it commits.
    fn dense_offsets(&self) -> bool {
        false
    }
    /// A counter that moves on every commit.
    fn commit_sequence(&self) -> u64;
    /// Blocks until the commit sequence passes `seen` or `timeout` elapses.
    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64;
}

/// Which input partitions this process owns, as a consumer group decides it (Kafka), so
/// several processes share the partitions. The runtime runs one *generation* at a time:
/// it stops every partition of the generation it runs when the generation moves, commits,
/// then calls [`Membership::released`]; a revocation waits for that before the partitions
/// go to another process.
pub trait Membership: Send + Sync {
    /// Waits until the generation differs from `seen` (or `timeout`); returns the current
    /// generation and its partitions.
    fn wait_for_change(&self, seen: u64, timeout: Duration) -> (u64, Vec<u32>);
    /// The current generation.
    fn generation(&self) -> u64;
    /// Nothing of `generation` or earlier runs any more.
    fn released(&self, generation: u64);
}

/// A shared log is a log (so wrappers such as [`fault::CommitFault`] can hold one).
impl<T: Log + ?Sized> Log for Arc<T> {
    fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, LogError> {
        (**self).create_topic(name, partitions)
    }
    fn topic(&self, name: &str) -> Result<Topic, LogError> {
        (**self).topic(name)
    }
    fn topics(&self) -> Vec<Topic> {
        (**self).topics()
    }
    fn fetch(&self, topic: &Topic, partition: u32, offset: u64, records_max: usize) -> Result<Vec<Record>, LogError> {
        (**self).fetch(topic, partition, offset, records_max)
    }
    fn offsets(&self, topic: &Topic, partition: u32) -> Result<PartitionOffsets, LogError> {
        (**self).offsets(topic, partition)
    }
    fn written_end(&self, topic: &Topic, partition: u32) -> Result<u64, LogError> {
        (**self).written_end(topic, partition)
    }
    fn resume_offset(&self, topic: &Topic, partition: u32, offset: u64) -> u64 {
        (**self).resume_offset(topic, partition, offset)
    }
    fn offset_for_time(&self, topic: &Topic, partition: u32, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        (**self).offset_for_time(topic, partition, timestamp_ms)
    }
    fn committed_position(&self, group: &str, topic: &Topic, partition: u32) -> Result<Option<u64>, LogError> {
        (**self).committed_position(group, topic, partition)
    }
    fn refresh_positions(&self) -> Result<(), LogError> {
        (**self).refresh_positions()
    }
    fn retention_keeps_unread(&self) -> bool {
        (**self).retention_keeps_unread()
    }
    fn commit(&self, transaction: Transaction) -> Result<(), LogError> {
        (**self).commit(transaction)
    }
    fn dense_offsets(&self) -> bool {
        (**self).dense_offsets()
    }
    fn commit_sequence(&self) -> u64 {
        (**self).commit_sequence()
    }
    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64 {
        (**self).wait_for_commit(seen, timeout)
    }
}
