//! Arrow schemas of every event type and conversions of event batches to `RecordBatch`,
//! so analysts can query topics with DataFusion. Money columns are `Int64` minor units
//! next to a `currency` column; times are `Timestamp(Millisecond, "UTC")`.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::{DeadLetter, Decision, FraudLabel, LedgerTransaction, Payment, Settlement};
use crate::time::parse_rfc3339_ms;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

pub fn payment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("type", false),
        utf8("payment_id", false),
        utf8("original_payment_id", true),
        utf8("payer_account_id", false),
        utf8("payee_account_id", true),
        utf8("merchant_id", true),
        utf8("terminal_id", true),
        Field::new("amount_minor", DataType::Int64, false),
        utf8("currency", false),
        Field::new("event_time", timestamp(), false),
        utf8("channel", false),
        utf8("device_id", true),
        Field::new("geo_lat", DataType::Float64, true),
        Field::new("geo_lon", DataType::Float64, true),
    ]))
}

pub fn label_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("payment_id", false),
        Field::new("is_fraud", DataType::Boolean, false),
        Field::new("reported_at", timestamp(), true),
        utf8("payer_account_id", true),
        utf8("terminal_id", true),
    ]))
}

pub fn decision_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("type", false),
        utf8("payment_id", false),
        utf8("original_payment_id", true),
        utf8("payer_account_id", false),
        utf8("merchant_id", true),
        Field::new("amount_minor", DataType::Int64, true),
        utf8("currency", false),
        Field::new("event_time", timestamp(), true),
        utf8("outcome", false),
        Field::new("score", DataType::Float32, false),
        Field::new("reasons", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        utf8("model_version", false),
        // Velocity features (null without a feature store, merchant or device).
        Field::new("merchant_tx_1h", DataType::UInt64, true),
        Field::new("merchant_amount_1h_minor", DataType::Int64, true),
        Field::new("device_tx_1h", DataType::UInt64, true),
        Field::new("device_amount_1h_minor", DataType::Int64, true),
    ]))
}

/// One row per posting (the ledger topic carries one record per transaction).
pub fn ledger_posting_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("transaction_id", false),
        utf8("type", false),
        utf8("payment_id", false),
        utf8("original_payment_id", true),
        Field::new("event_time", timestamp(), true),
        utf8("account_id", false),
        utf8("currency", false),
        Field::new("signed_amount_minor", DataType::Int64, false),
    ]))
}

pub fn settlement_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("settlement_id", false),
        utf8("merchant_id", false),
        utf8("currency", false),
        Field::new("window_start", timestamp(), true),
        Field::new("window_end", timestamp(), true),
        Field::new("source_partition", DataType::UInt32, false),
        Field::new("payment_count", DataType::UInt64, false),
        Field::new("late_payment_count", DataType::UInt64, false),
        Field::new("refund_count", DataType::UInt64, false),
        Field::new("chargeback_count", DataType::UInt64, false),
        Field::new("gross_minor", DataType::Int64, false),
        Field::new("fees_minor", DataType::Int64, false),
        Field::new("refunds_minor", DataType::Int64, false),
        Field::new("chargebacks_minor", DataType::Int64, false),
        Field::new("net_minor", DataType::Int64, false),
    ]))
}

pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("reason", false),
        utf8("detail", false),
        utf8("source_topic", false),
        Field::new("source_partition", DataType::UInt32, false),
        Field::new("source_offset", DataType::UInt64, false),
        utf8("value_base64", false),
    ]))
}

fn columns(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(schema, columns)
}

fn time_column(values: impl Iterator<Item = Option<i64>>, capacity: usize) -> ArrayRef {
    let mut builder = TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC");
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

fn string_column<'a>(values: impl Iterator<Item = Option<&'a str>>, capacity: usize) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(capacity, capacity * 16);
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

