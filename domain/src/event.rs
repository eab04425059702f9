//! Event types of paystream, version 1, and their JSON wire format.
//!
//! Inputs: [`Payment`] (topic `payments`) and [`FraudLabel`] (topic `labels`).
//! Outputs: [`Decision`], [`LedgerTransaction`] (its postings), [`Settlement`] and
//! [`DeadLetter`]. JSON Schemas of each live in `schemas/` at the repository root.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::MoneyError;
use crate::money::Money;
use crate::time::parse_rfc3339_ms;

/// Longest identifier (payment, account, merchant, terminal, device) accepted, in bytes.
pub const IDENTIFIER_BYTES_MAX: usize = 128;
/// Largest input record (key + value) the pipeline accepts; larger ones are dead-lettered.
pub const INPUT_RECORD_BYTES_MAX: usize = 16 * 1024;
/// The `schema` value of version 1 payment events (the field is optional).
pub const PAYMENT_SCHEMA_V1: &str = "payment.v1";

/// How a payment was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    CardPresent,
    CardNotPresent,
    Wallet,
    BankTransfer,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::CardPresent => "card_present",
            Channel::CardNotPresent => "card_not_present",
            Channel::Wallet => "wallet",
            Channel::BankTransfer => "bank_transfer",
        }
    }

    fn parse(text: &str) -> Option<Channel> {
        match text {
            "card_present" => Some(Channel::CardPresent),
            "card_not_present" => Some(Channel::CardNotPresent),
            "wallet" => Some(Channel::Wallet),
            "bank_transfer" => Some(Channel::BankTransfer),
            _ => None,
        }
    }
}

/// Who receives the money: another account, or a merchant at one of its terminals, or
/// (top-ups only) the payer's own wallet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payee {
    Account {
        account_id: String,
    },
    Merchant {
        merchant_id: String,
        terminal_id: String,
    },
    /// A top-up: the money goes into the payer's wallet.
    OwnWallet,
}

/// What a payment event asks for (the wire field `type`, default `payment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// Moves the amount at once (scored).
    Payment,
    /// Reserves the amount (a hold) until captured, voided or expired (scored).
    Authorize,
    /// Posts an authorization (`original_payment_id`), fully or in part, releasing the rest.
    Capture,
    /// Releases an authorization; the amount must equal the authorized amount.
    Void,
    /// Returns (part of) a captured payment from the payee to the payer.
    Refund,
    /// A refund forced by the card network (a dispute the merchant lost).
    Chargeback,
    /// Funds the payer's wallet from outside (bank or card); no payee fields.
    TopUp,
}

impl PaymentKind {
    pub const ALL: [PaymentKind; 7] = [
        PaymentKind::Payment,
        PaymentKind::Authorize,
        PaymentKind::Capture,
        PaymentKind::Void,
        PaymentKind::Refund,
        PaymentKind::Chargeback,
        PaymentKind::TopUp,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentKind::Payment => "payment",
            PaymentKind::Authorize => "authorize",
            PaymentKind::Capture => "capture",
            PaymentKind::Void => "void",
            PaymentKind::Refund => "refund",
            PaymentKind::Chargeback => "chargeback",
            PaymentKind::TopUp => "top_up",
        }
    }

    fn parse(text: &str) -> Option<PaymentKind> {
        PaymentKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// New money leaving a payer: fraud-scored, counted in the payer's feature windows.
    pub fn is_scored(&self) -> bool {
        matches!(self, PaymentKind::Payment | PaymentKind::Authorize)
    }

    /// Refers to an earlier payment or authorization by `original_payment_id`.
    pub fn has_original(&self) -> bool {
        matches!(self, PaymentKind::Capture | PaymentKind::Void | PaymentKind::Refund | PaymentKind::Chargeback)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
}

/// A validated payment event.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub kind: PaymentKind,
    /// Client-generated idempotency key.
    pub payment_id: String,
    /// The payment or authorization a capture, void, refund or chargeback refers to.
    pub original_payment_id: Option<String>,
    pub payer_account_id: String,
    pub payee: Payee,
    pub amount: Money,
    pub event_time_ms: i64,
    pub channel: Channel,
    pub device_id: Option<String>,
    pub geo: Option<Geo>,
}

