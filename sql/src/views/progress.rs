//! What a view's topic holds. Every commit appends, in one atomic append, the rows of
//! the windows it closed (key `w:<window start ms>`), the rows it found late (key
//! `late`) and then one progress record (key `progress`): the last record of the topic
//! is always the progress the view resumes from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const WINDOW_KEY_PREFIX: &str = "w:";
pub const LATE_KEY: &str = "late";
pub const PROGRESS_KEY: &str = "progress";

/// One source partition's part of the progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    pub partition: u32,
    /// The next offset to read: rows before it were counted or routed.
    pub read: u64,
    /// The first offset an open window still needs: reading resumes here.
    pub resume: u64,
    pub max_event_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub plan_hash: u64,
    /// Every window ending at or before this is closed and emitted.
    pub closed_through_ms: i64,
    pub partitions: Vec<PartitionProgress>,
    pub windows_emitted_total: u64,
    pub late_rows_total: u64,
}

impl Progress {
    pub fn max_event_ms(&self) -> BTreeMap<u32, Option<i64>> {
        self.partitions.iter().map(|p| (p.partition, p.max_event_ms)).collect()
    }
}

/// A row that came after its window closed, as the view's topic records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRecord {
    pub source_topic: String,
    pub source_partition: u32,
    pub source_offset: u64,
    /// RFC 3339, or null when the row had no event time.
    pub event_time: Option<String>,
    pub window_start: Option<String>,
    /// The close line it missed.
    pub closed_through: String,
}
