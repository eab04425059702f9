//! A view's windows in event time: a pure operator of (rows, its own state, time).
//!
//! - Rows go to the tumbling window `date_bin(stride, t)` (origin 1970-01-01 UTC, as
//!   DataFusion's `date_bin` bins them) and are kept until it closes.
//! - The watermark is the slowest active partition's latest event time less the allowed
//!   lateness. A partition that has caught up and stayed silent for the idle timeout
//!   (processing time, passed in) is not active: it does not hold windows open. When no
//!   partition is active, the fastest one's time counts.
//! - A window closes once its end is at or before the watermark; every window before the
//!   close line (`closed_through`) is closed, empty or not, exactly once.
//! - A row whose window is already closed is late: it is returned to the caller to
//!   route, never counted in a window or dropped.
//!
//! The state needed to resume is small: the close line, each partition's latest event
//! time, and for each partition the first offset an open window still needs
//! ([`Windows::resume_offsets`]); rows are re-read from there after a restart.

use std::collections::BTreeMap;

use arrow_array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;

use crate::error::SqlError;

/// Where a tumbling window of `stride_ms` containing `t_ms` starts.
pub fn window_start(t_ms: i64, stride_ms: i64) -> i64 {
    t_ms.div_euclid(stride_ms) * stride_ms
}

/// A partition's event-time clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionClock {
    pub max_event_ms: Option<i64>,
    /// Since when (processing time) the partition has been read to its end with nothing
    /// new; `None` while it has more to read.
    pub caught_up_since_ms: Option<i64>,
}

/// A row that arrived after its window closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRow {
    pub partition: u32,
    pub offset: u64,
    /// `None`: the row has no event time at all.
    pub event_ms: Option<i64>,
    pub window_start_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct OpenWindow {
    batches: Vec<RecordBatch>,
    /// The first offset of each partition's rows in the window.
    first_offsets: BTreeMap<u32, u64>,
}

/// A closed window: its start and its rows.
#[derive(Debug)]
pub struct ClosedWindow {
    pub start_ms: i64,
    pub batches: Vec<RecordBatch>,
}

#[derive(Debug)]
pub struct Windows {
    stride_ms: i64,
    lateness_ms: i64,
    idle_timeout_ms: i64,
    /// Every window ending at or before this has closed.
    closed_through_ms: i64,
    clocks: BTreeMap<u32, PartitionClock>,
    open: BTreeMap<i64, OpenWindow>,
}

impl Windows {
    pub fn new(stride_ms: i64, lateness_ms: i64, idle_timeout_ms: i64, partitions: u32) -> Windows {
        Windows {
            stride_ms,
            lateness_ms,
            idle_timeout_ms,
            closed_through_ms: i64::MIN,
            clocks: (0..partitions).map(|p| (p, PartitionClock::default())).collect(),
            open: BTreeMap::new(),
        }
    }

    /// Picks up where a committed progress left off.
    pub fn resume(&mut self, closed_through_ms: i64, max_event_ms: &BTreeMap<u32, Option<i64>>) {
        self.closed_through_ms = closed_through_ms;
        for (partition, max) in max_event_ms {
            self.clocks.entry(*partition).or_default().max_event_ms = *max;
        }
    }

    pub fn closed_through_ms(&self) -> i64 {
        self.closed_through_ms
    }

    pub fn clocks(&self) -> &BTreeMap<u32, PartitionClock> {
        &self.clocks
    }

