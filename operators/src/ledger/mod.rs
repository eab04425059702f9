//! Ledger operator: the balanced postings of every money movement, and the partition's
//! ledger state that decides whether a movement may happen.
//!
//! Postings (each transaction balances: debits = credits):
//! - payment / capture: the funding account debited the amount; the payee credited the
//!   amount less the fee; the fees account credited the fee;
//! - refund / chargeback: the payee debited, the funding account credited (the fee is
//!   not returned);
//! - top-up: the payer's external account debited, the payer's wallet credited.
//!
//! Funding accounts: a payment in channel `wallet` is paid from the payer's wallet
//! (`wallet:<payer>`, never below zero unless an overdraft limit says otherwise); any
//! other channel from the payer's card or bank outside paystream (`customer:<payer>`,
//! unlimited).
//!
//! [`LedgerState`] holds what outcomes depend on: an [`Accounts`] with the wallets, one
//! external account per payer and currency used by holds or top-ups, and one clearing
//! account per currency standing for "the rest of the ledger" (so a wallet's balance
//! there is exact: every movement of a wallet goes through it); and a record of each
//! approved payment and authorization, for captures, voids, refunds and chargebacks to
//! find. The full balance of any account is the sum of its postings (the `ledger` topic;

pub mod accounts;
mod decline;
mod funding;
mod postings;
mod transfers;

use std::collections::VecDeque;

use paystream_domain::{Currency, Payee, Payment, PaymentKind};
use serde::{Deserialize, Serialize};

pub use decline::DeclineReason;
pub use funding::{
    Funding, TRANSFERS_CLEARING_ACCOUNT, clearing_account, customer_account, payee_account, wallet_account,
};
pub use postings::{fee_minor, post_payment, post_refund, post_top_up, post_transfer_leg, record_key};
pub use transfers::{LegTarget, credit_leg, leg_target};

use crate::id_hash::IdHashMap;
use accounts::{Account, AccountKind, Accounts};

/// An approved payment or authorization, remembered for the events that refer to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub kind: PaymentKind,
    /// Hash of (payer, payee, currency): a later event must name the same ones.
    pub parties_hash: u64,
    pub funding: Funding,
    pub fee_basis_points: u32,
    /// The amount of the payment, or of the authorization's hold.
    pub amount_minor: i64,
    /// What was moved: the payment's amount, or what a capture posted.
    pub captured_minor: i64,
    /// Refunded and charged back so far (≤ captured).
    pub returned_minor: i64,
}

/// What the ledger remembers of an approved payment or authorization beyond what its
/// `Seen` op already says (id, amount, event time): carried by that op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub kind: PaymentKind,
    pub funding: Funding,
    pub fee_basis_points: u32,
    pub parties_hash: u64,
}

impl Approval {
    pub fn record(&self, amount_minor: i64) -> PaymentRecord {
        PaymentRecord {
            kind: self.kind,
            parties_hash: self.parties_hash,
            funding: self.funding,
            fee_basis_points: self.fee_basis_points,
            amount_minor,
            // A payment moved its amount; an authorization moves what its capture posts.
            captured_minor: if self.kind == PaymentKind::Authorize { 0 } else { amount_minor },
            returned_minor: 0,
        }
    }
}

/// Why the ledger refuses a capture, void, refund or chargeback, given the record of
/// the payment it names (`None`: not found), before any transfer: a payment to another
/// account cannot be returned (the money is in that account's wallet, on its
/// partition: returning it is a new payment from that account); the original must be
/// found and have the same parties; a capture or void must name an authorization, a
/// void its whole amount; a refund or chargeback at most what is captured and not yet
/// returned.
pub fn check_against_original(payment: &Payment, record: Option<&PaymentRecord>) -> Result<(), DeclineReason> {
    let returns = matches!(payment.kind, PaymentKind::Refund | PaymentKind::Chargeback);
    if matches!(payment.payee, Payee::Account { .. }) && returns {
        return Err(DeclineReason::TransferNotRefundable);
    }
    let record = record.ok_or(DeclineReason::OriginalNotFound)?;
    if record.parties_hash != parties_hash(payment) {
        return Err(DeclineReason::OriginalMismatch);
    }
    let amount_minor = payment.amount.minor_units();
    match payment.kind {
        PaymentKind::Capture | PaymentKind::Void if record.kind != PaymentKind::Authorize => {
            Err(DeclineReason::OriginalNotAnAuthorization)
        }
        PaymentKind::Void if amount_minor != record.amount_minor => Err(DeclineReason::AmountMismatch),
        PaymentKind::Refund | PaymentKind::Chargeback
            if amount_minor > record.captured_minor - record.returned_minor =>
        {
            Err(DeclineReason::ExceedsCapturedAmount)
        }
        _ => Ok(()),
    }
}

