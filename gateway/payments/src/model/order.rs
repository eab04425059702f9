//! A payment or top-up request, checked, and the event it becomes.
//!
//! The payer is always the caller (the token's subject), never a body field. The event
//! is validated by the same code the pipeline runs (`Payment::from_json`), so what the
//! API accepts the pipeline decides, and what it would dead-letter is refused here with
//! the same reason.

use paystream_domain::{Currency, Money, MoneyError, Payment};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::PaymentsError;

/// `POST /v1/payments`: a merchant (`merchant_id` + `terminal_id`) or another account
/// (`payee_user_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    #[serde(default)]
    pub merchant_id: Option<String>,
    #[serde(default)]
    pub terminal_id: Option<String>,
    #[serde(default)]
    pub payee_user_id: Option<String>,
    /// Exact decimal string in major units, e.g. `"12.34"`.
    pub amount: String,
    pub currency: String,
    /// `wallet` (the default: the payer's paystream wallet), `card_present` or
    /// `card_not_present`.
    #[serde(default)]
    pub channel: Option<String>,
    /// `false`: authorize only (a hold the merchant captures or anyone of the two voids).
    #[serde(default)]
    pub capture: Option<bool>,
}

/// `POST /v1/payments/{id}/capture|void|refund`: the amount defaults to the original's
/// (a void always releases all of it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpBody {
    #[serde(default)]
    pub amount: Option<String>,
}

/// `POST /v1/wallet/top-ups`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUpBody {
    pub amount: String,
    pub currency: String,
    /// `bank_transfer` (the default), `card_present` or `card_not_present`.
    #[serde(default)]
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    Payment,
    Authorize,
    TopUp,
    Capture,
    Void,
    Refund,
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Payment => "payment",
            OrderKind::Authorize => "authorize",
            OrderKind::TopUp => "top_up",
            OrderKind::Capture => "capture",
            OrderKind::Void => "void",
            OrderKind::Refund => "refund",
        }
    }
}

/// What a follow-up needs to know about the payment it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub payment_id: String,
    pub kind: String,
    pub payer_user_id: String,
    pub merchant_id: Option<String>,
    pub terminal_id: Option<String>,
    pub payee_user_id: Option<String>,
    pub amount: String,
    pub currency: String,
    pub channel: String,
}

/// A checked request, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub kind: OrderKind,
    pub payment_id: String,
    pub payer_user_id: String,
    pub merchant_id: Option<String>,
    pub terminal_id: Option<String>,
    pub payee_user_id: Option<String>,
    pub amount: Money,
    pub channel: String,
    /// For captures, voids and refunds: the payment they act on.
    pub original_payment_id: Option<String>,
}

/// The payment id of (client, idempotency key): the same key always names the same
/// payment, so the pipeline's own deduplication protects it too.
pub fn payment_id(client_id: &str, idempotency_key: &str) -> String {
    let digest = Sha256::digest(format!("{client_id}\n{idempotency_key}").as_bytes());
    format!("pay_{}", paystream_http::hex::encode(&digest[..16]))
}

fn money(amount: &str, currency: &str) -> Result<Money, PaymentsError> {
    let currency = Currency::from_code(currency)
        .map_err(|_| PaymentsError::invalid("unknown_currency", format!("currency: {currency:?} is not ISO 4217")))?;
    let money = Money::parse(amount, currency).map_err(|error| {
        PaymentsError::invalid("invalid_amount", format!("amount: {error} (an exact decimal string, e.g. \"12.34\")"))
    })?;
    if money.minor_units() <= 0 {
        return Err(PaymentsError::invalid("non_positive_amount", "amount: must be greater than zero"));
    }
    Ok(money)
}

/// A capture's or refund's amount, in its original's currency. One with more decimals
/// than that currency has is well formed, but does not fit the payment it names: 409,
/// as a follow-up of the wrong kind of payment is.
fn follow_up_amount(amount: &str, currency_code: &str) -> Result<Money, PaymentsError> {
    if let Ok(currency) = Currency::from_code(currency_code)
        && let Err(MoneyError::TooManyDecimals { digits_max, .. }) = Money::parse(amount, currency)
    {
        return Err(PaymentsError::Conflict {
            code: "amount_precision",
            detail: format!("amount: the payment is in {currency_code}, which has {digits_max} decimals"),
        });
    }
    money(amount, currency_code)
}

