//! A topic as a DataFusion table: each scan reads the statement's cut of the topic, one
//! DataFusion partition per log partition. Filters on `_partition` and `_offset`
//! against literals narrow what is read, and so does a lower bound on `_timestamp`
//! through [`Log::offset_for_time`] (Kafka's time index; the embedded log's frames'
//! latest timestamps): every record before the offset it gives is earlier. The filters
//! still run on the rows, so they only need to be safe, not exact.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use paystream_pipeline::log::{Log, Record, Topic};

use crate::as_of::literal_ms;
use crate::cut::{Cut, Cuts};
use crate::error::SqlError;
use crate::guard::{Budget, ConnectionGuard};
use crate::partition_scan::PartitionScan;
use crate::scan_cache::ScanCache;
use crate::tables::{Source, TableDef};

/// Records fetched from the log at a time.
pub const FETCH_RECORDS_MAX: usize = 10_000;
/// The longest a scan waits for records the cut says are committed but the log does
/// not show yet (Kafka's transaction markers trail a commit by a moment).
const HIDDEN_RECORDS_WAIT: Duration = Duration::from_secs(10);

/// Bounds every statement's scans.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Rows one table scan may produce; past it the statement fails with a hint.
    pub rows_max: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits { rows_max: 10_000_000 }
    }
}

#[derive(Clone)]
pub struct TopicTable {
    pub(crate) table: TableDef,
    pub(crate) topic: String,
    pub(crate) schema: SchemaRef,
    cuts: Arc<Cuts>,
    pub(crate) limits: ScanLimits,
    pub(crate) cache: Arc<ScanCache>,
    /// The index of the `_offset` column (the cache slices by it).
    pub(crate) offset_column: usize,
}

impl std::fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicTable({} on {})", self.table.name, self.topic)
    }
}

impl TopicTable {
    pub fn new(
        table: TableDef,
        topic: String,
        cuts: Arc<Cuts>,
        limits: ScanLimits,
        cache: Arc<ScanCache>,
    ) -> TopicTable {
        let schema = table.schema();
        let offset_column = table
            .columns
            .iter()
            .position(|column| matches!(column.source, Source::Offset))
            .expect("every topic table has _offset");
        TopicTable { table, topic, schema, cuts, limits, cache, offset_column }
    }
}

/// Statements DataFusion did not stamp with a start time each get their own cut.
static UNSTAMPED: AtomicI64 = AtomicI64::new(i64::MIN);

/// The statement a scan belongs to, by its start time: the key of its cut.
pub(crate) fn statement_of(state: &dyn Session) -> i64 {
    state
        .execution_props()
        .query_execution_start_time
        .and_then(|started| started.timestamp_nanos_opt())
        .unwrap_or_else(|| UNSTAMPED.fetch_add(1, Ordering::Relaxed))
}

/// What the pushed-down filters leave to read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Narrowed {
    partitions: Option<Vec<u32>>,
    offsets: Range<u64>,
    /// Records with a log timestamp at or after this (ms) are all that is wanted.
    from_time_ms: Option<i64>,
}

/// `_timestamp` >, >= or = a time literal (either side): the earliest timestamp wanted.
fn time_bound(expr: &Expr) -> Option<i64> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else { return None };
    let (op, time_ms) = match (column_name(left), literal_ms(right), column_name(right), literal_ms(left)) {
        (Some("_timestamp"), Some(time_ms), _, _) => (*op, time_ms),
        (_, _, Some("_timestamp"), Some(time_ms)) => (op.swap()?, time_ms),
        _ => return None,
    };
    match op {
        Operator::GtEq | Operator::Eq => Some(time_ms),
        Operator::Gt => time_ms.checked_add(1),
        _ => None,
    }
}

