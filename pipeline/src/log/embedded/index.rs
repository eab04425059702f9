//! The embedded log's in-memory index: topics, per-partition frame locations, consumer
//! positions and segments, rebuilt from the segments on open.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;

use crate::log::{LogError, Topic};

#[derive(Clone, Copy, Debug)]
pub(super) struct FrameLocation {
    pub(super) base_offset: u64,
    pub(super) count: u32,
    pub(super) segment: u64,
    pub(super) position: u64,
    pub(super) len: u32,
    /// The latest timestamp of the frame's records (`None` in frames written before
    /// frames kept it).
    pub(super) max_timestamp_ms: Option<i64>,
}

#[derive(Default)]
pub(super) struct PartitionIndex {
    pub(super) start_offset: u64,
    pub(super) end_offset: u64,
    pub(super) frames: VecDeque<FrameLocation>,
}

pub(super) struct Segment {
    pub(super) file: Arc<File>,
    pub(super) len: u64,
    pub(super) newest_commit_ms: i64,
}

#[derive(Default)]
pub(super) struct Index {
    pub(super) topics: BTreeMap<String, (u32, Topic)>,
    pub(super) topic_names: HashMap<u32, Arc<str>>,
    pub(super) partitions: HashMap<(u32, u32), PartitionIndex>,
    pub(super) positions: BTreeMap<(String, u32, u32), u64>,
    pub(super) segments: BTreeMap<u64, Segment>,
    pub(super) first_segment: u64,
}

/// A position in the write-ahead log: (segment, byte offset). Orders all writes.
pub(super) type WalPosition = (u64, u64);

impl PartitionIndex {
    pub(super) fn frame_containing(&self, offset: u64) -> Option<&FrameLocation> {
        let i = self.frames.partition_point(|f| f.base_offset + u64::from(f.count) <= offset);
        self.frames.get(i)
    }

    /// The first offset of the first frame holding a record at or after `timestamp_ms`
    /// (or not knowing whether it does): every record before it is earlier. The end when
    /// none does.
    pub(super) fn offset_for_time(&self, timestamp_ms: i64) -> u64 {
        let found = self.frames.iter().find(|f| f.max_timestamp_ms.is_none_or(|max| max >= timestamp_ms));
        found.map_or(self.end_offset, |f| f.base_offset.max(self.start_offset))
    }

    pub(super) fn start_after_deleting(&self, first_segment: u64) -> u64 {
        self.frames.iter().find(|f| f.segment >= first_segment).map(|f| f.base_offset).unwrap_or(self.end_offset)
    }
}

impl Index {
    pub(super) fn add_topic(&mut self, name: String, id: u32, partitions: u32) {
        let name: Arc<str> = name.into();
        self.topic_names.insert(id, name.clone());
        for partition in 0..partitions {
            self.partitions.entry((id, partition)).or_default();
        }
        self.topics.insert(name.to_string(), (id, Topic { name, partitions }));
    }

    pub(super) fn add_frame(&mut self, topic_id: u32, partition: u32, location: FrameLocation) -> Result<(), LogError> {
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

    pub(super) fn topic_id(&self, topic: &Topic) -> Result<u32, LogError> {
        self.topics.get(&*topic.name).map(|(id, _)| *id).ok_or_else(|| LogError::UnknownTopic(topic.name.to_string()))
    }

    pub(super) fn partition(&self, topic: &Topic, partition: u32) -> Result<(u32, &PartitionIndex), LogError> {
        let id = self.topic_id(topic)?;
        let p = self.partitions.get(&(id, partition)).ok_or_else(|| LogError::UnknownPartition {
            topic: topic.name.to_string(),
            partition,
            partitions: topic.partitions,
        })?;
        Ok((id, p))
    }
}

pub(super) fn covered_hint(frames: &[(FrameLocation, Arc<File>)], offset: u64) -> usize {
    frames
        .iter()
        .map(|(f, _)| (f.base_offset + u64::from(f.count)).saturating_sub(offset.max(f.base_offset)) as usize)
        .sum()
}
