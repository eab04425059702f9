//! `paystream reconcile`: settlements checked against the ledger transactions that name
//! them and their payouts.
//!
//! Every ledger transaction names its settlement, so each emitted settlement is checked
//! against exactly its postings: counts; gross = payer debits of its payments and
//! captures; fees = gross − their merchant credits; refunds and chargebacks = the
//! merchant's debits in those; net = the rest. No settlement id may appear twice. Payouts:
//! each merchant leg moves exactly its settlement's net, and the `payout:` transactions of
//! each window and currency, summed over the merchant partitions, move exactly the sum of
//! its settlements' nets.

use std::collections::BTreeMap;

use paystream_domain::{Currency, Direction, LedgerTransaction, Settlement, TransactionKind};

use super::ids::{settlement_id_with_suffix, suffix_of};

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
