//! State as of a time or offsets, read in the statement's cut like any table:
//! - `balances_as_of(TIMESTAMP '…')` is every account's balance from the ledger postings
//!   with an event time at or before it (the `balances` view, cut at that time);
//!   `balances_as_of('0:1200,1:980')` from the ledger records before those offsets (a
//!   consumer's positions, every partition of the ledger named), and
//!   `balances_as_of(1200)` before offset 1200 on every partition;
//! - `open_settlements_as_of(TIMESTAMP '…')` is every merchant settlement window that was
//!   open at that time: the ledger transactions naming it committed by then (their
//!   `_timestamp`), and no settlement closing it committed by then (the
//!   `open_settlements` view, which is the same as of the cut). A window closes when
//!   processing passes it, not at an event time, so this one is as of log time.
//!   `open_settlements_as_of(LEDGER, SETTLEMENTS)` is the same as of offsets of each
//!   topic, written as for `balances_as_of`.

use std::sync::Arc;

use arrow_schema::DataType;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions::expr_fn::{starts_with, substr};
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder, cast, col, lit, not, when};
use datafusion::scalar::ScalarValue;
use paystream_domain::time::parse_rfc3339_ms;

use crate::cut::Cuts;
use crate::topic_table::literal_u64;

/// The time argument in milliseconds: a timestamp literal or an RFC 3339 string.
pub(crate) fn literal_ms(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)) | ScalarValue::LargeUtf8(Some(text)) => {
                parse_rfc3339_ms(text).ok()
            }
            ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000),
            ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
            ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1_000)),
            ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
            _ => None,
        },
        Expr::Cast(cast) => literal_ms(&cast.expr),
        Expr::TryCast(cast) => literal_ms(&cast.expr),
        _ => None,
    }
}

pub struct BalancesAsOf {
    pub ledger: Arc<dyn TableProvider>,
    /// The ledger's topic, and where its partitions are counted.
    pub ledger_topic: String,
    pub cuts: Arc<Cuts>,
}

impl std::fmt::Debug for BalancesAsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BalancesAsOf({})", self.ledger_topic)
    }
}

/// What a `balances_as_of` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AsOf {
    /// Event time, ms.
    Time(i64),
    /// Offsets of a topic.
    Offsets(Offsets),
}

/// Positions in a topic: the records before them count.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Offsets {
    /// The same on every partition.
    Every(u64),
    /// Per partition.
    Each(Vec<(u32, u64)>),
}

const BALANCES_AS_OF_USAGE: &str = "balances_as_of takes one time or ledger offsets: \
    balances_as_of(TIMESTAMP '2018-05-01T00:00:00Z'), balances_as_of(1200) (every partition) or \
    balances_as_of('0:1200,1:980') (each partition's position: the records before it count)";

const OPEN_SETTLEMENTS_AS_OF_USAGE: &str = "open_settlements_as_of takes one log time, or the ledger's \
    and the settlements' offsets: open_settlements_as_of(TIMESTAMP '2018-05-01T00:00:00Z') or \
    open_settlements_as_of('0:1200,1:980', '0:40,1:38') (each partition's position: the records \
    before it count; a number for the same on every partition)";

/// `"0:1200, 1:980"` → [(0, 1200), (1, 980)]; None when it is not that shape.
fn parse_offsets(text: &str) -> Option<Vec<(u32, u64)>> {
    text.split(',')
        .map(|pair| {
            let (partition, offset) = pair.trim().split_once(':')?;
            Some((partition.trim().parse().ok()?, offset.trim().parse().ok()?))
        })
        .collect()
}

/// A number (every partition) or a `'partition:offset,…'` string.
fn offsets_argument(argument: &Expr) -> Option<Offsets> {
    if let Some(offset) = literal_u64(argument) {
        return Some(Offsets::Every(offset));
    }
    match argument {
        Expr::Literal(ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)), _) => {
            parse_offsets(text).map(Offsets::Each)
        }
        _ => None,
    }
}

