//! Keeps one view: reads its source topic, feeds [`Windows`], runs the view's SQL over
//! each closed window's rows (bounded: any plan DataFusion can run works), and commits
//! the window rows, late rows and progress in one atomic append (see [`super::progress`]).
//! On the embedded log it runs in the process that owns the log (`run`, `serve` or
//! `views`); on Kafka in whichever one process is given the view (`views`, or `run`).
//!
//! After a restart it reads the last progress record, seeks each partition back to the
//! first offset an open window needs, and reads forward: rows before the committed read
//! position only refill open windows (they were counted or routed before), so every
//! window is emitted once and every late row routed once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use paystream_domain::time::format_rfc3339_ms;
use paystream_pipeline::clock::now_ms;
use paystream_pipeline::limits::OPEN_TRANSACTION_WAIT_MS_MAX;
use paystream_pipeline::log::{Log, Topic, Transaction, read_until};

use super::definition::ViewDef;
use super::progress::{LATE_KEY, LateRecord, PROGRESS_KEY, PartitionProgress, Progress, WINDOW_KEY_PREFIX};
use super::windows::{LateRow, Windows};
use crate::decode::decode;
use crate::error::SqlError;
use crate::metrics::SqlMetrics;
use crate::topic_table::FETCH_RECORDS_MAX;

/// How long the runner waits for new records when it has read everything.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Rows a view may hold in open windows; past it the view stops with the reason (a
/// lateness or window too long for the input's rate).
pub const OPEN_ROWS_MAX: usize = 5_000_000;
/// How often progress is committed when only read positions moved.
const PROGRESS_INTERVAL_MS: i64 = 5_000;
/// Offsets before the end of a view's topic read first to find its last progress, and
/// the factor the look-back grows by while it finds no record (markers, aborted records).
const PROGRESS_LOOKBACK_RECORDS: u64 = 16;
const PROGRESS_LOOKBACK_GROWTH: u64 = 16;

/// What a running view has done, for the summary `run --until-idle` prints.
#[derive(Debug, Default)]
pub struct ViewStats {
    pub windows_emitted_total: AtomicU64,
    pub late_rows_total: AtomicU64,
    /// The view stopped on an error (logged), such as being fenced by another process.
    pub stopped: AtomicBool,
    /// The view was dropped: it stops at its next step, with nothing left to do.
    pub dropped: AtomicBool,
}

pub struct ViewRunner {
    view: ViewDef,
    log: Arc<dyn Log>,
    source: Topic,
    target: Topic,
    schema: SchemaRef,
    time_index: usize,
    windows: Windows,
    /// Next offset to fetch, per partition.
    next: BTreeMap<u32, u64>,
    /// Rows below these were handled before a restart.
    replay_below: BTreeMap<u32, u64>,
    committed: Option<Progress>,
    last_commit_ms: i64,
    stats: Arc<ViewStats>,
    metrics: Option<SqlMetrics>,
    runtime: tokio::runtime::Runtime,
}

