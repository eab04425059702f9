//! Payment operators: validate → deduplicate → features → score → decide → ledger →
//! settlement, run per input partition by [`PartitionProcessor`].
//!
//! Invariants:
//! - Operators do no IO and read no clock: outputs are a pure function of (input batch,
//!   the partition's state, event time). The runtime owns reading, writing, commits.
//! - Every state change is a [`StateOp`]. Processing applies each op as it makes it and
//!   hands it to the runtime, which commits the ops (the changelog) atomically with the
//!   outputs and input positions. Restoring applies the same ops through the same code,
//!   so a restored partition equals the live one.
//! - Every input record ends as exactly one of: a decision, a counted retry of an
//!   already decided payment, or a dead letter with its reason.

pub mod dedupe;
pub mod features;
pub mod ledger;
pub mod reference_features;
pub mod settlement;
pub mod state;

use std::sync::Arc;

use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{
    DeadLetter, Decision, LedgerTransaction, Outcome, Payment, RejectReason, Rejection, Settlement,
};
use paystream_models::{FraudModel, RuleModel, RuleModelConfig, Score};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use dedupe::Seen;
use settlement::SettlementEntry;
pub use state::{PartitionState, StateOp};

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("corrupt state bytes ({what}): {source}")]
    CorruptState { what: &'static str, source: postcard::Error },
    #[error("invalid operator configuration: {0}")]
    InvalidConfig(String),
}

/// Configuration of the operator chain. Times are event time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorConfig {
    /// How long a payment id is remembered for deduplication.
    pub dedupe_retention_ms: i64,
    pub settlement_window_ms: i64,
    /// A settlement window closes once the watermark passes its end by this much.
    pub settlement_allowed_lateness_ms: i64,
    /// Scores at or above these decide review / decline.
    pub review_score_min: f32,
    pub decline_score_min: f32,
    /// Fee charged to merchants (and account payees), in basis points of the amount.
    pub fee_basis_points: u32,
    pub fees_account_id: String,
    pub rules: RuleModelConfig,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            dedupe_retention_ms: 7 * paystream_domain::time::MILLIS_PER_DAY,
            settlement_window_ms: paystream_domain::time::MILLIS_PER_DAY,
            settlement_allowed_lateness_ms: 3_600_000,
            review_score_min: 0.5,
            decline_score_min: 0.8,
            fee_basis_points: 120,
            fees_account_id: "fees:paystream".into(),
            rules: RuleModelConfig::default(),
        }
    }
}

impl OperatorConfig {
    pub fn validate(&self) -> Result<(), OperatorError> {
        let fail = |m: &str| Err(OperatorError::InvalidConfig(m.to_string()));
        if self.settlement_window_ms <= 0 || self.dedupe_retention_ms <= 0 || self.settlement_allowed_lateness_ms < 0 {
            return fail("windows and retention must be positive, lateness non-negative");
        }
        if self.fee_basis_points > 10_000 {
            return fail("fee_basis_points must be at most 10000 (100 %)");
        }
        if !(0.0..=1.0).contains(&self.review_score_min) || self.decline_score_min < self.review_score_min {
            return fail("need 0 <= review_score_min <= decline_score_min");
        }
        Ok(())
    }
}

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
}

impl BatchCounters {
    fn count(&mut self, operator: OperatorId) -> &mut RecordCounts {
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
    }
}

/// One input record as the runtime hands it to operators.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    pub offset: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Everything one batch of one partition produced.
#[derive(Default)]
pub struct OutputBatch {
    pub decisions: Vec<Decision>,
    pub ledger: Vec<LedgerTransaction>,
    pub settlements: Vec<Settlement>,
    pub dead_letters: Vec<DeadLetter>,
    /// The state changes of this batch, in order: the changelog.
    pub state_ops: Vec<StateOp>,
    pub counters: BatchCounters,
}

impl OutputBatch {
    pub fn clear(&mut self) {
        self.decisions.clear();
        self.ledger.clear();
        self.settlements.clear();
        self.dead_letters.clear();
        self.state_ops.clear();
        self.counters = BatchCounters::default();
    }
}

/// The operator chain of one input partition and its state.
pub struct PartitionProcessor {
    config: Arc<OperatorConfig>,
    model: Arc<dyn FraudModel>,
    model_version: Arc<str>,
    partition: u32,
    state: PartitionState,
}

pub fn default_model(config: &OperatorConfig) -> Arc<dyn FraudModel> {
    Arc::new(RuleModel::new(config.rules.clone()))
}