/// Payment event v1 as it travels as JSON. Borrowed where the input allows.
#[derive(Debug, Serialize, Deserialize)]
pub struct PaymentWire<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Cow<'a, str>>,
    /// `payment` when absent.
    #[serde(borrow, default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub payment_id: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub original_payment_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub payer_account_id: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub payee_account_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<Cow<'a, str>>,
    /// Exact decimal string in major units, e.g. "12.34".
    #[serde(borrow)]
    pub amount: Cow<'a, str>,
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// RFC 3339 with an offset.
    #[serde(borrow)]
    pub event_time: Cow<'a, str>,
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
}

/// Why an input record was rejected. The snake_case name is the machine-readable reason
/// on the dead-letter topic and the `reason` label of the dead-letter counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    RecordTooLarge,
    MalformedJson,
    MissingField,
    InvalidFieldType,
    InvalidField,
    UnsupportedSchema,
    InvalidAmount,
    NonPositiveAmount,
    AmountOverflow,
    UnknownCurrency,
    InvalidTimestamp,
    /// The same `payment_id` arrived before with different content.
    DuplicatePaymentConflict,
    /// A CSV row of a replayed file could not be read.
    MalformedCsvRow,
    /// The payment arrived on a partition its payer does not hash to (produced without
    /// the payer as key, or with another partitioner): its payer's state lives elsewhere.
    WrongPartition,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        RejectReason::RecordTooLarge,
        RejectReason::MalformedJson,
        RejectReason::MissingField,
        RejectReason::InvalidFieldType,
        RejectReason::InvalidField,
        RejectReason::UnsupportedSchema,
        RejectReason::InvalidAmount,
        RejectReason::NonPositiveAmount,
        RejectReason::AmountOverflow,
        RejectReason::UnknownCurrency,
        RejectReason::InvalidTimestamp,
        RejectReason::DuplicatePaymentConflict,
        RejectReason::MalformedCsvRow,
        RejectReason::WrongPartition,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::RecordTooLarge => "record_too_large",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidFieldType => "invalid_field_type",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::UnsupportedSchema => "unsupported_schema",
            RejectReason::InvalidAmount => "invalid_amount",
            RejectReason::NonPositiveAmount => "non_positive_amount",
            RejectReason::AmountOverflow => "amount_overflow",
            RejectReason::UnknownCurrency => "unknown_currency",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::DuplicatePaymentConflict => "duplicate_payment_conflict",
            RejectReason::MalformedCsvRow => "malformed_csv_row",
            RejectReason::WrongPartition => "wrong_partition",
        }
    }
}

/// A rejected input: the reason and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}

fn classify_json_error(error: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    let detail = error.to_string();
    let reason = match error.classify() {
        Category::Data if detail.starts_with("missing field") => RejectReason::MissingField,
        Category::Data if detail.starts_with("invalid type") || detail.starts_with("invalid value") => {
            RejectReason::InvalidFieldType
        }
        Category::Data => RejectReason::InvalidField,
        Category::Syntax | Category::Eof | Category::Io => RejectReason::MalformedJson,
    };
    Rejection { reason, detail }
}

fn identifier(field: &str, value: &str) -> Result<String, Rejection> {
    if value.is_empty() || value.len() > IDENTIFIER_BYTES_MAX || value.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectReason::InvalidField,
            format!("{field} must be 1 to {IDENTIFIER_BYTES_MAX} bytes without control characters"),
        ));
    }
    Ok(value.to_string())
}

fn money_rejection(error: MoneyError) -> Rejection {
    let reason = match error {
        MoneyError::Overflow => RejectReason::AmountOverflow,
        MoneyError::UnknownCurrency(_) => RejectReason::UnknownCurrency,
        _ => RejectReason::InvalidAmount,
    };
    Rejection::new(reason, error.to_string())
}

