//! Merchant side: entries counted in their windows, marks from every source partition,
//! and windows closed into settlements once every source has passed them.

use paystream_domain::money::format_minor_units_wide;
use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Currency, Settlement};

use super::entry::{EntryKind, SettlementEntry, SettlementTotals};
use super::ids::settlement_id;
use super::windows::SettlementState;

impl SettlementState {
    /// Merchant side: adds an entry to the window the payer side chose, or, if that one
    /// is closed here, to the oldest open one (late). Returns where it went and whether it
    /// was misplaced (moved here: the ledger transaction names the other window).
    pub fn add(&mut self, entry: &SettlementEntry) -> (i64, bool) {
        let misplaced = entry.window_start_ms < self.open_from_ms;
        let window_start = if misplaced { self.open_from_ms } else { entry.window_start_ms };
        let totals = self.windows.entry((window_start, entry.merchant_id.clone(), entry.currency)).or_default();
        if entry.late || misplaced {
            totals.late_payment_count += 1;
        }
        match entry.kind {
            EntryKind::Payment => {
                totals.payment_count += 1;
                totals.gross_minor += i128::from(entry.gross_minor);
                totals.fees_minor += i128::from(entry.fee_minor);
            }
            EntryKind::Refund => {
                totals.refund_count += 1;
                totals.refunds_minor += i128::from(entry.gross_minor);
            }
            EntryKind::Chargeback => {
                totals.chargeback_count += 1;
                totals.chargebacks_minor += i128::from(entry.gross_minor);
            }
        }
        (window_start, misplaced)
    }

    /// Merchant side: records `source`'s mark; once all `sources` have marked, closes the
    /// windows starting before the earliest mark and returns them.
    pub fn mark(
        &mut self,
        source: u32,
        open_from_ms: i64,
        sources: u32,
        window_ms: i64,
        partition: u32,
    ) -> Vec<Settlement> {
        let sources = sources.max(source + 1) as usize;
        if self.marks.len() < sources {
            self.marks.resize(sources, i64::MIN);
        }
        let mark = &mut self.marks[source as usize];
        *mark = (*mark).max(open_from_ms);
        let closed_before = self.marks.iter().copied().min().unwrap_or(i64::MIN);
        self.close(closed_before, window_ms, partition)
    }

    /// Closes every window starting before `open_from_ms` and returns them.
    fn close(&mut self, open_from_ms: i64, window_ms: i64, partition: u32) -> Vec<Settlement> {
        if open_from_ms <= self.open_from_ms {
            return Vec::new();
        }
        self.open_from_ms = open_from_ms;
        let still_open = self.windows.split_off(&(open_from_ms, String::new(), Currency::EUR));
        let closed = std::mem::replace(&mut self.windows, still_open);
        // The split key sorts before every key with this window start, since "" is the
        // smallest merchant id; check to be sure no open window was closed.
        debug_assert!(self.windows.keys().all(|(start, _, _)| *start >= open_from_ms));
        closed
            .into_iter()
            .map(|((start, merchant_id, currency), totals)| {
                settlement(start, window_ms, merchant_id, currency, totals, partition)
            })
            .collect()
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
    let net = totals.gross_minor - totals.fees_minor - totals.refunds_minor - totals.chargebacks_minor;
    let window_start = format_rfc3339_ms(start);
    Settlement {
        settlement_id: settlement_id(&merchant_id, currency, start),
        merchant_id,
        currency,
        window_start,
        window_end: format_rfc3339_ms(start + window_ms),
        source_partition: partition,
        payment_count: totals.payment_count,
        late_payment_count: totals.late_payment_count,
        refund_count: totals.refund_count,
        chargeback_count: totals.chargeback_count,
        gross_minor: totals.gross_minor,
        fees_minor: totals.fees_minor,
        refunds_minor: totals.refunds_minor,
        chargebacks_minor: totals.chargebacks_minor,
        net_minor: net,
        gross: format_minor_units_wide(totals.gross_minor, digits),
        fees: format_minor_units_wide(totals.fees_minor, digits),
        refunds: format_minor_units_wide(totals.refunds_minor, digits),
        chargebacks: format_minor_units_wide(totals.chargebacks_minor, digits),
        net: format_minor_units_wide(net, digits),
    }
}
