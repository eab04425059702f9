//! Continuous views as analysts write them:
//!
//! ```sql
//! CREATE MATERIALIZED VIEW declines_5m WITH (lateness = '30 seconds') AS
//! SELECT date_bin(INTERVAL '5 minutes', event_time) AS window_start, merchant_id,
//!        count(*) AS decisions, sum(CASE WHEN outcome = 'decline' THEN 1 ELSE 0 END) AS declines
//! FROM decisions GROUP BY 1, 2;
//! ```
//!
//! A view reads one topic table and groups by exactly one `date_bin` of a fixed stride
//! (seconds to days; no months) over one of its time columns, with the default origin.
//! Everything else is ordinary DataFusion SQL, run bounded over each closed window's
//! rows. Options: `lateness` (how far behind the slowest partition a row may be and
//! still count; default 0) and `idle_timeout` (how long a caught-up partition may be
//! silent before it stops holding windows open; default 10 seconds).

use std::sync::Arc;

use arrow_schema::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, ObjectName, ObjectNamePart, SqlOption, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::SqlError;
use crate::tables::{TableDef, tables};

const MILLIS_PER_SECOND: i64 = 1_000;
const NANOS_PER_MILLI: i64 = 1_000_000;
const MILLIS_PER_DAY: i64 = 86_400_000;
/// How long a caught-up partition may be silent before it stops holding windows open.
pub const IDLE_TIMEOUT_MS_DEFAULT: i64 = 10_000;

/// One continuous view, checked.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    /// The SELECT, as written.
    pub query: String,
    pub source: TableDef,
    /// The column `date_bin` reads: the view's event time.
    pub time_column: String,
    pub stride_ms: i64,
    pub lateness_ms: i64,
    pub idle_timeout_ms: i64,
    /// The rows a window emits.
    pub output: SchemaRef,
    /// Identifies the definition: a view resumes only from progress made under the same.
    pub plan_hash: u64,
}

impl ViewDef {
    /// The topic the view's windows, late rows and progress go to.
    pub fn topic(&self) -> String {
        format!("view.{}", self.name)
    }
}

fn invalid(name: &str, why: impl std::fmt::Display) -> SqlError {
    SqlError::Config(format!("materialized view {name}: {why}"))
}

/// "30 seconds", "5 minutes", "1 hour", "2 days", "250 ms" → milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let unit = unit.trim();
    let unit_ms = match if unit == "ms" { unit } else { unit.trim_end_matches('s') } {
        "ms" | "millisecond" => 1,
        "" | "second" | "sec" => MILLIS_PER_SECOND,
        "m" | "minute" | "min" => 60 * MILLIS_PER_SECOND,
        "hour" | "h" => 3_600 * MILLIS_PER_SECOND,
        "day" | "d" => MILLIS_PER_DAY,
        _ => return None,
    };
    number.checked_mul(unit_ms)
}

