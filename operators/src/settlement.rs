//! Settlement: net amounts per merchant and currency per event-time window, one
//! settlement per merchant and window across every input partition.
//!
//! Two sides, joined by the internal topic `paystream-settlement-entries` (partitioned
//! like the payments, keyed by merchant):
//! - **payer side** (the partition that posted a payment): decides the entry's window —
//!   its own, or, if that window is before the partition's *horizon*, the horizon's
//!   window, marked late — names that settlement in the ledger transaction, and writes the
//!   entry to the merchant's partition ([`SettlementInput::Entry`]). When its horizon
//!   moves it writes a mark to every partition ([`SettlementInput::Mark`]): "no more
//!   entries from me for windows before this". The horizon is the partition's watermark
//!   less the allowed lateness, window-aligned; an idle partition may take on the others'
//!   ([`SettlementState::idle_horizon`]), so it never holds windows open.
//! - **merchant side**: adds entries to their windows and closes a window when every
//!   source partition's mark has passed it; a closed window is one settlement, paid out by
//!   two ledger transactions ([`payout_transactions`]): merchant → settlement account →
//!   bank.
//!
//! Because a source writes its entries before the mark that passes their window (same
//! transaction, same partition, in order), an entry never arrives for a closed window;
//! if one does (a configuration change between runs), it goes to the oldest open window
//! and is counted (`misplaced`) — reconcile then reports the settlement its transaction
//! names.

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
/// [`encode_inputs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementInput {
    Entry(SettlementEntry),
    /// `source_partition` writes no more entries for windows starting before `open_from_ms`.
    Mark {
        source_partition: u32,
        open_from_ms: i64,
    },
}

/// Most settlement inputs in one record of `paystream-settlement-entries`: an entry is
/// at most about 400 bytes (two identifiers of at most 128 bytes), so a record stays
/// well under `RECORD_BYTES_MAX` (1 MiB).
pub const SETTLEMENT_INPUTS_PER_RECORD_MAX: usize = 1_024;

/// Bumped whenever the encoding of settlement input records changes incompatibly.
pub const SETTLEMENT_INPUTS_FORMAT_VERSION: u16 = 1;

/// The records a batch writes to `paystream-settlement-entries`: per target partition,
/// its inputs in the order they were made (entries before the marks after them), at
/// most [`SETTLEMENT_INPUTS_PER_RECORD_MAX`] per record; postcard, versioned like the
/// changelog (an internal topic: one record per batch and partition instead of one JSON
/// record per payment made settlement cost a fifth of the pipeline's CPU time).
pub fn encode_inputs(inputs: &[(u32, SettlementInput)]) -> Vec<(u32, Vec<u8>)> {
    #[derive(Serialize)]
    struct RecordRef<'a> {
        version: u16,
        inputs: &'a [&'a SettlementInput],
    }
    let mut by_target: BTreeMap<u32, Vec<&SettlementInput>> = BTreeMap::new();
    for (target, input) in inputs {
        by_target.entry(*target).or_default().push(input);
    }
    let mut records = Vec::new();
    for (target, inputs) in by_target {
        for chunk in inputs.chunks(SETTLEMENT_INPUTS_PER_RECORD_MAX) {
            let record = RecordRef { version: SETTLEMENT_INPUTS_FORMAT_VERSION, inputs: chunk };
            records.push((target, postcard::to_stdvec(&record).expect("encoding to a Vec cannot fail")));
        }
    }
    records
}

/// The inputs of one record written by [`encode_inputs`]; an error says why not.
pub fn decode_inputs(bytes: &[u8]) -> Result<Vec<SettlementInput>, String> {
    #[derive(Deserialize)]
    struct Record {
        _version: u16,
        inputs: Vec<SettlementInput>,
    }
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| e.to_string())?;
    if version != SETTLEMENT_INPUTS_FORMAT_VERSION {
        return Err(format!(
            "settlement input format {version}, this paystream reads {SETTLEMENT_INPUTS_FORMAT_VERSION}"
        ));
    }
    let record: Record = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok(record.inputs)
}

