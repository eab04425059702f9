//! Transfer legs from `paystream-transfers` (this partition's accounts are their
//! targets): validated, deduplicated like payments, applied to the target account.
//!
//! The credit and return sides of a payment to another account (the protocol and its
//! invariant: `ledger/transfers.rs`). A leg's id is remembered by a `SeenId` op, so a leg
//! delivered twice is applied once. Partition state follows wallets only: a leg into a
//! wallet is a transfer `clearing:<currency>` → wallet on the partition's accounts; a
//! return into external funding is a posting alone.

use paystream_domain::{LegKind, TransferLeg};

use super::partition::PartitionProcessor;
use crate::batch::{InputRecord, OutputBatch};
use crate::dedupe::{DedupeKey, deduplicate};
use crate::ledger::accounts::{Transfer, TransferKind};
use crate::ledger::{self, Funding};
use crate::state::StateOp;
use crate::validate::validate_transfer_leg;

impl PartitionProcessor {
    /// Applies transfer legs from `paystream-transfers` (this partition's accounts are
    /// their targets), in offset order: each once (deduplicated by leg id), a credit into
    /// the payee's wallet — or, if the wallet refuses it (another currency), a return leg
    /// back to the payer — and a return into the payer's funding. Unreadable records are
    /// dead-lettered. Never waits: legs need no features.
    pub fn process_transfer_legs(&mut self, topic: &str, records: &[InputRecord<'_>], out: &mut OutputBatch) {
        for record in records {
            let (leg, event_time_ms) = match validate_transfer_leg(record.value) {
                Ok(leg) => leg,
                Err(rejection) => {
                    out.dead_letters.push(self.dead_letter(rejection, topic, record));
                    continue;
                }
            };
            let key = DedupeKey::of_transfer_leg(&leg.leg_id, record.value);
            let what = || format!("transfer leg {:?}", leg.leg_id);
            match deduplicate(&self.state.dedupe, key, &mut out.counters.retries, what) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(rejection) => {
                    out.dead_letters.push(self.dead_letter(rejection, topic, record));
                    continue;
                }
            }
            self.apply(StateOp::seen_id(key, event_time_ms), out);
            self.apply_transfer_leg(leg, event_time_ms, out);
        }
    }

    /// A credit into the payee's wallet — or, refused, a return leg back to the payer —
    /// or a return into the payer's funding.
    pub(super) fn apply_transfer_leg(&mut self, leg: TransferLeg, event_time_ms: i64, out: &mut OutputBatch) {
        let currency = leg.currency;
        let target = ledger::leg_target(&leg);
        // Partition state follows wallets only; external funding takes the posting alone.
        if target.is_wallet() {
            self.open_accounts(&target.owner_account_id, Funding::Wallet, currency, target.open_wallet, out);
            let transfer = Transfer {
                id: leg.leg_id.clone(),
                kind: TransferKind::Single { debit: ledger::clearing_account(currency), credit: target.account_id },
                amount_minor: leg.amount_minor,
                currency,
                time_ms: event_time_ms,
            };
            if let Err(reason) = self.apply_transfer(transfer, out) {
                if leg.kind == LegKind::Credit {
                    // The payee's wallet cannot take it: back to the payer.
                    out.transfer_legs.push(TransferLeg {
                        leg_id: format!("{}/return", leg.payment_id),
                        kind: LegKind::Return,
                        reason: Some(reason.to_string()),
                        ..leg
                    });
                    return;
                }
                // A return into the payer's own wallet, in the currency it was paid from,
                // cannot be refused; were it to be, the money stays in clearing, visibly.
                out.counters.ledger_decline(reason);
                return;
            }
        }
        match leg.kind {
            LegKind::Credit => out.counters.transfer_credits += 1,
            LegKind::Return => out.counters.transfer_returns += 1,
        }
        out.ledger.push(ledger::post_transfer_leg(&leg));
    }
}
