//! The embedded log: durable on local disk, one process, no server.
//!
//! Layout of a data directory:
//! - `LOCK` — held (flock) while a process has the log open.
//! - `wal/NNNNNNNNNNNNNNNNNNNN.wal` — segments of one write-ahead log shared by all
//!   partitions, rolled at `segment_bytes_max`.
//! - `checkpoint` — topics, partition start offsets and consumer positions as of the last
//!   retention pass (segments before `first_segment` are gone).
//!
//! A segment is a sequence of frames `length u32 | crc32 u32 | payload`, where the payload
//! is a data frame (records of one partition), a topic frame (a topic's creation) or a
//! commit frame (consumer positions, and the end of a transaction). A transaction is its
//! frames followed by its commit frame, written with one `write` and made durable with
//! one `fdatasync`. On open, frames after the last valid commit frame — a torn tail left
//! by a crash — are cut off, so a crash at any moment leaves exactly the committed
//! transactions. Commits are serialized by one writer lock; readers never block writers
//! for longer than an index update.
//!
//! - **Group commit**: a commit writes its frames under the writer lock, then one
//!   `fdatasync` (outside the lock, serialized by a sync lock) covers every transaction
//!   written before it; transactions become visible to readers, in log order, only once
//!   durable. Data frames of 512 bytes or more are LZ4-compressed.
//! - **Recovery** (`recovery.rs`): corruption anywhere but the tail after the last commit
//!   is an error, never a silent truncation.
//! - **Reading**: an in-memory index per partition (`index.rs`) maps offsets to frames;
//!   `fetch` reads and verifies the CRC of the frames it needs. Each data frame's header
//!   keeps its records' latest timestamp, which the index holds, so a seek by time
//!   (`offset_for_time`) skips the frames of earlier records without reading them.
//! - **Retention** (by size and/or age) deletes whole old segments after writing the
//!   checkpoint, and never a segment holding records at or after a consumer group's
//!   committed position: unprocessed input and the changelog after the last snapshot
//!   (the `paystream-snapshots` group) are kept. Output topics have no consumer group
//!   here and are deleted oldest first.
//! - One process owns a data directory (flock on `LOCK`); [`EmbeddedLog::open_read_only`]
//!   lets `log dump` read while it runs.
//!
//! Files: `format.rs` (frame and checkpoint bytes), `files.rs` (segment and checkpoint
//! files), `index.rs`, `recovery.rs`; this file holds the writer and [`Log`] itself.

mod files;
mod format;
mod index;
mod recovery;

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

use super::{CommitSequence, Log, LogError, PartitionOffsets, Record, RecordIter, Topic, Transaction};
use files::{create_segment, segment_path, write_checkpoint};

use crate::clock::now_ms;
use format::{
    CHECKPOINT_VERSION, COMPRESSION_BYTES_MIN, Checkpoint, DATA_HEADER_BYTES, FRAME_HEADER_BYTES, FrameBytes,
    KIND_DATA, KIND_DATA_LZ4, KIND_DATA_LZ4_UNTIMED, KIND_DATA_UNTIMED, KIND_TOPIC, RETENTION_CHECK_COMMITS,
    UNTIMED_DATA_HEADER_BYTES, decompress_records, encode_commit_frame, encode_compressed_frame, frame,
    seal_data_frame,
};
use index::{FrameLocation, Index, Segment, WalPosition, covered_hint};
use recovery::{Recovered, recover};

pub use crate::limits::{FRAME_BYTES_MAX, TOPIC_PARTITIONS_MAX};

#[derive(Clone, Debug)]
pub struct EmbeddedLogConfig {
    pub dir: PathBuf,
    /// A segment is rolled once it reaches this size.
    pub segment_bytes_max: u64,
    /// Delete whole old segments once the log is larger than this.
    pub retention_bytes_max: Option<u64>,
    /// Delete whole segments whose newest commit is older than this.
    pub retention_age_ms_max: Option<i64>,
    /// `fdatasync` every commit. Turning it off keeps crash safety against process kills
    /// (the page cache survives) but not against power loss.
    pub fsync: bool,
    /// LZ4-compress data frames (as Kafka compresses record batches). JSON records
    /// shrink about sixfold, which keeps fsync and disk bandwidth off the critical path.
    pub compression: bool,
}

