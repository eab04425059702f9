//! Opening the embedded log: the checkpoint, then every segment scanned frame by frame,
//! each transaction applied at its commit frame, and the torn tail after the last commit
//! cut off (a read-only open stops there instead).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind};
use std::path::Path;
use std::sync::Arc;

use super::files::{create_segment, read_checkpoint, segment_path};
use super::format::{Frame, Next, parse_frame, read_frame};
use super::index::{FrameLocation, Index, Segment};
use crate::clock::now_ms;
use crate::log::LogError;

/// The log as its files left it: the index of every committed transaction, and where
/// the next write goes.
pub(super) struct Recovered {
    pub(super) index: Index,
    pub(super) next_topic_id: u32,
    pub(super) active_segment: u64,
    pub(super) active_len: u64,
    pub(super) active: Arc<File>,
}

/// Rebuilds the index of the log in `dir` up to its last commit.
pub(super) fn recover(dir: &Path, read_only: bool) -> Result<Recovered, LogError> {
    let mut index = Index::default();
    let mut next_topic_id = load_checkpoint(dir, &mut index)?;
    let segment_ids = list_segments(dir, index.first_segment, read_only)?;
    let mut scan = Scan { last_commit: None, pending_data: Vec::new(), pending_topics: Vec::new() };
    for (i, &segment) in segment_ids.iter().enumerate() {
        let last = i + 1 == segment_ids.len();
        if !scan.segment(dir, segment, last, read_only, &mut index, &mut next_topic_id)? {
            break; // read-only: a writer is appending here
        }
    }
    // Cut the log back to the end of its last commit.
    let (active_segment, active_len) = match scan.last_commit {
        Some(end) => end,
        None => (segment_ids.first().copied().unwrap_or(index.first_segment), 0),
    };
    for &segment in segment_ids.iter().filter(|&&s| s > active_segment) {
        index.segments.remove(&segment);
        if !read_only {
            fs::remove_file(segment_path(dir, segment)).map_err(LogError::io("remove uncommitted segment"))?;
        }
    }
    let active = active_file(dir, &mut index, active_segment, active_len, read_only)?;
    Ok(Recovered { index, next_topic_id, active_segment, active_len, active })
}

/// Loads the checkpoint (if any) into `index`; returns the next topic id it records.
fn load_checkpoint(dir: &Path, index: &mut Index) -> Result<u32, LogError> {
    let Some(checkpoint) = read_checkpoint(dir)? else { return Ok(0) };
    index.first_segment = checkpoint.first_segment;
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
    Ok(checkpoint.next_topic_id)
}

/// The segments from `first_segment` on, in order; older ones (left over from a
/// retention pass interrupted after its checkpoint) are removed unless read-only.
fn list_segments(dir: &Path, first_segment: u64, read_only: bool) -> Result<Vec<u64>, LogError> {
    let mut segment_ids: Vec<u64> = fs::read_dir(dir.join("wal"))
        .map_err(LogError::io("list segments"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".wal")?.parse::<u64>().ok())
        .collect();
    segment_ids.sort_unstable();
    for &id in segment_ids.iter().filter(|&&id| id < first_segment && !read_only) {
        fs::remove_file(segment_path(dir, id)).map_err(LogError::io("remove old segment"))?;
    }
    segment_ids.retain(|&id| id >= first_segment);
    Ok(segment_ids)
}

/// Frames read but not yet committed, and the end of the last commit seen.
struct Scan {
    last_commit: Option<(u64, u64)>,
    pending_data: Vec<(u32, u32, FrameLocation)>,
    pending_topics: Vec<(u32, u32, String)>,
}

impl Scan {
    /// Reads one segment into `index`, applying each transaction at its commit frame.
    /// Returns false when a read-only open must stop here.
    fn segment(
        &mut self,
        dir: &Path,
        segment: u64,
        last: bool,
        read_only: bool,
        index: &mut Index,
        next_topic_id: &mut u32,
    ) -> Result<bool, LogError> {
        let path = segment_path(dir, segment);
        let file = File::open(&path).map_err(LogError::io(format!("open {}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut position = 0u64;
        let mut newest_commit_ms = 0;
        loop {
            match read_frame(&mut reader)? {
                Next::End => break,
                Next::Torn(_) if read_only => {
                    // A writer is appending right here: stop at what is committed.
                    let file = Arc::new(File::open(&path).map_err(LogError::io("reopen segment"))?);
                    index.segments.insert(segment, Segment { file, len: position, newest_commit_ms });
                    return Ok(false);
                }
                Next::Torn(why) => {
                    if !last {
                        return Err(LogError::Corrupt(format!("segment {} at byte {position}: {why}", path.display())));
                    }
                    tracing::warn!(segment = %path.display(), position, why, "cutting off the uncommitted tail of the log");
                    break;
                }
                Next::Frame { payload, len } => {
                    match parse_frame(&payload)? {
                        Frame::Data { topic_id, partition, base_offset, count, max_timestamp_ms } => {
                            self.pending_data.push((
                                topic_id,
                                partition,
                                FrameLocation {
                                    base_offset,
                                    count,
                                    segment,
                                    position,
                                    len: len as u32,
                                    max_timestamp_ms,
                                },
                            ))
                        }
                        Frame::Topic { topic_id, partitions, name } => {
                            self.pending_topics.push((topic_id, partitions, name))
                        }
                        Frame::Commit { wall_ms, positions } => {
                            for (id, partitions, name) in self.pending_topics.drain(..) {
                                *next_topic_id = (*next_topic_id).max(id + 1);
                                index.add_topic(name, id, partitions);
                            }
                            for (topic_id, partition, location) in self.pending_data.drain(..) {
                                index.add_frame(topic_id, partition, location)?;
                            }
                            for (group, topic_id, partition, offset) in positions {
                                index.positions.insert((group, topic_id, partition), offset);
                            }
                            newest_commit_ms = wall_ms;
                            self.last_commit = Some((segment, position + len));
                        }
                    }
                    position += len;
                }
            }
        }
        let file =
            OpenOptions::new().read(true).write(!read_only).open(&path).map_err(LogError::io("reopen segment"))?;
        index.segments.insert(segment, Segment { file: Arc::new(file), len: position, newest_commit_ms });
        Ok(true)
    }
}

/// The segment the next write goes to, truncated to the last commit (created if none).
fn active_file(
    dir: &Path,
    index: &mut Index,
    active_segment: u64,
    active_len: u64,
    read_only: bool,
) -> Result<Arc<File>, LogError> {
    Ok(match index.segments.get_mut(&active_segment) {
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
            let file = Arc::new(create_segment(dir, active_segment)?);
            index.segments.insert(active_segment, Segment { file: file.clone(), len: 0, newest_commit_ms: now_ms() });
            file
        }
    })
}
