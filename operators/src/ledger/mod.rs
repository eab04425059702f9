//! Ledger operator: the balanced postings of every money movement, and the partition's
//! ledger state that decides whether a movement may happen.
//!
//! Every event on the payments topic has a kind (`payment` by default, `authorize`,
//! `capture`, `void`, `refund`, `chargeback`, `top_up`) and is keyed by its payer, so a
//! payer's payments, their captures and refunds, and the payer's wallet all live on one
//! partition. Payments and authorizations are scored and counted in the features; the
//! other kinds skip features and scoring and are decided by the ledger alone (`approve`,
//! or `decline` with the ledger's [`DeclineReason`] first). An approved payment or
//! authorization can still be declined by the ledger (a wallet without the funds).
//!
//! Postings (every transaction MUST balance per currency: debits = credits):
//! - payment / capture: the funding account debited the amount; the payee credited the
//!   amount less the fee; the fees account credited the fee;
//! - refund / chargeback: the payee debited, the funding account credited (the fee is
//!   not returned);
//! - top-up: the payer's external account debited, the payer's wallet credited.
//!
//! Funding accounts: a payment in channel `wallet` is paid from the payer's wallet
//! (`wallet:<payer>`, never below minus its overdraft limit, zero by default); any other
//! channel from the payer's card or bank outside paystream (`customer:<payer>`,
//! unlimited). Account names: `funding.rs`.
//!
//! What each kind does (`processor/ledger.rs`: `PartitionProcessor::post_new_money` for
//! payments and authorizations, `PartitionProcessor::ledger_event` for the others):
//! - `payment`: from a wallet, a transfer wallet → clearing first (refused beyond the
//!   limit: `insufficient_funds`); postings funding → payee (amount − fee) + fees; a
//!   record.
//! - `authorize`: a pending transfer funding → clearing (a hold: the funding's available
//!   balance drops, limits checked at authorization); a record; no postings (nothing is
//!   posted yet).
//! - `capture`: posts at most the hold of the named authorization and releases the rest
//!   (one capture per authorization); postings as a payment, at the authorization's fee
//!   rate.
//! - `void`: releases the hold (its amount MUST equal the hold's).
//! - `refund` / `chargeback`: at most captured − already returned; postings payee →
//!   funding (fees are not returned); a wallet is credited through clearing. Refunds and
//!   chargebacks of payments to another account are declined `transfer_not_refundable`
//!   (the money is in that account's wallet, on its partition: returning it is a payment
//!   from that account).
//! - `top_up`: external → wallet (the wallet opens with the top-up's currency).
//!
//! Captures, voids and returns MUST name the original's payer, payee and currency
//! (`original_mismatch`); an unknown original, or one forgotten after
//! `refund_window_ms` (default 30 days), is `original_not_found`
//! ([`check_against_original`]). Holds not captured or voided expire
//! `authorization_timeout_ms` (default 7 days) after their event time, once the
//! partition's watermark less `settlement_allowed_lateness_ms` passes that
//! (`paystream_holds_expired_total`); a capture after its hold's expiry expires the hold
//! itself and is declined `authorization_expired`.
//!
//! [`LedgerState`] holds what outcomes depend on: an [`Accounts`] with the wallets, one
//! external account per payer and currency used by holds or top-ups, and one clearing
//! account per currency standing for "the rest of the ledger" (so a wallet's balance
//! there is exact: every movement of a wallet goes through it, and the tests compare it
//! with the sum of the wallet's postings); and a [`PaymentRecord`] per approved payment
//! and authorization (a hash of payer, payee and currency; funding; fee rate; amount,
//! captured, returned; ≈ 100 bytes, kept `refund_window_ms`), for captures, voids,
//! refunds and chargebacks to find. The full balance of any other account is the sum of
//! its postings (the `ledger` topic; `balances` in the PostgreSQL store).
//!
//! Exactly once and replay: every change to the ledger state is a
//! [`StateOp`](crate::StateOp) (`OpenAccount`, `SetOverdraft`, `Transfer`, `Captured`,
//! `Returned`; an approval rides on the payment's own `Seen` op) in the batch's
//! changelog, applied by the same `PartitionState::apply` live and on restore. A
//! `Transfer` op is logged whatever its outcome: [`Accounts::execute`] is deterministic
//! and a refused transfer changes nothing, so applying the changelog again reproduces
//! every outcome (`operators/tests/restore.rs` checks that restored and live partitions
//! agree on outputs, changelog, windows, accounts and records). Payment ids are
//! deduplicated before the ledger (a retry is counted, never applied twice); the ledger
//! never uses `Accounts`' own transfer-id memory.
//!
//! The `ledger` topic is keyed by the payer (the first `wallet:` or `customer:` posting;
//! other transactions, payouts, by their first posting's account: [`record_key`]), so one
//! payer's transactions, and each wallet's, sit in one partition in commit order — which
//! is how the crash simulation (`pipeline/tests/crash_simulation.rs`) checks that no
//! wallet ever went below zero.
//!
//! Payments to another account cross partitions through `clearing:transfers`: see
//! `transfers.rs`.

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