impl Payment {
    /// Parses and validates one payment event v1 from raw record bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Payment, Rejection> {
        if bytes.len() > INPUT_RECORD_BYTES_MAX {
            return Err(Rejection::new(
                RejectReason::RecordTooLarge,
                format!("record of {} bytes exceeds {INPUT_RECORD_BYTES_MAX}", bytes.len()),
            ));
        }
        let wire: PaymentWire<'_> = serde_json::from_slice(bytes).map_err(|e| classify_json_error(&e))?;
        Payment::from_wire(&wire)
    }

    pub fn from_wire(wire: &PaymentWire<'_>) -> Result<Payment, Rejection> {
        if let Some(schema) = &wire.schema
            && schema != PAYMENT_SCHEMA_V1
        {
            return Err(Rejection::new(
                RejectReason::UnsupportedSchema,
                format!("schema {schema:?} is not {PAYMENT_SCHEMA_V1:?}"),
            ));
        }
        let kind = match wire.kind.as_deref() {
            None => PaymentKind::Payment,
            Some(text) => PaymentKind::parse(text).ok_or_else(|| {
                Rejection::new(
                    RejectReason::InvalidField,
                    format!(
                        "type {:?} is not one of payment, authorize, capture, void, refund, chargeback, top_up",
                        truncate(text)
                    ),
                )
            })?,
        };
        let payment_id = identifier("payment_id", &wire.payment_id)?;
        let original_payment_id = match (kind.has_original(), &wire.original_payment_id) {
            (true, Some(original)) => Some(identifier("original_payment_id", original)?),
            (true, None) => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    format!("a {} needs original_payment_id", kind.as_str()),
                ));
            }
            (false, Some(_)) => {
                return Err(Rejection::new(
                    RejectReason::InvalidField,
                    format!("a {} has no original_payment_id", kind.as_str()),
                ));
            }
            (false, None) => None,
        };
        let payer_account_id = identifier("payer_account_id", &wire.payer_account_id)?;
        let payee = match (&wire.payee_account_id, &wire.merchant_id, &wire.terminal_id) {
            (None, None, None) if kind == PaymentKind::TopUp => Payee::OwnWallet,
            _ if kind == PaymentKind::TopUp => {
                return Err(Rejection::new(
                    RejectReason::InvalidField,
                    "a top_up funds the payer's own wallet: no payee_account_id, merchant_id or terminal_id",
                ));
            }
            (Some(account), None, None) => Payee::Account { account_id: identifier("payee_account_id", account)? },
            (None, Some(merchant), Some(terminal)) => Payee::Merchant {
                merchant_id: identifier("merchant_id", merchant)?,
                terminal_id: identifier("terminal_id", terminal)?,
            },
            (None, None, None) => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    "missing payee: give payee_account_id, or merchant_id and terminal_id",
                ));
            }
            _ => {
                return Err(Rejection::new(
                    RejectReason::InvalidField,
                    "payee must be either payee_account_id alone, or merchant_id with terminal_id",
                ));
            }
        };
        let currency = Currency::from_code(&wire.currency).map_err(money_rejection)?;
        let amount = Money::parse(&wire.amount, currency).map_err(money_rejection)?;
        if amount.minor_units() <= 0 {
            return Err(Rejection::new(
                RejectReason::NonPositiveAmount,
                format!("amount {} must be greater than zero", wire.amount),
            ));
        }
        let event_time_ms = parse_rfc3339_ms(&wire.event_time)
            .map_err(|e| Rejection::new(RejectReason::InvalidTimestamp, format!("event_time: {e}")))?;
        let channel = Channel::parse(&wire.channel).ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidField,
                format!(
                    "channel {:?} is not one of card_present, card_not_present, wallet, bank_transfer",
                    truncate(&wire.channel)
                ),
            )
        })?;
        if kind == PaymentKind::TopUp && channel == Channel::Wallet {
            return Err(Rejection::new(
                RejectReason::InvalidField,
                "a top_up is funded from outside the wallet: channel bank_transfer, card_present or card_not_present",
            ));
        }
        let device_id = wire.device_id.as_deref().map(|d| identifier("device_id", d)).transpose()?;
        if let Some(geo) = wire.geo
            && !((-90.0..=90.0).contains(&geo.lat) && (-180.0..=180.0).contains(&geo.lon))
        {
            return Err(Rejection::new(RejectReason::InvalidField, "geo lat/lon out of range"));
        }
        Ok(Payment {
            kind,
            payment_id,
            original_payment_id,
            payer_account_id,
            payee,
            amount,
            event_time_ms,
            channel,
            device_id,
            geo: wire.geo,
        })
    }

    /// The JSON v1 encoding of this payment (the inverse of [`Payment::from_json`]).
    pub fn to_wire(&self) -> PaymentWire<'_> {
        let (payee_account_id, merchant_id, terminal_id) = match &self.payee {
            Payee::Account { account_id } => (Some(Cow::Borrowed(account_id.as_str())), None, None),
            Payee::Merchant { merchant_id, terminal_id } => {
                (None, Some(Cow::Borrowed(merchant_id.as_str())), Some(Cow::Borrowed(terminal_id.as_str())))
            }
            Payee::OwnWallet => (None, None, None),
        };
        PaymentWire {
            schema: None,
            kind: (self.kind != PaymentKind::Payment).then(|| Cow::Borrowed(self.kind.as_str())),
            payment_id: Cow::Borrowed(&self.payment_id),
            original_payment_id: self.original_payment_id.as_deref().map(Cow::Borrowed),
            payer_account_id: Cow::Borrowed(&self.payer_account_id),
            payee_account_id,
            merchant_id,
            terminal_id,
            amount: Cow::Owned(self.amount.to_decimal_string()),
            currency: Cow::Borrowed(self.amount.currency().code()),
            event_time: Cow::Owned(crate::time::format_rfc3339_ms(self.event_time_ms)),
            channel: Cow::Borrowed(self.channel.as_str()),
            device_id: self.device_id.as_deref().map(Cow::Borrowed),
            geo: self.geo,
        }
    }

    pub fn merchant_id(&self) -> Option<&str> {
        match &self.payee {
            Payee::Merchant { merchant_id, .. } => Some(merchant_id),
            Payee::Account { .. } | Payee::OwnWallet => None,
        }
    }

    pub fn terminal_id(&self) -> Option<&str> {
        match &self.payee {
            Payee::Merchant { terminal_id, .. } => Some(terminal_id),
            Payee::Account { .. } | Payee::OwnWallet => None,
        }
    }

    /// A hash of the payment's content (not its formatting): two events with one
    /// `payment_id` and equal hashes are a retry; unequal hashes are a conflict.
    pub fn content_hash(&self) -> u64 {
        use xxhash_rust::xxh3::Xxh3;
        let mut hasher = Xxh3::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(self.payment_id.as_bytes());
        // A plain payment hashes as before kinds existed, so retries keep matching.
        if self.kind != PaymentKind::Payment {
            field(self.kind.as_str().as_bytes());
        }
        if let Some(original) = &self.original_payment_id {
            field(original.as_bytes());
        }
        field(self.payer_account_id.as_bytes());
        match &self.payee {
            Payee::Account { account_id } => field(account_id.as_bytes()),
            Payee::Merchant { merchant_id, terminal_id } => {
                field(merchant_id.as_bytes());
                field(terminal_id.as_bytes());
            }
            Payee::OwnWallet => field(b"\0own-wallet"),
        }
        field(&self.amount.minor_units().to_le_bytes());
        field(self.amount.currency().code().as_bytes());
        field(&self.event_time_ms.to_le_bytes());
        field(self.channel.as_str().as_bytes());
        hasher.digest()
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

/// A fraud label: feedback that a payment was (or was not) fraud, known at `reported_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudLabel {
    pub payment_id: String,
    pub is_fraud: bool,
    /// RFC 3339: when the label became known (chargeback, report, analyst verdict).
    pub reported_at: String,
    /// Context copied from the payment so feature operators can join without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_event_time: Option<String>,
}

