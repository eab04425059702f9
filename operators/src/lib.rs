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

// Amounts in minor units are written like 220_00 (= 220.00), not 22_000.
#![allow(clippy::inconsistent_digit_grouping)]

pub mod accounts;
pub mod dedupe;
pub mod ledger;
pub mod reference_features;
pub mod settlement;
pub mod state;

use std::sync::Arc;

use paystream_domain::Currency;
use paystream_domain::time::{MILLIS_PER_DAY, format_rfc3339_ms};
use paystream_domain::{
    DeadLetter, Decision, LedgerTransaction, Outcome, Payment, RejectReason, Rejection, Settlement,
};
use paystream_models::features::FeatureRow;
use paystream_models::{FraudModel, RuleModel, RuleModelConfig, Score};
use reference_features::{TerminalIndex, feature_row, key_hash};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use dedupe::Seen;
use settlement::SettlementEntry;
pub use state::{PartitionState, StateOp};

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("corrupt state bytes ({what}): {source}")]
    CorruptState { what: &'static str, source: postcard::Error },
    #[error(
        "{what} has state format {found}, this paystream reads {expected}: it was written by another version (start from a fresh data directory, or run the version that wrote it)"
    )]
    StateVersion { what: &'static str, found: u16, expected: u16 },
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
    /// Fees charged to payees, in basis points of the amount.
    pub fees: FeeSchedule,
    pub fees_account_id: String,
    pub rules: RuleModelConfig,
    /// The delay d of the terminal features (labels of the last d are not trusted yet);
    /// must equal the delay a loaded model was trained with.
    pub label_delay_ms: i64,
    /// A payment up to this much older than its partition's newest still gets exact
    /// features; older ones are counted (`late_feature_payments`) and decided by
    /// `late_payments`.
    pub feature_allowed_lateness_ms: i64,
    pub late_payments: LatePaymentPolicy,
    /// Partitions of the input topic, when known (the runtime sets it): a payment whose
    /// payer hashes to another partition (Kafka's default partitioner) is dead-lettered
    /// with `wrong_partition`, since its payer's state (dedupe, windows) lives there.
    pub input_partitions: Option<u32>,
}

/// Fee rates in basis points of the amount: the payee merchant's own rate if it has one,
/// else the payment channel's, else the default. A JSON file for `--fee-schedule`:
/// `{"default_basis_points": 120, "channels": {"card_present": 90}, "merchants": {"M7": 50}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSchedule {
    pub default_basis_points: u32,
    #[serde(default)]
    pub channels: std::collections::HashMap<paystream_domain::Channel, u32>,
    #[serde(default)]
    pub merchants: std::collections::HashMap<String, u32>,
}

impl FeeSchedule {
    /// One rate for every payment.
    pub fn flat(basis_points: u32) -> FeeSchedule {
        FeeSchedule { default_basis_points: basis_points, ..FeeSchedule::default() }
    }

    /// The rate of a payment.
    pub fn basis_points(&self, payment: &Payment) -> u32 {
        payment
            .merchant_id()
            .and_then(|merchant| self.merchants.get(merchant))
            .or_else(|| self.channels.get(&payment.channel))
            .copied()
            .unwrap_or(self.default_basis_points)
    }

    /// Every rate in the schedule.
    pub fn rates(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.default_basis_points)
            .chain(self.channels.values().copied())
            .chain(self.merchants.values().copied())
    }
}

/// What happens to a payment later than the allowed lateness (its features may miss
/// events or include later ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePaymentPolicy {
    /// Decided by its score like any other (still counted).
    Score,
    /// At least `review`, with the reason [`LATE_PAYMENT_REASON`] first.
    #[default]
    Review,
}

/// Reason code of a payment sent to review because it was too late for exact features.
pub const LATE_PAYMENT_REASON: &str = "late_event_features_inexact";

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            dedupe_retention_ms: 7 * paystream_domain::time::MILLIS_PER_DAY,
            settlement_window_ms: paystream_domain::time::MILLIS_PER_DAY,
            settlement_allowed_lateness_ms: 3_600_000,
            review_score_min: 0.5,
            decline_score_min: 0.8,
            fees: FeeSchedule::flat(120),
            fees_account_id: "fees:paystream".into(),
            rules: RuleModelConfig::default(),
            label_delay_ms: 7 * MILLIS_PER_DAY,
            feature_allowed_lateness_ms: 3_600_000,
            late_payments: LatePaymentPolicy::default(),
            input_partitions: None,
        }
    }
}

