//! Records of one partition → an Arrow batch of a table's (projected) columns. A record
//! that is not JSON, or lacks a field, gives nulls there: the row is kept, so counts
//! over a topic equal its records.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use paystream_domain::Currency;
use paystream_domain::money::Money;
use paystream_domain::time::parse_rfc3339_ms;
use paystream_pipeline::log::Record;
use serde_json::Value;

use crate::error::SqlError;
use crate::tables::{ColumnDef, Kind, Source, TableDef};

enum Builder {
    Text(StringBuilder),
    BigInt(Int64Builder),
    Int(Int32Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Kind::Text => Builder::Text(StringBuilder::new()),
            Kind::BigInt => Builder::BigInt(Int64Builder::new()),
            Kind::Int => Builder::Int(Int32Builder::new()),
            Kind::Double => Builder::Double(Float64Builder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Time => Builder::Time(TimestampMillisecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::BigInt(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Double(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Time(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Where one row comes from.
struct Row<'a> {
    partition: u32,
    record: &'a Record,
    value: &'a Value,
    element: Option<&'a Value>,
}

fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.get(name).filter(|field| !field.is_null())
}

fn append(builder: &mut Builder, column: &ColumnDef, row: &Row<'_>) {
    let source = match column.source {
        Source::Field(name) => field(row.value, name),
        Source::Element(name) => row.element.and_then(|element| field(element, name)),
        _ => None,
    };
    match (builder, column.source) {
        (Builder::Int(b), Source::Partition) => b.append_value(row.partition as i32),
        (Builder::BigInt(b), Source::Offset) => b.append_value(row.record.offset as i64),
        (Builder::Time(b), Source::Timestamp) => b.append_value(row.record.timestamp_ms),
        (Builder::Text(b), Source::FieldOr(name, default)) => {
            b.append_value(field(row.value, name).and_then(Value::as_str).unwrap_or(default))
        }
        (Builder::Text(b), Source::Joined(name)) => match field(row.value, name).and_then(Value::as_array) {
            Some(items) => b.append_value(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
            None => b.append_null(),
        },
        (Builder::BigInt(b), Source::MinorUnits { amount, currency }) => {
            let minor = field(row.value, amount).and_then(Value::as_str).and_then(|amount| {
                let currency = Currency::from_code(field(row.value, currency)?.as_str()?).ok()?;
                Money::parse(amount, currency).ok().map(|money| money.minor_units())
            });
            b.append_option(minor)
        }
        (Builder::BigInt(b), Source::SignedPosting) => {
            let element = row.element;
            let amount = element.and_then(|e| field(e, "amount_minor")).and_then(Value::as_i64);
            let signed = match element.and_then(|e| field(e, "direction")).and_then(Value::as_str) {
                Some("debit") => amount,
                Some("credit") => amount.and_then(i64::checked_neg),
                _ => None,
            };
            b.append_option(signed)
        }
        (Builder::Text(b), _) => b.append_option(source.and_then(Value::as_str)),
        (Builder::BigInt(b), _) => b.append_option(source.and_then(Value::as_i64)),
        (Builder::Int(b), _) => b.append_option(source.and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok())),
        (Builder::Double(b), _) => b.append_option(source.and_then(Value::as_f64)),
        (Builder::Bool(b), _) => b.append_option(source.and_then(Value::as_bool)),
        (Builder::Time(b), _) => b.append_option(source.and_then(Value::as_str).and_then(|t| parse_rfc3339_ms(t).ok())),
    }
}

/// The top-level payload fields `columns` read (and the array rows come from).
fn wanted_fields(table: &TableDef, columns: &[&ColumnDef]) -> Vec<&'static str> {
    let mut wanted: Vec<&'static str> = table.rows_from.into_iter().collect();
    for column in columns {
        match column.source {
            Source::Field(name) | Source::FieldOr(name, _) | Source::Joined(name) => wanted.push(name),
            Source::MinorUnits { amount, currency } => wanted.extend([amount, currency]),
            _ => {}
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    wanted
}

/// Parses a JSON object keeping only the `wanted` top-level fields (the others are
/// skipped, not built): most of a scan's time is building values nobody reads.
struct Sparse<'w>(&'w [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for Sparse<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Sparse<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.0.iter().find(|wanted| **wanted == key) {
                Some(wanted) => {
                    fields.insert((*wanted).to_string(), map.next_value::<Value>()?);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(fields))
    }
}

/// A record's payload with the `wanted` fields; `Null` if it is not a JSON object.
fn parse(bytes: &[u8], wanted: &[&'static str]) -> Value {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde::de::DeserializeSeed::deserialize(Sparse(wanted), &mut deserializer) {
        Ok(value) if deserializer.end().is_ok() => value,
        _ => Value::Null,
    }
}

/// The rows of `records` (one partition's), with the columns of `projection` (indices
/// into the table's columns; all of them when `None`).
pub fn decode(
    table: &TableDef,
    schema: &SchemaRef,
    projection: Option<&[usize]>,
    partition: u32,
    records: &[Record],
) -> Result<RecordBatch, SqlError> {
    let indices: Vec<usize> = projection.map_or_else(|| (0..table.columns.len()).collect(), <[usize]>::to_vec);
    let columns: Vec<&ColumnDef> = indices.iter().map(|&i| &table.columns[i]).collect();
    let mut builders: Vec<Builder> = columns.iter().map(|column| Builder::new(column.kind)).collect();
    let mut rows = 0;
    let wanted = wanted_fields(table, &columns);
    for record in records {
        // Nothing of the payload read (count(*), _offset): one row per record, unparsed.
        let value = if wanted.is_empty() { Value::Null } else { parse(&record.value, &wanted) };
        let elements: Vec<Option<&Value>> = match table.rows_from {
            Some(array) => match field(&value, array).and_then(Value::as_array) {
                Some(items) if !items.is_empty() => items.iter().map(Some).collect(),
                _ => vec![None],
            },
            None => vec![None],
        };
        for element in elements {
            let row = Row { partition, record, value: &value, element };
            for (builder, column) in builders.iter_mut().zip(&columns) {
                append(builder, column, &row);
            }
            rows += 1;
        }
    }
    let schema = Arc::new(schema.project(&indices)?);
    let arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::tables;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};

    fn record(offset: u64, value: &str) -> Record {
        Record {
            offset,
            timestamp_ms: 1_000 + offset as i64,
            key: Default::default(),
            value: value.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn ledger_postings_are_rows_and_bad_records_are_nulls() {
        let ledger = tables().into_iter().find(|t| t.name == "ledger").unwrap();
        let transaction = r#"{"transaction_id":"t1","payment_id":"p1","event_time":"2026-01-02T03:04:05.678Z","currency":"EUR",
            "postings":[{"account_id":"wallet:a","direction":"debit","amount_minor":1234},
                        {"account_id":"merchant:m","direction":"credit","amount_minor":1234}]}"#;
        let batch =
            decode(&ledger, &ledger.schema(), None, 3, &[record(7, transaction), record(8, "not json")]).unwrap();
        assert_eq!(batch.num_rows(), 3, "two postings and one row for the bad record");
        let column = |name: &str| batch.column(ledger.columns.iter().position(|c| c.name == name).unwrap()).clone();
        let signed = column("signed_minor");
        let signed = signed.as_primitive::<Int64Type>();
        assert_eq!((signed.value(0), signed.value(1), signed.is_null(2)), (1234, -1234, true));
        assert_eq!(column("type").as_string::<i32>().value(0), "payment", "the default type");
        let time = column("event_time");
        assert_eq!(time.as_primitive::<TimestampMillisecondType>().value(0), 1_767_323_045_678);
        let offsets = column("_offset");
        assert_eq!(offsets.as_primitive::<Int64Type>().values().to_vec(), vec![7, 7, 8]);
    }

    #[test]
    fn amounts_become_minor_units_in_their_currency() {
        let payments = tables().into_iter().find(|t| t.name == "payments").unwrap();
        let index = payments.columns.iter().position(|c| c.name == "amount_minor").unwrap();
        let records = [
            record(0, r#"{"amount":"12.34","currency":"EUR"}"#),
            record(1, r#"{"amount":"1234","currency":"JPY"}"#),
            record(2, r#"{"amount":"1.234","currency":"EUR"}"#),
        ];
        let batch = decode(&payments, &payments.schema(), Some(&[index]), 0, &records).unwrap();
        let minor = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!((minor.value(0), minor.value(1), minor.is_null(2)), (1234, 1234, true));
    }
}
