//! Payments to other accounts, between partitions: the payer's partition posts the
//! amount less the fee into `clearing:transfers` and writes a credit leg for the payee's
//! partition, which moves it into the payee's wallet — or, if the wallet cannot take it,
//! writes a return leg back to the payer's funding.

use paystream_domain::{LegKind, Payee, Payment, TransferLeg};

use super::funding::{Funding, wallet_account};

/// The credit leg of a posted payment to another account (`None` for other payees):
/// `amount_minor` less `fee_minor` for the payee's wallet.
pub fn credit_leg(
    payment: &Payment,
    funding: Funding,
    amount_minor: i64,
    fee_minor: i64,
    event_time: &str,
) -> Option<TransferLeg> {
    let Payee::Account { account_id } = &payment.payee else { return None };
    Some(TransferLeg {
        leg_id: format!("{}/credit", payment.payment_id),
        kind: LegKind::Credit,
        payment_id: payment.payment_id.clone(),
        payer_account_id: payment.payer_account_id.clone(),
        payee_account_id: account_id.clone(),
        payer_funding_account: funding.posting_account(&payment.payer_account_id),
        amount_minor: amount_minor - fee_minor,
        currency: payment.amount.currency(),
        event_time: event_time.to_string(),
        reason: None,
    })
}

/// Where a leg's money goes on this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegTarget {
    /// The account holder whose account is credited.
    pub owner_account_id: String,
    /// Whether the credit may open the owner's wallet (credits do; returns go back into
    /// the funding the payment came from).
    pub open_wallet: bool,
    /// The credited account.
    pub account_id: String,
}

impl LegTarget {
    /// Partition state follows wallets only; external funding takes the posting alone.
    pub fn is_wallet(&self) -> bool {
        self.account_id.starts_with("wallet:")
    }
}

/// The account `leg` credits: the payee's wallet, or the payer's funding for a return.
pub fn leg_target(leg: &TransferLeg) -> LegTarget {
    match leg.kind {
        LegKind::Credit => LegTarget {
            owner_account_id: leg.payee_account_id.clone(),
            open_wallet: true,
            account_id: wallet_account(&leg.payee_account_id),
        },
        LegKind::Return => LegTarget {
            owner_account_id: leg.payer_account_id.clone(),
            open_wallet: false,
            account_id: leg.payer_funding_account.clone(),
        },
    }
}
