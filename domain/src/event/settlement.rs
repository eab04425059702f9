//! The settlement output: net amounts per merchant, currency and settlement window.

use serde::{Deserialize, Serialize};

use crate::currency::Currency;

/// Output: net amounts for one merchant, currency and settlement window, as accumulated
/// by one input partition (see the `paystream_operators::settlement` docs).
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
