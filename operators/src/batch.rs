//! What the runtime hands the operators and what it gets back: input records, the
//! terminal index view, and the outputs of one batch.

use paystream_domain::{DeadLetter, Decision, LedgerTransaction, Settlement, TransferLeg};

use crate::counters::BatchCounters;
use crate::features::TerminalIndex;
use crate::settlement::SettlementInput;
use crate::state::StateOp;

/// One input record as the runtime hands it to operators.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    pub offset: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The record's log timestamp in ms (Kafka's, or the embedded log's producer time);
    /// 0 or less: unknown, and the event time is then not bounded by it.
    pub timestamp_ms: i64,
}

/// Everything one batch of one partition produced.
#[derive(Default)]
pub struct OutputBatch {
    pub decisions: Vec<Decision>,
    pub ledger: Vec<LedgerTransaction>,
    pub settlements: Vec<Settlement>,
    pub dead_letters: Vec<DeadLetter>,
    /// Legs of payments to other accounts, for `paystream-transfers` (key: [`TransferLeg::key`]).
    pub transfer_legs: Vec<TransferLeg>,
    /// Settlement entries and marks for `paystream-settlement-entries`, with the
    /// partition each goes to (entries: their merchant's; marks: every partition).
    pub settlement_inputs: Vec<(u32, SettlementInput)>,
    /// The state changes of this batch, in order: the changelog.
    pub state_ops: Vec<StateOp>,
    pub counters: BatchCounters,
}

impl OutputBatch {
    pub fn clear(&mut self) {
        self.decisions.clear();
        self.transfer_legs.clear();
        self.settlement_inputs.clear();
        self.ledger.clear();
        self.settlements.clear();
        self.dead_letters.clear();
        self.state_ops.clear();
        self.counters = BatchCounters::default();
    }
}

/// What the terminal-keyed stage offers a batch: the index of every partition's
/// payments and the labels, and how far in event time it is complete.
#[derive(Clone, Copy)]
pub struct TerminalView<'a> {
    pub index: Option<&'a TerminalIndex>,
    /// The index holds every payment before, and every label reported by, this time.
    pub complete_through_ms: i64,
}

impl TerminalView<'_> {
    /// No terminal index: terminal features are 0; fine for models that do not read them.
    pub const NONE: TerminalView<'static> = TerminalView { index: None, complete_through_ms: i64::MAX };
}
