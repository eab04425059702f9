//! The ledger outputs: [`LedgerTransaction`]s of balanced [`LedgerPosting`]s, and the
//! [`TransferLeg`]s that carry a payment between account partitions.

use serde::{Deserialize, Serialize};

use crate::currency::Currency;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Debit,
    Credit,
}

/// One leg of a ledger transaction. Amounts are positive; the direction says the side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosting {
    pub account_id: String,
    pub direction: Direction,
    /// Integer minor units of the transaction's currency, never negative.
    pub amount_minor: i64,
}

impl LedgerPosting {
    /// Debits positive, credits negative: a balanced transaction sums to zero.
    pub fn signed_minor_units(&self) -> i64 {
        match self.direction {
            Direction::Debit => self.amount_minor,
            Direction::Credit => -self.amount_minor,
        }
    }
}

/// What a ledger transaction records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// An approved payment: payer → payee (+ fees).
    Payment,
    /// A captured authorization: payer → payee (+ fees).
    Capture,
    /// Payee → payer, linked to the original payment.
    Refund,
    Chargeback,
    /// Outside → the payer's wallet.
    TopUp,
    /// A payment to another account, credited on the payee's partition: the transfers
    /// clearing account → the payee's wallet.
    TransferIn,
    /// A transfer the payee's side refused, back on the payer's partition: the transfers
    /// clearing account → the payer's funding.
    TransferReturn,
    /// A closed settlement's net: merchant → settlement account.
    Settlement,
    /// Settlement account → the bank, paying the merchant out.
    Payout,
}

impl TransactionKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TransactionKind::Payment => "payment",
            TransactionKind::Capture => "capture",
            TransactionKind::Refund => "refund",
            TransactionKind::Chargeback => "chargeback",
            TransactionKind::TopUp => "top_up",
            TransactionKind::TransferIn => "transfer_in",
            TransactionKind::TransferReturn => "transfer_return",
            TransactionKind::Settlement => "settlement",
            TransactionKind::Payout => "payout",
        }
    }
}

fn is_payment_transaction(kind: &TransactionKind) -> bool {
    *kind == TransactionKind::Payment
}

fn payment_transaction() -> TransactionKind {
    TransactionKind::Payment
}

/// Output: one balanced set of postings (debits = credits): an approved payment, a
/// capture, refund, chargeback or top-up, or a settlement's payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTransaction {
    pub transaction_id: String,
    #[serde(rename = "type", default = "payment_transaction", skip_serializing_if = "is_payment_transaction")]
    pub kind: TransactionKind,
    /// The event that made it (for settlement and payout: the settlement id).
    pub payment_id: String,
    /// Refunds and chargebacks: the payment they return; captures: the authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payment_id: Option<String>,
    pub event_time: String,
    pub currency: Currency,
    pub postings: Vec<LedgerPosting>,
    /// The settlement (merchant window) this payment is paid out in, if its payee is a
    /// merchant: `paystream reconcile` checks each settlement against these postings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_id: Option<String>,
}

/// Which side of a transfer between partitions a leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    /// To the payee's partition: credit the payee's wallet.
    Credit,
    /// Back to the payer's partition: the payee's side refused; credit the payer.
    Return,
}

/// Internal record on `paystream-transfers` (key: the account whose partition applies
/// it): one side of a payment to another account, written in the transaction that made
/// the other side, applied exactly once (deduplicated by `leg_id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeg {
    /// `<payment id>/credit` or `<payment id>/return`.
    pub leg_id: String,
    pub kind: LegKind,
    pub payment_id: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    /// Where a return goes: `wallet:<payer>` or `customer:<payer>`.
    pub payer_funding_account: String,
    pub amount_minor: i64,
    pub currency: Currency,
    pub event_time: String,
    /// Why the payee's side refused (returns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TransferLeg {
    /// The key it is written with: the account whose partition applies it.
    pub fn key(&self) -> &str {
        match self.kind {
            LegKind::Credit => &self.payee_account_id,
            LegKind::Return => &self.payer_account_id,
        }
    }
}