impl Order {
    pub fn payment(payer: &str, payment_id: String, body: &PaymentBody) -> Result<Order, PaymentsError> {
        let amount = money(&body.amount, &body.currency)?;
        let merchant = (body.merchant_id.clone(), body.terminal_id.clone());
        let (merchant_id, terminal_id, payee_user_id) = match (merchant, &body.payee_user_id) {
            ((Some(merchant), Some(terminal)), None) => (Some(merchant), Some(terminal), None),
            ((None, None), Some(payee)) if payee != payer => (None, None, Some(payee.clone())),
            ((None, None), Some(_)) => {
                return Err(PaymentsError::invalid("invalid_payee", "payee_user_id: cannot pay yourself"));
            }
            _ => {
                return Err(PaymentsError::invalid(
                    "invalid_payee",
                    "give merchant_id and terminal_id, or payee_user_id, and nothing else",
                ));
            }
        };
        let channel = body.channel.clone().unwrap_or_else(|| "wallet".to_string());
        if !matches!(channel.as_str(), "wallet" | "card_present" | "card_not_present") {
            return Err(PaymentsError::invalid("invalid_channel", "channel: wallet, card_present or card_not_present"));
        }
        let kind = if body.capture.unwrap_or(true) { OrderKind::Payment } else { OrderKind::Authorize };
        if kind == OrderKind::Authorize && payee_user_id.is_some() {
            return Err(PaymentsError::invalid("invalid_payee", "only a merchant payment can be authorized first"));
        }
        Ok(Order {
            kind,
            original_payment_id: None,
            payment_id,
            payer_user_id: payer.to_string(),
            merchant_id,
            terminal_id,
            payee_user_id,
            amount,
            channel,
        })
    }

    pub fn top_up(payer: &str, payment_id: String, body: &TopUpBody) -> Result<Order, PaymentsError> {
        let amount = money(&body.amount, &body.currency)?;
        let channel = body.channel.clone().unwrap_or_else(|| "bank_transfer".to_string());
        if !matches!(channel.as_str(), "bank_transfer" | "card_present" | "card_not_present") {
            return Err(PaymentsError::invalid(
                "invalid_channel",
                "channel: bank_transfer, card_present or card_not_present",
            ));
        }
        Ok(Order {
            kind: OrderKind::TopUp,
            original_payment_id: None,
            payment_id,
            payer_user_id: payer.to_string(),
            merchant_id: None,
            terminal_id: None,
            payee_user_id: None,
            amount,
            channel,
        })
    }

    /// A capture, void or refund of `original`, paid back and forth between the same
    /// payer and payee, in its currency.
    pub fn follow_up(
        kind: OrderKind,
        payment_id: String,
        original: &Original,
        body: &FollowUpBody,
    ) -> Result<Order, PaymentsError> {
        let expected = match kind {
            OrderKind::Capture | OrderKind::Void => &["authorize"][..],
            OrderKind::Refund => &["payment", "authorize"][..],
            _ => return Err(PaymentsError::Internal(format!("{} is not a follow-up", kind.as_str()))),
        };
        if !expected.contains(&original.kind.as_str()) {
            return Err(PaymentsError::Conflict {
                code: "invalid_original",
                detail: format!("a {} acts on a {}, not a {}", kind.as_str(), expected.join(" or "), original.kind),
            });
        }
        let amount = match (&body.amount, kind) {
            (Some(_), OrderKind::Void) => {
                return Err(PaymentsError::invalid(
                    "invalid_amount",
                    "a void releases the whole authorization: no amount",
                ));
            }
            (Some(amount), _) => follow_up_amount(amount, &original.currency)?,
            (None, _) => money(&original.amount, &original.currency)?,
        };
        Ok(Order {
            kind,
            payment_id,
            payer_user_id: original.payer_user_id.clone(),
            merchant_id: original.merchant_id.clone(),
            terminal_id: original.terminal_id.clone(),
            payee_user_id: original.payee_user_id.clone(),
            amount,
            channel: original.channel.clone(),
            original_payment_id: Some(original.payment_id.clone()),
        })
    }