pub fn payments_to_record_batch(payments: &[Payment]) -> Result<RecordBatch, ArrowError> {
    use crate::event::Payee;
    let n = payments.len();
    fn payee_account(p: &Payment) -> Option<&str> {
        match &p.payee {
            Payee::Account { account_id } => Some(account_id.as_str()),
            Payee::Merchant { .. } | Payee::OwnWallet => None,
        }
    }
    let mut amount = Int64Builder::with_capacity(n);
    let mut lat = Float64Builder::with_capacity(n);
    let mut lon = Float64Builder::with_capacity(n);
    for p in payments {
        amount.append_value(p.amount.minor_units());
        lat.append_option(p.geo.map(|g| g.lat));
        lon.append_option(p.geo.map(|g| g.lon));
    }
    columns(
        payment_schema(),
        vec![
            string_column(payments.iter().map(|p| Some(p.kind.as_str())), n),
            string_column(payments.iter().map(|p| Some(p.payment_id.as_str())), n),
            string_column(payments.iter().map(|p| p.original_payment_id.as_deref()), n),
            string_column(payments.iter().map(|p| Some(p.payer_account_id.as_str())), n),
            string_column(payments.iter().map(payee_account), n),
            string_column(payments.iter().map(|p| p.merchant_id()), n),
            string_column(payments.iter().map(|p| p.terminal_id()), n),
            Arc::new(amount.finish()),
            string_column(payments.iter().map(|p| Some(p.amount.currency().code())), n),
            time_column(payments.iter().map(|p| Some(p.event_time_ms)), n),
            string_column(payments.iter().map(|p| Some(p.channel.as_str())), n),
            string_column(payments.iter().map(|p| p.device_id.as_deref()), n),
            Arc::new(lat.finish()),
            Arc::new(lon.finish()),
        ],
    )
}

pub fn labels_to_record_batch(labels: &[FraudLabel]) -> Result<RecordBatch, ArrowError> {
    let n = labels.len();
    let mut fraud = BooleanBuilder::with_capacity(n);
    for label in labels {
        fraud.append_value(label.is_fraud);
    }
    columns(
        label_schema(),
        vec![
            string_column(labels.iter().map(|l| Some(l.payment_id.as_str())), n),
            Arc::new(fraud.finish()),
            time_column(labels.iter().map(|l| parse_rfc3339_ms(&l.reported_at).ok()), n),
            string_column(labels.iter().map(|l| l.payer_account_id.as_deref()), n),
            string_column(labels.iter().map(|l| l.terminal_id.as_deref()), n),
        ],
    )
}

pub fn decisions_to_record_batch(decisions: &[Decision]) -> Result<RecordBatch, ArrowError> {
    let n = decisions.len();
    let mut amount = Int64Builder::with_capacity(n);
    let mut score = Float32Builder::with_capacity(n);
    let mut reasons = ListBuilder::new(StringBuilder::new());
    for d in decisions {
        let minor = crate::money::Money::parse(&d.amount, d.currency).ok().map(|m| m.minor_units());
        amount.append_option(minor);
        score.append_value(d.score);
        for reason in &d.reasons {
            reasons.values().append_value(reason);
        }
        reasons.append(true);
    }
    columns(
        decision_schema(),
        vec![
            string_column(decisions.iter().map(|d| Some(d.kind.as_str())), n),
            string_column(decisions.iter().map(|d| Some(d.payment_id.as_str())), n),
            string_column(decisions.iter().map(|d| d.original_payment_id.as_deref()), n),
            string_column(decisions.iter().map(|d| Some(d.payer_account_id.as_str())), n),
            string_column(decisions.iter().map(|d| d.merchant_id.as_deref()), n),
            Arc::new(amount.finish()),
            string_column(decisions.iter().map(|d| Some(d.currency.code())), n),
            time_column(decisions.iter().map(|d| parse_rfc3339_ms(&d.event_time).ok()), n),
            string_column(decisions.iter().map(|d| Some(d.outcome.as_str())), n),
            Arc::new(score.finish()),
            Arc::new(reasons.finish()),
            string_column(decisions.iter().map(|d| Some(&*d.model_version)), n),
            Arc::new(UInt64Array::from_iter(decisions.iter().map(|d| d.velocity.and_then(|v| v.merchant_tx_1h)))),
            Arc::new(Int64Array::from_iter(
                decisions.iter().map(|d| d.velocity.and_then(|v| v.merchant_amount_1h_minor)),
            )),
            Arc::new(UInt64Array::from_iter(decisions.iter().map(|d| d.velocity.and_then(|v| v.device_tx_1h)))),
            Arc::new(Int64Array::from_iter(
                decisions.iter().map(|d| d.velocity.and_then(|v| v.device_amount_1h_minor)),
            )),
        ],
    )
}

