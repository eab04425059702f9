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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CommitSequence, Log, LogError, PartitionBatch, PartitionOffsets, Record, RecordIter, Topic, Transaction};

pub use crate::limits::{FRAME_BYTES_MAX, TOPIC_PARTITIONS_MAX};
const FRAME_HEADER_BYTES: usize = 8;
const DATA_HEADER_BYTES: usize = 1 + 4 + 4 + 8 + 4;
const _: () = assert!(FRAME_HEADER_BYTES + DATA_HEADER_BYTES == super::BATCH_HEADER_RESERVED_BYTES);
const KIND_DATA: u8 = 1;
/// A data frame whose records are LZ4-compressed (block format), preceded by their
/// uncompressed length (u32).
const KIND_DATA_LZ4: u8 = 4;
/// Batches smaller than this are stored uncompressed.
const COMPRESSION_BYTES_MIN: usize = 512;
const KIND_COMMIT: u8 = 2;
const KIND_TOPIC: u8 = 3;
const CHECKPOINT_VERSION: u16 = 1;
/// Commits between retention passes.
const RETENTION_CHECK_COMMITS: u32 = 64;

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

#[derive(Clone, Copy, Debug)]
struct FrameLocation {
    base_offset: u64,
    count: u32,
    segment: u64,
    position: u64,
    len: u32,
}

#[derive(Default)]
struct PartitionIndex {
    start_offset: u64,
    end_offset: u64,
    frames: VecDeque<FrameLocation>,
}

struct Segment {
    file: Arc<File>,
    len: u64,
    newest_commit_ms: i64,
}

#[derive(Default)]
struct Index {
    topics: BTreeMap<String, (u32, Topic)>,
    topic_names: HashMap<u32, Arc<str>>,
    partitions: HashMap<(u32, u32), PartitionIndex>,
    positions: BTreeMap<(String, u32, u32), u64>,
    segments: BTreeMap<u64, Segment>,
    first_segment: u64,
}

/// A position in the write-ahead log: (segment, byte offset). Orders all writes.
type WalPosition = (u64, u64);

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

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u16,
    first_segment: u64,
    next_topic_id: u32,
    topics: Vec<(String, u32, u32)>,
    partition_starts: Vec<(u32, u32, u64)>,
    positions: Vec<(String, u32, u32, u64)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join("wal").join(format!("{segment:020}.wal"))
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

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(format!("fsync directory {}", dir.display())))
}

/// Appends a frame (header with crc over the payload) to `out`; `payload` writes the payload.
fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    payload(out);
    let len = out.len() - start - FRAME_HEADER_BYTES;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let (head, rest) =
            self.bytes.split_at_checked(n).ok_or_else(|| LogError::Corrupt("frame payload too short".into()))?;
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LogError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LogError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, LogError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, LogError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Result<String, LogError> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| LogError::Corrupt("name is not UTF-8".into()))
    }
}

/// A frame read back during recovery.
enum Frame {
    Data { topic_id: u32, partition: u32, base_offset: u64, count: u32 },
    Topic { topic_id: u32, partitions: u32, name: String },
    Commit { wall_ms: i64, positions: Vec<(String, u32, u32, u64)> },
}

fn parse_frame(payload: &[u8]) -> Result<Frame, LogError> {
    let mut r = Reader { bytes: payload };
    match r.u8()? {
        KIND_DATA | KIND_DATA_LZ4 => {
            Ok(Frame::Data { topic_id: r.u32()?, partition: r.u32()?, base_offset: r.u64()?, count: r.u32()? })
        }
        KIND_TOPIC => Ok(Frame::Topic { topic_id: r.u32()?, partitions: r.u32()?, name: r.string()? }),
        KIND_COMMIT => {
            let wall_ms = r.u64()? as i64;
            let n = r.u32()?;
            let mut positions = Vec::with_capacity(n.min(4096) as usize);
            for _ in 0..n {
                positions.push((r.string()?, r.u32()?, r.u32()?, r.u64()?));
            }
            Ok(Frame::Commit { wall_ms, positions })
        }
        kind => Err(LogError::Corrupt(format!("unknown frame kind {kind}"))),
    }
}

