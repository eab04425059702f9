//! Payments to other accounts, between partitions: the payer's partition posts the
//! amount less the fee into `clearing:transfers` and writes a credit leg for the payee's
//! partition, which moves it into the payee's wallet — or, if the wallet cannot take it,
//! writes a return leg back to the payer's funding.
//!
//! Balances live with their account's partition (wallets by payer). A payment to another
//! account (`payee_account_id`) is two ledger transactions joined by
//! [`TRANSFERS_CLEARING_ACCOUNT`](super::TRANSFERS_CLEARING_ACCOUNT), so money is
//! conserved in every committed state, not just eventually:
//! 1. **Debit side**, on the payer's partition, in the batch's transaction: the payment
//!    is scored and decided like any other, the payer's limit checked; it posts
//!    `funding → clearing:transfers` (amount less the fee) + fees and writes a credit leg
//!    ([`credit_leg`]: a `TransferLeg`, JSON) keyed by the payee to the internal topic
//!    `paystream-transfers`, partitioned like the payments. The clearing account then
//!    holds the money: the sum over all accounts is unchanged.
//! 2. **Credit side**, on the payee's partition (`processor/transfer_legs.rs`,
//!    `PartitionProcessor::process_transfer_legs`): posts `clearing:transfers →
//!    wallet:<payee>` (opening the wallet on first credit) in the transaction that also
//!    commits that topic's position; the leg id is deduplicated like a payment id (a
//!    `SeenId` op), so a replay after a crash applies the leg once.
//! 3. If the payee's side must refuse (a wallet in another currency), it writes a return
//!    leg back to the payer's partition, which posts `clearing:transfers → funding`: the
//!    debit is reversed, never lost. A return into the payer's own funding is never
//!    refused.
//!
//! Invariant: the balance of `clearing:transfers` = Σ amounts of legs written but not yet
//! applied; zero when the topic is drained. The crash simulation
//! (`pipeline/tests/crash_simulation.rs`) checks the legs against the postings after
//! every recovery, returns included, and `operators/tests/ledger.rs` checks a transfer
//! applied once when delivered twice. Refunds and chargebacks of transfers are declined
//! (`transfer_not_refundable`). A leg written to a partition whose worker has stopped
//! waits in clearing for the next run; when workers read `paystream-transfers` and when
//! an until-idle run may stop is the runtime's (`pipeline/src/runtime/internal.rs`,
//! `idle.rs`).

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
