//! Input limits, why an input record is rejected ([`RejectReason`], [`Rejection`]), and
//! the checks the payment and label parsers share.

use serde::{Deserialize, Serialize};

use crate::error::MoneyError;

/// Longest identifier (payment, account, merchant, terminal, device) accepted, in bytes.
pub const IDENTIFIER_BYTES_MAX: usize = 128;
/// Largest input record (key + value) the pipeline accepts; larger ones are dead-lettered.
pub const INPUT_RECORD_BYTES_MAX: usize = 16 * 1024;

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
    /// The event time is further ahead of the record's log timestamp than the allowed
    /// clock skew: a producer with a wrong (or hostile) clock.
    EventTimeInFuture,
}

impl RejectReason {
    pub const ALL: [RejectReason; 15] = [
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
        RejectReason::EventTimeInFuture,
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
            RejectReason::EventTimeInFuture => "event_time_in_future",
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

/// Refuses a record larger than [`INPUT_RECORD_BYTES_MAX`] before it is parsed.
pub(super) fn check_record_size(bytes: &[u8]) -> Result<(), Rejection> {
    if bytes.len() > INPUT_RECORD_BYTES_MAX {
        return Err(Rejection::new(
            RejectReason::RecordTooLarge,
            format!("record of {} bytes exceeds {INPUT_RECORD_BYTES_MAX}", bytes.len()),
        ));
    }
    Ok(())
}

pub(super) fn classify_json_error(error: &serde_json::Error) -> Rejection {
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

pub(super) fn identifier(field: &str, value: &str) -> Result<String, Rejection> {
    if value.is_empty() || value.len() > IDENTIFIER_BYTES_MAX || value.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectReason::InvalidField,
            format!("{field} must be 1 to {IDENTIFIER_BYTES_MAX} bytes without control characters"),
        ));
    }
    Ok(value.to_string())
}

pub(super) fn money_rejection(error: MoneyError) -> Rejection {
    let reason = match error {
        MoneyError::Overflow => RejectReason::AmountOverflow,
        MoneyError::UnknownCurrency(_) => RejectReason::UnknownCurrency,
        _ => RejectReason::InvalidAmount,
    };
    Rejection::new(reason, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_match_serde() {
        for reason in RejectReason::ALL {
            assert_eq!(serde_json::to_string(&reason).unwrap(), format!("\"{}\"", reason.as_str()));
        }
    }
}
