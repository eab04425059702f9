//! One partition's part of a table scan: the rows of `[from, until)` in the statement's
//! cut, from the [`ScanCache`] where it has them and decoded from the log where it does
//! not (then handed to the cache).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use paystream_pipeline::log::Topic;
use xxhash_rust::xxh3::xxh3_64;

use crate::cut::Cut;
use crate::decode::decode;
use crate::error::SqlError;
use crate::guard::Budget;
use crate::scan_cache::{Cached, Chunk};
use crate::topic_table::{TopicTable, read_range};

pub(crate) struct PartitionScan<'a> {
    pub table: &'a TopicTable,
    pub cut: &'a Cut,
    pub topic: &'a Topic,
    pub partition: u32,
    /// The partition's (first offset, end) in the statement's cut.
    pub log_range: (u64, u64),
    pub budget: Option<&'a Budget>,
    /// Rows the statement's scan of this table has produced, over its partitions.
    pub rows: &'a AtomicUsize,
}

/// Records decoded from the log: batches with the offsets each covers, without gaps.
struct Decoded {
    spans: Vec<((u64, u64), RecordBatch)>,
    rows: usize,
    /// The last record read: offset and value hash.
    last: Option<(u64, u64)>,
}

impl Decoded {
    fn into_chunks(self, projection: &[usize], offset_column: usize, width: usize) -> Vec<Chunk> {
        self.spans.iter().map(|(covers, batch)| Chunk::new(*covers, batch, projection, offset_column, width)).collect()
    }
}

