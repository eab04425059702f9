//! What travels between the payer and merchant sides: entries and marks.

use paystream_domain::Currency;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTotals {
    pub payment_count: u64,
    /// Entries (payments, refunds, chargebacks) moved here from a closed window.
    pub late_payment_count: u64,
    pub refund_count: u64,
    pub chargeback_count: u64,
    /// i128 so that no flood of large payments can overflow a window's total.
    pub gross_minor: i128,
    pub fees_minor: i128,
    pub refunds_minor: i128,
    pub chargebacks_minor: i128,
}

/// What a settlement entry adds to its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A payment or capture: `gross_minor` in, `fee_minor` of it to fees.
    Payment,
    /// `gross_minor` back to the payer.
    Refund,
    Chargeback,
}

/// One approved merchant payment, capture, refund or chargeback, on its way from the
/// payer's partition to the merchant's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementEntry {
    /// The id of the ledger transaction that posted it.
    pub entry_id: String,
    pub merchant_id: String,
    pub currency: Currency,
    pub kind: EntryKind,
    /// The entry's amount (for refunds and chargebacks: the amount returned).
    pub gross_minor: i64,
    pub fee_minor: i64,
    pub event_time_ms: i64,
    /// The window the payer side put it in (named by its ledger transaction).
    pub window_start_ms: i64,
    /// Its own window was before the payer side's horizon: moved to `window_start_ms`.
    pub late: bool,
    pub source_partition: u32,
}

/// What travels on the internal topic `paystream-settlement-entries` (many per record:
/// [`encode_inputs`](super::encode_inputs)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementInput {
    Entry(SettlementEntry),
    /// `source_partition` writes no more entries for windows starting before `open_from_ms`.
    Mark {
        source_partition: u32,
        open_from_ms: i64,
    },
}
