//! Settlement ids (`<merchant id>/<currency>/<window start>`), windows and the
//! partition that settles a merchant.

use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Currency, Settlement};

/// The partition of the settlement-entries topic that settles `merchant_id`.
pub fn merchant_partition(merchant_id: &str, partitions: u32) -> u32 {
    paystream_domain::partitioner::partition_for_key(merchant_id.as_bytes(), partitions)
}

/// The start of the window holding `time_ms`.
pub fn window_start(time_ms: i64, window_ms: i64) -> i64 {
    time_ms.div_euclid(window_ms) * window_ms
}

/// The id of a merchant's settlement window: the merchant id, then [`settlement_id_suffix`].
pub fn settlement_id(merchant_id: &str, currency: Currency, window_start_ms: i64) -> String {
    settlement_id_with_suffix(merchant_id, &settlement_id_suffix(currency, window_start_ms))
}

/// A settlement id from the merchant id and a [`settlement_id_suffix`] (formatted once per
/// window by callers naming many payments' settlements).
pub fn settlement_id_with_suffix(merchant_id: &str, suffix: &str) -> String {
    let mut id = String::with_capacity(merchant_id.len() + suffix.len());
    id.push_str(merchant_id);
    id.push_str(suffix);
    id
}

/// The [`settlement_id_suffix`] of an emitted settlement: its id less the merchant id.
pub(crate) fn suffix_of(settlement: &Settlement) -> &str {
    settlement.settlement_id.strip_prefix(settlement.merchant_id.as_str()).unwrap_or(&settlement.settlement_id)
}

/// The part of a settlement id shared by every merchant of a window and currency.
pub fn settlement_id_suffix(currency: Currency, window_start_ms: i64) -> String {
    format!("/{currency}/{}", format_rfc3339_ms(window_start_ms))
}