pub fn ledger_to_record_batch(transactions: &[LedgerTransaction]) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<_> = transactions.iter().flat_map(|t| t.postings.iter().map(move |p| (t, p))).collect();
    let n = rows.len();
    let mut amount = Int64Builder::with_capacity(n);
    for (_, posting) in &rows {
        amount.append_value(posting.signed_minor_units());
    }
    columns(
        ledger_posting_schema(),
        vec![
            string_column(rows.iter().map(|(t, _)| Some(t.transaction_id.as_str())), n),
            string_column(rows.iter().map(|(t, _)| Some(t.kind.as_str())), n),
            string_column(rows.iter().map(|(t, _)| Some(t.payment_id.as_str())), n),
            string_column(rows.iter().map(|(t, _)| t.original_payment_id.as_deref()), n),
            time_column(rows.iter().map(|(t, _)| parse_rfc3339_ms(&t.event_time).ok()), n),
            string_column(rows.iter().map(|(_, p)| Some(p.account_id.as_str())), n),
            string_column(rows.iter().map(|(t, _)| Some(t.currency.code())), n),
            Arc::new(amount.finish()),
        ],
    )
}

pub fn settlements_to_record_batch(settlements: &[Settlement]) -> Result<RecordBatch, ArrowError> {
    let n = settlements.len();
    let mut partition = UInt32Builder::with_capacity(n);
    let mut count = UInt64Builder::with_capacity(n);
    let mut late = UInt64Builder::with_capacity(n);
    let mut refund_count = UInt64Builder::with_capacity(n);
    let mut chargeback_count = UInt64Builder::with_capacity(n);
    let mut gross = Int64Builder::with_capacity(n);
    let mut fees = Int64Builder::with_capacity(n);
    let mut refunds = Int64Builder::with_capacity(n);
    let mut chargebacks = Int64Builder::with_capacity(n);
    let mut net = Int64Builder::with_capacity(n);
    let narrow = |value: i128, s: &Settlement| {
        i64::try_from(value).map_err(|_| {
            ArrowError::InvalidArgumentError(format!("settlement {} total {value} does not fit Int64", s.settlement_id))
        })
    };
    for s in settlements {
        partition.append_value(s.source_partition);
        count.append_value(s.payment_count);
        late.append_value(s.late_payment_count);
        refund_count.append_value(s.refund_count);
        chargeback_count.append_value(s.chargeback_count);
        gross.append_value(narrow(s.gross_minor, s)?);
        fees.append_value(narrow(s.fees_minor, s)?);
        refunds.append_value(narrow(s.refunds_minor, s)?);
        chargebacks.append_value(narrow(s.chargebacks_minor, s)?);
        net.append_value(narrow(s.net_minor, s)?);
    }
    columns(
        settlement_schema(),
        vec![
            string_column(settlements.iter().map(|s| Some(s.settlement_id.as_str())), n),
            string_column(settlements.iter().map(|s| Some(s.merchant_id.as_str())), n),
            string_column(settlements.iter().map(|s| Some(s.currency.code())), n),
            time_column(settlements.iter().map(|s| parse_rfc3339_ms(&s.window_start).ok()), n),
            time_column(settlements.iter().map(|s| parse_rfc3339_ms(&s.window_end).ok()), n),
            Arc::new(partition.finish()),
            Arc::new(count.finish()),
            Arc::new(late.finish()),
            Arc::new(refund_count.finish()),
            Arc::new(chargeback_count.finish()),
            Arc::new(gross.finish()),
            Arc::new(fees.finish()),
            Arc::new(refunds.finish()),
            Arc::new(chargebacks.finish()),
            Arc::new(net.finish()),
        ],
    )
}