impl OperatorConfig {
    pub fn validate(&self) -> Result<(), OperatorError> {
        let fail = |m: &str| Err(OperatorError::InvalidConfig(m.to_string()));
        if self.settlement_window_ms <= 0
            || self.dedupe_retention_ms <= 0
            || self.settlement_allowed_lateness_ms < 0
            || self.label_delay_ms < 0
            || self.feature_allowed_lateness_ms < 0
        {
            return fail("windows and retention must be positive, lateness non-negative");
        }
        if let Some(rate) = self.fees.rates().find(|rate| *rate > 10_000) {
            return fail(&format!("fee rates are at most 10000 basis points (100 %), not {rate}"));
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
    /// Payments older than their partition's newest by more than the allowed lateness.
    pub late_feature_payments: u64,
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
        self.late_feature_payments += other.late_feature_payments;
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

/// A payment between feature computation and decision.
struct Pending {
    payment: Payment,
    /// Later than the allowed lateness.
    late: bool,
}

/// The operator chain of one input partition and its state.
pub struct PartitionProcessor {
    config: Arc<OperatorConfig>,
    model: Arc<dyn FraudModel>,
    model_version: Arc<str>,
    partition: u32,
    state: PartitionState,
    // Per-batch scratch, kept to reuse allocations.
    pending: Vec<Pending>,
    rows: Vec<FeatureRow>,
    scores: Vec<Score>,
    /// Newest event time among the payments of this batch featurized so far.
    batch_newest_ms: i64,
    /// The last settlement window named in a ledger transaction: its start and the id's
    /// `/<currency>/<start>/p<partition>` suffix (most payments fall in the same window).
    settlement_suffix: Option<(i64, Currency, String)>,
}

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
            pending: Vec::new(),
            rows: Vec::new(),
            scores: Vec::new(),
            batch_newest_ms: i64::MIN,
            settlement_suffix: None,
        }
    }

    /// [`settlement::settlement_id`], formatting the window's time once per window.
    fn settlement_id(&mut self, merchant_id: &str, currency: Currency, window_start_ms: i64) -> String {
        let partition = self.partition;
        let cached =
            self.settlement_suffix.as_ref().is_some_and(|(start, c, _)| *start == window_start_ms && *c == currency);
        if !cached {
            let suffix = settlement::settlement_id_suffix(currency, window_start_ms, partition);
            self.settlement_suffix = Some((window_start_ms, currency, suffix));
        }
        settlement::settlement_id_with_suffix(merchant_id, &self.settlement_suffix.as_ref().expect("just set").2)
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

    fn apply(&mut self, op: StateOp, out: &mut OutputBatch) -> state::Applied {
        let applied = self.state.apply(&op, &self.config, self.partition);
        out.state_ops.push(op);
        applied
    }

    /// Runs the operator chain over `topic`'s records, in offset order, and returns how
    /// many it consumed: all of them, unless the model reads terminal features and a
    /// payment's event time is past `terminals.complete_through_ms` — processing stops
    /// before that payment, which the caller offers again once the index has caught up.
    ///
    /// Three passes: validate, deduplicate and compute features payment by payment (each
    /// sees the state changes of the ones before it); score the whole batch at once;
    /// then decide, post and settle in order.
    pub fn process_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) -> usize {
        let watermark_before = self.state.max_event_time_ms;
        let wait_for_terminals = self.model.uses_terminal_features();
        let mut consumed = records.len();
        self.pending.clear();
        self.rows.clear();
        self.batch_newest_ms = watermark_before;
        for (i, record) in records.iter().enumerate() {
            let parsed = Payment::from_json(record.value);
            if wait_for_terminals && parsed.as_ref().is_ok_and(|p| p.event_time_ms > terminals.complete_through_ms) {
                consumed = i;
                break;
            }
            self.validate_and_featurize(topic, record, parsed, terminals, out);
        }

        // score
        let model = self.model.clone();
        self.scores.clear();
        out.counters.count(OperatorId::Score).records_in += self.rows.len() as u64;
        model.score_batch(&self.rows, &mut self.scores);
        out.counters.count(OperatorId::Score).records_out += self.scores.len() as u64;

        let mut max_event_time_ms = watermark_before;
        let pending = std::mem::take(&mut self.pending);
        for (index, item) in pending.into_iter().enumerate() {
            max_event_time_ms = max_event_time_ms.max(item.payment.event_time_ms);
            let mut score = self.scores[index];
            let review = item.late && self.config.late_payments == LatePaymentPolicy::Review;
            if review {
                // The model's score stays; the late reason comes first.
                let mut late = Score::new(score.value);
                late.push_reason(LATE_PAYMENT_REASON);
                for reason in score.reasons() {
                    late.push_reason(reason);
                }
                score = late;
            }
            self.decide_and_post(item.payment, &score, review, out);
        }
        if max_event_time_ms > watermark_before {
            let applied = self.apply(StateOp::Watermark { max_event_time_ms }, out);
            out.counters.count(OperatorId::Settlement).records_out += applied.closed_settlements.len() as u64;
            out.settlements.extend(applied.closed_settlements);
        }
        consumed
    }

