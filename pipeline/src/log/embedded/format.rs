//! The embedded log's bytes: frames (`length u32 | crc32 u32 | payload`) of data, topic
//! and commit kinds, their encoding and decoding, LZ4 data frames, and the checkpoint.

use std::io::{ErrorKind, Read};

use serde::{Deserialize, Serialize};

use super::super::{LogError, PartitionBatch};
use crate::limits::FRAME_BYTES_MAX;

pub(super) const FRAME_HEADER_BYTES: usize = 8;
/// A data frame's header: kind u8, topic id u32, partition u32, base offset u64, record
/// count u32, the records' latest timestamp i64 (what a seek by time reads).
pub(super) const DATA_HEADER_BYTES: usize = 1 + 4 + 4 + 8 + 4 + 8;
const _: () = assert!(FRAME_HEADER_BYTES + DATA_HEADER_BYTES == super::super::BATCH_HEADER_RESERVED_BYTES);
/// The header of data frames written before frames kept their latest timestamp (kinds
/// [`KIND_DATA_UNTIMED`] and [`KIND_DATA_LZ4_UNTIMED`], still read).
pub(super) const UNTIMED_DATA_HEADER_BYTES: usize = 1 + 4 + 4 + 8 + 4;
pub(super) const KIND_DATA_UNTIMED: u8 = 1;
/// A data frame whose records are LZ4-compressed (block format), preceded by their
/// uncompressed length (u32).
pub(super) const KIND_DATA_LZ4_UNTIMED: u8 = 4;
/// Data frames as this version writes them: a binary that knows only the untimed kinds
/// reads them as corruption, so a log, once written by this version, stays with it.
pub(super) const KIND_DATA: u8 = 5;
pub(super) const KIND_DATA_LZ4: u8 = 6;
/// Batches smaller than this are stored uncompressed.
pub(super) const COMPRESSION_BYTES_MIN: usize = 512;
pub(super) const KIND_COMMIT: u8 = 2;
pub(super) const KIND_TOPIC: u8 = 3;
pub(super) const CHECKPOINT_VERSION: u16 = 1;
/// Commits between retention passes.
pub(super) const RETENTION_CHECK_COMMITS: u32 = 64;

#[derive(Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) version: u16,
    pub(super) first_segment: u64,
    pub(super) next_topic_id: u32,
    pub(super) topics: Vec<(String, u32, u32)>,
    pub(super) partition_starts: Vec<(u32, u32, u64)>,
    pub(super) positions: Vec<(String, u32, u32, u64)>,
}

/// Appends a frame (header with crc over the payload) to `out`; `payload` writes the payload.
pub(super) fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
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
pub(super) enum Frame {
    Data { topic_id: u32, partition: u32, base_offset: u64, count: u32, max_timestamp_ms: Option<i64> },
    Topic { topic_id: u32, partitions: u32, name: String },
    Commit { wall_ms: i64, positions: Vec<(String, u32, u32, u64)> },
}

pub(super) fn parse_frame(payload: &[u8]) -> Result<Frame, LogError> {
    let mut r = Reader { bytes: payload };
    match r.u8()? {
        kind @ (KIND_DATA | KIND_DATA_LZ4 | KIND_DATA_UNTIMED | KIND_DATA_LZ4_UNTIMED) => {
            let (topic_id, partition, base_offset, count) = (r.u32()?, r.u32()?, r.u64()?, r.u32()?);
            let timed = matches!(kind, KIND_DATA | KIND_DATA_LZ4);
            let max_timestamp_ms = if timed { Some(r.u64()? as i64) } else { None };
            Ok(Frame::Data { topic_id, partition, base_offset, count, max_timestamp_ms })
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
pub(super) enum Next {
    Frame { payload: Vec<u8>, len: u64 },
    End,
    Torn(String),
}

pub(super) fn read_frame(reader: &mut impl Read) -> Result<Next, LogError> {
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

pub(super) fn encode_commit_frame(buffer: &mut Vec<u8>, wall_ms: i64, positions: &[(String, u32, u32, u64)]) {
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

/// A data frame of a commit: sealed in its batch's own buffer, or compressed into a
/// shared buffer (a range of it).
pub(super) enum FrameBytes<'a> {
    Sealed(&'a [u8]),
    Compressed(std::ops::Range<usize>),
}

/// Appends an LZ4 data frame of `batch` to `out`; `scratch` is reused across calls so
/// the compressor's output space is not zeroed again for every frame.
pub(super) fn encode_compressed_frame(
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
        out.extend_from_slice(&batch.max_timestamp_ms().to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&scratch[..written]);
    });
}

/// The records of an LZ4 data frame body (uncompressed length u32, then the block).
pub(super) fn decompress_records(body: &[u8]) -> Result<Vec<u8>, String> {
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
pub(super) fn seal_data_frame(batch: &mut PartitionBatch, topic_id: u32, partition: u32, base_offset: u64) -> &[u8] {
    let (count, batch_max_timestamp_ms) = (batch.count, batch.max_timestamp_ms());
    let buffer = batch.buffer_mut();
    let len = (buffer.len() - FRAME_HEADER_BYTES) as u32;
    let header = &mut buffer[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + DATA_HEADER_BYTES];
    header[0] = KIND_DATA;
    header[1..5].copy_from_slice(&topic_id.to_le_bytes());
    header[5..9].copy_from_slice(&partition.to_le_bytes());
    header[9..17].copy_from_slice(&base_offset.to_le_bytes());
    header[17..21].copy_from_slice(&count.to_le_bytes());
    header[21..29].copy_from_slice(&batch_max_timestamp_ms.to_le_bytes());
    let crc = crc32fast::hash(&buffer[FRAME_HEADER_BYTES..]);
    buffer[0..4].copy_from_slice(&len.to_le_bytes());
    buffer[4..8].copy_from_slice(&crc.to_le_bytes());
    buffer
}