impl ViewRunner {
    /// Opens `view` over `source_topic` on `log`, resuming from its last progress.
    pub fn open(
        view: ViewDef,
        log: Arc<dyn Log>,
        source_topic: &str,
        metrics: Option<SqlMetrics>,
    ) -> Result<ViewRunner, SqlError> {
        let source = log.topic(source_topic)?;
        let target = log.create_topic(&view.topic(), 1)?;
        let schema = view.source.schema();
        let time_index = schema.index_of(&view.time_column)?;
        let mut windows = Windows::new(view.stride_ms, view.lateness_ms, view.idle_timeout_ms, source.partitions);
        let committed = last_progress(log.as_ref(), &target)?;
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        let mut replay_below = BTreeMap::new();
        for partition in 0..source.partitions {
            next.insert(partition, log.offsets(&source, partition)?.start);
        }
        if let Some(progress) = &committed {
            if progress.plan_hash != view.plan_hash {
                return Err(SqlError::Config(format!(
                    "materialized view {}: its topic {} was written under another definition; \
                     give the new definition a new name",
                    view.name, target.name
                )));
            }
            windows.resume(progress.closed_through_ms, &progress.max_event_ms());
            for partition in &progress.partitions {
                next.insert(partition.partition, partition.resume);
                replay_below.insert(partition.partition, partition.read);
            }
        }
        let stats = Arc::new(ViewStats::default());
        if let Some(progress) = &committed {
            stats.windows_emitted_total.store(progress.windows_emitted_total, Ordering::Relaxed);
            stats.late_rows_total.store(progress.late_rows_total, Ordering::Relaxed);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        if let Some(metrics) = &metrics {
            let totals = committed.as_ref().map_or((0, 0, i64::MIN), |progress| {
                (progress.windows_emitted_total, progress.late_rows_total, progress.closed_through_ms)
            });
            metrics.view(&view.name, totals.0, totals.1, totals.2, 0);
        }
        Ok(ViewRunner {
            view,
            log,
            source,
            target,
            schema,
            time_index,
            windows,
            next,
            replay_below,
            committed,
            last_commit_ms: now_ms(),
            stats,
            metrics,
            runtime,
        })
    }

    pub fn stats(&self) -> Arc<ViewStats> {
        self.stats.clone()
    }

    /// Runs until `stop`, or with `drain` until the source has been read to its end and
    /// silent for the idle timeout (so idle partitions let the last windows close);
    /// returns the first error (the view stops, the process goes on).
    pub fn run(mut self, stop: &AtomicBool, drain: &AtomicBool) -> Result<(), SqlError> {
        let mut last_read = now_ms();
        while !stop.load(Ordering::SeqCst) && !self.stats.dropped.load(Ordering::SeqCst) {
            let seen = self.log.commit_sequence();
            let now = now_ms();
            if self.step(now)? {
                last_read = now;
                continue;
            }
            if drain.load(Ordering::SeqCst) && now.saturating_sub(last_read) > self.view.idle_timeout_ms {
                self.step(now_ms())?;
                return Ok(());
            }
            self.log.wait_for_commit(seen, IDLE_POLL);
        }
        Ok(())
    }

    /// Reads what is there, closes what can close and commits; whether it read anything.
    pub fn step(&mut self, now: i64) -> Result<bool, SqlError> {
        let mut late = Vec::new();
        let mut read_any = false;
        for partition in 0..self.source.partitions {
            let offset = self.next[&partition];
            let records = self.log.fetch(&self.source, partition, offset, FETCH_RECORDS_MAX)?;
            let Some(last) = records.last() else {
                let resumed = self.log.resume_offset(&self.source, partition, offset);
                self.next.insert(partition, resumed);
                self.windows.mark(partition, true, now);
                continue;
            };
            read_any = true;
            self.next.insert(partition, last.offset + 1);
            self.windows.mark(partition, false, now);
            let batch = decode(&self.view.source, &self.schema, None, partition, &records)?;
            let replaying = self.replay_below.get(&partition).copied().filter(|below| *below > records[0].offset);
            late.extend(self.windows.ingest(partition, &batch, self.time_index, replaying)?);
        }
        let open = self.windows.open_rows();
        if open > OPEN_ROWS_MAX {
            return Err(SqlError::Config(format!(
                "materialized view {}: {open} rows in open windows, over {OPEN_ROWS_MAX}: shorten its lateness or window",
                self.view.name
            )));
        }
        let closed = self.windows.close(now);
        let moved = self.read_positions() != self.committed_reads();
        let due = now.saturating_sub(self.last_commit_ms) >= PROGRESS_INTERVAL_MS;
        if !closed.is_empty() || !late.is_empty() || (moved && due) {
            let mut emitted = Vec::with_capacity(closed.len());
            for window in closed {
                emitted.push((window.start_ms, self.evaluate(window.batches)?));
            }
            self.commit(emitted, late, now)?;
        }
        Ok(read_any)
    }

    /// The view's SQL over one window's rows.
    fn evaluate(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, SqlError> {
        let context = SessionContext::new();
        context
            .register_table(self.view.source.name, Arc::new(MemTable::try_new(self.schema.clone(), vec![batches])?))?;
        let query = self.view.query.clone();
        Ok(self.runtime.block_on(async move { context.sql(&query).await?.collect().await })?)
    }

    /// Next offset to read per partition, never behind what was committed.
    fn read_positions(&self) -> BTreeMap<u32, u64> {
        let mut read = self.next.clone();
        for (partition, below) in &self.replay_below {
            read.entry(*partition).and_modify(|next| *next = (*next).max(*below));
        }
        read
    }

    fn committed_reads(&self) -> BTreeMap<u32, u64> {
        self.committed
            .as_ref()
            .map(|progress| progress.partitions.iter().map(|p| (p.partition, p.read)).collect())
            .unwrap_or_default()
    }

    fn commit(&mut self, emitted: Vec<(i64, Vec<RecordBatch>)>, late: Vec<LateRow>, now: i64) -> Result<(), SqlError> {
        let mut transaction = Transaction::new();
        let mut windows = 0;
        for (start, batches) in &emitted {
            windows += 1;
            let key = format!("{WINDOW_KEY_PREFIX}{start}");
            for line in json_lines(batches)? {
                transaction.send_to_partition(&self.target, 0, key.as_bytes(), &line, now)?;
            }
        }
        let closed_through = format_rfc3339_ms(self.windows.closed_through_ms());
        for row in &late {
            let record = LateRecord {
                source_topic: self.source.name.to_string(),
                source_partition: row.partition,
                source_offset: row.offset,
                event_time: row.event_ms.map(format_rfc3339_ms),
                window_start: row.window_start_ms.map(format_rfc3339_ms),
                closed_through: closed_through.clone(),
            };
            let value = serde_json::to_vec(&record).map_err(|error| SqlError::Config(error.to_string()))?;
            transaction.send_to_partition(&self.target, 0, LATE_KEY.as_bytes(), &value, now)?;
        }
        let read = self.read_positions();
        let resume = self.windows.resume_offsets(&read);
        let previous = self.committed.as_ref();
        let progress = Progress {
            plan_hash: self.view.plan_hash,
            closed_through_ms: self.windows.closed_through_ms(),
            partitions: read
                .iter()
                .map(|(partition, read)| PartitionProgress {
                    partition: *partition,
                    read: *read,
                    resume: resume[partition],
                    max_event_ms: self.windows.clocks().get(partition).and_then(|clock| clock.max_event_ms),
                })
                .collect(),
            windows_emitted_total: previous.map_or(0, |p| p.windows_emitted_total) + windows,
            late_rows_total: previous.map_or(0, |p| p.late_rows_total) + late.len() as u64,
        };
        let value = serde_json::to_vec(&progress).map_err(|error| SqlError::Config(error.to_string()))?;
        transaction.send_to_partition(&self.target, 0, PROGRESS_KEY.as_bytes(), &value, now)?;
        let group = self.target.name.to_string();
        for (partition, read) in &read {
            transaction.set_position(&group, &self.source, *partition, *read);
        }
        self.log.commit(transaction)?;
        self.stats.windows_emitted_total.store(progress.windows_emitted_total, Ordering::Relaxed);
        self.stats.late_rows_total.store(progress.late_rows_total, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.view(
                &self.view.name,
                progress.windows_emitted_total,
                progress.late_rows_total,
                progress.closed_through_ms,
                self.windows.open_rows(),
            );
        }
        self.committed = Some(progress);
        self.last_commit_ms = now;
        Ok(())
    }
}

/// Each row of `batches` as one JSON object.
fn json_lines(batches: &[RecordBatch]) -> Result<Vec<Vec<u8>>, SqlError> {
    let mut out = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut out);
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect())
}