fn as_of_argument(args: &TableFunctionArgs) -> Result<AsOf> {
    let [argument] = args.exprs() else { return Err(DataFusionError::Plan(BALANCES_AS_OF_USAGE.into())) };
    offsets_argument(argument)
        .map(AsOf::Offsets)
        .or_else(|| literal_ms(argument).map(AsOf::Time))
        .ok_or_else(|| DataFusionError::Plan(BALANCES_AS_OF_USAGE.into()))
}

/// A position as `_offset` (a BIGINT) compares with it: past every offset stays past.
fn position(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The rows of `topic`'s table `offsets` keeps, by `_partition` and `_offset`; with
/// offsets per partition, each partition of the topic named once.
fn keep_offsets(cuts: &Cuts, topic: &str, function: &str, offsets: Offsets) -> Result<Expr> {
    let offsets = match offsets {
        Offsets::Every(offset) => return Ok(col("_offset").lt(lit(position(offset)))),
        Offsets::Each(offsets) => offsets,
    };
    let partitions = cuts.partitions(topic).map_err(|error| DataFusionError::External(Box::new(error)))?;
    let mut named: Vec<u32> = offsets.iter().map(|(partition, _)| *partition).collect();
    named.sort_unstable();
    if named != (0..partitions).collect::<Vec<_>>() {
        return Err(DataFusionError::Plan(format!(
            "{function}: name each of the {partitions} partitions of {topic} once, as '0:OFFSET,1:OFFSET,…'"
        )));
    }
    Ok(offsets
        .into_iter()
        .map(|(partition, offset)| {
            col("_partition").eq(lit(partition as i32)).and(col("_offset").lt(lit(position(offset))))
        })
        .reduce(Expr::or)
        .unwrap_or(lit(false)))
}

impl BalancesAsOf {
    /// The rows of the ledger `as_of` keeps: by event time, or by offsets.
    fn keep(&self, as_of: AsOf) -> Result<Expr> {
        match as_of {
            AsOf::Time(ms) => Ok(col("event_time").lt_eq(timestamp_ms(ms))),
            AsOf::Offsets(offsets) => keep_offsets(&self.cuts, &self.ledger_topic, "balances_as_of", offsets),
        }
    }
}

impl TableFunctionImpl for BalancesAsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let keep = self.keep(as_of_argument(&args)?)?;
        let plan = LogicalPlanBuilder::scan("ledger", provider_as_source(self.ledger.clone()), None)?
            .filter(keep)?
            .aggregate(
                vec![col("account_id"), col("currency")],
                vec![
                    cast(sum(col("signed_minor")), DataType::Int64).alias("balance_minor"),
                    count(lit(1)).alias("postings"),
                ],
            )?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

fn timestamp_ms(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())))
}

