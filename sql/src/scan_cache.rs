//! Decoded columns kept between statements, so a topic's committed records are parsed
//! from JSON once, not on every query.
//!
//! Per (topic, partition) the cache holds the rows of one contiguous offset range,
//! `[start, end)`, as chunks of Arrow arrays: per chunk the `_offset` of each row and
//! the columns statements have asked for so far. A statement reads its cut of a
//! partition from the chunks it overlaps (sliced to its offsets; zero-copy), decodes
//! from the log only what the cache lacks (records past `end`, or a column no statement
//! read before, for the chunks it overlaps) and hands that back to the cache.
//!
//! Committed records never change, so a cached row stays right. Two things could make it
//! wrong, and are checked: a log recreated under the same directory or topic name (the
//! last cached record is read again and compared, by offset and value hash, on each
//! statement), and a cut that ends before the cache does (the log went back). Either
//! drops the partition's entry.
//!
//! Memory is bounded by `bytes_max` (Arrow's own accounting of the arrays): past it the
//! least recently read partitions are dropped; a partition bigger than the whole budget
//! is not kept. 0 turns the cache off.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;
use prometheus::{IntCounterVec, IntGauge};

use crate::metrics::{SqlMetrics, scan_cache_bytes, scan_rows_total};

/// The default of `--scan-cache-bytes-max`.
pub const SCAN_CACHE_BYTES_MAX_DEFAULT: usize = 512 << 20;

/// Rows of the records in `[first, end)` of one partition.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub first: u64,
    pub end: u64,
    /// `_offset` of each row, ascending (a ledger record gives a row per posting).
    pub offsets: ArrayRef,
    /// By table column index: the columns decoded so far.
    pub columns: Vec<Option<ArrayRef>>,
}

impl Chunk {
    /// A chunk of `batch`, decoded with `projection` (which holds the `_offset` column
    /// at `offset_column`), covering `[first, end)` of a table of `width` columns.
    pub fn new(
        (first, end): (u64, u64),
        batch: &RecordBatch,
        projection: &[usize],
        offset_column: usize,
        width: usize,
    ) -> Chunk {
        let mut columns = vec![None; width];
        for (position, &index) in projection.iter().enumerate() {
            columns[index] = Some(batch.column(position).clone());
        }
        let offsets = columns[offset_column].clone().expect("the projection holds _offset");
        Chunk { first, end, offsets, columns }
    }

    fn bytes(&self) -> usize {
        self.columns.iter().flatten().map(|column| column.get_array_memory_size()).sum()
    }

    /// The columns of `needed` it lacks.
    pub fn missing(&self, needed: &[usize]) -> Vec<usize> {
        needed.iter().copied().filter(|&i| self.columns[i].is_none()).collect()
    }

    /// Adds columns decoded again from its records; false when the rows differ (the
    /// log's records are not the ones cached).
    pub fn add_columns(&mut self, batch: &RecordBatch, projection: &[usize]) -> bool {
        if batch.num_rows() != self.offsets.len() {
            return false;
        }
        for (position, &index) in projection.iter().enumerate() {
            self.columns[index] = Some(batch.column(position).clone());
        }
        true
    }

    /// Its rows with offsets in `[from, until)`, columns `needed` in that order.
    pub fn slice(&self, schema: &SchemaRef, needed: &[usize], (from, until): (u64, u64)) -> RecordBatch {
        let offsets = self.offsets.as_primitive::<Int64Type>().values();
        let start = offsets.partition_point(|&o| (o as u64) < from);
        let stop = offsets.partition_point(|&o| (o as u64) < until);
        let columns: Vec<ArrayRef> = needed
            .iter()
            .map(|&i| {
                self.columns[i].as_ref().expect("sliced after its columns were decoded").slice(start, stop - start)
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(stop - start));
        RecordBatch::try_new_with_options(schema.clone(), columns, &options).expect("the projected schema's columns")
    }
}

/// One partition's cached rows: chunks covering `[start, end)` without gaps.
#[derive(Debug, Clone, Default)]
pub struct Cached {
    pub start: u64,
    pub end: u64,
    pub chunks: Vec<Chunk>,
    /// The last record cached: its offset and value hash (see the module docs).
    pub last: Option<(u64, u64)>,
}

impl Cached {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::bytes).sum()
    }

    /// Whether a read of `[from, until)` can use it: it overlaps or touches the range.
    pub fn usable_for(&self, from: u64, until: u64) -> bool {
        !self.chunks.is_empty() && from <= self.end && until >= self.start
    }
}