/// A fraud label as it travels as JSON, borrowed from the record where possible.
#[derive(Debug, Deserialize)]
pub struct FraudLabelWire<'a> {
    #[serde(borrow)]
    pub payment_id: Cow<'a, str>,
    pub is_fraud: bool,
    #[serde(borrow)]
    pub reported_at: Cow<'a, str>,
    #[serde(borrow, default)]
    pub payer_account_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub terminal_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub payment_event_time: Option<Cow<'a, str>>,
}

impl FraudLabel {
    /// Parses and validates one label event from raw record bytes without copying it;
    /// returns it with its `reported_at` in epoch milliseconds.
    pub fn parse(bytes: &[u8]) -> Result<(FraudLabelWire<'_>, i64), Rejection> {
        if bytes.len() > INPUT_RECORD_BYTES_MAX {
            return Err(Rejection::new(
                RejectReason::RecordTooLarge,
                format!("record of {} bytes exceeds {INPUT_RECORD_BYTES_MAX}", bytes.len()),
            ));
        }
        let label: FraudLabelWire<'_> = serde_json::from_slice(bytes).map_err(|e| classify_json_error(&e))?;
        if label.payment_id.is_empty()
            || label.payment_id.len() > IDENTIFIER_BYTES_MAX
            || label.payment_id.chars().any(char::is_control)
        {
            identifier("payment_id", &label.payment_id)?;
        }
        let reported_at_ms = crate::time::parse_rfc3339_ms(&label.reported_at)
            .map_err(|e| Rejection::new(RejectReason::InvalidTimestamp, format!("reported_at: {e}")))?;
        Ok((label, reported_at_ms))
    }
}

