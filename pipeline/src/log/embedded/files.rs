//! The embedded log's files: segment paths and creation, the checkpoint file, and
//! directory syncs.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{CHECKPOINT_VERSION, Checkpoint};
use crate::log::LogError;

pub(super) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join("wal").join(format!("{segment:020}.wal"))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(format!("fsync directory {}", dir.display())))
}

pub(super) fn create_segment(dir: &Path, segment: u64) -> Result<File, LogError> {
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

pub(super) fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, LogError> {
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

pub(super) fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<(), LogError> {
    let mut bytes =
        postcard::to_stdvec(checkpoint).map_err(|e| LogError::Corrupt(format!("encode checkpoint: {e}")))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    let file = File::create(&tmp).map_err(LogError::io("create checkpoint"))?;
    file.write_all_at(&bytes, 0).map_err(LogError::io("write checkpoint"))?;
    file.sync_all().map_err(LogError::io("fsync checkpoint"))?;
    fs::rename(&tmp, dir.join("checkpoint")).map_err(LogError::io("install checkpoint"))?;
    sync_dir(dir)
}