/// Open merchant settlement windows: per settlement id named by ledger transactions
/// (payments, captures, refunds, chargebacks; not the settlement and payout transactions
/// that close one) that no settlement record closes. With `keep`, only the ledger and
/// settlements rows it keeps count (as of a log time, or offsets). The columns:
/// `settlement_id, merchant_id, currency, transactions, payment_count, refund_count,
/// chargeback_count, gross_minor` (the payer debits of its payments and captures, as the
/// settlement will state them) and `first_event_time`, `last_event_time`.
pub fn open_settlements_plan(
    ledger: Arc<dyn TableProvider>,
    settlements: Arc<dyn TableProvider>,
    keep: Option<(Expr, Expr)>,
) -> Result<LogicalPlan> {
    let (keep_ledger, keep_settlements) = keep.unzip();
    let committed = |builder: LogicalPlanBuilder, keep: Option<Expr>| match keep {
        Some(keep) => builder.filter(keep),
        None => Ok(builder),
    };
    let of_kind = |kinds: &[&str]| col("type").in_list(kinds.iter().map(|kind| lit(*kind)).collect(), false);
    let transactions_of =
        |kinds: &[&str]| -> Result<Expr> { Ok(count_distinct(when(of_kind(kinds), col("transaction_id")).end()?)) };
    let merchant =
        when(starts_with(col("account_id"), lit("merchant:")), substr(col("account_id"), lit(10_i64))).end()?;
    let gross = when(of_kind(&["payment", "capture"]).and(col("direction").eq(lit("debit"))), col("amount_minor"))
        .otherwise(lit(0_i64))?;
    let open = committed(LogicalPlanBuilder::scan("ledger", provider_as_source(ledger), None)?, keep_ledger)?
        .filter(col("settlement_id").is_not_null().and(not(of_kind(&["settlement", "payout"]))))?
        .aggregate(
            vec![col("settlement_id"), col("currency")],
            vec![
                max(merchant).alias("merchant_id"),
                count_distinct(col("transaction_id")).alias("transactions"),
                transactions_of(&["payment", "capture"])?.alias("payment_count"),
                transactions_of(&["refund"])?.alias("refund_count"),
                transactions_of(&["chargeback"])?.alias("chargeback_count"),
                cast(sum(gross), DataType::Int64).alias("gross_minor"),
                min(col("event_time")).alias("first_event_time"),
                max(col("event_time")).alias("last_event_time"),
            ],
        )?
        .alias("open")?;
    let closed =
        committed(LogicalPlanBuilder::scan("settlements", provider_as_source(settlements), None)?, keep_settlements)?
            .project(vec![col("settlement_id")])?
            .alias("closed")?
            .build()?;
    open.join_on(closed, JoinType::LeftAnti, vec![col("open.settlement_id").eq(col("closed.settlement_id"))])?
        .project(
            [
                "settlement_id",
                "merchant_id",
                "currency",
                "transactions",
                "payment_count",
                "refund_count",
                "chargeback_count",
                "gross_minor",
                "first_event_time",
                "last_event_time",
            ]
            .map(|name| col(format!("open.{name}")).alias(name)),
        )?
        .build()
}

pub struct OpenSettlementsAsOf {
    pub ledger: Arc<dyn TableProvider>,
    pub settlements: Arc<dyn TableProvider>,
    /// The topics of the two, and where their partitions are counted.
    pub ledger_topic: String,
    pub settlements_topic: String,
    pub cuts: Arc<Cuts>,
}

impl std::fmt::Debug for OpenSettlementsAsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenSettlementsAsOf({}, {})", self.ledger_topic, self.settlements_topic)
    }
}

impl TableFunctionImpl for OpenSettlementsAsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const FUNCTION: &str = "open_settlements_as_of";
        let usage = || DataFusionError::Plan(OPEN_SETTLEMENTS_AS_OF_USAGE.into());
        let keep = match args.exprs() {
            [time] => {
                let committed = col("_timestamp").lt_eq(timestamp_ms(literal_ms(time).ok_or_else(usage)?));
                (committed.clone(), committed)
            }
            [ledger, settlements] => (
                keep_offsets(&self.cuts, &self.ledger_topic, FUNCTION, offsets_argument(ledger).ok_or_else(usage)?)?,
                keep_offsets(
                    &self.cuts,
                    &self.settlements_topic,
                    FUNCTION,
                    offsets_argument(settlements).ok_or_else(usage)?,
                )?,
            ),
            _ => return Err(usage()),
        };
        let plan = open_settlements_plan(self.ledger.clone(), self.settlements.clone(), Some(keep))?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_partition_colon_offset_pairs() {
        assert_eq!(parse_offsets("0:1200, 1:980"), Some(vec![(0, 1200), (1, 980)]));
        assert_eq!(parse_offsets("7"), None);
        assert_eq!(parse_offsets("2018-05-01T00:00:00Z"), None);
        assert_eq!(parse_offsets("0:-1"), None);
    }
}
