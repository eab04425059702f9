//! The ledger stage of the processor: approved payments and the events that refer to
//! them (captures, voids, refunds, chargebacks) and top-ups, as transfers on the
//! partition's accounts, postings and settlement entries; and every decision record.

use std::borrow::Cow;

use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Currency, Decision, Outcome, Payee, Payment, PaymentKind, Velocity};
use paystream_models::Score;

use super::partition::PartitionProcessor;
use crate::batch::OutputBatch;
use crate::counters::OperatorId;
use crate::decide::with_first_reason;
use crate::ledger::accounts::{Account, AccountKind, Transfer, TransferKind};
use crate::ledger::{self, Approval, DeclineReason, Funding};
use crate::settlement::EntryKind;
use crate::state::StateOp;

impl PartitionProcessor {
    /// The ledger side of an approved payment or authorization: a wallet payment or any
    /// authorization goes through the accounts (limits, holds); a payment is posted and
    /// settled. Returns what the caller's `Seen` op remembers of it for refunds and
    /// captures.
    pub(super) fn post_new_money(
        &mut self,
        payment: &Payment,
        event_time: &str,
        out: &mut OutputBatch,
    ) -> Result<Approval, DeclineReason> {
        out.counters.count(OperatorId::Ledger).records_in += 1;
        let funding = Funding::of(payment.channel);
        let amount_minor = payment.amount.minor_units();
        let authorize = payment.kind == PaymentKind::Authorize;
        if funding == Funding::Wallet || authorize {
            let currency = payment.amount.currency();
            let debit = self.open_accounts(&payment.payer_account_id, funding, currency, false, out);
            let credit = ledger::clearing_account(currency);
            let kind = if authorize {
                TransferKind::Pending { debit, credit, timeout_ms: self.config.authorization_timeout_ms }
            } else {
                TransferKind::Single { debit, credit }
            };
            self.transfer(payment, kind, amount_minor, out)?;
        }
        let fee_basis_points = self.config.fees.basis_points(payment);
        if !authorize {
            self.post_and_settle(payment, funding, amount_minor, fee_basis_points, event_time, out);
        }
        out.counters.count(OperatorId::Ledger).records_out += 1;
        Ok(Approval { kind: payment.kind, funding, fee_basis_points, parties_hash: ledger::parties_hash(payment) })
    }

    /// Opens what a transfer from `funding` needs (see
    /// [`LedgerState::missing_accounts`](crate::ledger::LedgerState::missing_accounts)) and
    /// returns the funding's state account.
    pub(super) fn open_accounts(
        &mut self,
        payer_account_id: &str,
        funding: Funding,
        currency: Currency,
        open_wallet: bool,
        out: &mut OutputBatch,
    ) -> String {
        let overdraft = (funding == Funding::Wallet).then(|| self.config.wallet_overdraft_for(payer_account_id));
        for mut account in self.state.ledger.missing_accounts(payer_account_id, funding, currency, open_wallet) {
            if account.kind == AccountKind::CustomerWallet {
                account.overdraft_limit_minor = overdraft;
            }
            self.apply(StateOp::OpenAccount { account: Box::new(account) }, out);
        }
        let id = funding.state_account(payer_account_id, currency);
        // An open wallet takes on its configured limit if that changed since it opened.
        let stale = |account: &Account| account.overdraft_limit_minor != overdraft;
        if overdraft.is_some() && self.state.ledger.accounts().get(&id).is_some_and(stale) {
            self.apply(StateOp::SetOverdraft { account_id: id.clone(), limit_minor: overdraft }, out);
        }
        id
    }

    /// Logs and applies the transfer the event `payment` makes (its id, currency and time).
    pub(super) fn transfer(
        &mut self,
        payment: &Payment,
        kind: TransferKind,
        amount_minor: i64,
        out: &mut OutputBatch,
    ) -> Result<(), DeclineReason> {
        let transfer = Transfer {
            id: payment.payment_id.clone(),
            kind,
            amount_minor,
            currency: payment.amount.currency(),
            time_ms: payment.event_time_ms,
        };
        self.apply_transfer(transfer, out)
    }

    /// Logs and applies one transfer on the partition's accounts; a refusal is its reason
    /// code (and changes nothing).
    pub(super) fn apply_transfer(&mut self, transfer: Transfer, out: &mut OutputBatch) -> Result<(), DeclineReason> {
        match self.apply(StateOp::Transfer { transfer: Box::new(transfer) }, out).transfer {
            Some(Err(error)) => Err(DeclineReason::of_transfer_error(&error)),
            _ => Ok(()),
        }
    }

