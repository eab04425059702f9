//! `information_schema` as PostgreSQL clients read it. DataFusion's own reports Arrow
//! type names (`Int64`, `Timestamp(ms, "UTC")`) and has no `udt_name`, which Grafana's
//! schema browser selects; this schema keeps DataFusion's tables (so `SHOW TABLES`,
//! `SHOW COLUMNS` and `SHOW var` still work) but answers `columns` in PostgreSQL's
//! terms: `data_type` such as `bigint` or `timestamp with time zone`, `udt_name` such
//! as `int8` or `timestamptz`, and `ordinal_position` from 1.

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::error::SqlError;

/// Registers the schema in `catalog` of `context`, whose config must have DataFusion's
/// own `information_schema` off (it would shadow this one).
pub fn register(context: &SessionContext, catalog: &str) -> Result<(), SqlError> {
    let state = context.state();
    let catalogs = state.catalog_list().clone();
    let inner = InformationSchemaProvider::new(catalogs.clone()).with_table_functions(state.table_functions().clone());
    let provider = context.catalog(catalog).ok_or_else(|| SqlError::Config(format!("no catalog {catalog}")))?;
    provider.register_schema(INFORMATION_SCHEMA, Arc::new(PgInformationSchema { inner, catalogs }))?;
    Ok(())
}

#[derive(Debug)]
struct PgInformationSchema {
    inner: InformationSchemaProvider,
    catalogs: Arc<dyn CatalogProviderList>,
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case("columns") {
            return Ok(Some(Arc::new(PgColumns { catalogs: self.catalogs.clone() })));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A column's type as PostgreSQL names it: `data_type`, `udt_name`, and the numeric
/// precision and scale where they apply.
fn pg_type(data_type: &DataType) -> (&'static str, &'static str, Option<i32>, Option<i32>) {
    match data_type {
        DataType::Boolean => ("boolean", "bool", None, None),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint", "int2", Some(16), Some(0)),
        DataType::Int32 | DataType::UInt16 => ("integer", "int4", Some(32), Some(0)),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ("bigint", "int8", Some(64), Some(0)),
        DataType::Float16 | DataType::Float32 => ("real", "float4", Some(24), None),
        DataType::Float64 => ("double precision", "float8", Some(53), None),
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => {
            ("numeric", "numeric", Some(i32::from(*precision)), Some(i32::from(*scale)))
        }
        DataType::Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz", None, None),
        DataType::Timestamp(_, None) => ("timestamp without time zone", "timestamp", None, None),
        DataType::Date32 | DataType::Date64 => ("date", "date", None, None),
        DataType::Time32(_) | DataType::Time64(_) => ("time without time zone", "time", None, None),
        DataType::Interval(_) | DataType::Duration(_) => ("interval", "interval", None, None),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ("bytea", "bytea", None, None)
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => ("ARRAY", "_text", None, None),
        _ => ("text", "text", None, None),
    }
}

fn columns_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int32, true);
    Arc::new(Schema::new(vec![
        text("table_catalog", false),
        text("table_schema", false),
        text("table_name", false),
        text("column_name", false),
        Field::new("ordinal_position", DataType::Int32, false),
        text("column_default", true),
        text("is_nullable", false),
        text("data_type", false),
        int("character_maximum_length"),
        int("character_octet_length"),
        int("numeric_precision"),
        int("numeric_precision_radix"),
        int("numeric_scale"),
        int("datetime_precision"),
        text("interval_type", true),
        text("udt_catalog", false),
        text("udt_schema", false),
        text("udt_name", false),
    ]))
}

#[derive(Debug)]
struct PgColumns {
    catalogs: Arc<dyn CatalogProviderList>,
}

impl PgColumns {
    async fn batch(&self, schema: SchemaRef) -> Result<RecordBatch> {
        let mut text: Vec<StringBuilder> = (0..11).map(|_| StringBuilder::new()).collect();
        let mut ints: Vec<Int32Builder> = (0..7).map(|_| Int32Builder::new()).collect();
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else { continue };
            for schema_name in catalog.schema_names() {
                if schema_name == INFORMATION_SCHEMA {
                    continue;
                }
                let Some(tables) = catalog.schema(&schema_name) else { continue };
                for table_name in tables.table_names() {
                    let Some(table) = tables.table(&table_name).await? else { continue };
                    for (index, field) in table.schema().fields().iter().enumerate() {
                        let (data_type, udt, precision, scale) = pg_type(field.data_type());
                        let row = [
                            Some(catalog_name.as_str()),
                            Some(schema_name.as_str()),
                            Some(table_name.as_str()),
                            Some(field.name().as_str()),
                            None,
                            Some(if field.is_nullable() { "YES" } else { "NO" }),
                            Some(data_type),
                            None,
                            Some(catalog_name.as_str()),
                            Some("pg_catalog"),
                            Some(udt),
                        ];
                        for (builder, value) in text.iter_mut().zip(row) {
                            builder.append_option(value);
                        }
                        let radix = precision.map(|_| if udt == "numeric" { 10 } else { 2 });
                        let datetime = matches!(udt, "timestamptz" | "timestamp" | "time").then_some(6);
                        let position = i32::try_from(index + 1).unwrap_or(i32::MAX);
                        for (builder, value) in
                            ints.iter_mut().zip([Some(position), None, None, precision, radix, scale, datetime])
                        {
                            builder.append_option(value);
                        }
                    }
                }
            }
        }
        let mut text = text.into_iter().map(|mut builder| Arc::new(builder.finish()) as ArrayRef);
        let mut ints = ints.into_iter().map(|mut builder| Arc::new(builder.finish()) as ArrayRef);
        // In the schema's order: 4 texts, position, 3 texts, 6 ints, 4 texts.
        let mut columns: Vec<ArrayRef> = text.by_ref().take(4).collect();
        columns.push(ints.next().expect("seven int columns"));
        columns.extend(text.by_ref().take(3));
        columns.extend(ints.by_ref().take(6));
        columns.extend(text);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for PgColumns {
    fn schema(&self) -> SchemaRef {
        columns_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = columns_schema();
        let batch = self.batch(schema.clone()).await?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_get_postgres_names() {
        assert_eq!(pg_type(&DataType::Int64), ("bigint", "int8", Some(64), Some(0)));
        assert_eq!(
            pg_type(&DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()))),
            ("timestamp with time zone", "timestamptz", None, None)
        );
        assert_eq!(pg_type(&DataType::Utf8View).1, "text");
        assert_eq!(pg_type(&DataType::Decimal128(18, 2)), ("numeric", "numeric", Some(18), Some(2)));
    }
}