impl EmbeddedLogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedLogConfig {
        EmbeddedLogConfig {
            dir: dir.into(),
            segment_bytes_max: 128 * 1024 * 1024,
            retention_bytes_max: None,
            retention_age_ms_max: None,
            fsync: true,
            compression: true,
        }
    }
}

/// A transaction written to its segment but not yet durable, so not yet visible.
struct PendingCommit {
    end: WalPosition,
    topic: Option<(String, u32, u32)>,
    locations: Vec<(u32, u32, FrameLocation)>,
    positions: Vec<(String, u32, u32, u64)>,
    wall_ms: i64,
}

struct Writer {
    active_segment: u64,
    active: Arc<File>,
    active_len: u64,
    buffer: Vec<u8>,
    next_topic_id: u32,
    /// Next offset per (topic id, partition), including written-but-unpublished records.
    next_offsets: HashMap<(u32, u32), u64>,
    /// Everything up to here is durable and published.
    synced: WalPosition,
    /// Written transactions awaiting durability, in log order.
    pending: VecDeque<PendingCommit>,
    commits_since_retention: u32,
    poisoned: Option<String>,
    /// Output space of the compressor, kept between commits.
    scratch: Vec<u8>,
}

pub struct EmbeddedLog {
    config: EmbeddedLogConfig,
    /// Held for the life of a writable log; `None` when opened read-only.
    _lock: Option<File>,
    read_only: bool,
    writer: Mutex<Writer>,
    /// Serializes `fdatasync` calls (group commit: one sync covers every transaction
    /// written before it). Lock order: `sync`, then `writer`, then `index`.
    sync: Mutex<()>,
    index: RwLock<Index>,
    commits: CommitSequence,
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `config.dir`, recovering to the last commit.
    pub fn open(config: EmbeddedLogConfig) -> Result<EmbeddedLog, LogError> {
        Self::open_with(config, false)
    }

    /// Opens an existing log for reading only, while another process may be writing it:
    /// takes no lock, changes no file, sees the commits made before it opened.
    pub fn open_read_only(config: EmbeddedLogConfig) -> Result<EmbeddedLog, LogError> {
        Self::open_with(config, true)
    }

