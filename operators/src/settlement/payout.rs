//! Payouts of closed settlements: merchant → settlement account → bank.
//!
//! The settlements a merchant partition closes together are paid out as a batch per
//! (window, currency): `settle:<suffix>/p<q>` (one leg per merchant, its net from
//! `merchant:<id>` to the settlement account; split every
//! [`SETTLEMENT_LEGS_PER_TRANSACTION_MAX`] merchants) and `payout:<suffix>/p<q>` (the total
//! from the settlement account to the bank), where `<suffix>` is the settlement ids'
//! shared `/<currency>/<window start>`. A negative net (the merchant owes it) runs the
//! other way; a zero net has no leg. A pair of transactions per merchant window instead
//! would about double the ledger topic (benches/README.md, "Figures the code's docs
//! rest on").

use std::collections::BTreeMap;

use paystream_domain::{Currency, Direction, LedgerPosting, LedgerTransaction, Settlement, TransactionKind};

use super::ids::suffix_of;
use crate::limits::SETTLEMENT_LEGS_PER_TRANSACTION_MAX;

/// The merchant account a settlement pays out of.
pub fn merchant_account(merchant_id: &str) -> String {
    format!("merchant:{merchant_id}")
}

/// The ledger transactions paying out settlements that closed together on merchant
/// partition `partition`: for each (window, currency) — one settlement id suffix — a
/// `settle:<suffix>/p<partition>` transaction moving each merchant's net from
/// `merchant:<id>` to `settlement_account` (split over several, `…#<n>`, beyond
/// [`SETTLEMENT_LEGS_PER_TRANSACTION_MAX`] merchants), then one
/// `payout:<suffix>/p<partition>` transaction moving their total from
/// `settlement_account` to `bank_account` (each merchant partition pays out its own
/// merchants' windows). A negative net (refunds beyond the window's income) runs the
/// other way: the merchant owes it; a zero net moves nothing. Their `payment_id` is the
/// suffix: a merchant leg belongs to the settlement `<merchant id><suffix>`. Amounts
/// beyond one posting's i64 are split over several postings.
pub fn payout_transactions(
    settlements: &[Settlement],
    settlement_account: &str,
    bank_account: &str,
    partition: u32,
) -> Vec<LedgerTransaction> {
    let mut groups: BTreeMap<&str, (Currency, &str, Vec<&Settlement>)> = BTreeMap::new();
    for settlement in settlements {
        let group = groups
            .entry(suffix_of(settlement))
            .or_insert_with(|| (settlement.currency, &settlement.window_end, Vec::new()));
        group.2.push(settlement);
    }
    let mut transactions = Vec::new();
    for (suffix, (currency, window_end, members)) in groups {
        let transaction = |kind: TransactionKind, id: String, postings| LedgerTransaction {
            transaction_id: id,
            kind,
            payment_id: suffix.to_string(),
            original_payment_id: None,
            event_time: window_end.to_string(),
            currency,
            postings,
            settlement_id: None,
        };
        let paying: Vec<&Settlement> = members.into_iter().filter(|s| s.net_minor != 0).collect();
        let chunks = paying.chunks(SETTLEMENT_LEGS_PER_TRANSACTION_MAX);
        let chunk_count = chunks.len();
        let mut total: i128 = 0;
        for (n, chunk) in chunks.enumerate() {
            let mut postings = Vec::with_capacity(chunk.len() + 1);
            let mut chunk_total: i128 = 0;
            for settlement in chunk {
                // The merchant is debited its net: a positive net leaves its account.
                legs(&mut postings, &merchant_account(&settlement.merchant_id), settlement.net_minor);
                chunk_total += settlement.net_minor;
            }
            legs(&mut postings, settlement_account, -chunk_total);
            total += chunk_total;
            let id = if chunk_count == 1 {
                format!("settle:{suffix}/p{partition}")
            } else {
                format!("settle:{suffix}/p{partition}#{n}")
            };
            transactions.push(transaction(TransactionKind::Settlement, id, postings));
        }
        if total != 0 {
            let mut postings = Vec::with_capacity(2);
            legs(&mut postings, settlement_account, total);
            legs(&mut postings, bank_account, -total);
            transactions.push(transaction(TransactionKind::Payout, format!("payout:{suffix}/p{partition}"), postings));
        }
    }
    transactions
}

/// Appends postings of `signed_minor` (debit if positive, credit if negative) to
/// `account`, split into amounts that fit a posting's i64.
fn legs(postings: &mut Vec<LedgerPosting>, account: &str, signed_minor: i128) {
    let direction = if signed_minor > 0 { Direction::Debit } else { Direction::Credit };
    let mut rest = signed_minor.unsigned_abs();
    while rest > 0 {
        let amount_minor = i64::try_from(rest).unwrap_or(i64::MAX);
        rest -= amount_minor as u128;
        postings.push(LedgerPosting { account_id: account.to_string(), direction, amount_minor });
    }
}
