//! The tables: one per topic, its typed columns and where each comes from in the
//! topic's JSON records, plus the record's place in the log (`_partition`, `_offset`,
//! `_timestamp`). Money is `amount_minor BIGINT` (integer minor units) with `currency`;
//! times are `TIMESTAMPTZ` (milliseconds, UTC).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    BigInt,
    Int,
    Double,
    Bool,
    /// RFC 3339 text in the record; `TIMESTAMPTZ` in SQL.
    Time,
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Text => DataType::Utf8,
            Kind::BigInt => DataType::Int64,
            Kind::Int => DataType::Int32,
            Kind::Double => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }
}

/// Where a column's value is in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A top-level field of the record.
    Field(&'static str),
    /// A top-level field, or this text when it is absent.
    FieldOr(&'static str, &'static str),
    /// A field of the array element the row was made from (see [`TableDef::rows_from`]).
    Element(&'static str),
    /// An exact decimal amount in the record's currency, as integer minor units.
    MinorUnits {
        amount: &'static str,
        currency: &'static str,
    },
    /// A string array, joined with commas.
    Joined(&'static str),
    /// A ledger posting's amount, debits positive and credits negative.
    SignedPosting,
    /// The record's partition, offset or producer timestamp.
    Partition,
    Offset,
    Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub struct ColumnDef {
    pub name: &'static str,
    pub kind: Kind,
    pub source: Source,
}

const fn column(name: &'static str, kind: Kind, source: Source) -> ColumnDef {
    ColumnDef { name, kind, source }
}

const fn text(name: &'static str) -> ColumnDef {
    column(name, Kind::Text, Source::Field(name))
}

const fn time(name: &'static str) -> ColumnDef {
    column(name, Kind::Time, Source::Field(name))
}

const fn bigint(name: &'static str) -> ColumnDef {
    column(name, Kind::BigInt, Source::Field(name))
}

/// `_partition`, `_offset` and `_timestamp`, last in every table.
const META: [ColumnDef; 3] = [
    column("_partition", Kind::Int, Source::Partition),
    column("_offset", Kind::BigInt, Source::Offset),
    column("_timestamp", Kind::Time, Source::Timestamp),
];

/// One table over one topic.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: &'static str,
    /// The pipeline's topic role (`--topic ROLE=NAME` renames the topic, not the table).
    pub role: &'static str,
    pub about: &'static str,
    /// With `Some(field)`, one row per element of that array (the ledger's postings).
    pub rows_from: Option<&'static str>,
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    fn new(name: &'static str, role: &'static str, about: &'static str, columns: &[ColumnDef]) -> TableDef {
        let columns = columns.iter().chain(META.iter()).copied().collect();
        TableDef { name, role, about, rows_from: None, columns }
    }

    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|column| {
                let always = matches!(column.source, Source::Partition | Source::Offset | Source::Timestamp);
                Field::new(column.name, column.kind.data_type(), !always)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// Every table, in the order `\dt` lists them.
pub fn tables() -> Vec<TableDef> {
    let minor = |amount, currency| column("amount_minor", Kind::BigInt, Source::MinorUnits { amount, currency });
    let payment_type = column("type", Kind::Text, Source::FieldOr("type", "payment"));
    let mut ledger = TableDef::new(
        "ledger",
        "ledger",
        "one row per posting, with its transaction's fields",
        &[
            text("transaction_id"),
            column("type", Kind::Text, Source::FieldOr("type", "payment")),
            text("payment_id"),
            text("original_payment_id"),
            text("settlement_id"),
            time("event_time"),
            text("currency"),
            column("account_id", Kind::Text, Source::Element("account_id")),
            column("direction", Kind::Text, Source::Element("direction")),
            column("amount_minor", Kind::BigInt, Source::Element("amount_minor")),
            column("signed_minor", Kind::BigInt, Source::SignedPosting),
        ],
    );
    ledger.rows_from = Some("postings");
    vec![
        TableDef::new(
            "payments",
            "payments",
            "payment events as published (malformed ones too, with null fields)",
            &[
                text("payment_id"),
                payment_type,
                text("payer_account_id"),
                text("merchant_id"),
                text("terminal_id"),
                text("payee_account_id"),
                text("original_payment_id"),
                text("amount"),
                minor("amount", "currency"),
                text("currency"),
                text("channel"),
                time("event_time"),
            ],
        ),
        TableDef::new(
            "decisions",
            "decisions",
            "the pipeline's decision on every valid payment",
            &[
                text("payment_id"),
                payment_type,
                text("original_payment_id"),
                text("payer_account_id"),
                text("merchant_id"),
                text("amount"),
                minor("amount", "currency"),
                text("currency"),
                time("event_time"),
                text("outcome"),
                column("score", Kind::Double, Source::Field("score")),
                column("reasons", Kind::Text, Source::Joined("reasons")),
                text("model_version"),
            ],
        ),
        ledger,
        TableDef::new(
            "settlements",
            "settlements",
            "closed merchant settlement windows",
            &[
                text("settlement_id"),
                text("merchant_id"),
                text("currency"),
                time("window_start"),
                time("window_end"),
                bigint("payment_count"),
                bigint("late_payment_count"),
                bigint("refund_count"),
                bigint("chargeback_count"),
                bigint("gross_minor"),
                bigint("fees_minor"),
                bigint("refunds_minor"),
                bigint("chargebacks_minor"),
                bigint("net_minor"),
            ],
        ),
        TableDef::new(
            "labels",
            "labels",
            "fraud reports",
            &[
                text("payment_id"),
                column("is_fraud", Kind::Bool, Source::Field("is_fraud")),
                time("reported_at"),
                text("payer_account_id"),
                text("terminal_id"),
                time("payment_event_time"),
            ],
        ),
        TableDef::new(
            "dead_letters",
            "dead-letters",
            "refused input with its reason",
            &[
                text("reason"),
                text("detail"),
                text("source_topic"),
                bigint("source_partition"),
                bigint("source_offset"),
            ],
        ),
    ]
}