/// A view's name as its tables go by: without the schema (`public`, the only one) and
/// folded to lowercase unless quoted, as SQL does.
pub fn view_name(name: &ObjectName) -> String {
    let Some(ObjectNamePart::Identifier(ident)) = name.0.last() else { return name.to_string() };
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Every `CREATE MATERIALIZED VIEW` in `text` (statements separated by `;`), checked
/// against the topic tables.
pub async fn parse_views(text: &str) -> Result<Vec<ViewDef>, SqlError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, text)
        .map_err(|error| SqlError::Config(format!("materialized views: {error}")))?;
    let mut views: Vec<ViewDef> = Vec::new();
    for statement in statements {
        let Statement::CreateView(create) = statement else {
            return Err(SqlError::Config(format!(
                "materialized views: only CREATE MATERIALIZED VIEW statements, not {statement}"
            )));
        };
        let name = view_name(&create.name);
        if !create.materialized {
            return Err(invalid(&name, "write CREATE MATERIALIZED VIEW"));
        }
        // Lowercase, as SQL folds an unquoted name: the view's tables and its topic then
        // go by the same name.
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(&name, "a name of lowercase letters, digits and _"));
        }
        if views.iter().any(|view| view.name == name) {
            return Err(invalid(&name, "defined twice"));
        }
        let topic_tables = tables();
        let mut taken = topic_tables
            .iter()
            .map(|table| table.name)
            .chain(crate::context::VIEWS.iter().map(|(view, _)| *view))
            .chain(crate::context::DERIVED_TABLES);
        if taken.any(|table| table == name || format!("{name}_late") == table) {
            return Err(invalid(&name, "a table has that name"));
        }
        let (mut lateness_ms, mut idle_timeout_ms) = (0, IDLE_TIMEOUT_MS_DEFAULT);
        let options = match &create.options {
            CreateTableOptions::None => Vec::new(),
            CreateTableOptions::With(options) => options.clone(),
            other => return Err(invalid(&name, format!("unsupported options {other}"))),
        };
        for option in options {
            let SqlOption::KeyValue { key, value } = &option else {
                return Err(invalid(&name, format!("unsupported option {option}")));
            };
            let text = value.to_string();
            let millis = parse_duration_ms(text.trim_matches('\''))
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| invalid(&name, format!("{key}: not a duration: {text}")))?;
            match key.value.to_ascii_lowercase().as_str() {
                "lateness" => lateness_ms = millis,
                "idle_timeout" => idle_timeout_ms = millis,
                other => return Err(invalid(&name, format!("unknown option {other} (lateness, idle_timeout)"))),
            }
        }
        let query = create.query.to_string();
        views.push(check(name, query, lateness_ms, idle_timeout_ms).await?);
    }
    Ok(views)
}