type Key = (String, u32);

struct Entry {
    cached: Cached,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

pub struct ScanCache {
    bytes_max: usize,
    state: Mutex<State>,
    bytes: IntGauge,
    rows: IntCounterVec,
}

impl std::fmt::Debug for ScanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanCache(bytes_max={})", self.bytes_max)
    }
}

impl ScanCache {
    /// A cache of at most `bytes_max` (0: off), exporting its size and rows through
    /// `metrics` when given.
    pub fn new(bytes_max: usize, metrics: Option<&SqlMetrics>) -> ScanCache {
        let (bytes, rows) = match metrics {
            Some(metrics) => (metrics.scan_cache_bytes.clone(), metrics.scan_rows_total.clone()),
            None => (scan_cache_bytes(), scan_rows_total()),
        };
        ScanCache { bytes_max, state: Mutex::new(State::default()), bytes, rows }
    }

    pub fn enabled(&self) -> bool {
        self.bytes_max > 0
    }

    /// The partition's cached rows (a copy of the chunk list; the arrays are shared).
    pub fn get(&self, topic: &str, partition: u32) -> Option<Cached> {
        let mut state = self.state.lock().expect("scan cache lock");
        state.clock += 1;
        let clock = state.clock;
        let entry = state.entries.get_mut(&(topic.to_string(), partition))?;
        entry.used = clock;
        Some(entry.cached.clone())
    }

    /// Forgets the partition (its records are not the ones cached).
    pub fn drop_partition(&self, topic: &str, partition: u32) {
        let mut state = self.state.lock().expect("scan cache lock");
        if let Some(entry) = state.entries.remove(&(topic.to_string(), partition)) {
            state.bytes -= entry.bytes;
        }
        self.bytes.set(state.bytes as i64);
    }

    /// Keeps `cached` as the partition's rows, in place of `replaces` (what [`get`]
    /// returned, `None` if nothing). When another statement changed the entry since,
    /// its version stays. Then drops the least recently read partitions until the cache
    /// fits its budget.
    ///
    /// [`get`]: ScanCache::get
    pub fn put(&self, topic: &str, partition: u32, replaces: Option<(u64, u64)>, cached: Cached) {
        if !self.enabled() {
            return;
        }
        let key = (topic.to_string(), partition);
        let mut state = self.state.lock().expect("scan cache lock");
        let current = state.entries.get(&key).map(|entry| (entry.cached.start, entry.cached.end));
        if current.is_some() && current != replaces {
            return;
        }
        let bytes = cached.bytes();
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= old.bytes;
        }
        if bytes <= self.bytes_max {
            state.clock += 1;
            let used = state.clock;
            state.bytes += bytes;
            state.entries.insert(key.clone(), Entry { cached, bytes, used });
        }
        while state.bytes > self.bytes_max {
            let oldest = state
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, entry)| entry.used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            let entry = state.entries.remove(&oldest).expect("just found");
            state.bytes -= entry.bytes;
        }
        self.bytes.set(state.bytes as i64);
    }

    /// Counts rows a scan produced from the cache and from the log.
    pub fn count_rows(&self, from_cache: usize, from_log: usize) {
        self.rows.with_label_values(&["cache"]).inc_by(from_cache as u64);
        self.rows.with_label_values(&["log"]).inc_by(from_log as u64);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().expect("scan cache lock").bytes
    }
}
