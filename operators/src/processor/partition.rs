//! The processor of one partition: its state, model and configuration, and what every
//! stage of it shares (applying an op, dead-lettering a record).

use std::sync::Arc;

use paystream_domain::{Currency, DeadLetter, Payment, Rejection};
use paystream_models::{FraudModel, RuleModel};

use super::scratch::PaymentScratch;
use crate::batch::{InputRecord, OutputBatch, TerminalView};
use crate::config::OperatorConfig;
use crate::error::OperatorError;
use crate::state::{self, Applied, PartitionState, StateOp};

/// The operator chain of one input partition and its state.
pub struct PartitionProcessor {
    pub(super) config: Arc<OperatorConfig>,
    pub(super) model: Arc<dyn FraudModel>,
    pub(super) model_version: Arc<str>,
    pub(super) partition: u32,
    pub(super) state: PartitionState,
    /// Per-batch scratch of the payments path, kept to reuse allocations.
    pub(super) scratch: PaymentScratch,
    /// The last settlement window named in a ledger transaction: its start and the id's
    /// `/<currency>/<start>` suffix (most payments fall in the same window).
    pub(super) settlement_suffix: Option<(i64, Currency, String)>,
}

/// The rule model of `config`, for running without a trained model.
pub fn default_model(config: &OperatorConfig) -> Arc<dyn FraudModel> {
    Arc::new(RuleModel::new(config.rules.clone()))
}

impl PartitionProcessor {
    pub fn new(config: Arc<OperatorConfig>, model: Arc<dyn FraudModel>, partition: u32) -> PartitionProcessor {
        let model_version = Arc::from(model.version());
        PartitionProcessor {
            config,
            model,
            model_version,
            partition,
            state: PartitionState::default(),
            scratch: PaymentScratch::default(),
            settlement_suffix: None,
        }
    }

    /// Runs the operator chain over `topic`'s records, in offset order, and returns how
    /// many it consumed: all of them, unless the model reads terminal features and a
    /// payment's event time is past `terminals.complete_through_ms` — processing stops
    /// before that payment, which the caller offers again once the index has caught up.
    /// No velocity features: the steps of [`PartitionProcessor::plan_payments`] with a
    /// feature store between
    /// [`TerminalFeaturesRead::featurize`](crate::TerminalFeaturesRead::featurize) and
    /// [`FeaturizedBatch::finish`](crate::FeaturizedBatch::finish) give them.
    pub fn process_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) -> usize {
        let mut parsed: Vec<_> = records.iter().map(|r| Some(Payment::from_json(r.value))).collect();
        let batch = self.plan_payments(topic, records, &mut parsed);
        batch.read_terminal_features(terminals).featurize(out).finish(None, out)
    }

    /// Scores the following batches with `model` (hot reload); decisions carry its version.
    pub fn set_model(&mut self, model: Arc<dyn FraudModel>) {
        self.model_version = Arc::from(model.version());
        self.model = model;
    }

    pub fn model(&self) -> &Arc<dyn FraudModel> {
        &self.model
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    /// Replaces the state by a snapshot taken with [`PartitionProcessor::snapshot`].
    pub fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(), OperatorError> {
        self.state = PartitionState::from_snapshot_bytes(bytes)?;
        Ok(())
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.state.to_snapshot_bytes()
    }

    /// Applies one committed changelog record (the ops of one batch), discarding the
    /// outputs they would produce: those were committed with them.
    pub fn apply_changelog(&mut self, bytes: &[u8]) -> Result<usize, OperatorError> {
        let ops = state::decode_ops(bytes)?;
        for op in &ops {
            self.state.apply(op, &self.config, self.partition);
        }
        Ok(ops.len())
    }

    /// Applies the ops of one committed batch (a changelog record not encoded), as
    /// [`PartitionProcessor::apply_changelog`] does.
    pub fn apply_ops(&mut self, ops: &[StateOp]) {
        for op in ops {
            self.state.apply(op, &self.config, self.partition);
        }
    }

    /// Applies `op` and logs it in the batch's changelog.
    pub(super) fn apply(&mut self, op: StateOp, out: &mut OutputBatch) -> Applied {
        let applied = self.state.apply(&op, &self.config, self.partition);
        out.state_ops.push(op);
        applied
    }

    /// A dead letter for `record` of this partition's `topic`.
    pub(super) fn dead_letter(&self, rejection: Rejection, topic: &str, record: &InputRecord<'_>) -> DeadLetter {
        DeadLetter::new(rejection, topic, self.partition, record.offset, record.key, record.value)
    }

    /// Partitions of the input (and so of the settlement-entries topic).
    pub(super) fn partitions(&self) -> u32 {
        self.config.input_partitions.unwrap_or(1)
    }
}