/// Plans `query` over empty topic tables and reads its window off the plan.
async fn check(name: String, query: String, lateness_ms: i64, idle_timeout_ms: i64) -> Result<ViewDef, SqlError> {
    let context = SessionContext::new_with_config(SessionConfig::new());
    for table in tables() {
        let schema = table.schema();
        context.register_table(table.name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    }
    let frame = context.sql(&query).await.map_err(|error| invalid(&name, error))?;
    let plan = frame.logical_plan().clone();
    let mut sources = Vec::new();
    let mut windows = Vec::new();
    let mut unbounded = Vec::new();
    plan.apply(|node| {
        match node {
            LogicalPlan::TableScan(scan) => sources.push(scan.table_name.table().to_string()),
            LogicalPlan::Aggregate(aggregate) => {
                windows.extend(aggregate.group_expr.iter().filter_map(date_bin).collect::<Vec<_>>());
            }
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => unbounded.push(node.display().to_string()),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(node) = unbounded.first() {
        return Err(invalid(&name, format!("no ORDER BY or LIMIT in a view ({node}): order when you query it")));
    }
    sources.sort();
    sources.dedup();
    let [source] = sources.as_slice() else {
        return Err(invalid(&name, format!("reads one topic table, not {sources:?}")));
    };
    let [(stride, time_column)] = windows.as_slice() else {
        return Err(invalid(
            &name,
            "GROUP BY exactly one date_bin(INTERVAL '…', <time column>) with the default origin",
        ));
    };
    let stride_ms = stride.ok_or_else(|| invalid(&name, "date_bin's stride: seconds to days, not months"))?;
    let source = tables().into_iter().find(|table| table.name == source).expect("planned over these tables");
    let schema = source.schema();
    let is_time =
        schema.field_with_name(time_column).is_ok_and(|field| matches!(field.data_type(), DataType::Timestamp(..)));
    if !is_time {
        return Err(invalid(
            &name,
            format!("date_bin over {time_column}, which is not a time column of {}", source.name),
        ));
    }
    let output = Arc::new(frame.schema().as_arrow().clone());
    // xxh3 is specified, so the hash stays the same across builds and Rust versions.
    let plan_hash = xxhash_rust::xxh3::xxh3_64(format!("{query}\0{stride_ms}\0{lateness_ms}").as_bytes());
    Ok(ViewDef {
        name,
        query,
        source,
        time_column: time_column.clone(),
        stride_ms,
        lateness_ms,
        idle_timeout_ms,
        output,
        plan_hash,
    })
}

/// `date_bin(<interval literal>, <column>)` (maybe aliased or cast): its stride in ms
/// (`None` if it has months or sub-millisecond parts) and the column.
fn date_bin(expr: &Expr) -> Option<(Option<i64>, String)> {
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::ScalarFunction(function) = expr else { return None };
    if function.name() != "date_bin" || function.args.len() != 2 {
        return None;
    }
    let column = match &function.args[1] {
        Expr::Column(column) => column.name.clone(),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Column(column) => column.name.clone(),
            _ => return None,
        },
        _ => return None,
    };
    let stride = match &function.args[0] {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(value)), _) => (value.months == 0
            && value.nanoseconds % NANOS_PER_MILLI == 0)
            .then(|| i64::from(value.days) * MILLIS_PER_DAY + value.nanoseconds / NANOS_PER_MILLI)
            .filter(|ms| *ms > 0),
        Expr::Literal(ScalarValue::IntervalDayTime(Some(value)), _) => {
            Some(i64::from(value.days) * MILLIS_PER_DAY + i64::from(value.milliseconds)).filter(|ms| *ms > 0)
        }
        _ => None,
    };
    Some((stride, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_analysts_write_them() {
        assert_eq!(parse_duration_ms("30 seconds"), Some(30_000));
        assert_eq!(parse_duration_ms("5 minutes"), Some(300_000));
        assert_eq!(parse_duration_ms("1 hour"), Some(3_600_000));
        assert_eq!(parse_duration_ms("2 days"), Some(172_800_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("soon"), None);
        assert_eq!(parse_duration_ms("3 fortnights"), None);
    }

    #[tokio::test]
    async fn a_view_is_checked_and_its_window_read_off_the_plan() {
        let views = parse_views(
            "CREATE MATERIALIZED VIEW declines_5m WITH (lateness = '30 seconds') AS \
             SELECT date_bin(INTERVAL '5 minutes', event_time) AS window_start, merchant_id, count(*) AS n \
             FROM decisions WHERE outcome = 'decline' GROUP BY 1, 2;",
        )
        .await
        .unwrap();
        let [view] = views.as_slice() else { panic!("{views:?}") };
        assert_eq!(
            (view.name.as_str(), view.source.name, view.time_column.as_str()),
            ("declines_5m", "decisions", "event_time")
        );
        assert_eq!(
            (view.stride_ms, view.lateness_ms, view.idle_timeout_ms),
            (300_000, 30_000, IDLE_TIMEOUT_MS_DEFAULT)
        );
        let columns: Vec<&str> = view.output.fields().iter().map(|field| field.name().as_str()).collect();
        assert_eq!(columns, ["window_start", "merchant_id", "n"]);
        assert_eq!(view.topic(), "view.declines_5m");
    }

    #[tokio::test]
    async fn views_that_cannot_be_kept_incrementally_are_refused_with_the_reason() {
        for (text, says) in [
            ("CREATE VIEW v AS SELECT 1", "CREATE MATERIALIZED VIEW"),
            ("CREATE MATERIALIZED VIEW v AS SELECT merchant_id, count(*) FROM decisions GROUP BY 1", "date_bin"),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT date_bin(INTERVAL '1 month', event_time), count(*) \
                 FROM decisions GROUP BY 1",
                "not months",
            ),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT date_bin(INTERVAL '1 hour', event_time) AS w, count(*) AS n \
                 FROM decisions GROUP BY 1 ORDER BY n DESC",
                "ORDER BY",
            ),
            (
                "CREATE MATERIALIZED VIEW v AS SELECT date_bin(INTERVAL '1 hour', d.event_time), count(*) \
                 FROM decisions d JOIN labels l ON d.payment_id = l.payment_id GROUP BY 1",
                "one topic table",
            ),
            (
                "CREATE MATERIALIZED VIEW v WITH (lateness = 'soon') AS SELECT date_bin(INTERVAL '1 hour', \
                 event_time), count(*) FROM decisions GROUP BY 1",
                "not a duration",
            ),
        ] {
            let error = parse_views(text).await.unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
