//! Snapshots of operator state: the [`SnapshotStore`] trait and the embedded
//! [`FileSnapshotStore`] (checksummed files replaced atomically).

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
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
    /// Replaces the snapshot `name` atomically: a crash leaves the old or the new one.
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<(), StorageError>;
    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError>;
}

const MAGIC: &[u8; 4] = b"PSS1";
const HEADER_BYTES: usize = 4 + 8 + 8;

/// Snapshots as files `<dir>/<name>.snapshot`: magic, changelog offset, length, state
/// bytes, crc32 of all before it. Written to a temporary file, fsynced, renamed.
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

    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(StorageError::InvalidName(name.to_string()));
        }
        Ok(self.dir.join(format!("{name}.snapshot")))
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("fsync {}", dir.display())))
}

impl SnapshotStore for FileSnapshotStore {
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<(), StorageError> {
        let path = self.path(name)?;
        let tmp = path.with_extension("snapshot.tmp");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + snapshot.state.len() + 4);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&snapshot.changelog_offset.to_le_bytes());
        bytes.extend_from_slice(&(snapshot.state.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&snapshot.state);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let mut file = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        file.write_all(&bytes).map_err(io("write snapshot"))?;
        file.sync_all().map_err(io("fsync snapshot"))?;
        fs::rename(&tmp, &path).map_err(io("install snapshot"))?;
        sync_dir(&self.dir)
    }

    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StorageError::Io { context: format!("read {}", path.display()), source: e });
            }
        };
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
        Ok(Some(Snapshot { changelog_offset, state: body[HEADER_BYTES..].to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path()).unwrap();
        assert_eq!(store.load("p0").unwrap(), None);
        let snapshot = Snapshot { changelog_offset: 42, state: b"state".to_vec() };
        store.save("p0", &snapshot).unwrap();
        assert_eq!(store.load("p0").unwrap(), Some(snapshot.clone()));
        let newer = Snapshot { changelog_offset: 43, state: vec![] };
        store.save("p0", &newer).unwrap();
        assert_eq!(store.load("p0").unwrap(), Some(newer));
        let path = dir.path().join("p0.snapshot");
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(store.load("p0"), Err(StorageError::Corrupt { .. })));
        assert!(matches!(store.save("../x", &snapshot), Err(StorageError::InvalidName(_))));
    }
}
