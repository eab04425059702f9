//! Settlement operator state: net amounts per merchant and currency per event-time
//! window, closed by the partition's watermark minus the allowed lateness. A payment,
//! refund or chargeback whose window is already closed goes to the oldest open window and
//! is counted late. A closed window is paid out by two ledger transactions
//! ([`payout_transactions`]): merchant → settlement account → bank.

use std::collections::BTreeMap;

use paystream_domain::money::format_minor_units_wide;
use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Currency, Direction, LedgerPosting, LedgerTransaction, Settlement, TransactionKind};
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
pub enum EntryKind {
    /// A payment or capture: `gross_minor` in, `fee_minor` of it to fees.
    Payment,
    /// `gross_minor` back to the payer.
    Refund,
    Chargeback,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementEntry {
    pub merchant_id: String,
    pub currency: Currency,
    pub kind: EntryKind,
    /// The entry's amount (for refunds and chargebacks: the amount returned).
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
    /// Adds a payment to its window (or the oldest open one, if its own has closed);
    /// returns where it went and that window's start.
    pub fn add(&mut self, entry: &SettlementEntry, event_time_ms: i64, window_ms: i64) -> (Placement, i64) {
        let own_window = event_time_ms.div_euclid(window_ms) * window_ms;
        let (window_start, placement) = if own_window < self.open_from_ms {
            (self.open_from_ms, Placement::Late)
        } else {
            (own_window, Placement::OnTime)
        };
        let totals = self.windows.entry((window_start, entry.merchant_id.clone(), entry.currency)).or_default();
        if placement == Placement::Late {
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
        (placement, window_start)
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

/// The id of a merchant's settlement window on one input partition: the merchant id,
/// then [`settlement_id_suffix`].
pub fn settlement_id(merchant_id: &str, currency: Currency, window_start_ms: i64, partition: u32) -> String {
    settlement_id_with_suffix(merchant_id, &settlement_id_suffix(currency, window_start_ms, partition))
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
fn suffix_of(settlement: &Settlement) -> &str {
    settlement.settlement_id.strip_prefix(settlement.merchant_id.as_str()).unwrap_or(&settlement.settlement_id)
}

/// The part of a settlement id shared by every merchant of a window and partition.
pub fn settlement_id_suffix(currency: Currency, window_start_ms: i64, partition: u32) -> String {
    format!("/{currency}/{}/p{partition}", format_rfc3339_ms(window_start_ms))
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
        settlement_id: settlement_id(&merchant_id, currency, start, partition),
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

/// The merchant account a settlement pays out of.
pub fn merchant_account(merchant_id: &str) -> String {
    format!("merchant:{merchant_id}")
}

/// Most merchant legs in one `settle:` transaction; a window closing with more merchants
/// is paid out over several (each balanced), so a ledger record stays well under
/// `RECORD_BYTES_MAX` (about 80 bytes of JSON per leg).
pub const SETTLEMENT_LEGS_PER_TRANSACTION_MAX: usize = 4_096;

/// The ledger transactions paying out settlements that closed together: for each
/// (window, currency, partition) — one settlement id suffix — a `settle:<suffix>`
/// transaction moving each merchant's net from `merchant:<id>` to `settlement_account`
/// (split over several, `settle:<suffix>#<n>`, beyond
/// [`SETTLEMENT_LEGS_PER_TRANSACTION_MAX`] merchants), then one `payout:<suffix>`
/// transaction moving their total from `settlement_account` to `bank_account`. A
/// negative net (refunds beyond the window's income) runs the other way: the merchant
/// owes it; a zero net moves nothing. Their `payment_id` is the suffix: a merchant leg
/// belongs to the settlement `<merchant id><suffix>`. Amounts beyond one posting's i64
/// are split over several postings.
pub fn payout_transactions(
    settlements: &[Settlement],
    settlement_account: &str,
    bank_account: &str,
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
            let id = if chunk_count == 1 { format!("settle:{suffix}") } else { format!("settle:{suffix}#{n}") };
            transactions.push(transaction(TransactionKind::Settlement, id, postings));
        }
        if total != 0 {
            let mut postings = Vec::with_capacity(2);
            legs(&mut postings, settlement_account, total);
            legs(&mut postings, bank_account, -total);
            transactions.push(transaction(TransactionKind::Payout, format!("payout:{suffix}"), postings));
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

/// What `paystream reconcile` found: every settlement against the ledger transactions
/// that name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub settlements: usize,
    pub transactions: usize,
    /// Transactions naming a settlement not emitted yet (its window is still open).
    pub open_transactions: usize,
    /// One line per difference; empty when everything matches.
    pub mismatches: Vec<String>,
}

/// Checks that each settlement's counts, gross, fees, refunds, chargebacks and net equal
/// the sums of the postings of the ledger transactions that name it (gross: the payer
/// debits of its payments and captures; fees: gross less their merchant credits; refunds
/// and chargebacks: the merchant's debits in those; net: what is left), that its payout
/// transactions move exactly the net (merchant → settlement account → bank), and that no
/// settlement appears twice.
pub fn reconcile<'a>(
    ledger: impl IntoIterator<Item = &'a LedgerTransaction>,
    settlements: impl IntoIterator<Item = &'a Settlement>,
) -> Reconciliation {
    let mut reconciler = Reconciler::new(settlements.into_iter().cloned().collect());
    ledger.into_iter().for_each(|transaction| reconciler.add(transaction));
    reconciler.finish()
}

/// [`reconcile`] one ledger transaction at a time (topics larger than memory): the
/// settlements first, then every transaction.
pub struct Reconciler {
    settlements: Vec<Settlement>,
    /// Settlement id → (merchant account, sums).
    sums: std::collections::HashMap<String, (String, PostingSums)>,
    /// Settlement id suffix → what its `payout:` transactions moved to the bank.
    paid_out: std::collections::HashMap<String, i128>,
    /// Settlement legs naming no emitted settlement.
    orphans: Vec<String>,
    transactions: usize,
    open_transactions: usize,
}

#[derive(Default)]
struct PostingSums {
    count: u64,
    refund_count: u64,
    chargeback_count: u64,
    gross: i128,
    /// Merchant credits of payments and captures.
    income: i128,
    refunds: i128,
    chargebacks: i128,
    /// Net debited from the merchant by its leg of a `settle:` transaction.
    settled: i128,
    currencies: Vec<Currency>,
}

impl Reconciler {
    pub fn new(settlements: Vec<Settlement>) -> Reconciler {
        let sums = settlements
            .iter()
            .map(|s| (s.settlement_id.clone(), (format!("merchant:{}", s.merchant_id), PostingSums::default())))
            .collect();
        Reconciler {
            settlements,
            sums,
            paid_out: Default::default(),
            orphans: Vec::new(),
            transactions: 0,
            open_transactions: 0,
        }
    }

    pub fn add(&mut self, transaction: &LedgerTransaction) {
        match transaction.kind {
            TransactionKind::Settlement => {
                // Each merchant leg belongs to the settlement `<merchant><suffix>`.
                for posting in &transaction.postings {
                    let Some(merchant) = posting.account_id.strip_prefix("merchant:") else { continue };
                    let id = settlement_id_with_suffix(merchant, &transaction.payment_id);
                    match self.sums.get_mut(&id) {
                        Some((_, sums)) => sums.settled += i128::from(posting.signed_minor_units()),
                        None => self
                            .orphans
                            .push(format!("{}: settles {id}, which was not emitted", transaction.transaction_id)),
                    }
                }
                return;
            }
            TransactionKind::Payout => {
                // The bank's side: every posting not on the settlement account's side,
                // i.e. the credits (debits, for a negative total) of the last account.
                let bank = transaction.postings.last().map(|p| p.account_id.as_str()).unwrap_or_default();
                let paid: i128 = transaction
                    .postings
                    .iter()
                    .filter(|p| p.account_id == bank)
                    .map(|p| -i128::from(p.signed_minor_units()))
                    .sum();
                *self.paid_out.entry(transaction.payment_id.clone()).or_default() += paid;
                return;
            }
            _ => {}
        }
        let Some(id) = transaction.settlement_id.as_deref() else { return };
        self.transactions += 1;
        let Some((merchant_account, sums)) = self.sums.get_mut(id) else {
            self.open_transactions += 1;
            return;
        };
        if !sums.currencies.contains(&transaction.currency) {
            sums.currencies.push(transaction.currency);
        }
        let merchant_signed = || -> i128 {
            let merchant = transaction.postings.iter().filter(|p| p.account_id == *merchant_account);
            merchant.map(|p| i128::from(p.signed_minor_units())).sum()
        };
        match transaction.kind {
            TransactionKind::Payment | TransactionKind::Capture => {
                sums.count += 1;
                for posting in &transaction.postings {
                    match posting.direction {
                        Direction::Debit => sums.gross += i128::from(posting.amount_minor),
                        Direction::Credit if posting.account_id == *merchant_account => {
                            sums.income += i128::from(posting.amount_minor)
                        }
                        Direction::Credit => {}
                    }
                }
            }
            TransactionKind::Refund => {
                sums.refund_count += 1;
                sums.refunds += merchant_signed();
            }
            TransactionKind::Chargeback => {
                sums.chargeback_count += 1;
                sums.chargebacks += merchant_signed();
            }
            TransactionKind::Settlement
            | TransactionKind::Payout
            | TransactionKind::TopUp
            | TransactionKind::TransferIn
            | TransactionKind::TransferReturn => {}
        }
    }

    pub fn finish(self) -> Reconciliation {
        let mut report = Reconciliation {
            settlements: self.settlements.len(),
            transactions: self.transactions,
            open_transactions: self.open_transactions,
            mismatches: Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for settlement in &self.settlements {
            let id = settlement.settlement_id.as_str();
            if !seen.insert(id) {
                report.mismatches.push(format!("{id}: emitted more than once"));
                continue;
            }
            let found = &self.sums[id].1;
            if found.count + found.refund_count + found.chargeback_count == 0 {
                report.mismatches.push(format!("{id}: no ledger transaction names it"));
                continue;
            }
            if found.currencies != [settlement.currency] {
                report
                    .mismatches
                    .push(format!("{id}: postings in {:?}, settlement in {}", found.currencies, settlement.currency));
            }
            let net = found.income - found.refunds - found.chargebacks;
            let fields = [
                ("payment_count", i128::from(settlement.payment_count), i128::from(found.count)),
                ("refund_count", i128::from(settlement.refund_count), i128::from(found.refund_count)),
                ("chargeback_count", i128::from(settlement.chargeback_count), i128::from(found.chargeback_count)),
                ("gross_minor", settlement.gross_minor, found.gross),
                ("fees_minor", settlement.fees_minor, found.gross - found.income),
                ("refunds_minor", settlement.refunds_minor, found.refunds),
                ("chargebacks_minor", settlement.chargebacks_minor, found.chargebacks),
                ("net_minor", settlement.net_minor, net),
                ("settled (merchant → settlement)", settlement.net_minor, found.settled),
            ];
            for (field, stated, summed) in fields {
                if stated != summed {
                    report.mismatches.push(format!("{id}: {field} is {stated}, its postings sum to {summed}"));
                }
            }
        }
        report.mismatches.extend(self.orphans);
        // Each group of settlements closed together is paid out to the bank in total.
        let mut nets: BTreeMap<&str, i128> = BTreeMap::new();
        for settlement in &self.settlements {
            *nets.entry(suffix_of(settlement)).or_default() += settlement.net_minor;
        }
        for (suffix, paid) in &self.paid_out {
            if !nets.contains_key(suffix.as_str()) && *paid != 0 {
                report.mismatches.push(format!("payout:{suffix}: pays out {paid} for settlements not emitted"));
            }
        }
        for (suffix, net) in nets {
            let paid = self.paid_out.get(suffix).copied().unwrap_or(0);
            if paid != net {
                report
                    .mismatches
                    .push(format!("payout:{suffix}: paid {paid} to the bank, its settlements' nets sum to {net}"));
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1_000;

    fn entry(merchant: &str, gross: i64, fee: i64) -> SettlementEntry {
        SettlementEntry {
            merchant_id: merchant.into(),
            currency: Currency::EUR,
            kind: EntryKind::Payment,
            gross_minor: gross,
            fee_minor: fee,
        }
    }

    #[test]
    fn windows_close_by_watermark_and_late_payments_move_forward() {
        let mut state = SettlementState::default();
        assert_eq!(state.add(&entry("m1", 100, 2), 10, W), (Placement::OnTime, 0));
        state.add(&entry("m2", 50, 1), 999, W);
        state.add(&entry("m1", 70, 1), 1_500, W);
        assert!(state.close(999, W, 0).is_empty(), "window [0,1000) ends after 999");
        let closed = state.close(1_200, W, 0);
        assert_eq!(closed.len(), 2);
        assert_eq!((closed[0].merchant_id.as_str(), closed[0].net_minor), ("m1", 98));
        assert_eq!(closed[0].net, "0.98");
        assert_eq!((closed[1].merchant_id.as_str(), closed[1].gross_minor), ("m2", 50));
        // An event in the closed window lands in [1000, 2000), marked late.
        assert_eq!(state.add(&entry("m1", 30, 0), 5, W), (Placement::Late, 1_000));
        let closed = state.close(2_000, W, 0);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].payment_count, closed[0].late_payment_count, closed[0].gross_minor), (2, 1, 100));
        assert_eq!(closed[0].window_start, "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn reconcile_matches_settlements_to_their_postings_and_reports_differences() {
        use paystream_domain::{Direction, LedgerPosting};
        let posting = |account: &str, direction, amount_minor| LedgerPosting {
            account_id: account.to_string(),
            direction,
            amount_minor,
        };
        let transaction = |id: &str, gross: i64, fee: i64, settlement: &str| LedgerTransaction {
            transaction_id: format!("pay:{id}"),
            kind: TransactionKind::Payment,
            payment_id: id.to_string(),
            original_payment_id: None,
            event_time: "1970-01-01T00:00:00.000Z".into(),
            currency: Currency::EUR,
            postings: vec![
                posting("customer:c", Direction::Debit, gross),
                posting("merchant:m1", Direction::Credit, gross - fee),
                posting("fees", Direction::Credit, fee),
            ],
            settlement_id: Some(settlement.to_string()),
        };
        let refund = |id: &str, original: &str, amount: i64, settlement: &str| LedgerTransaction {
            transaction_id: format!("refund:{id}"),
            kind: TransactionKind::Refund,
            payment_id: id.to_string(),
            original_payment_id: Some(original.to_string()),
            event_time: "1970-01-01T00:00:00.000Z".into(),
            currency: Currency::EUR,
            postings: vec![
                posting("merchant:m1", Direction::Debit, amount),
                posting("customer:c", Direction::Credit, amount),
            ],
            settlement_id: Some(settlement.to_string()),
        };
        let mut state = SettlementState::default();
        let (_, start) = state.add(&entry("m1", 100, 2), 10, W);
        state.add(&entry("m1", 50, 1), 20, W);
        state.add(&SettlementEntry { kind: EntryKind::Refund, ..entry("m1", 30, 0) }, 30, W);
        let id = settlement_id("m1", Currency::EUR, start, 0);
        let closed = state.close(W, W, 0);
        assert_eq!(closed[0].settlement_id, id);
        assert_eq!((closed[0].refund_count, closed[0].refunds_minor, closed[0].net_minor), (1, 30, 117));
        let payouts = payout_transactions(&closed, "settlement", "bank");
        assert_eq!(payouts.len(), 2);
        assert_eq!(payouts[0].transaction_id, "settle:/EUR/1970-01-01T00:00:00.000Z/p0");
        assert_eq!(payouts[0].postings[0], posting("merchant:m1", Direction::Debit, 117));
        assert_eq!(payouts[1].postings[1], posting("bank", Direction::Credit, 117));
        let mut ledger = vec![
            transaction("a", 100, 2, &id),
            transaction("b", 50, 1, &id),
            refund("r", "a", 30, &id),
            transaction("c", 9, 0, "open"),
        ];
        ledger.extend(payouts);
        let report = reconcile(&ledger, &closed);
        assert_eq!(
            report,
            Reconciliation { settlements: 1, transactions: 4, open_transactions: 1, mismatches: vec![] }
        );

        let mut tampered = closed.clone();
        tampered[0].fees_minor += 1;
        tampered[0].net_minor -= 1;
        tampered.push(tampered[0].clone());
        let report = reconcile(&ledger[..1], &tampered);
        assert_eq!(
            report.mismatches,
            [
                format!("{id}: payment_count is 2, its postings sum to 1"),
                format!("{id}: refund_count is 1, its postings sum to 0"),
                format!("{id}: gross_minor is 150, its postings sum to 100"),
                format!("{id}: fees_minor is 4, its postings sum to 2"),
                format!("{id}: refunds_minor is 30, its postings sum to 0"),
                format!("{id}: net_minor is 116, its postings sum to 98"),
                format!("{id}: settled (merchant → settlement) is 116, its postings sum to 0"),
                format!("{id}: emitted more than once"),
                "payout:/EUR/1970-01-01T00:00:00.000Z/p0: paid 0 to the bank, its settlements' nets sum to 232"
                    .to_string(),
            ]
        );
        assert_eq!(
            reconcile(&[], &closed).mismatches,
            [
                format!("{id}: no ledger transaction names it"),
                "payout:/EUR/1970-01-01T00:00:00.000Z/p0: paid 0 to the bank, its settlements' nets sum to 117".into()
            ]
        );
    }

    #[test]
    fn a_negative_net_is_collected_from_the_merchant_and_huge_nets_split_over_postings() {
        let mut state = SettlementState::default();
        state.add(&entry("m", 10, 1), 0, W);
        state.add(&SettlementEntry { kind: EntryKind::Chargeback, ..entry("m", 25, 0) }, 0, W);
        let closed = state.close(W, W, 0);
        assert_eq!((closed[0].chargeback_count, closed[0].net_minor), (1, -16));
        let payouts = payout_transactions(&closed, "settlement", "bank");
        let signed: Vec<_> =
            payouts[1].postings.iter().map(|p| (p.account_id.as_str(), p.signed_minor_units())).collect();
        assert_eq!(signed, [("settlement", 16), ("bank", -16)].map(|(a, v)| (a, -v)));
        let ledger: Vec<_> = payouts.clone();
        let mut chargeback = ledger[0].clone();
        chargeback.kind = TransactionKind::Chargeback;
        chargeback.settlement_id = Some(closed[0].settlement_id.clone());
        chargeback.postings = vec![
            paystream_domain::LedgerPosting {
                account_id: "merchant:m".into(),
                direction: Direction::Debit,
                amount_minor: 25,
            },
            paystream_domain::LedgerPosting {
                account_id: "customer:c".into(),
                direction: Direction::Credit,
                amount_minor: 25,
            },
        ];
        let mut payment = chargeback.clone();
        payment.kind = TransactionKind::Payment;
        payment.postings = vec![
            paystream_domain::LedgerPosting {
                account_id: "customer:c".into(),
                direction: Direction::Debit,
                amount_minor: 10,
            },
            paystream_domain::LedgerPosting {
                account_id: "merchant:m".into(),
                direction: Direction::Credit,
                amount_minor: 9,
            },
            paystream_domain::LedgerPosting {
                account_id: "fees".into(),
                direction: Direction::Credit,
                amount_minor: 1,
            },
        ];
        let all = [vec![payment, chargeback], ledger].concat();
        assert_eq!(reconcile(&all, &closed).mismatches, Vec::<String>::new());

        let mut state = SettlementState::default();
        for _ in 0..3 {
            state.add(&entry("m", i64::MAX, 0), 0, W);
        }
        let closed = state.close(W, W, 0);
        let payouts = payout_transactions(&closed, "settlement", "bank");
        assert_eq!(payouts[0].postings.len(), 6);
        let debits: i128 = payouts[0].postings.iter().map(|p| i128::from(p.signed_minor_units().max(0))).sum();
        assert_eq!(debits, 3 * i128::from(i64::MAX));
        assert!(
            payouts.iter().all(|t| t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>() == 0)
        );
    }

    #[test]
    fn settlements_closing_together_are_paid_out_in_one_batch_per_window() {
        let mut state = SettlementState::default();
        for merchant in ["a", "b", "c"] {
            state.add(&entry(merchant, 100, 1), 0, W);
        }
        state.add(&entry("a", 50, 0), W + 1, W);
        let closed = state.close(2 * W, W, 0);
        assert_eq!(closed.len(), 4);
        let payouts = payout_transactions(&closed, "settlement", "bank");
        let ids: Vec<_> = payouts.iter().map(|t| t.transaction_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "settle:/EUR/1970-01-01T00:00:00.000Z/p0",
                "payout:/EUR/1970-01-01T00:00:00.000Z/p0",
                "settle:/EUR/1970-01-01T00:00:01.000Z/p0",
                "payout:/EUR/1970-01-01T00:00:01.000Z/p0",
            ]
        );
        assert_eq!(payouts[0].postings.len(), 4, "three merchant legs and the settlement account's");
        assert_eq!(payouts[1].postings[1].amount_minor, 297);
        let mut ledger = payouts.clone();
        for settlement in &closed {
            let gross = settlement.gross_minor as i64;
            let fee = settlement.fees_minor as i64;
            ledger.push(LedgerTransaction {
                transaction_id: format!("pay:{}", settlement.settlement_id),
                kind: TransactionKind::Payment,
                payment_id: settlement.settlement_id.clone(),
                original_payment_id: None,
                event_time: settlement.window_start.clone(),
                currency: Currency::EUR,
                postings: vec![
                    LedgerPosting { account_id: "customer:c".into(), direction: Direction::Debit, amount_minor: gross },
                    LedgerPosting {
                        account_id: merchant_account(&settlement.merchant_id),
                        direction: Direction::Credit,
                        amount_minor: gross - fee,
                    },
                    LedgerPosting { account_id: "fees".into(), direction: Direction::Credit, amount_minor: fee },
                ],
                settlement_id: Some(settlement.settlement_id.clone()),
            });
        }
        assert_eq!(reconcile(&ledger, &closed).mismatches, Vec::<String>::new());
        // A payout leg moved to another merchant is found.
        ledger[0].postings[0].account_id = "merchant:z".into();
        let mismatches = reconcile(&ledger, &closed).mismatches;
        assert!(mismatches.iter().any(|m| m.contains("settles z/EUR")), "{mismatches:?}");
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