    /// The payment event (v1 JSON), checked by the pipeline's own validation.
    pub fn event(&self, event_time: &str) -> Result<Vec<u8>, PaymentsError> {
        let mut event = serde_json::json!({
            "payment_id": self.payment_id,
            "payer_account_id": self.payer_user_id,
            "amount": self.amount.to_decimal_string(),
            "currency": self.amount.currency().code(),
            "event_time": event_time,
            "channel": self.channel,
        });
        if self.kind != OrderKind::Payment {
            event["type"] = self.kind.as_str().into();
        }
        for (field, value) in [
            ("original_payment_id", &self.original_payment_id),
            ("merchant_id", &self.merchant_id),
            ("terminal_id", &self.terminal_id),
            ("payee_account_id", &self.payee_user_id),
        ] {
            if let Some(value) = value {
                event[field] = value.clone().into();
            }
        }
        let bytes = serde_json::to_vec(&event).map_err(|error| PaymentsError::Internal(error.to_string()))?;
        Payment::from_json(&bytes).map_err(|rejection| PaymentsError::Invalid {
            code: rejection.reason.as_str(),
            detail: rejection.detail.clone(),
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(amount: &str) -> PaymentBody {
        PaymentBody {
            merchant_id: Some("M1".into()),
            terminal_id: Some("T1".into()),
            payee_user_id: None,
            amount: amount.into(),
            currency: "EUR".into(),
            channel: None,
            capture: None,
        }
    }

    #[test]
    fn payment_ids_are_per_client_and_key() {
        assert_eq!(payment_id("usr_a", "k1"), payment_id("usr_a", "k1"));
        assert_ne!(payment_id("usr_a", "k1"), payment_id("usr_b", "k1"));
        assert_ne!(payment_id("usr_a", "k1"), payment_id("usr_a", "k2"));
        assert!(payment_id("usr_a", "k1").starts_with("pay_"));
    }

    #[test]
    fn orders_become_events_the_pipeline_accepts() {
        let order = Order::payment("usr_a", "pay_1".into(), &body("12.30")).unwrap();
        let event: serde_json::Value = serde_json::from_slice(&order.event("2026-12-06T00:00:00Z").unwrap()).unwrap();
        assert_eq!(event["amount"], "12.30");
        assert_eq!(event["payer_account_id"], "usr_a");
        assert_eq!(event["channel"], "wallet");
        let codes: Vec<&str> = ["12.345", "0.00", "-1", "1e3", "abc"]
            .into_iter()
            .map(|amount| match Order::payment("usr_a", "p".into(), &body(amount)) {
                Err(PaymentsError::Invalid { code, .. }) => code,
                other => panic!("{amount}: {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            ["invalid_amount", "non_positive_amount", "non_positive_amount", "invalid_amount", "invalid_amount"]
        );
        let mut to_self = body("1.00");
        (to_self.merchant_id, to_self.terminal_id, to_self.payee_user_id) = (None, None, Some("usr_a".into()));
        assert!(Order::payment("usr_a", "p".into(), &to_self).is_err());
        let mut both = body("1.00");
        both.payee_user_id = Some("usr_b".into());
        assert!(Order::payment("usr_a", "p".into(), &both).is_err());
        let original = Original {
            payment_id: "pay_1".into(),
            kind: "authorize".into(),
            payer_user_id: "usr_a".into(),
            merchant_id: Some("M1".into()),
            terminal_id: Some("T1".into()),
            payee_user_id: None,
            amount: "80.00".into(),
            currency: "EUR".into(),
            channel: "card_not_present".into(),
        };
        let capture = |amount: &str| {
            Order::follow_up(OrderKind::Capture, "p".into(), &original, &FollowUpBody { amount: Some(amount.into()) })
        };
        assert_eq!(capture("62.50").unwrap().amount.minor_units(), 6250);
        assert!(matches!(capture("62.505"), Err(PaymentsError::Conflict { code: "amount_precision", .. })));
        assert!(matches!(capture("62,50"), Err(PaymentsError::Invalid { code: "invalid_amount", .. })));
        assert!(matches!(capture("0.00"), Err(PaymentsError::Invalid { code: "non_positive_amount", .. })));
        let top_up = TopUpBody { amount: "50.00".into(), currency: "XXX".into(), channel: None };
        assert!(matches!(
            Order::top_up("usr_a", "p".into(), &top_up),
            Err(PaymentsError::Invalid { code: "unknown_currency", .. })
        ));
    }
}
