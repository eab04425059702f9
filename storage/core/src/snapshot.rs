//! Snapshots of operator state: the [`SnapshotStore`] trait and the embedded
//! [`FileSnapshotStore`] (checksummed generations, each installed atomically, the
//! previous one kept as a fallback).

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// A partition's operator state as of `changelog_offset`: the state equals replaying the
/// changelog up to (not including) that offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub changelog_offset: u64,
    pub state: Vec<u8>,
}

/// Where snapshots of operator state live.
pub trait SnapshotStore: Send + Sync {
    /// Saves `snapshot` as the newest of `name`, atomically: a crash leaves the snapshots
    /// kept before, whole. Returns the lowest `changelog_offset` of the snapshots it keeps
    /// (the newest and its fallback): the changelog a restore may need starts there.
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<u64, StorageError>;
    /// The newest snapshot of `name` that reads back whole; an older one where newer ones
    /// are torn or corrupt (each skipped with a warning); `None` if there is none.
    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError>;
}

/// Snapshots of one name kept on disk: the newest and the one before it, the fallback
/// should the newest not read back whole.
pub const SNAPSHOT_GENERATIONS_KEPT: usize = 2;

const MAGIC: &[u8; 4] = b"PSS1";
const HEADER_BYTES: usize = 4 + 8 + 8;
/// Digits of a generation number in a file name (zero-padded, so names sort by it).
const GENERATION_DIGITS: usize = 20;
/// A snapshot is written and flushed to disk this much at a time, so it never holds
/// more dirty pages than this: a log's fdatasync on the same file system (ext4 commits
/// its journal with the dirty data of every file) does not wait behind a whole snapshot.
pub const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Snapshots as files `<dir>/<name>.<generation>.snapshot`: magic, changelog offset,
/// length, state bytes, crc32 of all before it. A save removes the temporary files a
/// crash left, writes to a temporary file ([`SNAPSHOT_WRITE_CHUNK_BYTES`] at a time,
/// each flushed before the next), fsyncs and renames it, fsyncs the directory, then
/// removes generations beyond [`SNAPSHOT_GENERATIONS_KEPT`]; one directory listing in
/// all.
pub struct FileSnapshotStore {
    dir: PathBuf,
}

impl FileSnapshotStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileSnapshotStore, StorageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|source| StorageError::Io { context: format!("create {}", dir.display()), source })?;
        Ok(FileSnapshotStore { dir })
    }

    fn check_name(name: &str) -> Result<(), StorageError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(StorageError::InvalidName(name.to_string()));
        }
        Ok(())
    }

    fn generation_path(&self, name: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{name}.{generation:0width$}.snapshot", width = GENERATION_DIGITS))
    }

    /// The files of `name`'s snapshots, newest first. A file `<name>.snapshot` (one
    /// generation, as earlier builds wrote) counts as generation 0.
    pub fn generations(&self, name: &str) -> Result<Vec<(u64, PathBuf)>, StorageError> {
        Ok(self.scan(name)?.generations)
    }

    /// One listing of the directory: `name`'s snapshots and its temporary files.
    fn scan(&self, name: &str) -> Result<Files, StorageError> {
        Self::check_name(name)?;
        let mut files = Files { generations: Vec::new(), temporaries: Vec::new() };
        let entries = fs::read_dir(&self.dir).map_err(io(format!("list {}", self.dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("list {}", self.dir.display())))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if let Some(generation) = parse_generation(name, file_name) {
                files.generations.push((generation, entry.path()));
            } else if file_name.strip_suffix(".tmp").and_then(|stem| parse_generation(name, stem)).is_some() {
                files.temporaries.push(entry.path());
            }
        }
        files.generations.sort_by_key(|(generation, _)| std::cmp::Reverse(*generation));
        Ok(files)
    }
}

/// A name's files in the directory.
struct Files {
    /// Snapshots, newest first.
    generations: Vec<(u64, PathBuf)>,
    /// Temporary files a crash left behind mid-write.
    temporaries: Vec<PathBuf>,
}

/// The generation of `file_name` if it is a snapshot of `name`.
fn parse_generation(name: &str, file_name: &str) -> Option<u64> {
    let rest = file_name.strip_prefix(name)?.strip_suffix(".snapshot")?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix('.')?;
    if digits.len() != GENERATION_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("fsync {}", dir.display())))
}

/// Writes `bytes` to `file` a chunk at a time, each on disk before the next is written
/// (Linux `sync_file_range`; elsewhere the final fsync flushes it all at once).
fn write_in_chunks(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    let mut offset = 0usize;
    for chunk in bytes.chunks(SNAPSHOT_WRITE_CHUNK_BYTES) {
        file.write_all(chunk)?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let flags =
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: the descriptor is open for the call's duration; the range is what was just written.
            let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, chunk.len() as i64, flags) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        offset += chunk.len();
    }
    Ok(())
}

fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + snapshot.state.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&snapshot.changelog_offset.to_le_bytes());
    bytes.extend_from_slice(&(snapshot.state.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&snapshot.state);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(name: &str, bytes: Vec<u8>) -> Result<Snapshot, StorageError> {
    let corrupt = |why: &str| StorageError::Corrupt { name: name.to_string(), why: why.to_string() };
    if bytes.len() < HEADER_BYTES + 4 || &bytes[0..4] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let changelog_offset = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")) as usize;
    if body.len() != HEADER_BYTES + len {
        return Err(corrupt("length mismatch"));
    }
    let mut state = bytes;
    state.truncate(HEADER_BYTES + len);
    state.drain(..HEADER_BYTES);
    Ok(Snapshot { changelog_offset, state })
}

/// The changelog offset in a snapshot file's header; `None` if the header is unreadable.
fn header_offset(path: &Path) -> Option<u64> {
    let mut header = [0u8; HEADER_BYTES];
    File::open(path).and_then(|mut f| f.read_exact(&mut header)).ok()?;
    (&header[0..4] == MAGIC).then(|| u64::from_le_bytes(header[4..12].try_into().expect("8 bytes")))
}

impl SnapshotStore for FileSnapshotStore {
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<u64, StorageError> {
        let Files { generations, temporaries } = self.scan(name)?;
        for stale in temporaries {
            fs::remove_file(&stale).map_err(io(format!("remove {}", stale.display())))?;
        }
        let generation = generations.first().map_or(1, |(newest, _)| newest + 1);
        let path = self.generation_path(name, generation);
        let tmp = path.with_extension("snapshot.tmp");
        let mut file = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        write_in_chunks(&mut file, &encode(snapshot)).map_err(io(format!("write {}", tmp.display())))?;
        file.sync_all().map_err(io("fsync snapshot"))?;
        fs::rename(&tmp, &path).map_err(io("install snapshot"))?;
        sync_dir(&self.dir)?;
        // The new one and the newest before it stay; a header that does not read keeps the
        // whole changelog (offset 0).
        let mut keep_from = snapshot.changelog_offset;
        for (kept, (_, older)) in generations.iter().enumerate() {
            if kept + 1 < SNAPSHOT_GENERATIONS_KEPT {
                keep_from = keep_from.min(header_offset(older).unwrap_or(0));
            } else {
                fs::remove_file(older).map_err(io(format!("remove {}", older.display())))?;
            }
        }
        Ok(keep_from)
    }

    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError> {
        for (_, path) in self.generations(name)? {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::Io { context: format!("read {}", path.display()), source: e }),
            };
            match decode(name, bytes) {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping a torn or corrupt snapshot");
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_the_newest_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        assert_eq!(store.load("p0").unwrap(), None);
        let first = Snapshot { changelog_offset: 42, state: b"state".to_vec() };
        assert_eq!(store.save("p0", &first).unwrap(), 42);
        assert_eq!(store.load("p0").unwrap(), Some(first.clone()));
        let second = Snapshot { changelog_offset: 50, state: vec![] };
        // The first is kept as the fallback: the changelog is needed from 42.
        assert_eq!(store.save("p0", &second).unwrap(), 42);
        assert_eq!(store.load("p0").unwrap(), Some(second.clone()));
        let third = Snapshot { changelog_offset: 60, state: b"three".to_vec() };
        assert_eq!(store.save("p0", &third).unwrap(), 50);
        let kept: Vec<u64> = store.generations("p0").unwrap().iter().map(|(g, _)| *g).collect();
        assert_eq!(kept, vec![3, 2]);
        // Other names are separate.
        assert_eq!(store.load("p0.1").unwrap(), None);
        assert!(matches!(store.save("../x", &first), Err(StorageError::InvalidName(_))));
    }

    #[test]
    fn a_torn_newest_snapshot_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        let older = Snapshot { changelog_offset: 7, state: vec![1; 100] };
        store.save("p0", &older).unwrap();
        store.save("p0", &Snapshot { changelog_offset: 9, state: vec![2; 100] }).unwrap();
        let (_, newest) = store.generations("p0").unwrap().remove(0);
        for torn_at in [0, 10, 60, 123] {
            let bytes = fs::read(&newest).unwrap();
            let mut torn = bytes.clone();
            torn.truncate(torn_at);
            fs::write(&newest, &torn).unwrap();
            assert_eq!(store.load("p0").unwrap(), Some(older.clone()), "torn at {torn_at}");
            fs::write(&newest, &bytes).unwrap();
        }
        let mut flipped = fs::read(&newest).unwrap();
        flipped[30] ^= 1;
        fs::write(&newest, flipped).unwrap();
        assert_eq!(store.load("p0").unwrap(), Some(older));
    }

    #[test]
    fn a_crash_mid_write_leaves_a_temporary_that_is_never_read_and_later_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        let kept = Snapshot { changelog_offset: 3, state: b"kept".to_vec() };
        store.save("p0", &kept).unwrap();
        let tmp = store.generation_path("p0", 2).with_extension("snapshot.tmp");
        fs::write(&tmp, b"PSS1 half a snap").unwrap();
        assert_eq!(store.load("p0").unwrap(), Some(kept));
        store.save("p0", &Snapshot { changelog_offset: 4, state: vec![] }).unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn a_single_file_of_an_earlier_build_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = Snapshot { changelog_offset: 11, state: b"old".to_vec() };
        fs::write(dir.path().join("p0.snapshot"), encode(&legacy)).unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        assert_eq!(store.load("p0").unwrap(), Some(legacy));
        let newer = Snapshot { changelog_offset: 12, state: vec![] };
        assert_eq!(store.save("p0", &newer).unwrap(), 11);
        store.save("p0", &newer).unwrap();
        assert!(!dir.path().join("p0.snapshot").exists());
    }
}