pub(crate) fn literal_u64(expr: &Expr) -> Option<u64> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Int8(Some(v)) => u64::try_from(*v).ok(),
            ScalarValue::Int16(Some(v)) => u64::try_from(*v).ok(),
            ScalarValue::Int32(Some(v)) => u64::try_from(*v).ok(),
            ScalarValue::Int64(Some(v)) => u64::try_from(*v).ok(),
            ScalarValue::UInt32(Some(v)) => Some(u64::from(*v)),
            ScalarValue::UInt64(Some(v)) => Some(*v),
            _ => None,
        },
        Expr::Cast(cast) => literal_u64(&cast.expr),
        _ => None,
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

/// `_partition`/`_offset` OP literal (either side), as (column, op, value).
fn bound(expr: &Expr) -> Option<(&str, Operator, u64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else { return None };
    let (column, op, value) = match (column_name(left), literal_u64(right), column_name(right), literal_u64(left)) {
        (Some(column), Some(value), _, _) => (column, *op, value),
        (_, _, Some(column), Some(value)) => (column, op.swap()?, value),
        _ => return None,
    };
    let usable = matches!(op, Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq);
    (usable && (column == "_partition" || column == "_offset")).then_some((column, op, value))
}

fn narrow(filters: &[Expr]) -> Narrowed {
    let from_time_ms = filters.iter().filter_map(time_bound).max();
    let mut narrowed = Narrowed { partitions: None, offsets: 0..u64::MAX, from_time_ms };
    for (column, op, value) in filters.iter().filter_map(bound) {
        if column == "_partition" {
            if op == Operator::Eq {
                let keep = u32::try_from(value).map_or_else(|_| Vec::new(), |p| vec![p]);
                narrowed.partitions = Some(match narrowed.partitions {
                    Some(known) => known.into_iter().filter(|p| keep.contains(p)).collect(),
                    None => keep,
                });
            }
            continue;
        }
        let range = &mut narrowed.offsets;
        match op {
            Operator::Eq => {
                range.start = range.start.max(value);
                range.end = range.end.min(value.saturating_add(1));
            }
            Operator::Gt => range.start = range.start.max(value.saturating_add(1)),
            Operator::GtEq => range.start = range.start.max(value),
            Operator::Lt => range.end = range.end.min(value),
            Operator::LtEq => range.end = range.end.min(value.saturating_add(1)),
            _ => {}
        }
    }
    narrowed
}