/// The partition of the settlement-entries topic that settles `merchant_id`.
pub fn merchant_partition(merchant_id: &str, partitions: u32) -> u32 {
    paystream_domain::partitioner::partition_for_key(merchant_id.as_bytes(), partitions)
}

#[derive(Serialize, Deserialize)]
pub struct SettlementState {
    /// Payer side: this partition writes no entries for windows starting before this.
    horizon_ms: i64,
    /// Merchant side: each source partition's last mark (`i64::MIN`: none yet).
    marks: Vec<i64>,
    /// Merchant side: windows starting before this are closed.
    open_from_ms: i64,
    windows: BTreeMap<(i64, String, Currency), SettlementTotals>,
}

impl Default for SettlementState {
    fn default() -> Self {
        SettlementState { horizon_ms: i64::MIN, marks: Vec::new(), open_from_ms: i64::MIN, windows: BTreeMap::new() }
    }
}

/// Whether an entry landed in its own window or was moved to a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    OnTime,
    Late,
}

/// The start of the window holding `time_ms`.
pub fn window_start(time_ms: i64, window_ms: i64) -> i64 {
    time_ms.div_euclid(window_ms) * window_ms
}

impl SettlementState {
    /// Payer side: the window an entry at `event_time_ms` goes to — its own, or the
    /// horizon's if its own is before the horizon (late).
    pub fn place(&self, event_time_ms: i64, window_ms: i64) -> (Placement, i64) {
        let own = window_start(event_time_ms, window_ms);
        if own < self.horizon_ms { (Placement::Late, self.horizon_ms) } else { (Placement::OnTime, own) }
    }

    /// Payer side: moves the horizon to `open_from_ms` if that is later; true if it moved
    /// (marks must then be sent).
    pub fn advance_horizon(&mut self, open_from_ms: i64) -> bool {
        if open_from_ms > self.horizon_ms {
            self.horizon_ms = open_from_ms;
            true
        } else {
            false
        }
    }

    pub fn horizon_ms(&self) -> Option<i64> {
        (self.horizon_ms != i64::MIN).then_some(self.horizon_ms)
    }

    /// Payer side, when this partition has no input: the horizon it may take on so as not
    /// to hold the other partitions' windows open — the earliest other source's mark
    /// later than its own horizon (marks received on this partition, `own` excluded).
    /// Entries it writes later for earlier windows then go to that window, late. Applied
    /// again and again, idle partitions converge on the most advanced source's horizon;
    /// windows close at the least advanced active one's.
    pub fn idle_horizon(&self, own: u32) -> Option<i64> {
        self.marks
            .iter()
            .enumerate()
            .filter(|(source, mark)| *source != own as usize && **mark > self.horizon_ms)
            .map(|(_, mark)| *mark)
            .min()
    }

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

    pub fn open_window_count(&self) -> usize {
        self.windows.len()
    }