pub fn dead_letters_to_record_batch(letters: &[DeadLetter]) -> Result<RecordBatch, ArrowError> {
    let n = letters.len();
    let mut partition = UInt32Builder::with_capacity(n);
    let mut offset = UInt64Builder::with_capacity(n);
    for letter in letters {
        partition.append_value(letter.source_partition);
        offset.append_value(letter.source_offset);
    }
    columns(
        dead_letter_schema(),
        vec![
            string_column(letters.iter().map(|l| Some(l.reason.as_str())), n),
            string_column(letters.iter().map(|l| Some(l.detail.as_str())), n),
            string_column(letters.iter().map(|l| Some(l.source_topic.as_str())), n),
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            string_column(letters.iter().map(|l| Some(l.value_base64.as_str())), n),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;
    use crate::event::{Direction, LedgerPosting, Outcome};
    use arrow_array::{Array, Int64Array};

    #[test]
    fn payments_convert_with_exact_minor_units() {
        let json = r#"{"payment_id":"p","payer_account_id":"C","merchant_id":"M","terminal_id":"T","amount":"12.34","currency":"EUR","event_time":"2018-04-01T00:00:00Z","channel":"wallet"}"#;
        let payment = Payment::from_json(json.as_bytes()).unwrap();
        let batch = payments_to_record_batch(&[payment.clone(), payment]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let amounts = batch.column_by_name("amount_minor").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(amounts.value(1), 1234);
        assert!(batch.column_by_name("payee_account_id").unwrap().is_null(0));
    }

    #[test]
    fn ledger_flattens_to_balanced_rows() {
        let posting = |account: &str, direction, minor| LedgerPosting {
            account_id: account.into(),
            direction,
            amount_minor: minor,
        };
        let transaction = LedgerTransaction {
            transaction_id: "t".into(),
            kind: crate::event::TransactionKind::Payment,
            payment_id: "p".into(),
            original_payment_id: None,
            event_time: "2018-04-01T00:00:00.000Z".into(),
            currency: Currency::EUR,
            postings: vec![
                posting("customer:C", Direction::Debit, 100),
                posting("merchant:M", Direction::Credit, 98),
                posting("fees", Direction::Credit, 2),
            ],
            settlement_id: None,
        };
        let batch = ledger_to_record_batch(&[transaction]).unwrap();
        let amounts =
            batch.column_by_name("signed_amount_minor").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(amounts.iter().map(|a| a.unwrap()).sum::<i64>(), 0);
        let decision = Decision {
            kind: crate::event::PaymentKind::Payment,
            payment_id: "p".into(),
            original_payment_id: None,
            payer_account_id: "C".into(),
            merchant_id: None,
            amount: "1.00".into(),
            currency: Currency::EUR,
            event_time: "2018-04-01T00:00:00.000Z".into(),
            outcome: Outcome::Review,
            score: 0.5,
            reasons: vec!["a".into(), "b".into()],
            model_version: std::sync::Arc::from("m"),
            velocity: None,
        };
        let with_velocity = Decision {
            velocity: Some(crate::event::Velocity {
                merchant_tx_1h: Some(3),
                merchant_amount_1h_minor: Some(1_250),
                ..Default::default()
            }),
            ..decision.clone()
        };
        let batch = decisions_to_record_batch(&[decision, with_velocity]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let merchant = batch.column_by_name("merchant_tx_1h").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(merchant.iter().collect::<Vec<_>>(), vec![None, Some(3)]);
        let device = batch.column_by_name("device_tx_1h").unwrap();
        assert_eq!(device.null_count(), 2);
    }
}
