//! The decision output: one [`Decision`] per accepted payment event, with its
//! [`Outcome`], score, reasons and [`Velocity`] features.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::payment::PaymentKind;
use crate::currency::Currency;

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