/// What the pipeline decided for a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approve,
    Review,
    Decline,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Approve, Outcome::Review, Outcome::Decline];

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Approve => "approve",
            Outcome::Review => "review",
            Outcome::Decline => "decline",
        }
    }
}

fn is_payment(kind: &PaymentKind) -> bool {
    *kind == PaymentKind::Payment
}

fn payment_kind() -> PaymentKind {
    PaymentKind::Payment
}

/// A scored payment's shared velocity features, from the feature store (embedded or
/// Redis): the payments at its merchant / from its device in the hour up to it (it
/// included; 5-minute buckets, so "the hour" is the 12 buckets ending with its own) and
/// their amount. Absent for a payment without a merchant or device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Velocity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_tx_1h: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_amount_1h_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_tx_1h: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_amount_1h_minor: Option<i64>,
}

/// Output: one per accepted payment event. For captures, voids, refunds and chargebacks
/// the outcome says whether the ledger accepted it (`decline` with a reason if not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(rename = "type", default = "payment_kind", skip_serializing_if = "is_payment")]
    pub kind: PaymentKind,
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payment_id: Option<String>,
    pub payer_account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    pub amount: String,
    pub currency: Currency,
    pub event_time: String,
    pub outcome: Outcome,
    /// Fraud score in [0, 1]; not money, so a float is fine.
    pub score: f32,
    pub reasons: Vec<Cow<'static, str>>,
    /// Shared by every decision of one model, so stamping it costs no allocation.
    pub model_version: std::sync::Arc<str>,
    /// With a feature store configured (`--velocity`), for scored payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<Velocity>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

/// One leg of a ledger transaction. Amounts are positive; the direction says the side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosting {
    pub account_id: String,
    pub direction: Direction,
    /// Integer minor units of the transaction's currency, never negative.
    pub amount_minor: i64,
}

impl LedgerPosting {
    /// Debits positive, credits negative: a balanced transaction sums to zero.
    pub fn signed_minor_units(&self) -> i64 {
        match self.direction {
            Direction::Debit => self.amount_minor,
            Direction::Credit => -self.amount_minor,
        }
    }
}

/// What a ledger transaction records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// An approved payment: payer → payee (+ fees).
    Payment,
    /// A captured authorization: payer → payee (+ fees).
    Capture,
    /// Payee → payer, linked to the original payment.
    Refund,
    Chargeback,
    /// Outside → the payer's wallet.
    TopUp,
    /// A payment to another account, credited on the payee's partition: the transfers
    /// clearing account → the payee's wallet.
    TransferIn,
    /// A transfer the payee's side refused, back on the payer's partition: the transfers
    /// clearing account → the payer's funding.
    TransferReturn,
    /// A closed settlement's net: merchant → settlement account.
    Settlement,
    /// Settlement account → the bank, paying the merchant out.
    Payout,
}

impl TransactionKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TransactionKind::Payment => "payment",
            TransactionKind::Capture => "capture",
            TransactionKind::Refund => "refund",
            TransactionKind::Chargeback => "chargeback",
            TransactionKind::TopUp => "top_up",
            TransactionKind::TransferIn => "transfer_in",
            TransactionKind::TransferReturn => "transfer_return",
            TransactionKind::Settlement => "settlement",
            TransactionKind::Payout => "payout",
        }
    }
}

fn is_payment_transaction(kind: &TransactionKind) -> bool {
    *kind == TransactionKind::Payment
}

fn payment_transaction() -> TransactionKind {
    TransactionKind::Payment
}

