//! A view's topic as tables: `<view>` holds the rows of every closed window, and
//! `<view>_late` the rows that came after their window closed, both as of the
//! statement's cut (a window's rows and the progress that closed it are committed
//! together, so a cut never shows half a window).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::progress::{LATE_KEY, WINDOW_KEY_PREFIX};
use crate::cut::Cuts;
use crate::error::SqlError;
use crate::guard::{Budget, ConnectionGuard};
use crate::topic_table::{read_range, statement_of};

/// Which records of the view's topic a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewRows {
    Windows,
    Late,
}

pub struct ViewTable {
    topic: String,
    rows: ViewRows,
    schema: SchemaRef,
    cuts: Arc<Cuts>,
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewTable({} {:?})", self.topic, self.rows)
    }
}

/// The columns of `<view>_late`.
pub fn late_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_topic", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int64, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("window_start", DataType::Utf8, true),
        Field::new("closed_through", DataType::Utf8, false),
    ]))
}

impl ViewTable {
    pub fn new(topic: String, rows: ViewRows, schema: SchemaRef, cuts: Arc<Cuts>) -> ViewTable {
        ViewTable { topic, rows, schema, cuts }
    }

    fn read(&self, statement_ns: i64, budget: Option<&Budget>) -> Result<Vec<RecordBatch>, SqlError> {
        let cut = self.cuts.for_statement(statement_ns)?;
        let Some(topic) = cut.topic(&self.topic) else { return Ok(Vec::new()) };
        let Some(&(start, end)) = cut.ranges.get(&(self.topic.clone(), 0)) else { return Ok(Vec::new()) };
        let mut lines = Vec::new();
        read_range(cut.log.as_ref(), &topic, (0, start, end), budget, |records| {
            for record in records {
                let wanted = match self.rows {
                    ViewRows::Windows => record.key.starts_with(WINDOW_KEY_PREFIX.as_bytes()),
                    ViewRows::Late => record.key.as_ref() == LATE_KEY.as_bytes(),
                };
                if wanted {
                    lines.extend_from_slice(&record.value);
                    lines.push(b'\n');
                }
            }
            Ok(())
        })?;
        let mut decoder = ReaderBuilder::new(self.schema.clone()).build_decoder()?;
        let mut batches = Vec::new();
        let mut rest = lines.as_slice();
        loop {
            let consumed = decoder.decode(rest)?;
            rest = &rest[consumed..];
            // Full (a batch's worth decoded) or done: take what is decoded.
            if let Some(batch) = decoder.flush()? {
                batches.push(batch);
            }
            if rest.is_empty() {
                break;
            }
        }
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let statement = statement_of(state);
        let budget = state.config().get_extension::<ConnectionGuard>().map(|guard| guard.current());
        let (topic, rows, schema, cuts) = (self.topic.clone(), self.rows, self.schema.clone(), self.cuts.clone());
        let batches = tokio::task::spawn_blocking(move || {
            ViewTable { topic, rows, schema, cuts }.read(statement, budget.as_deref())
        })
        .await
        .map_err(|error| DataFusionError::External(Box::new(error)))??;
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