    /// Validate, deduplicate, features: a new payment ends in `self.pending` with its
    /// feature row in `self.rows`; anything else is counted or dead-lettered here.
    fn validate_and_featurize(
        &mut self,
        topic: &str,
        record: &InputRecord<'_>,
        parsed: Result<Payment, Rejection>,
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) {
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
        let payment = match parsed {
            Ok(payment) => payment,
            Err(rejection) => {
                out.counters.count(OperatorId::Validate).records_error += 1;
                reject(out, rejection);
                return;
            }
        };
        if let Some(partitions) = self.config.input_partitions {
            let home =
                paystream_domain::partitioner::partition_for_key(payment.payer_account_id.as_bytes(), partitions);
            if home != self.partition {
                out.counters.count(OperatorId::Validate).records_error += 1;
                let detail = format!(
                    "payer {:?} belongs to partition {home} of {partitions}, not {}: produce with the payer as key \
                     and Kafka's default (murmur2) partitioner",
                    payment.payer_account_id, self.partition
                );
                reject(out, Rejection::new(RejectReason::WrongPartition, detail));
                return;
            }
        }
        out.counters.count(OperatorId::Validate).records_out += 1;

        // deduplicate
        out.counters.count(OperatorId::Deduplicate).records_in += 1;
        let id_hash = xxhash_rust::xxh3::xxh3_128(payment.payment_id.as_bytes());
        let content_hash = payment.content_hash();
        match self.state.dedupe.check(id_hash, content_hash) {
            Seen::New => {}
            Seen::Retry => {
                out.counters.retries += 1;
                return;
            }
            Seen::Conflict => {
                out.counters.count(OperatorId::Deduplicate).records_error += 1;
                let detail = format!("payment_id {:?} was seen before with different content", payment.payment_id);
                reject(out, Rejection::new(RejectReason::DuplicatePaymentConflict, detail));
                return;
            }
        }
        out.counters.count(OperatorId::Deduplicate).records_out += 1;

        // features
        out.counters.count(OperatorId::Features).records_in += 1;
        let amount_minor = payment.amount.minor_units();
        let t = payment.event_time_ms;
        // Late relative to everything before it, earlier payments of this batch included.
        let late = t < self.batch_newest_ms.saturating_sub(self.config.feature_allowed_lateness_ms);
        self.batch_newest_ms = self.batch_newest_ms.max(t);
        out.counters.late_feature_payments += u64::from(late);
        let customer_hash = key_hash(&payment.payer_account_id);
        // Payments without a terminal (account transfers, online) share one "no terminal" key.
        let terminal_hash = key_hash(payment.terminal_id().unwrap_or(""));
        let keys = (customer_hash, terminal_hash);
        let row =
            feature_row(&self.state.customers, terminals.index, keys, t, amount_minor, self.config.label_delay_ms);
        self.apply(
            StateOp::Seen {
                id_hash: id_hash.to_le_bytes(),
                content_hash: content_hash.to_le_bytes(),
                customer_hash,
                terminal_hash,
                event_time_ms: t,
                amount_minor,
            },
            out,
        );
        out.counters.count(OperatorId::Features).records_out += 1;
        self.rows.push(row);
        self.pending.push(Pending { payment, late });
    }

    /// Decide, ledger, settlement, decision record.
    /// `at_least_review`: the payment may not be approved (too late for exact features).
    fn decide_and_post(&mut self, payment: Payment, score: &Score, at_least_review: bool, out: &mut OutputBatch) {
        out.counters.count(OperatorId::Decide).records_in += 1;
        let outcome = match self.decide(score) {
            Outcome::Approve if at_least_review => Outcome::Review,
            outcome => outcome,
        };
        out.counters.outcomes[outcome as usize] += 1;
        out.counters.count(OperatorId::Decide).records_out += 1;

        // Only approved payments move money.
        let amount_minor = payment.amount.minor_units();
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        if outcome == Outcome::Approve {
            out.counters.count(OperatorId::Ledger).records_in += 1;
            let (mut transaction, fee_minor) = ledger::post_payment(
                &payment,
                &event_time,
                self.config.fees.basis_points(&payment),
                &self.config.fees_account_id,
            );
            if let Some(merchant_id) = payment.merchant_id() {
                out.counters.count(OperatorId::Settlement).records_in += 1;
                let entry = SettlementEntry {
                    merchant_id: merchant_id.to_string(),
                    currency: payment.amount.currency(),
                    gross_minor: amount_minor,
                    fee_minor,
                };
                let op = StateOp::Settle { event_time_ms: payment.event_time_ms, entry };
                let applied = self.apply(op, out);
                if applied.late_settlement {
                    out.counters.late_settlement_payments += 1;
                }
                transaction.settlement_id = applied
                    .settlement_window_start_ms
                    .map(|start| self.settlement_id(merchant_id, payment.amount.currency(), start));
            }
            out.ledger.push(transaction);
            out.counters.count(OperatorId::Ledger).records_out += 1;
        }
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
            reasons: score.reasons().iter().map(|r| std::borrow::Cow::Borrowed(*r)).collect(),
            model_version: self.model_version.clone(),
        });
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