impl PartitionScan<'_> {
    /// The rows of `[from, until)`, columns `needed` (table column indices) in that order.
    pub fn read(&self, needed: &[usize], (from, until): (u64, u64)) -> Result<Vec<RecordBatch>, SqlError> {
        if from >= until {
            return Ok(Vec::new()); // narrowed to nothing: the cache stays as it is
        }
        let schema = Arc::new(self.table.schema.project(needed)?);
        let cache = &self.table.cache;
        if !cache.enabled() {
            return self.read_uncached(needed, (from, until));
        }
        let (topic, partition) = (self.table.topic.as_str(), self.partition);
        let held = cache.get(topic, partition);
        if held.as_ref().is_some_and(|cached| cached.end > self.log_range.1) {
            // Cached past this statement's cut (a statement that started later read on):
            // read without the cache, leaving it to the later cuts.
            return self.read_uncached(needed, (from, until));
        }
        let held = held.filter(|cached| self.still_valid(cached).unwrap_or(false));
        if held.is_none() {
            cache.drop_partition(topic, partition);
        }
        let replaces = held.as_ref().map(|cached| (cached.start, cached.end));
        let held = held.map(|cached| self.without_deleted(cached));
        let mut cached = match held {
            Some(cached) if cached.usable_for(from, until) => cached,
            _ => Cached { start: from, end: from, ..Cached::default() },
        };
        let mut from_log = 0;
        let (offset_column, width) = (self.table.offset_column, self.table.table.columns.len());
        let mut decoding = needed.to_vec();
        if !decoding.contains(&offset_column) {
            decoding.push(offset_column);
        }
        if from < cached.start {
            let before = self.decode_span((from, cached.start), &decoding, true)?;
            from_log += before.rows;
            cached.chunks.splice(0..0, before.into_chunks(&decoding, offset_column, width));
            cached.start = from;
        }
        for chunk in cached.chunks.iter_mut().filter(|chunk| chunk.end > from && chunk.first < until) {
            let missing = chunk.missing(needed);
            if missing.is_empty() {
                continue;
            }
            let again = self.decode_span((chunk.first, chunk.end), &missing, false)?;
            let batches: Vec<RecordBatch> = again.spans.into_iter().map(|(_, batch)| batch).collect();
            let batch = concat_batches(&Arc::new(self.table.schema.project(&missing)?), &batches)?;
            if !chunk.add_columns(&batch, &missing) {
                // Not the records cached: forget them and read this range afresh.
                cache.drop_partition(topic, partition);
                return self.read_uncached(needed, (from, until));
            }
        }
        if until > cached.end {
            let after = self.decode_span((cached.end, until), &decoding, true)?;
            from_log += after.rows;
            cached.last = after.last.or(cached.last);
            cached.chunks.extend(after.into_chunks(&decoding, offset_column, width));
            cached.end = until;
        }
        let batches: Vec<RecordBatch> = cached
            .chunks
            .iter()
            .filter(|chunk| chunk.end > from && chunk.first < until)
            .map(|chunk| chunk.slice(&schema, needed, (from, until)))
            .collect();
        let produced: usize = batches.iter().map(RecordBatch::num_rows).sum();
        self.count_against_cap(produced.saturating_sub(from_log))?;
        cache.count_rows(produced.saturating_sub(from_log), from_log.min(produced));
        cache.put(topic, partition, replaces, cached);
        Ok(batches)
    }

    /// `[from, until)` decoded from the log, the cache neither read nor filled.
    fn read_uncached(&self, needed: &[usize], range: (u64, u64)) -> Result<Vec<RecordBatch>, SqlError> {
        let decoded = self.decode_span(range, needed, true)?;
        self.table.cache.count_rows(0, decoded.rows);
        Ok(decoded.spans.into_iter().map(|(_, batch)| batch).collect())
    }

    /// Whether the cached rows (ending within the cut) are still this log's: the last
    /// record cached reads back the same. A log recreated smaller than the cache is
    /// read without it (above) until it grows past the cache's end, and is caught here.
    fn still_valid(&self, cached: &Cached) -> Result<bool, SqlError> {
        let Some((offset, hash)) = cached.last else { return Ok(true) };
        let records = self.cut.log.fetch(self.topic, self.partition, offset, 1)?;
        Ok(records.first().is_some_and(|record| record.offset == offset && xxh3_64(&record.value) == hash))
    }

    /// `cached` without the chunks that begin before the cut's first offset (records the
    /// log's retention deleted: such a chunk could not be decoded again for a column).
    fn without_deleted(&self, mut cached: Cached) -> Cached {
        let log_start = self.log_range.0;
        if cached.start < log_start {
            cached.chunks.retain(|chunk| chunk.first >= log_start);
            cached.start = cached.chunks.first().map_or(cached.end, |chunk| chunk.first);
        }
        cached
    }

    /// Rows decoded past the cap fail the statement.
    fn count_against_cap(&self, rows: usize) -> Result<(), SqlError> {
        let rows_max = self.table.limits.rows_max;
        if self.rows.fetch_add(rows, Ordering::Relaxed) + rows > rows_max {
            return Err(SqlError::Config(format!(
                "table {} has more than {rows_max} rows in this statement's cut: narrow it with _partition or \
                 _offset filters, or on Kafka a lower bound on _timestamp",
                self.table.table.name
            )));
        }
        Ok(())
    }

    /// Decodes `[from, until)` from the log, columns `projection`, a batch per fetch;
    /// the rows count against the cap when `counted`.
    fn decode_span(&self, (from, until): (u64, u64), projection: &[usize], counted: bool) -> Result<Decoded, SqlError> {
        let table = self.table;
        let mut decoded = Decoded { spans: Vec::new(), rows: 0, last: None };
        let mut next = from;
        read_range(self.cut.log.as_ref(), self.topic, (self.partition, from, until), self.budget, |records| {
            let batch = decode(&table.table, &table.schema, Some(projection), self.partition, records)?;
            if counted {
                self.count_against_cap(batch.num_rows())?;
            }
            decoded.rows += batch.num_rows();
            let last = records.last().expect("read_range hands over records");
            decoded.last = Some((last.offset, xxh3_64(&last.value)));
            decoded.spans.push(((next, last.offset + 1), batch));
            next = last.offset + 1;
            Ok(())
        })?;
        // Through `until`: what lies past the last record is not in the log (markers).
        match decoded.spans.last_mut() {
            Some(((_, end), _)) => *end = until,
            None if from < until => {
                let schema = Arc::new(table.schema.project(projection)?);
                decoded.spans.push(((from, until), RecordBatch::new_empty(schema)));
            }
            None => {}
        }
        Ok(decoded)
    }
}