impl PartitionProcessor {
    pub fn new(config: Arc<OperatorConfig>, model: Arc<dyn FraudModel>, partition: u32) -> PartitionProcessor {
        let model_version = Arc::from(model.version());
        PartitionProcessor { config, model, model_version, partition, state: PartitionState::default() }
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

    /// Runs the operator chain over one batch of `topic`'s records, in offset order.
    pub fn process_batch(&mut self, topic: &str, records: &[InputRecord<'_>], out: &mut OutputBatch) {
        let watermark_before = self.state.max_event_time_ms;
        let mut max_event_time_ms = watermark_before;
        for record in records {
            if let Some(event_time_ms) = self.process_one(topic, record, out) {
                max_event_time_ms = max_event_time_ms.max(event_time_ms);
            }
        }
        if max_event_time_ms > watermark_before {
            let op = StateOp::Watermark { max_event_time_ms };
            let closed = self.state.apply(&op, &self.config, self.partition).closed_settlements;
            out.counters.count(OperatorId::Settlement).records_out += closed.len() as u64;
            out.settlements.extend(closed);
            out.state_ops.push(op);
        }
    }

    /// Returns the event time of an accepted payment.
    fn process_one(&mut self, topic: &str, record: &InputRecord<'_>, out: &mut OutputBatch) -> Option<i64> {
        let reject = |out: &mut OutputBatch, rejection: Rejection| {
            out.dead_letters.push(DeadLetter::new(
                rejection,
                topic,
                self.partition,
                record.offset,
                record.key,
                record.value,
            ));
        };
        // validate
        out.counters.count(OperatorId::Validate).records_in += 1;
        let payment = match Payment::from_json(record.value) {
            Ok(payment) => payment,
            Err(rejection) => {
                out.counters.count(OperatorId::Validate).records_error += 1;
                reject(out, rejection);
                return None;
            }
        };
        out.counters.count(OperatorId::Validate).records_out += 1;

        // deduplicate
        out.counters.count(OperatorId::Deduplicate).records_in += 1;
        let id_hash = xxhash_rust::xxh3::xxh3_128(payment.payment_id.as_bytes());
        let content_hash = payment.content_hash();
        match self.state.dedupe.check(id_hash, content_hash) {
            Seen::New => {}
            Seen::Retry => {
                out.counters.retries += 1;
                return None;
            }
            Seen::Conflict => {
                out.counters.count(OperatorId::Deduplicate).records_error += 1;
                let detail = format!("payment_id {:?} was seen before with different content", payment.payment_id);
                reject(out, Rejection::new(RejectReason::DuplicatePaymentConflict, detail));
                return None;
            }
        }
        out.counters.count(OperatorId::Deduplicate).records_out += 1;

        // features
        let amount_minor = payment.amount.minor_units();
        out.counters.count(OperatorId::Features).records_in += 1;
        let features =
            self.state.customers.features_including(&payment.payer_account_id, payment.event_time_ms, amount_minor);
        out.counters.count(OperatorId::Features).records_out += 1;

        // score
        out.counters.count(OperatorId::Score).records_in += 1;
        let score = self.model.score(&features);
        out.counters.count(OperatorId::Score).records_out += 1;

        // decide
        out.counters.count(OperatorId::Decide).records_in += 1;
        let outcome = self.decide(&score);
        out.counters.outcomes[outcome as usize] += 1;
        out.counters.count(OperatorId::Decide).records_out += 1;

        // ledger and settlement: only approved payments move money.
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        let mut settlement_entry = None;
        if outcome == Outcome::Approve {
            out.counters.count(OperatorId::Ledger).records_in += 1;
            let (transaction, fee_minor) =
                ledger::post_payment(&payment, &event_time, self.config.fee_basis_points, &self.config.fees_account_id);
            out.ledger.push(transaction);
            out.counters.count(OperatorId::Ledger).records_out += 1;
            if let Some(merchant_id) = payment.merchant_id() {
                out.counters.count(OperatorId::Settlement).records_in += 1;
                settlement_entry = Some(SettlementEntry {
                    merchant_id: merchant_id.to_string(),
                    currency: payment.amount.currency(),
                    gross_minor: amount_minor,
                    fee_minor,
                });
            }
        }

        let op = StateOp::Accepted {
            id_hash: id_hash.to_le_bytes(),
            content_hash: content_hash.to_le_bytes(),
            payer_account_id: payment.payer_account_id.clone(),
            event_time_ms: payment.event_time_ms,
            amount_minor,
            settlement: settlement_entry,
        };
        if self.state.apply(&op, &self.config, self.partition).late_settlement {
            out.counters.late_settlement_payments += 1;
        }
        out.state_ops.push(op);
        out.decisions.push(Decision {
            payment_id: payment.payment_id,
            payer_account_id: payment.payer_account_id,
            merchant_id: match payment.payee {
                paystream_domain::Payee::Merchant { merchant_id, .. } => Some(merchant_id),
                paystream_domain::Payee::Account { .. } => None,
            },
            amount: payment.amount.to_decimal_string(),
            currency: payment.amount.currency(),
            event_time,
            outcome,
            score: score.value,
            reasons: score.reasons.iter().map(|r| std::borrow::Cow::Borrowed(r.as_str())).collect(),
            model_version: self.model_version.clone(),
        });
        Some(payment.event_time_ms)
    }

    fn decide(&self, score: &Score) -> Outcome {
        if score.value >= self.config.decline_score_min {
            Outcome::Decline
        } else if score.value >= self.config.review_score_min {
            Outcome::Review
        } else {
            Outcome::Approve
        }
    }
}
