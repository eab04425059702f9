//! A statement's rows as text for a shell: an aligned table (as psql prints), CSV with a
//! header, or JSON lines.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;

use crate::error::SqlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    JsonLines,
}

/// Writes `batches` (rows of `schema`) to `out`; an empty result still has its header.
pub fn write(batches: &[RecordBatch], schema: &SchemaRef, format: Format, mut out: impl Write) -> Result<(), SqlError> {
    let empty = [RecordBatch::new_empty(schema.clone())];
    let batches = if batches.is_empty() { &empty[..] } else { batches };
    match format {
        Format::Table => writeln!(out, "{}", datafusion::arrow::util::pretty::pretty_format_batches(batches)?)?,
        Format::Csv => {
            let mut writer = CsvWriterBuilder::new().with_header(true).build(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::JsonLines => {
            let mut writer = LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn text(batches: &[RecordBatch], schema: &SchemaRef, format: Format) -> String {
        let mut out = Vec::new();
        write(batches, schema, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_format_prints_every_row_and_an_empty_result_keeps_its_header() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("outcome", DataType::Utf8, false),
            Field::new("amount_minor", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["approve", "decline"])), Arc::new(Int64Array::from(vec![1250, 7]))],
        )
        .unwrap();
        assert_eq!(
            text(std::slice::from_ref(&batch), &schema, Format::Csv),
            "outcome,amount_minor\napprove,1250\ndecline,7\n"
        );
        assert_eq!(
            text(std::slice::from_ref(&batch), &schema, Format::JsonLines),
            "{\"outcome\":\"approve\",\"amount_minor\":1250}\n{\"outcome\":\"decline\",\"amount_minor\":7}\n"
        );
        assert!(text(&[batch], &schema, Format::Table).contains("| decline | 7            |"));
        assert_eq!(text(&[], &schema, Format::Csv), "outcome,amount_minor\n");
        assert!(text(&[], &schema, Format::Table).contains("| outcome | amount_minor |"));
    }
}