/// Output: one balanced set of postings (debits = credits): an approved payment, a
/// capture, refund, chargeback or top-up, or a settlement's payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTransaction {
    pub transaction_id: String,
    #[serde(rename = "type", default = "payment_transaction", skip_serializing_if = "is_payment_transaction")]
    pub kind: TransactionKind,
    /// The event that made it (for settlement and payout: the settlement id).
    pub payment_id: String,
    /// Refunds and chargebacks: the payment they return; captures: the authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payment_id: Option<String>,
    pub event_time: String,
    pub currency: Currency,
    pub postings: Vec<LedgerPosting>,
    /// The settlement (merchant window) this payment is paid out in, if its payee is a
    /// merchant: `paystream reconcile` checks each settlement against these postings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_id: Option<String>,
}

/// Which side of a transfer between partitions a leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// To the payee's partition: credit the payee's wallet.
    Credit,
    /// Back to the payer's partition: the payee's side refused; credit the payer.
    Return,
}

/// Internal record on `paystream-transfers` (key: the account whose partition applies
/// it): one side of a payment to another account, written in the transaction that made
/// the other side, applied exactly once (deduplicated by `leg_id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeg {
    /// `<payment id>/credit` or `<payment id>/return`.
    pub leg_id: String,
    pub kind: LegKind,
    pub payment_id: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    /// Where a return goes: `wallet:<payer>` or `customer:<payer>`.
    pub payer_funding_account: String,
    pub amount_minor: i64,
    pub currency: Currency,
    pub event_time: String,
    /// Why the payee's side refused (returns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TransferLeg {
    /// The key it is written with: the account whose partition applies it.
    pub fn key(&self) -> &str {
        match self.kind {
            LegKind::Credit => &self.payee_account_id,
            LegKind::Return => &self.payer_account_id,
        }
    }
}

/// Output: net amounts for one merchant, currency and settlement window, as accumulated
/// by one input partition (see ARCHITECTURE.md, "Settlement").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub settlement_id: String,
    pub merchant_id: String,
    pub currency: Currency,
    pub window_start: String,
    pub window_end: String,
    pub source_partition: u32,
    pub payment_count: u64,
    /// Payments whose event time fell in an already closed window and were moved here.
    pub late_payment_count: u64,
    #[serde(default)]
    pub refund_count: u64,
    #[serde(default)]
    pub chargeback_count: u64,
    /// Totals are i128 so that no window can overflow; the decimal strings are exact.
    /// net = gross − fees − refunds − chargebacks (negative: the merchant owes).
    pub gross_minor: i128,
    pub fees_minor: i128,
    #[serde(default)]
    pub refunds_minor: i128,
    #[serde(default)]
    pub chargebacks_minor: i128,
    pub net_minor: i128,
    pub gross: String,
    pub fees: String,
    #[serde(default)]
    pub refunds: String,
    #[serde(default)]
    pub chargebacks: String,
    pub net: String,
}

/// Output: an input record the pipeline could not accept, with its original bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: RejectReason,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: u32,
    pub source_offset: u64,
    /// Original key and value, base64 (standard alphabet), byte for byte.
    pub key_base64: String,
    pub value_base64: String,
}

impl DeadLetter {
    pub fn new(
        rejection: Rejection,
        source_topic: &str,
        source_partition: u32,
        source_offset: u64,
        key: &[u8],
        value: &[u8],
    ) -> DeadLetter {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        DeadLetter {
            reason: rejection.reason,
            detail: rejection.detail,
            source_topic: source_topic.to_string(),
            source_partition,
            source_offset,
            key_base64: engine.encode(key),
            value_base64: engine.encode(value),
        }
    }

