//! The settlement stage of the processor: the payer side names each posted payment's
//! settlement and sends its entry to the merchant's partition, and marks when its
//! horizon moves; the merchant side applies entries and marks and pays out the windows
//! they close.

use paystream_domain::{Currency, LedgerTransaction, Payment};

use super::partition::PartitionProcessor;
use crate::batch::{InputRecord, OutputBatch};
use crate::counters::OperatorId;
use crate::settlement::{self, EntryKind, SettlementEntry, SettlementInput};
use crate::state::StateOp;

impl PartitionProcessor {
    /// Payer side: places a merchant's entry in its settlement window, names the
    /// settlement in the transaction and sends the entry to the merchant's partition;
    /// nothing for account payees. Changes no state: the window follows from the horizon.
    pub(super) fn settle(
        &mut self,
        payment: &Payment,
        kind: EntryKind,
        amount_minor: i64,
        fee_minor: i64,
        transaction: &mut LedgerTransaction,
        out: &mut OutputBatch,
    ) {
        let Some(merchant_id) = payment.merchant_id() else { return };
        let currency = payment.amount.currency();
        let (placement, window_start_ms) =
            self.state.settlement.place(payment.event_time_ms, self.config.settlement_window_ms);
        let late = placement == settlement::Placement::Late;
        out.counters.late_settlement_payments += u64::from(late);
        transaction.settlement_id = Some(self.settlement_id(merchant_id, currency, window_start_ms));
        let entry = SettlementEntry {
            entry_id: transaction.transaction_id.clone(),
            merchant_id: merchant_id.to_string(),
            currency,
            kind,
            gross_minor: amount_minor,
            fee_minor,
            event_time_ms: payment.event_time_ms,
            window_start_ms,
            late,
            source_partition: self.partition,
        };
        let target = settlement::merchant_partition(merchant_id, self.partitions());
        out.settlement_inputs.push((target, SettlementInput::Entry(entry)));
    }

    /// [`settlement::settlement_id`], formatting the window's time once per window.
    pub(super) fn settlement_id(&mut self, merchant_id: &str, currency: Currency, window_start_ms: i64) -> String {
        let cached =
            self.settlement_suffix.as_ref().is_some_and(|(start, c, _)| *start == window_start_ms && *c == currency);
        if !cached {
            let suffix = settlement::settlement_id_suffix(currency, window_start_ms);
            self.settlement_suffix = Some((window_start_ms, currency, suffix));
        }
        settlement::settlement_id_with_suffix(merchant_id, &self.settlement_suffix.as_ref().expect("just set").2)
    }

    /// After the settlement horizon moved to `horizon`: a mark to every partition, after
    /// every entry this partition wrote for earlier windows.
    pub(super) fn send_marks(&self, horizon: Option<i64>, out: &mut OutputBatch) {
        let Some(open_from_ms) = horizon else { return };
        for target in 0..self.partitions() {
            let mark = SettlementInput::Mark { source_partition: self.partition, open_from_ms };
            out.settlement_inputs.push((target, mark));
        }
    }

    /// For a partition with no payments to process: takes on the settlement horizon of
    /// the other partitions
    /// ([`SettlementState::idle_horizon`](crate::settlement::SettlementState::idle_horizon))
    /// so that it does not hold their windows open, and sends the marks. Nothing if
    /// already there.
    pub fn settlement_idle(&mut self, out: &mut OutputBatch) {
        if let Some(open_from_ms) = self.state.settlement.idle_horizon(self.partition) {
            let applied = self.apply(StateOp::SettlementHorizon { open_from_ms }, out);
            self.send_marks(applied.settlement_horizon_ms, out);
        }
    }

    /// Merchant side: applies records of `paystream-settlement-entries` (this partition's
    /// merchants' entries and every partition's marks, [`settlement::encode_inputs`]), in
    /// offset order: entries count in their windows; a mark may close windows, which are
    /// emitted with their payout transactions. A record paystream did not write (it does
    /// not decode, or holds a negative amount or a mark from an unknown partition) is
    /// dead-lettered whole, nothing of it applied. No deduplication by id: only paystream
    /// writes this topic, each entry in the transaction that posted it, and its position
    /// here commits with the state it changed.
    pub fn process_settlement_inputs(&mut self, topic: &str, records: &[InputRecord<'_>], out: &mut OutputBatch) {
        let mut closed = Vec::new();
        for record in records {
            let inputs = match settlement::read_inputs(record.value, self.partitions()) {
                Ok(inputs) => inputs,
                Err(rejection) => {
                    out.counters.count(OperatorId::Settlement).records_error += 1;
                    out.dead_letters.push(self.dead_letter(rejection, topic, record));
                    continue;
                }
            };
            for input in inputs {
                match input {
                    SettlementInput::Entry(entry) => {
                        out.counters.count(OperatorId::Settlement).records_in += 1;
                        let applied = self.apply(StateOp::SettleEntry { entry: Box::new(entry) }, out);
                        out.counters.misplaced_settlement_entries += u64::from(applied.misplaced_settlement_entry);
                    }
                    SettlementInput::Mark { source_partition, open_from_ms } => {
                        let applied = self.apply(StateOp::SettlementMark { source_partition, open_from_ms }, out);
                        closed.extend(applied.closed_settlements);
                    }
                }
            }
        }
        if closed.is_empty() {
            return;
        }
        out.counters.count(OperatorId::Settlement).records_out += closed.len() as u64;
        out.ledger.extend(settlement::payout_transactions(
            &closed,
            &self.config.settlement_account_id,
            &self.config.bank_account_id,
            self.partition,
        ));
        out.settlements.extend(closed);
    }
}
