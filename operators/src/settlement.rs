//! Settlement operator state: net amounts per merchant and currency per event-time
//! window, closed by the partition's watermark minus the allowed lateness. A payment
//! whose window is already closed goes to the oldest open window and is counted late.

use std::collections::BTreeMap;

use paystream_domain::money::format_minor_units_wide;
use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Currency, Settlement};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTotals {
    pub payment_count: u64,
    pub late_payment_count: u64,
    /// i128 so that no flood of large payments can overflow a window's total.
    pub gross_minor: i128,
    pub fees_minor: i128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementEntry {
    pub merchant_id: String,
    pub currency: Currency,
    pub gross_minor: i64,
    pub fee_minor: i64,
}

#[derive(Serialize, Deserialize)]
pub struct SettlementState {
    /// Windows starting before this are closed.
    open_from_ms: i64,
    windows: BTreeMap<(i64, String, Currency), SettlementTotals>,
}

impl Default for SettlementState {
    fn default() -> Self {
        SettlementState { open_from_ms: i64::MIN, windows: BTreeMap::new() }
    }
}

/// Whether an added payment landed in its own window or was moved to a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    OnTime,
    Late,
}

impl SettlementState {
    pub fn add(&mut self, entry: &SettlementEntry, event_time_ms: i64, window_ms: i64) -> Placement {
        let own_window = event_time_ms.div_euclid(window_ms) * window_ms;
        let (window_start, placement) = if own_window < self.open_from_ms {
            (self.open_from_ms, Placement::Late)
        } else {
            (own_window, Placement::OnTime)
        };
        let totals = self.windows.entry((window_start, entry.merchant_id.clone(), entry.currency)).or_default();
        totals.payment_count += 1;
        if placement == Placement::Late {
            totals.late_payment_count += 1;
        }
        totals.gross_minor += i128::from(entry.gross_minor);
        totals.fees_minor += i128::from(entry.fee_minor);
        placement
    }

    /// Closes every window that ends at or before `closed_through_ms` and returns them.
    pub fn close(&mut self, closed_through_ms: i64, window_ms: i64, partition: u32) -> Vec<Settlement> {
        let open_from = closed_through_ms.div_euclid(window_ms) * window_ms;
        if open_from <= self.open_from_ms {
            return Vec::new();
        }
        self.open_from_ms = open_from;
        let still_open = self.windows.split_off(&(open_from, String::new(), Currency::EUR));
        let closed = std::mem::replace(&mut self.windows, still_open);
        // The split key sorts before every key with this window start, since "" is the
        // smallest merchant id; check to be sure no open window was closed.
        debug_assert!(self.windows.keys().all(|(start, _, _)| *start >= open_from));
        closed
            .into_iter()
            .map(|((start, merchant_id, currency), totals)| {
                settlement(start, window_ms, merchant_id, currency, totals, partition)
            })
            .collect()
    }

    pub fn open_window_count(&self) -> usize {
        self.windows.len()
    }

    /// Totals of the windows still open, for reports.
    pub fn open_windows(&self) -> impl Iterator<Item = (&(i64, String, Currency), &SettlementTotals)> {
        self.windows.iter()
    }
}

fn settlement(
    start: i64,
    window_ms: i64,
    merchant_id: String,
    currency: Currency,
    totals: SettlementTotals,
    partition: u32,
) -> Settlement {
    let digits = currency.minor_unit_digits();
    let net = totals.gross_minor - totals.fees_minor;
    let window_start = format_rfc3339_ms(start);
    Settlement {
        settlement_id: format!("{merchant_id}/{currency}/{window_start}/p{partition}"),
        merchant_id,
        currency,
        window_start,
        window_end: format_rfc3339_ms(start + window_ms),
        source_partition: partition,
        payment_count: totals.payment_count,
        late_payment_count: totals.late_payment_count,
        gross_minor: totals.gross_minor,
        fees_minor: totals.fees_minor,
        net_minor: net,
        gross: format_minor_units_wide(totals.gross_minor, digits),
        fees: format_minor_units_wide(totals.fees_minor, digits),
        net: format_minor_units_wide(net, digits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1_000;

    fn entry(merchant: &str, gross: i64, fee: i64) -> SettlementEntry {
        SettlementEntry { merchant_id: merchant.into(), currency: Currency::EUR, gross_minor: gross, fee_minor: fee }
    }

    #[test]
    fn windows_close_by_watermark_and_late_payments_move_forward() {
        let mut state = SettlementState::default();
        assert_eq!(state.add(&entry("m1", 100, 2), 10, W), Placement::OnTime);
        state.add(&entry("m2", 50, 1), 999, W);
        state.add(&entry("m1", 70, 1), 1_500, W);
        assert!(state.close(999, W, 0).is_empty(), "window [0,1000) ends after 999");
        let closed = state.close(1_200, W, 0);
        assert_eq!(closed.len(), 2);
        assert_eq!((closed[0].merchant_id.as_str(), closed[0].net_minor), ("m1", 98));
        assert_eq!(closed[0].net, "0.98");
        assert_eq!((closed[1].merchant_id.as_str(), closed[1].gross_minor), ("m2", 50));
        // An event in the closed window lands in [1000, 2000), marked late.
        assert_eq!(state.add(&entry("m1", 30, 0), 5, W), Placement::Late);
        let closed = state.close(2_000, W, 0);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].payment_count, closed[0].late_payment_count, closed[0].gross_minor), (2, 1, 100));
        assert_eq!(closed[0].window_start, "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn totals_never_overflow() {
        let mut state = SettlementState::default();
        state.add(&entry("m", i64::MAX, 0), 0, W);
        state.add(&entry("m", i64::MAX, 0), 0, W);
        let closed = state.close(W, W, 3);
        assert_eq!(closed[0].gross_minor, 2 * i128::from(i64::MAX));
        assert_eq!(closed[0].gross, "184467440737095516.14");
    }
}