/// The progress the view's topic ends with, if it has any. Its last committed record:
/// on Kafka the last offsets hold a transaction's marker (and an aborted transaction's
/// records, when a fenced or killed runner left one), so the read steps back until it
/// finds a record, waiting out transactions still open (a restarted runner's producer
/// aborts its predecessor's on open).
pub(crate) fn last_progress(log: &dyn Log, target: &Topic) -> Result<Option<Progress>, SqlError> {
    let start = log.offsets(target, 0)?.start;
    let until = log.written_end(target, 0)?;
    let wait_max = Duration::from_millis(OPEN_TRANSACTION_WAIT_MS_MAX);
    let mut back = PROGRESS_LOOKBACK_RECORDS;
    let last = loop {
        let from = until.saturating_sub(back).max(start);
        let mut last = None;
        read_until(log, target, 0, from, until, wait_max, FETCH_RECORDS_MAX, |record| {
            last = Some(record.clone());
            Ok::<_, SqlError>(())
        })?;
        if last.is_some() || from == start {
            break last;
        }
        back = back.saturating_mul(PROGRESS_LOOKBACK_GROWTH);
    };
    let Some(last) = last else { return Ok(None) };
    if last.key.as_ref() != PROGRESS_KEY.as_bytes() {
        return Err(SqlError::Config(format!("{}: its last record is not a view's progress", target.name)));
    }
    serde_json::from_slice(&last.value)
        .map(Some)
        .map_err(|error| SqlError::Config(format!("{}: unreadable progress: {error}", target.name)))
}

/// A view's thread.
pub struct RunningView {
    pub name: String,
    pub stats: Arc<ViewStats>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts a thread per view, each over its own log (on Kafka, each view commits with a
/// transactional id of its own, so a second process keeping the same view fences the
/// first), stopped by `stop` (or ending, with `drain`, once the source is read). A view
/// that fails, to open (a changed definition under its name, a missing source) or later,
/// stops alone: it logs why, its stats say it stopped and `view_running` turns 0, and the
/// process goes on.
pub fn spawn_views(
    views: Vec<(ViewDef, Arc<dyn Log>)>,
    topic_of: impl Fn(&str) -> String,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    metrics: Option<SqlMetrics>,
) -> Result<Vec<RunningView>, SqlError> {
    let mut running = Vec::new();
    for (view, log) in views {
        let name = view.name.clone();
        let source_topic = topic_of(view.source.role);
        let opened = ViewRunner::open(view, log, &source_topic, metrics.clone());
        let stats = opened.as_ref().map_or_else(|_| Arc::new(ViewStats::default()), ViewRunner::stats);
        let (stop, drain) = (stop.clone(), drain.clone());
        let (thread_name, failed, running_metric) = (name.clone(), stats.clone(), metrics.clone());
        if let Some(metrics) = &metrics {
            metrics.view_running(&name, true);
        }
        let thread = std::thread::Builder::new().name(format!("view-{name}")).spawn(move || {
            if let Err(error) = opened.and_then(|runner| runner.run(&stop, &drain)) {
                tracing::error!(view = %thread_name, %error, "materialized view stopped");
                eprintln!("materialized view {thread_name} stopped: {error}");
                failed.stopped.store(true, Ordering::SeqCst);
                if let Some(metrics) = &running_metric {
                    metrics.view_running(&thread_name, false);
                }
            }
        })?;
        running.push(RunningView { name, stats, thread });
    }
    Ok(running)
}