/// Records of `partition` in `[from, end)`, handed over in batches of at most
/// [`FETCH_RECORDS_MAX`], while the statement's budget lasts.
pub(crate) fn read_range(
    log: &dyn Log,
    topic: &Topic,
    (partition, mut offset, end): (u32, u64, u64),
    budget: Option<&Budget>,
    mut visit: impl FnMut(&[Record]) -> Result<(), SqlError>,
) -> Result<(), SqlError> {
    let deadline = Instant::now() + HIDDEN_RECORDS_WAIT;
    while offset < end {
        if let Some(budget) = budget {
            budget.check().map_err(SqlError::Stopped)?;
        }
        let mut records = log.fetch(topic, partition, offset, FETCH_RECORDS_MAX)?;
        // The first committed record from `offset` on is past the cut: what is left before
        // the end holds none (on Kafka, a transaction's marker, or aborted records).
        if records.first().is_some_and(|record| record.offset >= end) {
            break;
        }
        records.retain(|record| record.offset < end);
        if let Some(last) = records.last() {
            offset = last.offset + 1;
            visit(&records)?;
            continue;
        }
        let resumed = log.resume_offset(topic, partition, offset);
        if resumed > offset {
            offset = resumed;
            continue;
        }
        if Instant::now() > deadline {
            return Err(SqlError::Config(format!(
                "{}/{partition}: records before offset {end} stayed hidden at {offset}",
                topic.name
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl TopicTable {
    fn read(
        &self,
        cut: &Cut,
        projection: Option<&[usize]>,
        narrowed: &Narrowed,
        budget: Option<&Budget>,
    ) -> Result<Vec<Vec<RecordBatch>>, SqlError> {
        let Some(topic) = cut.topic(&self.topic) else { return Ok(vec![Vec::new()]) };
        let mut ranges = Vec::new();
        for partition in 0..topic.partitions {
            if narrowed.partitions.as_ref().is_some_and(|wanted| !wanted.contains(&partition)) {
                continue;
            }
            let Some(&(start, end)) = cut.ranges.get(&(self.topic.clone(), partition)) else { continue };
            let mut start = start.max(narrowed.offsets.start);
            if let Some(time_ms) = narrowed.from_time_ms
                && let Some(offset) = cut.log.offset_for_time(&topic, partition, time_ms)?
            {
                start = start.max(offset);
            }
            ranges.push((partition, start, end.min(narrowed.offsets.end)));
        }
        let rows = AtomicUsize::new(0);
        let needed: Vec<usize> = projection.map_or_else(|| (0..self.table.columns.len()).collect(), <[usize]>::to_vec);
        let read_one = |(partition, from, until): (u32, u64, u64)| -> Result<Vec<RecordBatch>, SqlError> {
            let log_range = cut.ranges.get(&(self.topic.clone(), partition)).copied().unwrap_or((from, until));
            let scan = PartitionScan { table: self, cut, topic: &topic, partition, log_range, budget, rows: &rows };
            scan.read(&needed, (from, until))
        };
        // Partitions are read and decoded side by side, a core each.
        let threads = std::thread::available_parallelism().map_or(1, usize::from).max(1);
        let mut partitions = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(threads) {
            let read = std::thread::scope(|scope| {
                let running: Vec<_> = chunk.iter().map(|range| scope.spawn(|| read_one(*range))).collect();
                running
                    .into_iter()
                    .map(|thread| thread.join().expect("a scan thread does not panic"))
                    .collect::<Vec<_>>()
            });
            for batches in read {
                partitions.push(batches?);
            }
        }
        if partitions.is_empty() {
            partitions.push(Vec::new());
        }
        Ok(partitions)
    }
}

#[async_trait]
impl TableProvider for TopicTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| match bound(filter).is_some() || time_bound(filter).is_some() {
                true => TableProviderFilterPushDown::Inexact,
                false => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let statement = statement_of(state);
        let narrowed = narrow(filters);
        let projection: Option<Vec<usize>> = projection.cloned();
        let schema = match &projection {
            Some(indices) => Arc::new(self.schema.project(indices)?),
            None => self.schema.clone(),
        };
        let budget = state.config().get_extension::<ConnectionGuard>().map(|guard| guard.current());
        let this = self.clone();
        // Reading the log blocks: off the async threads.
        let partitions = tokio::task::spawn_blocking(move || {
            let cut = this.cuts.for_statement(statement)?;
            this.read(&cut, projection.as_deref(), &narrowed, budget.as_deref())
        })
        .await
        .map_err(|error| DataFusionError::External(Box::new(error)))??;
        Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn partition_and_offset_filters_narrow_the_read() {
        let filters = [col("_offset").gt_eq(lit(10i64)), lit(20i64).gt(col("_offset")), col("_partition").eq(lit(2))];
        assert_eq!(narrow(&filters), Narrowed { partitions: Some(vec![2]), offsets: 10..20, from_time_ms: None });
        let other = [col("amount_minor").gt(lit(5i64)), col("_offset").eq(lit(7i64))];
        assert_eq!(narrow(&other), Narrowed { partitions: None, offsets: 7..8, from_time_ms: None });
        assert!(bound(&col("_offset").not_eq(lit(3i64))).is_none(), "<> reads everything");
        assert!(bound(&col("_timestamp").gt(lit(3i64))).is_none());
        let at = |ms: i64| lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())));
        let times = [col("_timestamp").gt_eq(at(1_000)), at(1_500).lt(col("_timestamp")), col("_timestamp").lt(at(9))];
        assert_eq!(narrow(&times).from_time_ms, Some(1_501), "the latest lower bound; upper bounds read on");
        assert_eq!(time_bound(&col("_timestamp").lt_eq(at(5))), None);
    }
}
