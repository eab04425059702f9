//! The fraud label event (topic `labels`): [`FraudLabel`], its borrowed wire form and
//! its validation.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::rejection::{
    IDENTIFIER_BYTES_MAX, RejectReason, Rejection, check_record_size, classify_json_error, identifier,
};

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
        check_record_size(bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
