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
//! the PostgreSQL record store keeps it per account).

use std::collections::{HashMap, VecDeque};

use paystream_domain::{
    Channel, Currency, Direction, LedgerPosting, LedgerTransaction, Money, Payee, Payment, PaymentKind,
    TransactionKind, TransferLeg,
};
use serde::{Deserialize, Serialize};

use crate::accounts::{Account, AccountKind, Accounts, TransferError};

/// Where a payment to another account waits between the payer's partition, which
/// credits it, and the payee's, which debits it into the payee's wallet (or back to the
/// payer): its balance is the sum of the transfer legs written and not yet applied.
pub const TRANSFERS_CLEARING_ACCOUNT: &str = "clearing:transfers";

/// The payer's card or bank, outside paystream.
pub fn customer_account(payer_account_id: &str) -> String {
    account("customer:", payer_account_id)
}

/// The payer's wallet inside paystream.
pub fn wallet_account(payer_account_id: &str) -> String {
    account("wallet:", payer_account_id)
}

/// The account `state` keeps for holds and top-ups on the payer's external funding, one
/// per currency (postings name it `customer:<payer>`).
fn external_state_account(payer_account_id: &str, currency: Currency) -> String {
    format!("customer:{payer_account_id}/{currency}")
}

/// Where money that left a wallet (or an external account's hold) is, as far as partition
/// state is concerned: the rest of the ledger, one per currency.
pub fn clearing_account(currency: Currency) -> String {
    format!("clearing:{currency}")
}

fn account(prefix: &str, id: &str) -> String {
    let mut account = String::with_capacity(prefix.len() + id.len());
    account.push_str(prefix);
    account.push_str(id);
    account
}

fn posting(account_id: String, direction: Direction, amount_minor: i64) -> LedgerPosting {
    LedgerPosting { account_id, direction, amount_minor }
}

/// Where a payment's money comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Funding {
    /// The payer's wallet: limit-checked.
    Wallet,
    /// The payer's card or bank: unlimited.
    External,
}

impl Funding {
    pub fn of(channel: Channel) -> Funding {
        if channel == Channel::Wallet { Funding::Wallet } else { Funding::External }
    }

    /// The account postings debit (payments) or credit (refunds).
    pub fn posting_account(self, payer_account_id: &str) -> String {
        match self {
            Funding::Wallet => wallet_account(payer_account_id),
            Funding::External => customer_account(payer_account_id),
        }
    }

    /// The account partition state tracks for it.
    pub fn state_account(self, payer_account_id: &str, currency: Currency) -> String {
        match self {
            Funding::Wallet => wallet_account(payer_account_id),
            Funding::External => external_state_account(payer_account_id, currency),
        }
    }
}

/// The account a payee's postings go to on the payer's partition. Another account's
/// wallet lives on its own partition: the money waits in clearing until a transfer leg
/// credits it there.
pub fn payee_account(payment: &Payment) -> String {
    match &payment.payee {
        Payee::Merchant { merchant_id, .. } => account("merchant:", merchant_id),
        Payee::Account { .. } => TRANSFERS_CLEARING_ACCOUNT.to_string(),
        Payee::OwnWallet => wallet_account(&payment.payer_account_id),
    }
}

/// The transaction id: `<prefix>:<payment id>`, prefix `pay` for payments (as before kinds
/// existed) and the kind otherwise.
fn transaction_id(kind: TransactionKind, payment_id: &str) -> String {
    let prefix = match kind {
        TransactionKind::Payment => "pay:",
        TransactionKind::Capture => "capture:",
        TransactionKind::Refund => "refund:",
        TransactionKind::Chargeback => "chargeback:",
        TransactionKind::TopUp => "top_up:",
        TransactionKind::Settlement => "settle:",
        TransactionKind::Payout => "payout:",
        TransactionKind::TransferIn => "transfer_in:",
        TransactionKind::TransferReturn => "transfer_return:",
    };
    account(prefix, payment_id)
}