    /// Totals of the windows still open, for reports.
    pub fn open_windows(&self) -> impl Iterator<Item = (&(i64, String, Currency), &SettlementTotals)> {
        self.windows.iter()
    }
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
fn suffix_of(settlement: &Settlement) -> &str {
    settlement.settlement_id.strip_prefix(settlement.merchant_id.as_str()).unwrap_or(&settlement.settlement_id)
}

/// The part of a settlement id shared by every merchant of a window and currency.
pub fn settlement_id_suffix(currency: Currency, window_start_ms: i64) -> String {
    format!("/{currency}/{}", format_rfc3339_ms(window_start_ms))
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

/// The merchant account a settlement pays out of.
pub fn merchant_account(merchant_id: &str) -> String {
    format!("merchant:{merchant_id}")
}

/// Most merchant legs in one `settle:` transaction; a window closing with more merchants
/// is paid out over several (each balanced), so a ledger record stays well under
/// `RECORD_BYTES_MAX` (about 80 bytes of JSON per leg).
pub const SETTLEMENT_LEGS_PER_TRANSACTION_MAX: usize = 4_096;

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
                report.mismatches.push(format!("payouts {suffix}: pay out {paid} for settlements not emitted"));
            }
        }
        for (suffix, net) in nets {
            let paid = self.paid_out.get(suffix).copied().unwrap_or(0);
            if paid != net {
                report
                    .mismatches
                    .push(format!("payouts {suffix}: paid {paid} to the bank, its settlements' nets sum to {net}"));
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
            entry_id: format!("pay:{merchant}/{gross}"),
            merchant_id: merchant.into(),
            currency: Currency::EUR,
            kind: EntryKind::Payment,
            gross_minor: gross,
            fee_minor: fee,
            event_time_ms: 0,
            window_start_ms: 0,
            late: false,
            source_partition: 0,
        }
    }

    /// One partition settling its own payments: the payer side places the entry at
    /// `time_ms`, the merchant side adds it.
    fn put(state: &mut SettlementState, entry: SettlementEntry, time_ms: i64) -> (Placement, i64) {
        let (placement, start) = state.place(time_ms, W);
        let entry = SettlementEntry {
            event_time_ms: time_ms,
            window_start_ms: start,
            late: placement == Placement::Late,
            ..entry
        };
        assert_eq!(state.add(&entry), (start, false));
        (placement, start)
    }

    /// The single partition's watermark less lateness reaches `closed_through_ms`: its
    /// horizon moves and its own mark closes what it passed.
    fn close(state: &mut SettlementState, closed_through_ms: i64, partition: u32) -> Vec<Settlement> {
        let horizon = window_start(closed_through_ms, W);
        state.advance_horizon(horizon);
        state.mark(0, horizon, 1, W, partition)
    }

    #[test]
    fn windows_close_by_watermark_and_late_payments_move_forward() {
        let mut state = SettlementState::default();
        assert_eq!(put(&mut state, entry("m1", 100, 2), 10), (Placement::OnTime, 0));
        put(&mut state, entry("m2", 50, 1), 999);
        put(&mut state, entry("m1", 70, 1), 1_500);
        assert!(close(&mut state, 999, 0).is_empty(), "window [0,1000) ends after 999");
        let closed = close(&mut state, 1_200, 0);
        assert_eq!(closed.len(), 2);
        assert_eq!((closed[0].merchant_id.as_str(), closed[0].net_minor), ("m1", 98));
        assert_eq!(closed[0].net, "0.98");
        assert_eq!((closed[1].merchant_id.as_str(), closed[1].gross_minor), ("m2", 50));
        // An event in the closed window lands in [1000, 2000), marked late.
        assert_eq!(put(&mut state, entry("m1", 30, 0), 5), (Placement::Late, 1_000));
        let closed = close(&mut state, 2_000, 0);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].payment_count, closed[0].late_payment_count, closed[0].gross_minor), (2, 1, 100));
        assert_eq!(closed[0].window_start, "1970-01-01T00:00:01.000Z");
    }

    /// Two payer partitions, one merchant partition (2): a window closes only when both
    /// sources' marks have passed it; each source places late entries by its own horizon.
    #[test]
    fn a_window_closes_when_every_source_has_passed_it() {
        let mut merchant_side = SettlementState::default();
        let mut sources = [SettlementState::default(), SettlementState::default()];
        fn send(
            merchant_side: &mut SettlementState,
            sources: &[SettlementState],
            source: u32,
            time_ms: i64,
            gross: i64,
        ) -> (i64, bool) {
            let (placement, start) = sources[source as usize].place(time_ms, W);
            let entry = SettlementEntry {
                event_time_ms: time_ms,
                window_start_ms: start,
                late: placement == Placement::Late,
                source_partition: source,
                ..entry("m", gross, 0)
            };
            merchant_side.add(&entry)
        }
        assert_eq!(send(&mut merchant_side, &sources, 0, 100, 10), (0, false));
        assert_eq!(send(&mut merchant_side, &sources, 1, 900, 20), (0, false));
        assert_eq!(send(&mut merchant_side, &sources, 0, 1_100, 40), (1_000, false));
        // Source 0 is past window 0; source 1 has sent no mark: nothing closes.
        assert!(sources[0].advance_horizon(1_000));
        assert!(merchant_side.mark(0, 1_000, 2, W, 2).is_empty());
        // Source 1 still sends entries for window 0: on time by its own horizon.
        assert_eq!(send(&mut merchant_side, &sources, 1, 950, 80), (0, false));
        assert!(sources[1].advance_horizon(1_000));
        let closed = merchant_side.mark(1, 1_000, 2, W, 2);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].payment_count, closed[0].gross_minor, closed[0].late_payment_count, closed[0].source_partition),
            (3, 110, 0, 2)
        );
        assert_eq!(closed[0].settlement_id, "m/EUR/1970-01-01T00:00:00.000Z");
        // Now source 1's entry for window 0 is late: it names window 1, and lands there.
        assert_eq!(sources[1].place(990, W), (Placement::Late, 1_000));
        assert_eq!(send(&mut merchant_side, &sources, 1, 990, 5), (1_000, false));
        assert!(sources[0].advance_horizon(3_000));
        assert!(merchant_side.mark(0, 3_000, 2, W, 2).is_empty(), "source 1 holds window 1 open");
        assert!(sources[1].advance_horizon(2_000));
        let closed = merchant_side.mark(1, 2_000, 2, W, 2);
        assert_eq!(
            closed.iter().map(|s| (s.window_start.as_str(), s.gross_minor, s.late_payment_count)).collect::<Vec<_>>(),
            [("1970-01-01T00:00:01.000Z", 45, 1)]
        );
        // A mark that does not move the earliest closes nothing more; marks never go back.
        assert!(merchant_side.mark(1, 1_000, 2, W, 2).is_empty());
        assert_eq!(merchant_side.marks, [3_000, 2_000]);
    }

    #[test]
    fn an_idle_source_takes_on_the_earliest_later_mark_and_a_misplaced_entry_is_counted() {
        let mut state = SettlementState::default();
        assert_eq!(state.idle_horizon(1), None, "no marks yet");
        // Partition 1 of 3 received marks from 0 and 2 (and its own, ignored).
        state.mark(0, 5_000, 3, W, 1);
        state.mark(1, 9_000, 3, W, 1);
        state.mark(2, 3_000, 3, W, 1);
        assert_eq!(state.idle_horizon(1), Some(3_000));
        assert!(state.advance_horizon(3_000));
        assert_eq!(state.idle_horizon(1), Some(5_000));
        assert!(state.advance_horizon(5_000));
        assert_eq!(state.idle_horizon(1), None, "nothing later than its own horizon");
        assert_eq!(state.place(4_500, W), (Placement::Late, 5_000));
        // The merchant side closed windows before 3,000: an entry naming window 1,000
        // (only after a configuration change) goes to window 3,000, counted late.
        let stale = SettlementEntry { window_start_ms: 1_000, ..entry("m", 7, 0) };
        assert_eq!(state.add(&stale), (3_000, true));
        assert_eq!(state.open_windows().next().unwrap().1.late_payment_count, 1);
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
        let (_, start) = put(&mut state, entry("m1", 100, 2), 10);
        put(&mut state, entry("m1", 50, 1), 20);
        put(&mut state, SettlementEntry { kind: EntryKind::Refund, ..entry("m1", 30, 0) }, 30);
        let id = settlement_id("m1", Currency::EUR, start);
        let closed = close(&mut state, W, 0);
        assert_eq!(closed[0].settlement_id, id);
        assert_eq!((closed[0].refund_count, closed[0].refunds_minor, closed[0].net_minor), (1, 30, 117));
        let payouts = payout_transactions(&closed, "settlement", "bank", 0);
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
                "payouts /EUR/1970-01-01T00:00:00.000Z: paid 0 to the bank, its settlements' nets sum to 232"
                    .to_string(),
            ]
        );
        assert_eq!(
            reconcile(&[], &closed).mismatches,
            [
                format!("{id}: no ledger transaction names it"),
                "payouts /EUR/1970-01-01T00:00:00.000Z: paid 0 to the bank, its settlements' nets sum to 117".into()
            ]
        );
    }

    #[test]
    fn a_negative_net_is_collected_from_the_merchant_and_huge_nets_split_over_postings() {
        let mut state = SettlementState::default();
        put(&mut state, entry("m", 10, 1), 0);
        put(&mut state, SettlementEntry { kind: EntryKind::Chargeback, ..entry("m", 25, 0) }, 0);
        let closed = close(&mut state, W, 0);
        assert_eq!((closed[0].chargeback_count, closed[0].net_minor), (1, -16));
        let payouts = payout_transactions(&closed, "settlement", "bank", 0);
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
            put(&mut state, entry("m", i64::MAX, 0), 0);
        }
        let closed = close(&mut state, W, 0);
        let payouts = payout_transactions(&closed, "settlement", "bank", 0);
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
            put(&mut state, entry(merchant, 100, 1), 0);
        }
        put(&mut state, entry("a", 50, 0), W + 1);
        let closed = close(&mut state, 2 * W, 0);
        assert_eq!(closed.len(), 4);
        let payouts = payout_transactions(&closed, "settlement", "bank", 0);
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
    fn inputs_travel_per_target_in_order_in_bounded_records() {
        let mark = |source| SettlementInput::Mark { source_partition: source, open_from_ms: 7 };
        let mut inputs: Vec<(u32, SettlementInput)> = (0..SETTLEMENT_INPUTS_PER_RECORD_MAX as i64 + 5)
            .map(|i| (1, SettlementInput::Entry(entry("m", i, 0))))
            .collect();
        inputs.push((0, SettlementInput::Entry(entry("n", 1, 0))));
        inputs.extend([(0, mark(3)), (1, mark(3))]);
        let records = encode_inputs(&inputs);
        let targets: Vec<u32> = records.iter().map(|(target, _)| *target).collect();
        assert_eq!(targets, [0, 1, 1], "partition 1's inputs take two records");
        let decoded: Vec<Vec<SettlementInput>> = records.iter().map(|(_, r)| decode_inputs(r).unwrap()).collect();
        assert_eq!(decoded[0], [SettlementInput::Entry(entry("n", 1, 0)), mark(3)]);
        assert_eq!(decoded[1].len(), SETTLEMENT_INPUTS_PER_RECORD_MAX);
        assert_eq!(decoded[2].last(), Some(&mark(3)), "the mark after the entries");
        let all: Vec<SettlementInput> = decoded[1..].concat();
        let sent: Vec<SettlementInput> = inputs.iter().filter(|(t, _)| *t == 1).map(|(_, i)| i.clone()).collect();
        assert_eq!(all, sent);
        let mut other_version = records[0].1.clone();
        other_version[0] = 9;
        assert!(decode_inputs(&other_version).unwrap_err().contains("format 9"));
        assert!(decode_inputs(b"").is_err());
        assert!(decode_inputs(&records[0].1[..3]).is_err());
    }

    #[test]
    fn totals_never_overflow() {
        let mut state = SettlementState::default();
        put(&mut state, entry("m", i64::MAX, 0), 0);
        put(&mut state, entry("m", i64::MAX, 0), 0);
        let closed = close(&mut state, W, 3);
        assert_eq!(closed[0].gross_minor, 2 * i128::from(i64::MAX));
        assert_eq!(closed[0].gross, "184467440737095516.14");
    }
}
