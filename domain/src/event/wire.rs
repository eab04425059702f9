//! Payment event v1 as JSON: [`PaymentWire`], and its validation into a [`Payment`] or
//! a [`Rejection`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::payment::{Channel, Geo, Payee, Payment, PaymentKind};
use super::rejection::{RejectReason, Rejection, check_record_size, classify_json_error, identifier, money_rejection};
use crate::currency::Currency;
use crate::money::Money;
use crate::time::parse_rfc3339_ms;

/// The `schema` value of version 1 payment events (the field is optional).
pub const PAYMENT_SCHEMA_V1: &str = "payment.v1";

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

impl Payment {
    /// Parses and validates one payment event v1 from raw record bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Payment, Rejection> {
        check_record_size(bytes)?;
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
        let kind = payment_kind(wire)?;
        let payment_id = identifier("payment_id", &wire.payment_id)?;
        let original_payment_id = original_payment_id(kind, wire)?;
        let payer_account_id = identifier("payer_account_id", &wire.payer_account_id)?;
        let payee = payee(kind, wire)?;
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
}

/// The wire field `type`: `payment` when absent.
fn payment_kind(wire: &PaymentWire<'_>) -> Result<PaymentKind, Rejection> {
    let Some(text) = wire.kind.as_deref() else { return Ok(PaymentKind::Payment) };
    PaymentKind::parse(text).ok_or_else(|| {
        Rejection::new(
            RejectReason::InvalidField,
            format!(
                "type {:?} is not one of payment, authorize, capture, void, refund, chargeback, top_up",
                truncate(text)
            ),
        )
    })
}

/// Captures, voids, refunds and chargebacks name the payment they refer to; the other
/// kinds must not.
fn original_payment_id(kind: PaymentKind, wire: &PaymentWire<'_>) -> Result<Option<String>, Rejection> {
    match (kind.has_original(), &wire.original_payment_id) {
        (true, Some(original)) => Ok(Some(identifier("original_payment_id", original)?)),
        (true, None) => {
            Err(Rejection::new(RejectReason::MissingField, format!("a {} needs original_payment_id", kind.as_str())))
        }
        (false, Some(_)) => {
            Err(Rejection::new(RejectReason::InvalidField, format!("a {} has no original_payment_id", kind.as_str())))
        }
        (false, None) => Ok(None),
    }
}

/// A top-up pays the payer's own wallet; every other kind names either an account, or a
/// merchant with its terminal.
fn payee(kind: PaymentKind, wire: &PaymentWire<'_>) -> Result<Payee, Rejection> {
    match (&wire.payee_account_id, &wire.merchant_id, &wire.terminal_id) {
        (None, None, None) if kind == PaymentKind::TopUp => Ok(Payee::OwnWallet),
        _ if kind == PaymentKind::TopUp => Err(Rejection::new(
            RejectReason::InvalidField,
            "a top_up funds the payer's own wallet: no payee_account_id, merchant_id or terminal_id",
        )),
        (Some(account), None, None) => Ok(Payee::Account { account_id: identifier("payee_account_id", account)? }),
        (None, Some(merchant), Some(terminal)) => Ok(Payee::Merchant {
            merchant_id: identifier("merchant_id", merchant)?,
            terminal_id: identifier("terminal_id", terminal)?,
        }),
        (None, None, None) => Err(Rejection::new(
            RejectReason::MissingField,
            "missing payee: give payee_account_id, or merchant_id and terminal_id",
        )),
        _ => Err(Rejection::new(
            RejectReason::InvalidField,
            "payee must be either payee_account_id alone, or merchant_id with terminal_id",
        )),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::super::rejection::INPUT_RECORD_BYTES_MAX;
    use super::*;

    const GOOD: &str = r#"{"payment_id":"p-1","payer_account_id":"C1","merchant_id":"M1","terminal_id":"T1","amount":"12.34","currency":"EUR","event_time":"2018-04-01T00:03:12Z","channel":"card_present","device_id":"d1","geo":{"lat":1.5,"lon":2.5}}"#;

    fn reason(json: &str) -> RejectReason {
        Payment::from_json(json.as_bytes()).unwrap_err().reason
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
    fn content_hash_ignores_formatting_but_not_content() {
        let a = Payment::from_json(GOOD.as_bytes()).unwrap();
        let spaced = GOOD.replace(",", " , ");
        assert_eq!(Payment::from_json(spaced.as_bytes()).unwrap().content_hash(), a.content_hash());
        let other = Payment::from_json(GOOD.replace("12.34", "12.35").as_bytes()).unwrap();
        assert_ne!(other.content_hash(), a.content_hash());
    }
}
