//! Per-batch counters of the operators: records in, out and in error per operator, and
//! the events worth a metric. The runtime adds them to its metrics once per batch.

use crate::ledger::DeclineReason;

/// The operators, in chain order; names are the `operator` label of metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorId {
    Validate,
    Deduplicate,
    Features,
    Score,
    Decide,
    Ledger,
    Settlement,
}

impl OperatorId {
    pub const ALL: [OperatorId; 7] = [
        OperatorId::Validate,
        OperatorId::Deduplicate,
        OperatorId::Features,
        OperatorId::Score,
        OperatorId::Decide,
        OperatorId::Ledger,
        OperatorId::Settlement,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OperatorId::Validate => "validate",
            OperatorId::Deduplicate => "deduplicate",
            OperatorId::Features => "features",
            OperatorId::Score => "score",
            OperatorId::Decide => "decide",
            OperatorId::Ledger => "ledger",
            OperatorId::Settlement => "settlement",
        }
    }
}

/// Records in, out and in error for one operator over one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub records_in: u64,
    pub records_out: u64,
    pub records_error: u64,
}

/// Per-batch counters; the runtime adds them to its metrics once per batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchCounters {
    pub operators: [RecordCounts; 7],
    pub retries: u64,
    pub outcomes: [u64; 3],
    pub late_settlement_payments: u64,
    /// Payments older than their partition's newest by more than the allowed lateness.
    pub late_feature_payments: u64,
    /// Approved payments and other events the ledger refused (insufficient funds, expired
    /// authorization, …): declined with the reason; by [`DeclineReason`] (its `as usize`).
    pub ledger_declines: [u64; DeclineReason::ALL.len()],
    pub holds_expired: u64,
    /// Transfer legs applied on this partition: credits to payees, and returns.
    pub transfer_credits: u64,
    pub transfer_returns: u64,
    /// Settlement entries that arrived for a window already closed on their merchant's
    /// partition (never, unless the settlement configuration changed between runs).
    pub misplaced_settlement_entries: u64,
}

impl BatchCounters {
    pub(crate) fn ledger_decline(&mut self, reason: DeclineReason) {
        self.ledger_declines[reason as usize] += 1;
    }

    /// Every ledger decline, whatever the reason.
    pub fn ledger_declines_total(&self) -> u64 {
        self.ledger_declines.iter().sum()
    }

    pub(crate) fn count(&mut self, operator: OperatorId) -> &mut RecordCounts {
        &mut self.operators[operator as usize]
    }

    pub fn add(&mut self, other: &BatchCounters) {
        for (mine, theirs) in self.operators.iter_mut().zip(&other.operators) {
            mine.records_in += theirs.records_in;
            mine.records_out += theirs.records_out;
            mine.records_error += theirs.records_error;
        }
        self.retries += other.retries;
        for (mine, theirs) in self.outcomes.iter_mut().zip(&other.outcomes) {
            *mine += theirs;
        }
        self.late_settlement_payments += other.late_settlement_payments;
        self.late_feature_payments += other.late_feature_payments;
        for (mine, theirs) in self.ledger_declines.iter_mut().zip(&other.ledger_declines) {
            *mine += theirs;
        }
        self.holds_expired += other.holds_expired;
        self.transfer_credits += other.transfer_credits;
        self.transfer_returns += other.transfer_returns;
        self.misplaced_settlement_entries += other.misplaced_settlement_entries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_are_counted_under_their_own_reason() {
        let mut counters = BatchCounters::default();
        for (index, reason) in DeclineReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "DeclineReason::ALL is in declaration order");
            counters.ledger_decline(reason);
        }
        counters.ledger_decline(DeclineReason::InsufficientFunds);
        assert_eq!(counters.ledger_declines[DeclineReason::InsufficientFunds as usize], 2);
        assert_eq!(counters.ledger_declines_total(), DeclineReason::ALL.len() as u64 + 1);
    }
}