    fn open_with(config: EmbeddedLogConfig, read_only: bool) -> Result<EmbeddedLog, LogError> {
        let lock = if read_only { None } else { Some(lock_dir(&config.dir)?) };
        if read_only && !config.dir.join("wal").is_dir() {
            return Err(LogError::Io {
                context: format!("no embedded log in {}", config.dir.display()),
                source: std::io::Error::from(ErrorKind::NotFound),
            });
        }
        let Recovered { index, next_topic_id, active_segment, active_len, active } = recover(&config.dir, read_only)?;
        Ok(EmbeddedLog {
            config,
            _lock: lock,
            read_only,
            writer: Mutex::new(Writer {
                active_segment,
                active,
                active_len,
                buffer: Vec::new(),
                next_topic_id,
                next_offsets: index.partitions.iter().map(|(k, p)| (*k, p.end_offset)).collect(),
                synced: (active_segment, active_len),
                pending: VecDeque::new(),
                commits_since_retention: 0,
                poisoned: None,
                scratch: Vec::new(),
            }),
            sync: Mutex::new(()),
            index: RwLock::new(index),
            commits: CommitSequence::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Bytes of all segments on disk.
    pub fn stored_bytes(&self) -> u64 {
        self.index.read().expect("index lock").segments.values().map(|s| s.len).sum()
    }

    fn notify_commit(&self) {
        self.commits.advance();
    }

    /// Appends `frames` at the end of the active segment (not yet durable) and queues
    /// `pending` for publication once they are.
    fn write_pending(
        &self,
        writer: &mut Writer,
        mut pending: PendingCommit,
        frames: &[&[u8]],
    ) -> Result<WalPosition, LogError> {
        if let Some(why) = &writer.poisoned {
            return Err(LogError::Poisoned(why.clone()));
        }
        for frame in frames {
            if let Err(error) = writer.active.write_all_at(frame, writer.active_len) {
                return Err(Self::poison(writer, LogError::io("append to segment")(error)));
            }
            writer.active_len += frame.len() as u64;
        }
        pending.end = (writer.active_segment, writer.active_len);
        let end = pending.end;
        writer.pending.push_back(pending);
        // Keep a big buffer from pinning memory forever.
        if writer.buffer.capacity() > 64 * 1024 * 1024 {
            writer.buffer = Vec::new();
        }
        Ok(end)
    }

    /// After a failed write or fsync the file's state is unknown: refuse further writes;
    /// a restart recovers to the last complete commit.
    fn poison(writer: &mut Writer, error: LogError) -> LogError {
        writer.poisoned = Some(error.to_string());
        error
    }

    /// Makes everything written up to `end` durable (one fsync may cover many
    /// transactions of many threads) and publishes it.
    fn sync_through(&self, end: WalPosition) -> Result<(), LogError> {
        let _sync = self.sync.lock().expect("sync lock");
        let (target, file) = {
            let writer = self.writer.lock().expect("writer lock");
            if writer.synced >= end {
                return Ok(());
            }
            if let Some(why) = &writer.poisoned {
                return Err(LogError::Poisoned(why.clone()));
            }
            ((writer.active_segment, writer.active_len), writer.active.clone())
        };
        let synced =
            if self.config.fsync { file.sync_data().map_err(LogError::io("fdatasync segment")) } else { Ok(()) };
        let mut writer = self.writer.lock().expect("writer lock");
        if let Err(error) = synced {
            return Err(Self::poison(&mut writer, error));
        }
        self.publish(&mut writer, target)
    }

    /// Makes the transactions written up to `through` visible to readers, in log order.
    fn publish(&self, writer: &mut Writer, through: WalPosition) -> Result<(), LogError> {
        writer.synced = writer.synced.max(through);
        let mut published = 0;
        {
            let mut index = self.index.write().expect("index lock");
            while writer.pending.front().is_some_and(|p| p.end <= through) {
                let pending = writer.pending.pop_front().expect("checked non-empty");
                if let Some((name, id, partitions)) = pending.topic {
                    index.add_topic(name, id, partitions);
                }
                for (topic_id, partition, location) in pending.locations {
                    index.add_frame(topic_id, partition, location)?;
                }
                for (group, topic_id, partition, offset) in pending.positions {
                    index.positions.insert((group, topic_id, partition), offset);
                }
                if let Some(segment) = index.segments.get_mut(&pending.end.0) {
                    segment.len = pending.end.1;
                    segment.newest_commit_ms = pending.wall_ms;
                }
                published += 1;
            }
        }
        writer.commits_since_retention += published;
        if writer.commits_since_retention >= RETENTION_CHECK_COMMITS {
            writer.commits_since_retention = 0;
            self.enforce_retention(writer)?;
        }
        Ok(())
    }

    /// Syncs and publishes everything written so far while holding the writer lock (for
    /// rare operations: segment rolls, topic creation).
    fn sync_all_written(&self, writer: &mut Writer) -> Result<(), LogError> {
        if self.config.fsync
            && let Err(error) = writer.active.sync_data()
        {
            return Err(Self::poison(writer, LogError::io("fdatasync segment")(error)));
        }
        let end = (writer.active_segment, writer.active_len);
        self.publish(writer, end)
    }

    fn roll_if_full(&self, writer: &mut Writer) -> Result<(), LogError> {
        if writer.active_len < self.config.segment_bytes_max {
            return Ok(());
        }
        // Transactions still pending in the old segment become durable before the switch,
        // so the sync of a later transaction (on the new file) never has to cover them.
        self.sync_all_written(writer)?;
        let segment = writer.active_segment + 1;
        let file = Arc::new(create_segment(&self.config.dir, segment)?);
        self.index
            .write()
            .expect("index lock")
            .segments
            .insert(segment, Segment { file: file.clone(), len: 0, newest_commit_ms: now_ms() });
        writer.active_segment = segment;
        writer.active = file;
        writer.active_len = 0;
        writer.synced = (segment, 0);
        writer.commits_since_retention = RETENTION_CHECK_COMMITS;
        Ok(())
    }

    /// Deletes old segments as retention allows. Never deletes the active segment, nor a
    /// segment holding records a consumer group has not yet read past (so input not yet
    /// processed and changelog records newer than a state snapshot are always kept).
    fn enforce_retention(&self, writer: &mut Writer) -> Result<(), LogError> {
        if self.config.retention_bytes_max.is_none() && self.config.retention_age_ms_max.is_none() {
            return Ok(());
        }
        let now = now_ms();
        let (doomed, checkpoint) = {
            let index = self.index.read().expect("index lock");
            let mut protected_from = writer.active_segment;
            for ((_, topic_id, partition), &offset) in &index.positions {
                if let Some(p) = index.partitions.get(&(*topic_id, *partition))
                    && let Some(frame) = p.frame_containing(offset)
                {
                    protected_from = protected_from.min(frame.segment);
                }
            }
            let mut total: u64 = index.segments.values().map(|s| s.len).sum();
            let mut doomed = Vec::new();
            for (&id, segment) in &index.segments {
                let too_big = self.config.retention_bytes_max.is_some_and(|max| total > max);
                let too_old = self.config.retention_age_ms_max.is_some_and(|age| segment.newest_commit_ms < now - age);
                if id >= protected_from || !(too_big || too_old) {
                    break;
                }
                total -= segment.len;
                doomed.push(id);
            }
            let Some(&last) = doomed.last() else {
                return Ok(());
            };
            let first_segment = last + 1;
            let checkpoint = Checkpoint {
                version: CHECKPOINT_VERSION,
                first_segment,
                next_topic_id: writer.next_topic_id,
                topics: index.topics.iter().map(|(name, (id, t))| (name.clone(), *id, t.partitions)).collect(),
                partition_starts: index
                    .partitions
                    .iter()
                    .map(|(&(t, p), part)| (t, p, part.start_after_deleting(first_segment)))
                    .collect(),
                positions: index.positions.iter().map(|((g, t, p), o)| (g.clone(), *t, *p, *o)).collect(),
            };
            (doomed, checkpoint)
        };
        write_checkpoint(&self.config.dir, &checkpoint)?;
        let mut index = self.index.write().expect("index lock");
        index.first_segment = checkpoint.first_segment;
        for id in &doomed {
            index.segments.remove(id);
            std::fs::remove_file(segment_path(&self.config.dir, *id)).map_err(LogError::io("remove segment"))?;
        }
        for partition in index.partitions.values_mut() {
            partition.start_offset = partition.start_after_deleting(checkpoint.first_segment);
            while partition.frames.front().is_some_and(|f| f.segment < checkpoint.first_segment) {
                partition.frames.pop_front();
            }
        }
        tracing::info!(
            segments = doomed.len(),
            first_segment = checkpoint.first_segment,
            "retention deleted old segments"
        );
        Ok(())
    }
}

impl Log for EmbeddedLog {
    fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, LogError> {
        validate_topic_name(name)?;
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(LogError::InvalidTopic(format!("{name}: partitions must be 1..={TOPIC_PARTITIONS_MAX}")));
        }
        let mut writer = self.writer.lock().expect("writer lock");
        if let Some((_, topic)) = self.index.read().expect("index lock").topics.get(name) {
            return if topic.partitions == partitions {
                Ok(topic.clone())
            } else {
                Err(LogError::TopicExists { topic: name.into(), existing: topic.partitions, requested: partitions })
            };
        }
        if self.read_only {
            return Err(LogError::ReadOnly);
        }
        self.roll_if_full(&mut writer)?;
        let id = writer.next_topic_id;
        let wall_ms = now_ms();
        let mut buffer = std::mem::take(&mut writer.buffer);
        buffer.clear();
        frame(&mut buffer, |out| {
            out.push(KIND_TOPIC);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&partitions.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        });
        encode_commit_frame(&mut buffer, wall_ms, &[]);
        let pending = PendingCommit {
            end: (0, 0),
            topic: Some((name.to_string(), id, partitions)),
            locations: Vec::new(),
            positions: Vec::new(),
            wall_ms,
        };
        let written = self.write_pending(&mut writer, pending, &[&buffer]);
        writer.buffer = buffer;
        written?;
        writer.next_topic_id += 1;
        for partition in 0..partitions {
            writer.next_offsets.insert((id, partition), 0);
        }
        self.sync_all_written(&mut writer)?;
        let topic = self.index.read().expect("index lock").topics[name].1.clone();
        drop(writer);
        self.notify_commit();
        Ok(topic)
    }

    fn topic(&self, name: &str) -> Result<Topic, LogError> {
        let index = self.index.read().expect("index lock");
        index.topics.get(name).map(|(_, t)| t.clone()).ok_or_else(|| LogError::UnknownTopic(name.into()))
    }

    fn topics(&self) -> Vec<Topic> {
        self.index.read().expect("index lock").topics.values().map(|(_, t)| t.clone()).collect()
    }

    fn fetch(&self, topic: &Topic, partition: u32, offset: u64, records_max: usize) -> Result<Vec<Record>, LogError> {
        let mut frames = Vec::new();
        {
            let index = self.index.read().expect("index lock");
            let (_, p) = index.partition(topic, partition)?;
            if offset < p.start_offset || offset > p.end_offset {
                let offsets = PartitionOffsets { start: p.start_offset, end: p.end_offset };
                return Err(LogError::offset_out_of_range(topic, partition, offset, offsets));
            }
            let first = p.frames.partition_point(|f| f.base_offset + u64::from(f.count) <= offset);
            let mut covered = 0usize;
            for location in p.frames.iter().skip(first) {
                if covered >= records_max {
                    break;
                }
                let file = index
                    .segments
                    .get(&location.segment)
                    .map(|s| s.file.clone())
                    .ok_or_else(|| LogError::Corrupt(format!("frame in missing segment {}", location.segment)))?;
                covered += (location.base_offset + u64::from(location.count))
                    .saturating_sub(offset.max(location.base_offset)) as usize;
                frames.push((*location, file));
            }
        }
        let mut records = Vec::with_capacity(records_max.min(covered_hint(&frames, offset)));
        for (location, file) in frames {
            let mut buffer = vec![0u8; location.len as usize];
            file.read_exact_at(&mut buffer, location.position).map_err(LogError::io("read frame"))?;
            let crc = u32::from_le_bytes(buffer[4..8].try_into().expect("4 bytes"));
            if crc32fast::hash(&buffer[FRAME_HEADER_BYTES..]) != crc {
                return Err(LogError::Corrupt(format!(
                    "{}/{partition}: checksum mismatch in frame at offset {}",
                    topic.name, location.base_offset
                )));
            }
            let kind = buffer.get(FRAME_HEADER_BYTES).copied();
            let header = match kind {
                Some(KIND_DATA_UNTIMED | KIND_DATA_LZ4_UNTIMED) => UNTIMED_DATA_HEADER_BYTES,
                _ => DATA_HEADER_BYTES,
            };
            let body_start = FRAME_HEADER_BYTES + header;
            let frame = match kind {
                Some(KIND_DATA | KIND_DATA_UNTIMED) => Bytes::from(buffer).slice(body_start..),
                Some(KIND_DATA_LZ4 | KIND_DATA_LZ4_UNTIMED) => {
                    Bytes::from(decompress_records(&buffer[body_start..]).map_err(|why| {
                        LogError::Corrupt(format!(
                            "{}/{partition}: frame at offset {}: {why}",
                            topic.name, location.base_offset
                        ))
                    })?)
                }
                _ => return Err(LogError::Corrupt(format!("{}/{partition}: not a data frame", topic.name))),
            };
            let batch = RecordIter::new(&frame);
            let mut record_offset = location.base_offset;
            for (timestamp_ms, key, value) in batch {
                if record_offset >= offset {
                    if records.len() >= records_max {
                        break;
                    }
                    records.push(Record {
                        offset: record_offset,
                        timestamp_ms,
                        key: frame.slice_ref(key),
                        value: frame.slice_ref(value),
                    });
                }
                record_offset += 1;
            }
            if record_offset != location.base_offset + u64::from(location.count) && records.len() < records_max {
                return Err(LogError::Corrupt(format!("{}/{partition}: frame record count mismatch", topic.name)));
            }
        }
        Ok(records)
    }

    fn offsets(&self, topic: &Topic, partition: u32) -> Result<PartitionOffsets, LogError> {
        let index = self.index.read().expect("index lock");
        let (_, p) = index.partition(topic, partition)?;
        Ok(PartitionOffsets { start: p.start_offset, end: p.end_offset })
    }

    fn offset_for_time(&self, topic: &Topic, partition: u32, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        let index = self.index.read().expect("index lock");
        let (_, p) = index.partition(topic, partition)?;
        Ok(Some(p.offset_for_time(timestamp_ms)))
    }

    fn committed_position(&self, group: &str, topic: &Topic, partition: u32) -> Result<Option<u64>, LogError> {
        let index = self.index.read().expect("index lock");
        let (id, _) = index.partition(topic, partition)?;
        Ok(index.positions.get(&(group.to_string(), id, partition)).copied())
    }

    fn commit(&self, mut transaction: Transaction) -> Result<(), LogError> {
        if transaction.is_empty() {
            return Ok(());
        }
        if self.read_only {
            return Err(LogError::ReadOnly);
        }
        let end = {
            let mut writer = self.writer.lock().expect("writer lock");
            self.roll_if_full(&mut writer)?;
            let segment = writer.active_segment;
            let mut position = writer.active_len;
            let mut locations = Vec::with_capacity(transaction.batches().len());
            let mut positions = Vec::with_capacity(transaction.positions().len());
            {
                let index = self.index.read().expect("index lock");
                // Resolve everything before assigning offsets, so a bad topic leaves no gap.
                let topic_ids = transaction
                    .batches()
                    .iter()
                    .map(|(topic, partition, _)| index.partition(topic, *partition).map(|(id, _)| id))
                    .collect::<Result<Vec<u32>, LogError>>()?;
                for position in transaction.positions() {
                    let topic = Topic { name: position.topic.clone(), partitions: 0 };
                    let topic_id = index.topic_id(&topic)?;
                    positions.push((position.group.clone(), topic_id, position.partition, position.next_offset));
                }
                drop(index);
                let mut frames = Vec::with_capacity(topic_ids.len() + 1);
                let mut compressed = Vec::new();
                for ((_, partition, batch), topic_id) in transaction.batches_mut().iter_mut().zip(topic_ids) {
                    if batch.count == 0 {
                        continue;
                    }
                    let next = writer.next_offsets.entry((topic_id, *partition)).or_insert(0);
                    let base_offset = *next;
                    *next += u64::from(batch.count);
                    let (count, max_timestamp_ms) = (batch.count, Some(batch.max_timestamp_ms()));
                    let frame = if self.config.compression && batch.records_bytes().len() >= COMPRESSION_BYTES_MIN {
                        let start = compressed.len();
                        encode_compressed_frame(
                            &mut compressed,
                            &mut writer.scratch,
                            batch,
                            topic_id,
                            *partition,
                            base_offset,
                        );
                        FrameBytes::Compressed(start..compressed.len())
                    } else {
                        // The frame header goes into the space the batch reserved: no copy.
                        FrameBytes::Sealed(seal_data_frame(batch, topic_id, *partition, base_offset))
                    };
                    let len = match &frame {
                        FrameBytes::Compressed(range) => range.len(),
                        FrameBytes::Sealed(bytes) => bytes.len(),
                    } as u32;
                    locations.push((
                        *partition,
                        topic_id,
                        FrameLocation { base_offset, count, segment, position, len, max_timestamp_ms },
                    ));
                    position += u64::from(len);
                    frames.push(frame);
                }
                let wall_ms = now_ms();
                let mut buffer = std::mem::take(&mut writer.buffer);
                buffer.clear();
                encode_commit_frame(&mut buffer, wall_ms, &positions);
                let mut frames: Vec<&[u8]> = frames
                    .into_iter()
                    .map(|frame| match frame {
                        FrameBytes::Compressed(range) => &compressed[range],
                        FrameBytes::Sealed(bytes) => bytes,
                    })
                    .collect();
                frames.push(&buffer);
                let locations =
                    locations.into_iter().map(|(partition, topic_id, l)| (topic_id, partition, l)).collect();
                let pending = PendingCommit { end: (0, 0), topic: None, locations, positions, wall_ms };
                let end = self.write_pending(&mut writer, pending, &frames);
                writer.buffer = buffer;
                end?
            }
        };
        self.sync_through(end)?;
        self.notify_commit();
        Ok(())
    }

    fn dense_offsets(&self) -> bool {
        true
    }

    fn commit_sequence(&self) -> u64 {
        self.commits.get()
    }

    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64 {
        self.commits.wait_past(seen, timeout)
    }
}

/// Creates the data directory if missing and takes its lock for this process.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    std::fs::create_dir_all(dir.join("wal")).map_err(LogError::io(format!("create {}", dir.display())))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(LogError::io("open LOCK"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked(dir.display().to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::Io { context: "lock data directory".into(), source: e }),
    }
}

fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidTopic(format!("{name:?}: use 1-249 of [a-zA-Z0-9._-], as Kafka does")))
    }
}
