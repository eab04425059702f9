//! State as of a time, read in the statement's cut like any table:
//! - `balances_as_of(TIMESTAMP '…')` is every account's balance from the ledger postings
//!   with an event time at or before it (the `balances` view, cut at that time);
//! - `open_settlements_as_of(TIMESTAMP '…')` is every merchant settlement window that was
//!   open at that time: the ledger transactions naming it committed by then (their
//!   `_timestamp`), and no settlement closing it committed by then (the
//!   `open_settlements` view, which is the same as of the cut). A window closes when
//!   processing passes it, not at an event time, so this one is as of log time.

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

#[derive(Debug)]
pub struct BalancesAsOf {
    pub ledger: Arc<dyn TableProvider>,
}

impl TableFunctionImpl for BalancesAsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let until = timestamp_ms(time_argument("balances_as_of", &args)?);
        let plan = LogicalPlanBuilder::scan("ledger", provider_as_source(self.ledger.clone()), None)?
            .filter(col("event_time").lt_eq(until))?
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

/// The time argument of `function`, or an error that shows how to call it.
fn time_argument(function: &str, args: &TableFunctionArgs) -> Result<i64> {
    match args.exprs() {
        [time] => literal_ms(time),
        _ => None,
    }
    .ok_or_else(|| {
        DataFusionError::Plan(format!("{function} takes one time: {function}(TIMESTAMP '2018-05-01T00:00:00Z')"))
    })
}

fn timestamp_ms(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())))
}

/// Open merchant settlement windows: per settlement id named by ledger transactions
/// (payments, captures, refunds, chargebacks; not the settlement and payout transactions
/// that close one) that no settlement record closes. With `until_ms`, only records
/// committed at or before it count, on both sides. The columns:
/// `settlement_id, merchant_id, currency, transactions, payment_count, refund_count,
/// chargeback_count, gross_minor` (the payer debits of its payments and captures, as the
/// settlement will state them) and `first_event_time`, `last_event_time`.
pub fn open_settlements_plan(
    ledger: Arc<dyn TableProvider>,
    settlements: Arc<dyn TableProvider>,
    until_ms: Option<i64>,
) -> Result<LogicalPlan> {
    let committed = |builder: LogicalPlanBuilder| match until_ms {
        Some(ms) => builder.filter(col("_timestamp").lt_eq(timestamp_ms(ms))),
        None => Ok(builder),
    };
    let of_kind = |kinds: &[&str]| col("type").in_list(kinds.iter().map(|kind| lit(*kind)).collect(), false);
    let transactions_of =
        |kinds: &[&str]| -> Result<Expr> { Ok(count_distinct(when(of_kind(kinds), col("transaction_id")).end()?)) };
    let merchant =
        when(starts_with(col("account_id"), lit("merchant:")), substr(col("account_id"), lit(10_i64))).end()?;
    let gross = when(of_kind(&["payment", "capture"]).and(col("direction").eq(lit("debit"))), col("amount_minor"))
        .otherwise(lit(0_i64))?;
    let open = committed(LogicalPlanBuilder::scan("ledger", provider_as_source(ledger), None)?)?
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
    let closed = committed(LogicalPlanBuilder::scan("settlements", provider_as_source(settlements), None)?)?
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

#[derive(Debug)]
pub struct OpenSettlementsAsOf {
    pub ledger: Arc<dyn TableProvider>,
    pub settlements: Arc<dyn TableProvider>,
}

impl TableFunctionImpl for OpenSettlementsAsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let until = time_argument("open_settlements_as_of", &args)?;
        let plan = open_settlements_plan(self.ledger.clone(), self.settlements.clone(), Some(until))?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