/// Outcome of reading the next frame of a segment during recovery.
enum Next {
    Frame { payload: Vec<u8>, len: u64 },
    End,
    Torn(String),
}

fn read_frame(reader: &mut impl Read) -> Result<Next, LogError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut got = 0;
    while got < FRAME_HEADER_BYTES {
        match reader.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(LogError::Io { context: "read segment".into(), source: e });
            }
        }
    }
    if got == 0 {
        return Ok(Next::End);
    }
    if got < FRAME_HEADER_BYTES {
        return Ok(Next::Torn("partial frame header".into()));
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > FRAME_BYTES_MAX {
        return Ok(Next::Torn(format!("frame length {len} out of range")));
    }
    let mut payload = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match reader.read(&mut payload[filled..]) {
            Ok(0) => return Ok(Next::Torn("partial frame payload".into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(LogError::Io { context: "read segment".into(), source: e });
            }
        }
    }
    if crc32fast::hash(&payload) != crc {
        return Ok(Next::Torn("frame checksum mismatch".into()));
    }
    Ok(Next::Frame { payload, len: (FRAME_HEADER_BYTES + len) as u64 })
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
        let dir = config.dir.clone();
        let lock = if read_only {
            if !dir.join("wal").is_dir() {
                return Err(LogError::Io {
                    context: format!("no embedded log in {}", dir.display()),
                    source: std::io::Error::from(ErrorKind::NotFound),
                });
            }
            None
        } else {
            fs::create_dir_all(dir.join("wal")).map_err(LogError::io(format!("create {}", dir.display())))?;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("LOCK"))
                .map_err(LogError::io("open LOCK"))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LogError::Locked(dir.display().to_string()));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(LogError::Io { context: "lock data directory".into(), source: e });
                }
            }
            Some(lock)
        };

        let mut index = Index::default();
        let mut next_topic_id = 0;
        if let Some(checkpoint) = Self::read_checkpoint(&dir)? {
            index.first_segment = checkpoint.first_segment;
            next_topic_id = checkpoint.next_topic_id;
            for (name, id, partitions) in checkpoint.topics {
                index.add_topic(name, id, partitions);
            }
            for (topic_id, partition, start) in checkpoint.partition_starts {
                let p = index.partitions.entry((topic_id, partition)).or_default();
                p.start_offset = start;
                p.end_offset = start;
            }
            for (group, topic_id, partition, offset) in checkpoint.positions {
                index.positions.insert((group, topic_id, partition), offset);
            }
        }

        let mut segment_ids: Vec<u64> = fs::read_dir(dir.join("wal"))
            .map_err(LogError::io("list segments"))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".wal")?.parse::<u64>().ok())
            .collect();
        segment_ids.sort_unstable();
        for &id in segment_ids.iter().filter(|&&id| id < index.first_segment && !read_only) {
            // Left over from a retention pass interrupted after its checkpoint.
            fs::remove_file(segment_path(&dir, id)).map_err(LogError::io("remove old segment"))?;
        }
        segment_ids.retain(|&id| id >= index.first_segment);

        // Scan every segment, applying each transaction at its commit frame.
        let mut last_commit: Option<(u64, u64)> = None;
        let mut pending_data: Vec<(u32, u32, FrameLocation)> = Vec::new();
        let mut pending_topics: Vec<(u32, u32, String)> = Vec::new();
        'segments: for (i, &segment) in segment_ids.iter().enumerate() {
            let path = segment_path(&dir, segment);
            let file = File::open(&path).map_err(LogError::io(format!("open {}", path.display())))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut position = 0u64;
            let mut newest_commit_ms = 0;
            loop {
                match read_frame(&mut reader)? {
                    Next::End => break,
                    Next::Torn(_) if read_only => {
                        // A writer is appending right here: stop at what is committed.
                        index.segments.insert(
                            segment,
                            Segment {
                                file: Arc::new(File::open(&path).map_err(LogError::io("reopen segment"))?),
                                len: position,
                                newest_commit_ms,
                            },
                        );
                        break 'segments;
                    }
                    Next::Torn(why) => {
                        if i + 1 != segment_ids.len() {
                            return Err(LogError::Corrupt(format!(
                                "segment {} at byte {position}: {why}",
                                path.display()
                            )));
                        }
                        tracing::warn!(segment = %path.display(), position, why, "cutting off the uncommitted tail of the log");
                        break;
                    }
                    Next::Frame { payload, len } => {
                        match parse_frame(&payload)? {
                            Frame::Data { topic_id, partition, base_offset, count } => pending_data.push((
                                topic_id,
                                partition,
                                FrameLocation { base_offset, count, segment, position, len: len as u32 },
                            )),
                            Frame::Topic { topic_id, partitions, name } => {
                                pending_topics.push((topic_id, partitions, name))
                            }
                            Frame::Commit { wall_ms, positions } => {
                                for (id, partitions, name) in pending_topics.drain(..) {
                                    next_topic_id = next_topic_id.max(id + 1);
                                    index.add_topic(name, id, partitions);
                                }
                                for (topic_id, partition, location) in pending_data.drain(..) {
                                    index.add_frame(topic_id, partition, location)?;
                                }
                                for (group, topic_id, partition, offset) in positions {
                                    index.positions.insert((group, topic_id, partition), offset);
                                }
                                newest_commit_ms = wall_ms;
                                last_commit = Some((segment, position + len));
                            }
                        }
                        position += len;
                    }
                }
            }
            let file =
                OpenOptions::new().read(true).write(!read_only).open(&path).map_err(LogError::io("reopen segment"))?;
            index.segments.insert(segment, Segment { file: Arc::new(file), len: position, newest_commit_ms });
        }

        // Cut the log back to the end of its last commit.
        let (active_segment, active_len) = match last_commit {
            Some(end) => end,
            None => (segment_ids.first().copied().unwrap_or(index.first_segment), 0),
        };
        for &segment in segment_ids.iter().filter(|&&s| s > active_segment) {
            index.segments.remove(&segment);
            if !read_only {
                fs::remove_file(segment_path(&dir, segment)).map_err(LogError::io("remove uncommitted segment"))?;
            }
        }
        let active = match index.segments.get_mut(&active_segment) {
            Some(segment) if read_only => segment.file.clone(),
            None if read_only => {
                return Err(LogError::Io {
                    context: format!("no committed data in {}", dir.display()),
                    source: std::io::Error::from(ErrorKind::NotFound),
                });
            }
            Some(segment) => {
                segment.file.set_len(active_len).map_err(LogError::io("truncate torn tail"))?;
                segment.file.sync_all().map_err(LogError::io("fsync truncated segment"))?;
                segment.len = active_len;
                segment.file.clone()
            }
            None => {
                let file = Arc::new(Self::create_segment(&dir, active_segment)?);
                index
                    .segments
                    .insert(active_segment, Segment { file: file.clone(), len: 0, newest_commit_ms: now_ms() });
                file
            }
        };

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

    fn create_segment(dir: &Path, segment: u64) -> Result<File, LogError> {
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io(format!("create {}", path.display())))?;
        sync_dir(&dir.join("wal"))?;
        Ok(file)
    }

    fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, LogError> {
        let bytes = match fs::read(dir.join("checkpoint")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LogError::Io { context: "read checkpoint".into(), source: e });
            }
        };
        let (body, crc) = bytes
            .split_at_checked(bytes.len().saturating_sub(4))
            .ok_or_else(|| LogError::Corrupt("checkpoint too short".into()))?;
        if crc.len() != 4 || crc32fast::hash(body).to_le_bytes() != crc {
            return Err(LogError::Corrupt("checkpoint checksum mismatch".into()));
        }
        let checkpoint: Checkpoint =
            postcard::from_bytes(body).map_err(|e| LogError::Corrupt(format!("checkpoint: {e}")))?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(LogError::Corrupt(format!(
                "checkpoint version {} is not {CHECKPOINT_VERSION}",
                checkpoint.version
            )));
        }
        Ok(Some(checkpoint))
    }

    fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), LogError> {
        let mut bytes =
            postcard::to_stdvec(checkpoint).map_err(|e| LogError::Corrupt(format!("encode checkpoint: {e}")))?;
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.config.dir.join("checkpoint.tmp");
        let file = File::create(&tmp).map_err(LogError::io("create checkpoint"))?;
        file.write_all_at(&bytes, 0).map_err(LogError::io("write checkpoint"))?;
        file.sync_all().map_err(LogError::io("fsync checkpoint"))?;
        fs::rename(&tmp, self.config.dir.join("checkpoint")).map_err(LogError::io("install checkpoint"))?;
        sync_dir(&self.config.dir)
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
        let file = Arc::new(Self::create_segment(&self.config.dir, segment)?);
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

    fn encode_commit_frame(buffer: &mut Vec<u8>, wall_ms: i64, positions: &[(String, u32, u32, u64)]) {
        frame(buffer, |out| {
            out.push(KIND_COMMIT);
            out.extend_from_slice(&(wall_ms as u64).to_le_bytes());
            out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
            for (group, topic_id, partition, offset) in positions {
                out.extend_from_slice(&(group.len() as u16).to_le_bytes());
                out.extend_from_slice(group.as_bytes());
                out.extend_from_slice(&topic_id.to_le_bytes());
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
        });
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
        self.write_checkpoint(&checkpoint)?;
        let mut index = self.index.write().expect("index lock");
        index.first_segment = checkpoint.first_segment;
        for id in &doomed {
            index.segments.remove(id);
            fs::remove_file(segment_path(&self.config.dir, *id)).map_err(LogError::io("remove segment"))?;
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

impl PartitionIndex {
    fn frame_containing(&self, offset: u64) -> Option<&FrameLocation> {
        let i = self.frames.partition_point(|f| f.base_offset + u64::from(f.count) <= offset);
        self.frames.get(i)
    }

    fn start_after_deleting(&self, first_segment: u64) -> u64 {
        self.frames.iter().find(|f| f.segment >= first_segment).map(|f| f.base_offset).unwrap_or(self.end_offset)
    }
}

impl Index {
    fn add_topic(&mut self, name: String, id: u32, partitions: u32) {
        let name: Arc<str> = name.into();
        self.topic_names.insert(id, name.clone());
        for partition in 0..partitions {
            self.partitions.entry((id, partition)).or_default();
        }
        self.topics.insert(name.to_string(), (id, Topic { name, partitions }));
    }

    fn add_frame(&mut self, topic_id: u32, partition: u32, location: FrameLocation) -> Result<(), LogError> {
        let p = self.partitions.get_mut(&(topic_id, partition)).ok_or_else(|| {
            LogError::Corrupt(format!("data frame for unknown topic id {topic_id} partition {partition}"))
        })?;
        if location.base_offset != p.end_offset {
            return Err(LogError::Corrupt(format!(
                "topic id {topic_id} partition {partition}: frame at offset {} after end {}",
                location.base_offset, p.end_offset
            )));
        }
        p.end_offset += u64::from(location.count);
        p.frames.push_back(location);
        Ok(())
    }

    fn topic_id(&self, topic: &Topic) -> Result<u32, LogError> {
        self.topics.get(&*topic.name).map(|(id, _)| *id).ok_or_else(|| LogError::UnknownTopic(topic.name.to_string()))
    }

    fn partition(&self, topic: &Topic, partition: u32) -> Result<(u32, &PartitionIndex), LogError> {
        let id = self.topic_id(topic)?;
        let p = self.partitions.get(&(id, partition)).ok_or_else(|| LogError::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partitions,
        })?;
        Ok((id, p))
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
        Self::encode_commit_frame(&mut buffer, wall_ms, &[]);
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
            let body_start = FRAME_HEADER_BYTES + DATA_HEADER_BYTES;
            let frame = match buffer.get(FRAME_HEADER_BYTES) {
                Some(&KIND_DATA) => Bytes::from(buffer).slice(body_start..),
                Some(&KIND_DATA_LZ4) => Bytes::from(decompress_records(&buffer[body_start..]).map_err(|why| {
                    LogError::Corrupt(format!(
                        "{}/{partition}: frame at offset {}: {why}",
                        topic.name, location.base_offset
                    ))
                })?),
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
                    let count = batch.count;
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
                        FrameLocation { base_offset, count, segment, position, len },
                    ));
                    position += u64::from(len);
                    frames.push(frame);
                }
                let wall_ms = now_ms();
                let mut buffer = std::mem::take(&mut writer.buffer);
                buffer.clear();
                Self::encode_commit_frame(&mut buffer, wall_ms, &positions);
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

    fn commit_sequence(&self) -> u64 {
        self.commits.get()
    }

    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64 {
        self.commits.wait_past(seen, timeout)
    }
}

fn covered_hint(frames: &[(FrameLocation, Arc<File>)], offset: u64) -> usize {
    frames
        .iter()
        .map(|(f, _)| (f.base_offset + u64::from(f.count)).saturating_sub(offset.max(f.base_offset)) as usize)
        .sum()
}

/// A data frame of a commit: sealed in its batch's own buffer, or compressed into a
/// shared buffer (a range of it).
enum FrameBytes<'a> {
    Sealed(&'a [u8]),
    Compressed(std::ops::Range<usize>),
}

/// Appends an LZ4 data frame of `batch` to `out`; `scratch` is reused across calls so
/// the compressor's output space is not zeroed again for every frame.
fn encode_compressed_frame(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    batch: &PartitionBatch,
    topic_id: u32,
    partition: u32,
    base_offset: u64,
) {
    let records = batch.records_bytes();
    let bound = lz4_flex::block::get_maximum_output_size(records.len());
    if scratch.len() < bound {
        scratch.resize(bound, 0);
    }
    let written = lz4_flex::block::compress_into(records, scratch).expect("scratch sized by get_maximum_output_size");
    frame(out, |out| {
        out.push(KIND_DATA_LZ4);
        out.extend_from_slice(&topic_id.to_le_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&base_offset.to_le_bytes());
        out.extend_from_slice(&batch.count.to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&scratch[..written]);
    });
}

/// The records of an LZ4 data frame body (uncompressed length u32, then the block).
fn decompress_records(body: &[u8]) -> Result<Vec<u8>, String> {
    let (length, block) = body.split_at_checked(4).ok_or("compressed frame too short")?;
    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(format!("uncompressed length {length} out of range"));
    }
    let records = lz4_flex::block::decompress(block, length).map_err(|e| e.to_string())?;
    if records.len() != length {
        return Err(format!("decompressed {} bytes, expected {length}", records.len()));
    }
    Ok(records)
}

/// Fills the frame header reserved at the front of `batch` and returns the frame.
fn seal_data_frame(batch: &mut PartitionBatch, topic_id: u32, partition: u32, base_offset: u64) -> &[u8] {
    let count = batch.count;
    let buffer = batch.buffer_mut();
    let len = (buffer.len() - FRAME_HEADER_BYTES) as u32;
    let header = &mut buffer[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + DATA_HEADER_BYTES];
    header[0] = KIND_DATA;
    header[1..5].copy_from_slice(&topic_id.to_le_bytes());
    header[5..9].copy_from_slice(&partition.to_le_bytes());
    header[9..17].copy_from_slice(&base_offset.to_le_bytes());
    header[17..21].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&buffer[FRAME_HEADER_BYTES..]);
    buffer[0..4].copy_from_slice(&len.to_le_bytes());
    buffer[4..8].copy_from_slice(&crc.to_le_bytes());
    buffer
}