    /// Rows of `partition` (with an `_offset` column and the time column at
    /// `time_index`). With `replaying`, rows are being read again after a restart:
    /// those of closed windows were handled before and are skipped, not late.
    pub fn ingest(
        &mut self,
        partition: u32,
        batch: &RecordBatch,
        time_index: usize,
        replaying_below: Option<u64>,
    ) -> Result<Vec<LateRow>, SqlError> {
        let times = batch
            .column(time_index)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| SqlError::Config("a view's time column is a millisecond timestamp".into()))?;
        let offsets = batch
            .column_by_name("_offset")
            .and_then(|column| column.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| SqlError::Config("a view's rows carry _offset".into()))?;
        let mut late = Vec::new();
        let mut rows_of: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let clock = self.clocks.entry(partition).or_default();
        for row in 0..batch.num_rows() {
            let offset = u64::try_from(offsets.value(row)).unwrap_or(0);
            let replay = replaying_below.is_some_and(|below| offset < below);
            if times.is_null(row) {
                if !replay {
                    late.push(LateRow { partition, offset, event_ms: None, window_start_ms: None });
                }
                continue;
            }
            let t = times.value(row);
            let start = window_start(t, self.stride_ms);
            if !replay {
                clock.max_event_ms = Some(clock.max_event_ms.map_or(t, |max| max.max(t)));
            }
            if start.saturating_add(self.stride_ms) <= self.closed_through_ms {
                if !replay {
                    late.push(LateRow { partition, offset, event_ms: Some(t), window_start_ms: Some(start) });
                }
                continue;
            }
            rows_of.entry(start).or_default().push(u32::try_from(row).expect("a batch has under 2^32 rows"));
        }
        // Per window, not per row: its rows, and the first offset it needs.
        for (start, rows) in rows_of {
            let first =
                rows.iter().map(|&row| offsets.value(row as usize)).min().map_or(0, |o| u64::try_from(o).unwrap_or(0));
            let window = self.open.entry(start).or_default();
            window.first_offsets.entry(partition).and_modify(|known| *known = (*known).min(first)).or_insert(first);
            window.batches.push(take_record_batch(batch, &UInt32Array::from(rows))?);
        }
        Ok(late)
    }

    /// Records whether `partition` is read to its end (`caught_up`) at `now_ms`.
    pub fn mark(&mut self, partition: u32, caught_up: bool, now_ms: i64) {
        let clock = self.clocks.entry(partition).or_default();
        clock.caught_up_since_ms = match (caught_up, clock.caught_up_since_ms) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now_ms),
        };
    }

    /// The watermark at processing time `now_ms`: `None` until some partition has an
    /// event time.
    pub fn watermark(&self, now_ms: i64) -> Option<i64> {
        let idle = |clock: &PartitionClock| {
            clock.caught_up_since_ms.is_some_and(|since| now_ms.saturating_sub(since) >= self.idle_timeout_ms)
        };
        let active: Vec<Option<i64>> =
            self.clocks.values().filter(|clock| !idle(clock)).map(|clock| clock.max_event_ms).collect();
        let time = if active.is_empty() {
            self.clocks.values().filter_map(|clock| clock.max_event_ms).max()?
        } else {
            // An active partition with no event time yet holds every window open.
            active.into_iter().collect::<Option<Vec<i64>>>()?.into_iter().min()?
        };
        Some(time.saturating_sub(self.lateness_ms))
    }

    /// Closes every window that ends at or before the watermark, oldest first.
    pub fn close(&mut self, now_ms: i64) -> Vec<ClosedWindow> {
        let Some(watermark) = self.watermark(now_ms) else { return Vec::new() };
        let line = window_start(watermark, self.stride_ms);
        if line <= self.closed_through_ms {
            return Vec::new();
        }
        self.closed_through_ms = line;
        let still_open = self.open.split_off(&(line - self.stride_ms + 1));
        let closed = std::mem::replace(&mut self.open, still_open);
        closed.into_iter().map(|(start_ms, window)| ClosedWindow { start_ms, batches: window.batches }).collect()
    }

    /// For each partition, the first offset an open window still needs, or `read` (the
    /// next offset to read) when none does.
    pub fn resume_offsets(&self, read: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
        let mut resume = read.clone();
        for window in self.open.values() {
            for (partition, first) in &window.first_offsets {
                resume.entry(*partition).and_modify(|offset| *offset = (*offset).min(*first)).or_insert(*first);
            }
        }
        resume
    }

    /// Rows waiting in open windows.
    pub fn open_rows(&self) -> usize {
        self.open.values().flat_map(|window| &window.batches).map(RecordBatch::num_rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn rows(times: &[Option<i64>], first_offset: u64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("_offset", DataType::Int64, false),
        ]));
        let offsets: Vec<i64> = (0..times.len() as i64).map(|i| first_offset as i64 + i).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from(offsets)),
            ],
        )
        .unwrap()
    }

    fn starts(closed: &[ClosedWindow]) -> Vec<i64> {
        closed.iter().map(|window| window.start_ms).collect()
    }

    #[test]
    fn windows_close_behind_the_slowest_partition_and_late_rows_are_returned() {
        let mut windows = Windows::new(5 * MINUTE, MINUTE, 10_000, 2);
        windows.ingest(0, &rows(&[Some(0), Some(4 * MINUTE), Some(11 * MINUTE)], 0), 0, None).unwrap();
        assert!(windows.close(0).is_empty(), "partition 1 has no time yet: everything waits");
        windows.ingest(1, &rows(&[Some(7 * MINUTE)], 0), 0, None).unwrap();
        // Watermark = min(11, 7) - 1 = 6 minutes: [0, 5) closes.
        assert_eq!(starts(&windows.close(0)), [0]);
        let late = windows.ingest(1, &rows(&[Some(2 * MINUTE), None], 1), 0, None).unwrap();
        assert_eq!(late.len(), 2);
        assert_eq!(late[0], LateRow { partition: 1, offset: 1, event_ms: Some(2 * MINUTE), window_start_ms: Some(0) });
        assert_eq!(late[1].event_ms, None);
        // Partition 1 goes idle: only partition 0 holds windows (watermark 10): [5, 10) closes.
        windows.mark(1, true, 1_000);
        assert!(windows.close(5_000).is_empty(), "not idle long enough");
        let closed = windows.close(11_000);
        assert_eq!(starts(&closed), [5 * MINUTE]);
        assert_eq!(closed[0].batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        assert_eq!(windows.resume_offsets(&BTreeMap::from([(0, 3), (1, 3)])), BTreeMap::from([(0, 2), (1, 3)]));
    }

    proptest! {
        /// Against a simple model: every row is either in exactly one emitted window (the
        /// one `date_bin` puts it in) or returned late, each window is emitted at most
        /// once, and after a final flush none is left open.
        #[test]
        fn every_row_is_in_one_window_or_late(
            events in proptest::collection::vec((0u32..3, 0i64..120, proptest::bool::ANY), 1..200),
            stride_minutes in 1i64..20,
            lateness_minutes in 0i64..10,
        ) {
            let stride = stride_minutes * MINUTE;
            let mut windows = Windows::new(stride, lateness_minutes * MINUTE, 0, 3);
            let mut next_offset = [0u64; 3];
            let mut emitted: BTreeMap<i64, usize> = BTreeMap::new();
            let mut late = 0;
            for (partition, minute, close_now) in &events {
                let offset = next_offset[*partition as usize];
                next_offset[*partition as usize] += 1;
                late += windows.ingest(*partition, &rows(&[Some(minute * MINUTE)], offset), 0, None).unwrap().len();
                if *close_now {
                    for window in windows.close(0) {
                        let n: usize = window.batches.iter().map(RecordBatch::num_rows).sum();
                        prop_assert!(emitted.insert(window.start_ms, n).is_none(), "window emitted twice");
                    }
                }
            }
            // Everything caught up and idle: the fastest partition's time closes the rest,
            // and an event far ahead flushes every window.
            for partition in 0..3 {
                windows.mark(partition, true, 0);
            }
            windows.ingest(0, &rows(&[Some(10_000 * MINUTE)], next_offset[0]), 0, None).unwrap();
            for window in windows.close(0) {
                let n: usize = window.batches.iter().map(RecordBatch::num_rows).sum();
                if window.start_ms < 10_000 * MINUTE - stride {
                    prop_assert!(emitted.insert(window.start_ms, n).is_none(), "window emitted twice");
                }
            }
            let in_windows: usize = emitted.values().sum();
            prop_assert_eq!(in_windows + late, events.len());
            for start in emitted.keys() {
                prop_assert_eq!(start % stride, 0);
            }
        }
    }
}