    /// Posts a payment or capture of `amount_minor` and adds it to its settlement window.
    pub(super) fn post_and_settle(
        &mut self,
        payment: &Payment,
        funding: Funding,
        amount_minor: i64,
        fee_basis_points: u32,
        event_time: &str,
        out: &mut OutputBatch,
    ) {
        let (mut transaction, fee_minor) = ledger::post_payment(
            payment,
            funding,
            amount_minor,
            event_time,
            fee_basis_points,
            &self.config.fees_account_id,
        );
        self.settle(payment, EntryKind::Payment, amount_minor, fee_minor, &mut transaction, out);
        out.ledger.push(transaction);
        out.transfer_legs.extend(ledger::credit_leg(payment, funding, amount_minor, fee_minor, event_time));
    }

    /// A capture, void, refund, chargeback or top-up: approved if the ledger accepts it,
    /// else declined with the reason.
    pub(super) fn apply_ledger_event(&mut self, payment: Payment, out: &mut OutputBatch) {
        out.counters.count(OperatorId::Ledger).records_in += 1;
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        let (outcome, score) = match self.ledger_event(&payment, &event_time, out) {
            Ok(()) => {
                out.counters.count(OperatorId::Ledger).records_out += 1;
                (Outcome::Approve, Score::new(0.0))
            }
            Err(reason) => {
                out.counters.count(OperatorId::Ledger).records_error += 1;
                out.counters.ledger_decline(reason);
                (Outcome::Decline, with_first_reason(reason.as_str(), &Score::new(0.0)))
            }
        };
        out.counters.outcomes[outcome as usize] += 1;
        self.push_decision(payment, event_time, outcome, &score, None, out);
    }

    /// The transfers, ops and postings of a ledger event, once
    /// [`check_against_original`](ledger::check_against_original) accepts it.
    pub(super) fn ledger_event(
        &mut self,
        payment: &Payment,
        event_time: &str,
        out: &mut OutputBatch,
    ) -> Result<(), DeclineReason> {
        let amount_minor = payment.amount.minor_units();
        let currency = payment.amount.currency();
        if payment.kind == PaymentKind::TopUp {
            let payer = &payment.payer_account_id;
            let debit = self.open_accounts(payer, Funding::External, currency, false, out);
            let credit = self.open_accounts(payer, Funding::Wallet, currency, true, out);
            self.transfer(payment, TransferKind::Single { debit, credit }, amount_minor, out)?;
            out.ledger.push(ledger::post_top_up(payment, event_time));
            return Ok(());
        }
        let original_id = payment.original_payment_id.as_deref().expect("validated: these kinds name an original");
        let original_hash = xxhash_rust::xxh3::xxh3_128(original_id.as_bytes());
        let record = self.state.ledger.record(original_hash).cloned();
        ledger::check_against_original(payment, record.as_ref())?;
        let record = record.expect("checked: the original is recorded");
        match payment.kind {
            PaymentKind::Capture => {
                let kind = TransferKind::Post { pending_id: original_id.to_string() };
                self.transfer(payment, kind, amount_minor, out)?;
                self.apply(StateOp::Captured { id_hash: original_hash.to_le_bytes(), amount_minor }, out);
                self.post_and_settle(payment, record.funding, amount_minor, record.fee_basis_points, event_time, out);
                Ok(())
            }
            PaymentKind::Void => {
                let kind = TransferKind::Void { pending_id: original_id.to_string() };
                self.transfer(payment, kind, 0, out)
            }
            PaymentKind::Refund | PaymentKind::Chargeback => {
                if record.funding == Funding::Wallet {
                    let debit = ledger::clearing_account(currency);
                    let credit = ledger::wallet_account(&payment.payer_account_id);
                    self.transfer(payment, TransferKind::Single { debit, credit }, amount_minor, out)?;
                }
                self.apply(StateOp::Returned { id_hash: original_hash.to_le_bytes(), amount_minor }, out);
                let mut transaction = ledger::post_refund(payment, record.funding, event_time);
                let kind = if payment.kind == PaymentKind::Refund { EntryKind::Refund } else { EntryKind::Chargeback };
                self.settle(payment, kind, amount_minor, 0, &mut transaction, out);
                out.ledger.push(transaction);
                Ok(())
            }
            PaymentKind::Payment | PaymentKind::Authorize | PaymentKind::TopUp => {
                unreachable!("scored kinds and top-ups are handled above")
            }
        }
    }

    pub(super) fn push_decision(
        &mut self,
        payment: Payment,
        event_time: String,
        outcome: Outcome,
        score: &Score,
        velocity: Option<Velocity>,
        out: &mut OutputBatch,
    ) {
        out.decisions.push(Decision {
            kind: payment.kind,
            payment_id: payment.payment_id,
            original_payment_id: payment.original_payment_id,
            payer_account_id: payment.payer_account_id,
            merchant_id: match payment.payee {
                Payee::Merchant { merchant_id, .. } => Some(merchant_id),
                Payee::Account { .. } | Payee::OwnWallet => None,
            },
            amount: payment.amount.to_decimal_string(),
            currency: payment.amount.currency(),
            event_time,
            outcome,
            score: score.value,
            reasons: score.reasons().iter().map(|r| Cow::Borrowed(*r)).collect(),
            model_version: self.model_version.clone(),
            velocity,
        });
    }
}