/// The parties of a payment event, hashed: payer, payee and currency.
pub fn parties_hash(payment: &Payment) -> u64 {
    use xxhash_rust::xxh3::Xxh3;
    let mut hasher = Xxh3::new();
    let (payee_kind, payee): (&[u8], &str) = match &payment.payee {
        Payee::Merchant { merchant_id, .. } => (b"m", merchant_id),
        Payee::Account { account_id } => (b"a", account_id),
        Payee::OwnWallet => (b"w", ""),
    };
    for part in
        [payment.payer_account_id.as_bytes(), payee_kind, payee.as_bytes(), payment.amount.currency().code().as_bytes()]
    {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest()
}

/// The ledger state of one partition (see the module docs).
#[derive(Serialize, Deserialize)]
pub struct LedgerState {
    pub(crate) accounts: Accounts,
    records: IdHashMap<PaymentRecord>,
    /// (event time, id hash) in insertion order, for retention.
    record_order: VecDeque<(i64, u128)>,
}

impl Default for LedgerState {
    fn default() -> Self {
        // Ids are deduplicated by the pipeline, not by `Accounts`.
        LedgerState { accounts: Accounts::new(0), records: IdHashMap::default(), record_order: VecDeque::new() }
    }
}

impl LedgerState {
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn record(&self, id_hash: u128) -> Option<&PaymentRecord> {
        self.records.get(&id_hash)
    }

    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// The accounts a transfer between `debit` and the clearing account of `currency`
    /// needs and state does not have yet: external accounts and clearing are opened on
    /// first use; a wallet is opened only by a top-up (`open_wallet`).
    pub fn missing_accounts(
        &self,
        payer_account_id: &str,
        funding: Funding,
        currency: Currency,
        open_wallet: bool,
    ) -> Vec<Account> {
        let mut missing = Vec::new();
        let clearing = clearing_account(currency);
        if self.accounts.get(&clearing).is_none() {
            missing.push(Account::new(&clearing, currency, AccountKind::Clearing, "paystream"));
        }
        let id = funding.state_account(payer_account_id, currency);
        if self.accounts.get(&id).is_none() {
            match funding {
                Funding::External => {
                    missing.push(Account::new(&id, currency, AccountKind::External, payer_account_id));
                }
                Funding::Wallet if open_wallet => {
                    missing.push(Account::new(&id, currency, AccountKind::CustomerWallet, payer_account_id));
                }
                Funding::Wallet => {}
            }
        }
        missing
    }

    pub(crate) fn open(&mut self, account: Account) {
        self.accounts.open(account);
    }

    /// Remembers an approved payment or authorization of `event_time_ms`; 48 bytes of
    /// record and 16 of key in the map, 24 in the retention queue: ≈ 100 bytes with the
    /// map's overhead.
    pub(crate) fn remember(&mut self, id_hash: u128, record: PaymentRecord, event_time_ms: i64) {
        if self.records.insert(id_hash, record).is_none() {
            self.record_order.push_back((event_time_ms, id_hash));
        }
    }

    pub(crate) fn record_mut(&mut self, id_hash: u128) -> Option<&mut PaymentRecord> {
        self.records.get_mut(&id_hash)
    }

    /// Forgets payment records older than `horizon_ms` (refunds after that are refused
    /// as `original_not_found`).
    pub(crate) fn forget_records_before(&mut self, horizon_ms: i64) {
        while let Some(&(time, id_hash)) = self.record_order.front() {
            if time >= horizon_ms {
                break;
            }
            self.record_order.pop_front();
            self.records.remove(&id_hash);
        }
    }
}