/// The fee of `amount_minor` at `fee_basis_points` ([`Money::checked_basis_points`]: half
/// away from zero; ≤ the amount because rates are ≤ 10 000 basis points, checked in the
/// config, so it cannot overflow).
pub fn fee_minor(amount_minor: i64, fee_basis_points: u32) -> i64 {
    Money::from_minor_units(amount_minor, Currency::EUR)
        .checked_basis_points(fee_basis_points)
        .map(|fee| fee.minor_units())
        .unwrap_or(0)
}

/// A payment or capture: `amount_minor` from `funding` to the payee, less the fee.
/// Returns the transaction and its fee. `event_time` is already formatted (RFC 3339).
pub fn post_payment(
    payment: &Payment,
    funding: Funding,
    amount_minor: i64,
    event_time: &str,
    fee_basis_points: u32,
    fees_account_id: &str,
) -> (LedgerTransaction, i64) {
    let fee = fee_minor(amount_minor, fee_basis_points);
    let mut postings = Vec::with_capacity(3);
    postings.push(posting(funding.posting_account(&payment.payer_account_id), Direction::Debit, amount_minor));
    postings.push(posting(payee_account(payment), Direction::Credit, amount_minor - fee));
    if fee > 0 {
        postings.push(posting(fees_account_id.to_string(), Direction::Credit, fee));
    }
    let kind = if payment.kind == PaymentKind::Capture { TransactionKind::Capture } else { TransactionKind::Payment };
    (transaction(payment, kind, event_time, postings), fee)
}

/// A refund or chargeback: the payee gives `amount_minor` back to `funding`.
pub fn post_refund(payment: &Payment, funding: Funding, event_time: &str) -> LedgerTransaction {
    let amount_minor = payment.amount.minor_units();
    let postings = vec![
        posting(payee_account(payment), Direction::Debit, amount_minor),
        posting(funding.posting_account(&payment.payer_account_id), Direction::Credit, amount_minor),
    ];
    let kind =
        if payment.kind == PaymentKind::Chargeback { TransactionKind::Chargeback } else { TransactionKind::Refund };
    transaction(payment, kind, event_time, postings)
}

/// A top-up: the payer's external account into the payer's wallet.
pub fn post_top_up(payment: &Payment, event_time: &str) -> LedgerTransaction {
    let amount_minor = payment.amount.minor_units();
    let postings = vec![
        posting(customer_account(&payment.payer_account_id), Direction::Debit, amount_minor),
        posting(wallet_account(&payment.payer_account_id), Direction::Credit, amount_minor),
    ];
    transaction(payment, TransactionKind::TopUp, event_time, postings)
}

/// A transfer leg applied: the clearing account into the payee's wallet (credit legs) or
/// back to the payer's funding (return legs).
pub fn post_transfer_leg(leg: &TransferLeg) -> LedgerTransaction {
    let (kind, prefix, account) = match leg.kind {
        paystream_domain::LegKind::Credit => {
            (TransactionKind::TransferIn, "transfer_in:", wallet_account(&leg.payee_account_id))
        }
        paystream_domain::LegKind::Return => {
            (TransactionKind::TransferReturn, "transfer_return:", leg.payer_funding_account.clone())
        }
    };
    LedgerTransaction {
        transaction_id: self::account(prefix, &leg.payment_id),
        kind,
        payment_id: leg.payment_id.clone(),
        original_payment_id: None,
        event_time: leg.event_time.clone(),
        currency: leg.currency,
        postings: vec![
            posting(TRANSFERS_CLEARING_ACCOUNT.to_string(), Direction::Debit, leg.amount_minor),
            posting(account, Direction::Credit, leg.amount_minor),
        ],
        settlement_id: None,
    }
}

fn transaction(
    payment: &Payment,
    kind: TransactionKind,
    event_time: &str,
    postings: Vec<LedgerPosting>,
) -> LedgerTransaction {
    LedgerTransaction {
        transaction_id: transaction_id(kind, &payment.payment_id),
        kind,
        payment_id: payment.payment_id.clone(),
        original_payment_id: payment.original_payment_id.clone(),
        event_time: event_time.to_string(),
        currency: payment.amount.currency(),
        postings,
        settlement_id: None,
    }
}