    pub fn original_value(&self) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&self.value_base64).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"payment_id":"p-1","payer_account_id":"C1","merchant_id":"M1","terminal_id":"T1","amount":"12.34","currency":"EUR","event_time":"2018-04-01T00:03:12Z","channel":"card_present","device_id":"d1","geo":{"lat":1.5,"lon":2.5}}"#;

    fn reason(json: &str) -> RejectReason {
        Payment::from_json(json.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn labels_parse_with_their_report_time_or_are_rejected_with_a_reason() {
        let (label, reported_ms) =
            FraudLabel::parse(br#"{"payment_id":"p-1","is_fraud":true,"reported_at":"2018-04-08T00:00:00Z"}"#).unwrap();
        assert!(label.is_fraud && label.terminal_id.is_none());
        assert_eq!(reported_ms, crate::time::parse_rfc3339_ms("2018-04-08T00:00:00Z").unwrap());
        let reason = |json: &str| FraudLabel::parse(json.as_bytes()).unwrap_err().reason;
        assert_eq!(
            reason(r#"{"payment_id":"p","is_fraud":true,"reported_at":"2018-04-08T00:00:00Z","terminal_id":5}"#),
            RejectReason::InvalidFieldType
        );
        assert_eq!(reason("{nope"), RejectReason::MalformedJson);
        assert_eq!(reason(r#"{"payment_id":"p","reported_at":"2018-04-08T00:00:00Z"}"#), RejectReason::MissingField);
        assert_eq!(
            reason(r#"{"payment_id":"","is_fraud":true,"reported_at":"2018-04-08T00:00:00Z"}"#),
            RejectReason::InvalidField
        );
        assert_eq!(
            reason(r#"{"payment_id":"p","is_fraud":true,"reported_at":"soon"}"#),
            RejectReason::InvalidTimestamp
        );
    }

    #[test]
    fn parses_a_good_payment_and_round_trips() {
        let payment = Payment::from_json(GOOD.as_bytes()).unwrap();
        assert_eq!(payment.amount.minor_units(), 1234);
        assert_eq!(payment.merchant_id(), Some("M1"));
        let json = serde_json::to_vec(&payment.to_wire()).unwrap();
        assert_eq!(Payment::from_json(&json).unwrap(), payment);
        assert_eq!(Payment::from_json(&json).unwrap().content_hash(), payment.content_hash());
    }

    #[test]
    fn every_kind_of_bad_input_has_its_reason() {
        let replace = |from: &str, to: &str| GOOD.replace(from, to);
        assert_eq!(reason("{not json"), RejectReason::MalformedJson);
        assert_eq!(reason(""), RejectReason::MalformedJson);
        assert_eq!(reason(&replace(r#""payment_id":"p-1","#, "")), RejectReason::MissingField);
        assert_eq!(reason(&replace(r#""amount":"12.34""#, r#""amount":12.34"#)), RejectReason::InvalidFieldType);
        assert_eq!(
            reason(&replace(r#""payer_account_id":"C1""#, r#""payer_account_id":7"#)),
            RejectReason::InvalidFieldType
        );
        assert_eq!(reason(&replace("12.34", "0.00")), RejectReason::NonPositiveAmount);
        assert_eq!(reason(&replace("12.34", "-5")), RejectReason::NonPositiveAmount);
        assert_eq!(reason(&replace("12.34", "99999999999999999999")), RejectReason::AmountOverflow);
        assert_eq!(reason(&replace("12.34", "12.345")), RejectReason::InvalidAmount);
        assert_eq!(reason(&replace("12.34", "twelve")), RejectReason::InvalidAmount);
        assert_eq!(reason(&replace("EUR", "ZZZ")), RejectReason::UnknownCurrency);
        assert_eq!(reason(&replace("2018-04-01T00:03:12Z", "April 1st")), RejectReason::InvalidTimestamp);
        assert_eq!(reason(&replace("card_present", "telepathy")), RejectReason::InvalidField);
        assert_eq!(reason(&replace(r#""merchant_id":"M1","#, "")), RejectReason::InvalidField);
        assert_eq!(reason(&replace(r#""payment_id":"p-1""#, r#""payment_id":"""#)), RejectReason::InvalidField);
        assert_eq!(
            reason(&replace(r#""payment_id""#, r#""schema":"payment.v9","payment_id""#)),
            RejectReason::UnsupportedSchema
        );
        let huge = replace("d1", &"x".repeat(INPUT_RECORD_BYTES_MAX));
        assert_eq!(reason(&huge), RejectReason::RecordTooLarge);
    }

    #[test]
    fn event_types_parse_round_trip_and_are_checked() {
        let top_up = r#"{"type":"top_up","payment_id":"t","payer_account_id":"C1","amount":"5.00","currency":"EUR","event_time":"2018-04-01T00:00:00Z","channel":"bank_transfer"}"#;
        let payment = Payment::from_json(top_up.as_bytes()).unwrap();
        assert_eq!((payment.kind, &payment.payee), (PaymentKind::TopUp, &Payee::OwnWallet));
        let refund =
            GOOD.replace(r#""payment_id":"p-1""#, r#""type":"refund","payment_id":"r-1","original_payment_id":"p-1""#);
        let payment = Payment::from_json(refund.as_bytes()).unwrap();
        assert_eq!((payment.kind, payment.original_payment_id.as_deref()), (PaymentKind::Refund, Some("p-1")));
        for event in [top_up, &refund] {
            let payment = Payment::from_json(event.as_bytes()).unwrap();
            let json = serde_json::to_vec(&payment.to_wire()).unwrap();
            assert_eq!(Payment::from_json(&json).unwrap(), payment);
        }
        // A plain payment hashes as it did before types existed; a type changes the hash.
        let plain = Payment::from_json(GOOD.as_bytes()).unwrap();
        let typed = Payment::from_json(GOOD.replace(r#""payment_id""#, r#""type":"payment","payment_id""#).as_bytes());
        assert_eq!(typed.unwrap().content_hash(), plain.content_hash());
        let authorize = GOOD.replace(r#""payment_id""#, r#""type":"authorize","payment_id""#);
        assert_ne!(Payment::from_json(authorize.as_bytes()).unwrap().content_hash(), plain.content_hash());

        let with_type = |kind: &str| GOOD.replace(r#""payment_id""#, &format!(r#""type":"{kind}","payment_id""#));
        assert_eq!(reason(&with_type("teleport")), RejectReason::InvalidField);
        assert_eq!(reason(&with_type("capture")), RejectReason::MissingField, "a capture names its authorization");
        let extra = GOOD.replace(r#""payment_id":"p-1""#, r#""payment_id":"p-1","original_payment_id":"p-0""#);
        assert_eq!(reason(&extra), RejectReason::InvalidField, "a payment has no original");
        assert_eq!(reason(&with_type("top_up")), RejectReason::InvalidField, "a top-up has no payee");
        let from_wallet = top_up.replace("bank_transfer", "wallet");
        assert_eq!(reason(&from_wallet), RejectReason::InvalidField, "a top-up comes from outside the wallet");
        assert_eq!(
            reason(&top_up.replace(r#""type":"top_up","#, "")),
            RejectReason::MissingField,
            "a payment needs a payee"
        );
    }

    #[test]
    fn reason_names_match_serde() {
        for reason in RejectReason::ALL {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("\"{}\"", reason.as_str()));
        }
    }

    #[test]
    fn content_hash_ignores_formatting_but_not_content() {
        let a = Payment::from_json(GOOD.as_bytes()).unwrap();
        let spaced = GOOD.replace(",", " , ");
        assert_eq!(Payment::from_json(spaced.as_bytes()).unwrap().content_hash(), a.content_hash());
        let other = Payment::from_json(GOOD.replace("12.34", "12.35").as_bytes()).unwrap();
        assert_ne!(other.content_hash(), a.content_hash());
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    const SCHEMAS: [&str; 6] = [
        include_str!("../../schemas/payment.v1.schema.json"),
        include_str!("../../schemas/label.v1.schema.json"),
        include_str!("../../schemas/decision.v1.schema.json"),
        include_str!("../../schemas/ledger-transaction.v1.schema.json"),
        include_str!("../../schemas/settlement.v1.schema.json"),
        include_str!("../../schemas/dead-letter.v1.schema.json"),
    ];

    #[test]
    fn schemas_are_json_and_the_payment_example_is_accepted() {
        for schema in SCHEMAS {
            let _: serde_json::Value = serde_json::from_str(schema).expect("schema files are JSON");
        }
        let payment: serde_json::Value = serde_json::from_str(SCHEMAS[0]).unwrap();
        for example in payment["examples"].as_array().unwrap() {
            Payment::from_json(example.to_string().as_bytes()).expect("schema example is a valid payment");
        }
        let dead_letter: serde_json::Value = serde_json::from_str(SCHEMAS[5]).unwrap();
        let reasons: Vec<&str> = dead_letter["properties"]["reason"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, ours, "the dead-letter schema lists every reason");
    }
}
