//! Ledger account names and funding: which account a payment's money comes from and
//! goes to, in postings and in partition state.
//!
//! Postings name:
//! - `customer:<payer>`: the payer's card or bank outside paystream, unlimited;
//! - `wallet:<payer>` (channel `wallet`): a `CustomerWallet` that never goes below minus
//!   its overdraft limit — `wallet_overdrafts[payer]`, else `wallet_overdraft_minor`
//!   ([`OperatorConfig::wallet_overdraft_for`](crate::OperatorConfig::wallet_overdraft_for)).
//!   A limit changed in the configuration is set, by a `SetOverdraft` op, at the wallet's
//!   next movement;
//! - `merchant:<id>`;
//! - [`TRANSFERS_CLEARING_ACCOUNT`] (`clearing:transfers`): payments to other accounts,
//!   on their way;
//! - the fees account (`fees_account_id`), and for payouts the settlement and bank
//!   accounts (`settlement_account_id`, `bank_account_id`).
//!
//! Partition state tracks fewer accounts, under its own names: the wallets,
//! `customer:<payer>/<currency>` for holds and top-ups on external funding, and
//! `clearing:<currency>` for the rest of the ledger (see the module docs).

use paystream_domain::{Channel, Currency, Payee, Payment};
use serde::{Deserialize, Serialize};

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
pub(crate) fn external_state_account(payer_account_id: &str, currency: Currency) -> String {
    format!("customer:{payer_account_id}/{currency}")
}

/// Where money that left a wallet (or an external account's hold) is, as far as partition
/// state is concerned: the rest of the ledger, one per currency.
pub fn clearing_account(currency: Currency) -> String {
    format!("clearing:{currency}")
}

pub(crate) fn account(prefix: &str, id: &str) -> String {
    let mut account = String::with_capacity(prefix.len() + id.len());
    account.push_str(prefix);
    account.push_str(id);
    account
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