/// The key of a transaction's record on the `ledger` topic: the payer (as on the input
/// topic) for a payer's event — so one payer's transactions, and each wallet's, stay in
/// one partition in commit order — and the merchant account for a settlement's payout.
pub fn record_key(transaction: &LedgerTransaction) -> &str {
    transaction
        .postings
        .iter()
        .find_map(|p| p.account_id.strip_prefix("wallet:").or_else(|| p.account_id.strip_prefix("customer:")))
        .or_else(|| transaction.postings.first().map(|p| p.account_id.as_str()))
        .unwrap_or_default()
}

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

/// A `BuildHasher` for maps keyed by 128-bit hashes of ids (already uniform): their
/// low 64 bits, not SipHash of them.
#[derive(Clone, Copy, Default)]
pub struct IdHashBuilder;

pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed with it; anything else still hashes, just slowly.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A map keyed by 128-bit id hashes.
pub type IdHashMap<V> = HashMap<u128, V, IdHashBuilder>;

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

/// The reason codes the ledger declines events with (first among a `decline` decision's
/// reasons).
pub mod decline {
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    pub const AUTHORIZATION_EXPIRED: &str = "authorization_expired";
    pub const AUTHORIZATION_CLOSED: &str = "authorization_closed";
    pub const CAPTURE_EXCEEDS_AUTHORIZATION: &str = "capture_exceeds_authorization";
    pub const EXCEEDS_CAPTURED_AMOUNT: &str = "exceeds_captured_amount";
    pub const AMOUNT_MISMATCH: &str = "amount_mismatch";
    pub const ORIGINAL_NOT_FOUND: &str = "original_not_found";
    pub const ORIGINAL_MISMATCH: &str = "original_mismatch";
    pub const ORIGINAL_NOT_AN_AUTHORIZATION: &str = "original_not_an_authorization";
    pub const TRANSFER_NOT_REFUNDABLE: &str = "transfer_not_refundable";
    pub const BALANCE_OVERFLOW: &str = "balance_overflow";
    pub const LEDGER_REFUSED: &str = "ledger_refused";

    pub const ALL: [&str; 13] = [
        INSUFFICIENT_FUNDS,
        CURRENCY_MISMATCH,
        AUTHORIZATION_EXPIRED,
        AUTHORIZATION_CLOSED,
        CAPTURE_EXCEEDS_AUTHORIZATION,
        EXCEEDS_CAPTURED_AMOUNT,
        AMOUNT_MISMATCH,
        ORIGINAL_NOT_FOUND,
        ORIGINAL_MISMATCH,
        ORIGINAL_NOT_AN_AUTHORIZATION,
        TRANSFER_NOT_REFUNDABLE,
        BALANCE_OVERFLOW,
        LEDGER_REFUSED,
    ];
}

