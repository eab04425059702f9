//! State as of a time: `balances_as_of(TIMESTAMP '…')` is every account's balance from
//! the ledger postings with an event time at or before it (the `balances` view, cut at
//! that time), read in the statement's cut like any table.

use std::sync::Arc;

use arrow_schema::DataType;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, col, lit};
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
        let as_of = match args.exprs() {
            [time] => literal_ms(time),
            _ => None,
        }
        .ok_or_else(|| {
            DataFusionError::Plan(
                "balances_as_of takes one time: balances_as_of(TIMESTAMP '2018-05-01T00:00:00Z')".into(),
            )
        })?;
        let until = lit(ScalarValue::TimestampMillisecond(Some(as_of), Some("UTC".into())));
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