/// Why the ledger refused an event, as the reason code on its `decline` decision.
pub fn refusal_reason(error: &TransferError) -> &'static str {
    match error {
        TransferError::ExceedsLimit { .. } | TransferError::UnknownAccount(_) => decline::INSUFFICIENT_FUNDS,
        TransferError::CurrencyMismatch { .. } => decline::CURRENCY_MISMATCH,
        TransferError::PendingResolved { resolution: crate::accounts::Resolution::Expired, .. } => {
            decline::AUTHORIZATION_EXPIRED
        }
        TransferError::PendingResolved { .. } => decline::AUTHORIZATION_CLOSED,
        TransferError::UnknownPending(_) => decline::ORIGINAL_NOT_FOUND,
        TransferError::PostExceedsHold { .. } => decline::CAPTURE_EXCEEDS_AUTHORIZATION,
        TransferError::Overflow(_) => decline::BALANCE_OVERFLOW,
        TransferError::InvalidAmount(_)
        | TransferError::SameAccount(_)
        | TransferError::InvalidTimeout(_)
        | TransferError::IdConflict(_) => decline::LEDGER_REFUSED,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payment(amount: &str) -> Payment {
        let json = format!(
            r#"{{"payment_id":"p","payer_account_id":"C","merchant_id":"M","terminal_id":"T","amount":"{amount}","currency":"EUR","event_time":"2018-04-01T00:00:00Z","channel":"card_present"}}"#
        );
        Payment::from_json(json.as_bytes()).unwrap()
    }

    fn signed(t: &LedgerTransaction) -> Vec<(&str, i64)> {
        t.postings.iter().map(|p| (p.account_id.as_str(), p.signed_minor_units())).collect()
    }

    #[test]
    fn postings_by_hand() {
        let p = payment("100.00");
        let (t, fee) = post_payment(&p, Funding::External, 100_00, "2018-04-01T00:00:00.000Z", 120, "fees");
        assert_eq!(fee, 120);
        assert_eq!(signed(&t), vec![("customer:C", 10_000), ("merchant:M", -9_880), ("fees", -120)]);
        assert_eq!((t.transaction_id.as_str(), t.kind), ("pay:p", TransactionKind::Payment));
        let (t, _) = post_payment(&p, Funding::Wallet, 50_00, "2018-04-01T00:00:00.000Z", 0, "fees");
        assert_eq!(signed(&t), vec![("wallet:C", 5_000), ("merchant:M", -5_000)]);

        let refund = Payment::from_json(
            br#"{"type":"refund","payment_id":"r","original_payment_id":"p","payer_account_id":"C","merchant_id":"M","terminal_id":"T","amount":"30.00","currency":"EUR","event_time":"2018-04-02T00:00:00Z","channel":"card_present"}"#,
        )
        .unwrap();
        let t = post_refund(&refund, Funding::Wallet, "2018-04-02T00:00:00.000Z");
        assert_eq!(signed(&t), vec![("merchant:M", 3_000), ("wallet:C", -3_000)]);
        assert_eq!((t.kind, t.original_payment_id.as_deref()), (TransactionKind::Refund, Some("p")));

        let top_up = Payment::from_json(
            br#"{"type":"top_up","payment_id":"t","payer_account_id":"C","amount":"20.00","currency":"EUR","event_time":"2018-04-02T00:00:00Z","channel":"bank_transfer"}"#,
        )
        .unwrap();
        let t = post_top_up(&top_up, "2018-04-02T00:00:00.000Z");
        assert_eq!(signed(&t), vec![("customer:C", 2_000), ("wallet:C", -2_000)]);
        assert_eq!(t.transaction_id, "top_up:t");
    }

    #[test]
    fn the_decision_schema_names_every_decline_reason() {
        let schema = include_str!("../../schemas/decision.v1.schema.json");
        for reason in decline::ALL {
            assert!(schema.contains(reason), "schemas/decision.v1.schema.json does not name {reason}");
        }
    }

    #[test]
    fn fees_round_half_away_from_zero() {
        assert_eq!(fee_minor(1, 5_000), 1); // 0.5 → 1
        assert_eq!(fee_minor(1, 4_999), 0);
        assert_eq!(fee_minor(3, 5_000), 2); // 1.5 → 2
        assert_eq!(fee_minor(i64::MAX, 10_000), i64::MAX);
    }

    proptest! {
        #[test]
        fn every_transaction_balances(minor in 1i64..=i64::MAX, bps in 0u32..=10_000) {
            let text = paystream_domain::money::format_minor_units(minor, 2);
            let p = payment(&text);
            let (t, fee) = post_payment(&p, Funding::External, minor, "2018-04-01T00:00:00.000Z", bps, "fees");
            prop_assert_eq!(t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>(), 0);
            prop_assert!(fee >= 0 && fee <= minor);
            prop_assert!(t.postings.iter().all(|p| p.amount_minor >= 0));
        }
    }
}
