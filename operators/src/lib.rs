//! Payment operators: validate → deduplicate → features → score → decide → ledger →
//! settlement, run per input partition by [`PartitionProcessor`]. Payments and
//! authorizations go through every operator; captures, voids, refunds, chargebacks and
//! top-ups skip features and scoring and are decided by the ledger alone.
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
pub mod hashed_table;
pub mod ledger;
pub mod reference_features;
pub mod settlement;
pub mod state;

use std::sync::Arc;

use paystream_domain::Currency;
use paystream_domain::time::{MILLIS_PER_DAY, format_rfc3339_ms};
use paystream_domain::{
    DeadLetter, Decision, LedgerTransaction, LegKind, Outcome, Payee, Payment, PaymentKind, RejectReason, Rejection,
    Settlement, TransferLeg,
};
use paystream_models::features::FeatureRow;
use paystream_models::{FraudModel, RuleModel, RuleModelConfig, Score};
use reference_features::{TerminalFeatures, TerminalIndex, feature_row, key_hash};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use accounts::{Transfer, TransferKind};
use dedupe::Seen;
use ledger::{Funding, decline};
use settlement::{EntryKind, SettlementEntry, SettlementInput};
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
    /// How long an approved payment can be refunded or charged back (its record is kept).
    #[serde(default = "default_refund_window_ms")]
    pub refund_window_ms: i64,
    /// An authorization not captured or voided this long after its event time expires.
    #[serde(default = "default_authorization_timeout_ms")]
    pub authorization_timeout_ms: i64,
    /// How far below zero a wallet may go (0: never), unless `wallet_overdrafts` names it.
    #[serde(default)]
    pub wallet_overdraft_minor: i64,
    /// Per payer account, how far below zero its wallet may go (a credit line), in minor
    /// units of the wallet's currency. A change takes effect at the wallet's next
    /// movement (logged as a `SetOverdraft` op).
    #[serde(default)]
    pub wallet_overdrafts: std::collections::BTreeMap<String, i64>,
    /// Closed settlements are paid out merchant → this account → `bank_account_id`.
    #[serde(default = "default_settlement_account_id")]
    pub settlement_account_id: String,
    #[serde(default = "default_bank_account_id")]
    pub bank_account_id: String,
    /// Shared velocity features and their rules (needs a feature store in the runtime).
    #[serde(default)]
    pub velocity: VelocityConfig,
}

/// Velocity features: per merchant and per device, the payments (and their amount) in
/// the hour up to each payment, counted across every partition by a shared feature
/// store (embedded or Redis) — see [`PartitionProcessor::begin_batch`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VelocityConfig {
    /// Ask the runtime's feature store for velocity (decisions carry it).
    pub enabled: bool,
    /// A payment whose device made at least this many payments in the hour (it
    /// included) is decided at least `review`, reason [`DEVICE_VELOCITY_REASON`] first.
    pub device_tx_1h_review_min: Option<u64>,
    /// Likewise for the merchant's payments in the hour, reason [`MERCHANT_VELOCITY_REASON`].
    pub merchant_tx_1h_review_min: Option<u64>,
}

/// The velocity window (the feature store's `VELOCITY_BUCKETS` buckets of
/// `VELOCITY_BUCKET_MS`, the last one holding the payment).
pub const VELOCITY_WINDOW_MS: i64 = 3_600_000;
pub const VELOCITY_BUCKET_MS: i64 = 5 * 60_000;
pub const VELOCITY_BUCKETS: u32 = (VELOCITY_WINDOW_MS / VELOCITY_BUCKET_MS) as u32;

pub const DEVICE_VELOCITY_REASON: &str = "device_velocity_1h";
pub const MERCHANT_VELOCITY_REASON: &str = "merchant_velocity_1h";

/// One count the feature store makes for velocity: `entity` is `merchant:<id>` or
/// `device:<id>`, counted once per `event_id` (the payment id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VelocityEvent {
    pub entity: String,
    pub event_id: String,
    pub event_time_ms: i64,
    pub amount_minor: i64,
}

/// What the feature store answers for one [`VelocityEvent`]: the window's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VelocityTotals {
    pub count: u64,
    pub amount_minor: i64,
}

fn default_refund_window_ms() -> i64 {
    30 * MILLIS_PER_DAY
}

fn default_authorization_timeout_ms() -> i64 {
    7 * MILLIS_PER_DAY
}

fn default_settlement_account_id() -> String {
    "settlement:paystream".into()
}

fn default_bank_account_id() -> String {
    "bank:paystream".into()
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
            refund_window_ms: default_refund_window_ms(),
            authorization_timeout_ms: default_authorization_timeout_ms(),
            wallet_overdraft_minor: 0,
            wallet_overdrafts: Default::default(),
            settlement_account_id: default_settlement_account_id(),
            bank_account_id: default_bank_account_id(),
            velocity: VelocityConfig::default(),
        }
    }
}

impl OperatorConfig {
    /// How far below zero `payer_account_id`'s wallet may go.
    pub fn wallet_overdraft_for(&self, payer_account_id: &str) -> i64 {
        self.wallet_overdrafts.get(payer_account_id).copied().unwrap_or(self.wallet_overdraft_minor)
    }

    pub fn validate(&self) -> Result<(), OperatorError> {
        let fail = |m: &str| Err(OperatorError::InvalidConfig(m.to_string()));
        if self.settlement_window_ms <= 0
            || self.dedupe_retention_ms <= 0
            || self.settlement_allowed_lateness_ms < 0
            || self.label_delay_ms < 0
            || self.feature_allowed_lateness_ms < 0
            || self.refund_window_ms <= 0
            || self.authorization_timeout_ms <= 0
        {
            return fail("windows, retention and timeouts must be positive, lateness non-negative");
        }
        if self.wallet_overdraft_minor < 0 {
            return fail("the wallet overdraft limit must not be negative");
        }
        if let Some((account, limit)) = self.wallet_overdrafts.iter().find(|(_, limit)| **limit < 0) {
            return fail(&format!("the overdraft limit of {account:?} must not be negative, not {limit}"));
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
    /// Approved payments and other events the ledger refused (insufficient funds, expired
    /// authorization, …): declined with the reason.
    pub ledger_declines: u64,
    pub holds_expired: u64,
    /// Transfer legs applied on this partition: credits to payees, and returns.
    pub transfer_credits: u64,
    pub transfer_returns: u64,
    /// Settlement entries that arrived for a window already closed on their merchant's
    /// partition (never, unless the settlement configuration changed between runs).
    pub misplaced_settlement_entries: u64,
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
        self.ledger_declines += other.ledger_declines;
        self.holds_expired += other.holds_expired;
        self.transfer_credits += other.transfer_credits;
        self.transfer_returns += other.transfer_returns;
        self.misplaced_settlement_entries += other.misplaced_settlement_entries;
    }
}

/// One input record as the runtime hands it to operators.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    pub offset: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The (customer, terminal) keys of a payment's features. Payments without a terminal
/// (account transfers, online) share one "no terminal" key.
fn payment_keys(payment: &Payment) -> (u64, u64) {
    (key_hash(&payment.payer_account_id), terminal_key(payment))
}

fn terminal_key(payment: &Payment) -> u64 {
    key_hash(payment.terminal_id().unwrap_or(""))
}

/// What the terminal index holds of a payment, as [`reference_features::TerminalIndex::add_payments`]
/// takes it (payment hash, terminal hash, event time); `None` for captures, voids,
/// refunds and top-ups: terminal features count payments and authorizations, as the
/// payer's windows do.
pub fn terminal_index_entry(payment: &Payment) -> Option<(u64, u64, i64)> {
    payment
        .kind
        .is_scored()
        .then(|| (reference_features::payment_hash(&payment.payment_id), terminal_key(payment), payment.event_time_ms))
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

/// A new event between deduplication and decision.
struct Pending {
    payment: Payment,
    /// Its `Seen` (scored kinds) or `SeenId` op: applied, logged when the event is
    /// decided (the decision adds the approval), so the changelog keeps arrival order.
    seen: StateOp,
    /// For scored kinds: its feature row and score.
    scored: Option<usize>,
    /// Later than the allowed lateness.
    late: bool,
    /// Its merchant's and device's positions in `velocity_events`.
    velocity: [Option<usize>; 2],
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
    /// The (customer, terminal) keys of the batch being begun (for hints).
    batch_keys: Vec<(u64, u64)>,
    /// The terminal features of the batch being begun, by record (none without an index).
    terminal_features: Vec<TerminalFeatures>,
    scores: Vec<Score>,
    /// Newest event time among the payments of this batch featurized so far.
    batch_newest_ms: i64,
    /// The watermark when the batch began.
    batch_watermark_before_ms: i64,
    /// The batch's counts for the feature store, in order (velocity enabled only).
    velocity_events: Vec<VelocityEvent>,
    /// The last settlement window named in a ledger transaction: its start and the id's
    /// `/<currency>/<start>` suffix (most payments fall in the same window).
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
            batch_keys: Vec::new(),
            terminal_features: Vec::new(),
            scores: Vec::new(),
            batch_newest_ms: i64::MIN,
            batch_watermark_before_ms: i64::MIN,
            velocity_events: Vec::new(),
            settlement_suffix: None,
        }
    }

    /// [`settlement::settlement_id`], formatting the window's time once per window.
    fn settlement_id(&mut self, merchant_id: &str, currency: Currency, window_start_ms: i64) -> String {
        let cached =
            self.settlement_suffix.as_ref().is_some_and(|(start, c, _)| *start == window_start_ms && *c == currency);
        if !cached {
            let suffix = settlement::settlement_id_suffix(currency, window_start_ms);
            self.settlement_suffix = Some((window_start_ms, currency, suffix));
        }
        settlement::settlement_id_with_suffix(merchant_id, &self.settlement_suffix.as_ref().expect("just set").2)
    }

    /// A dead letter for `record` of this partition's `topic`.
    fn dead_letter(&self, rejection: Rejection, topic: &str, record: &InputRecord<'_>) -> DeadLetter {
        DeadLetter::new(rejection, topic, self.partition, record.offset, record.key, record.value)
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
    /// No velocity features: [`PartitionProcessor::begin_batch`] and
    /// [`PartitionProcessor::finish_batch`] with a feature store in between give them.
    pub fn process_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) -> usize {
        let consumed = self.begin_batch(topic, records, terminals, out);
        self.finish_batch(None, out);
        consumed
    }

    /// The first half of [`PartitionProcessor::process_batch`]: validate, deduplicate and
    /// compute features payment by payment (each sees the state changes of the ones
    /// before it). With velocity enabled, [`PartitionProcessor::velocity_events`] then
    /// lists what the feature store must count; the runtime does that IO and hands the
    /// totals to [`PartitionProcessor::finish_batch`], which must follow before any other
    /// call.
    pub fn begin_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) -> usize {
        let mut parsed: Vec<_> = records.iter().map(|r| Some(Payment::from_json(r.value))).collect();
        self.begin_parsed_batch(topic, records, &mut parsed, terminals, out)
    }

    /// [`PartitionProcessor::begin_batch`] over records the caller parsed already
    /// (`parsed[i]` is `Payment::from_json(records[i].value)`, e.g. parsed once to index
    /// them for terminal features). It takes the payments it consumes out of `parsed`
    /// (leaving `None`); the rest stay for the next try.
    pub fn begin_parsed_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        parsed: &mut [Option<Result<Payment, Rejection>>],
        terminals: TerminalView<'_>,
        out: &mut OutputBatch,
    ) -> usize {
        let ready = self.read_terminal_features(records, parsed, terminals);
        self.begin_read_batch(topic, records, parsed, ready, out)
    }

    /// The first step of [`PartitionProcessor::begin_parsed_batch`], and the only one that
    /// reads the terminal index, so a caller sharing the index holds its lock for this step
    /// alone: finds the payments' keys and, with an index, their terminal features, up to
    /// the first payment past `terminals.complete_through_ms` if the model reads terminal
    /// features. Returns how many records [`PartitionProcessor::begin_read_batch`] may
    /// then consume, which must follow with the same records before any other call.
    pub fn read_terminal_features(
        &mut self,
        records: &[InputRecord<'_>],
        parsed: &mut [Option<Result<Payment, Rejection>>],
        terminals: TerminalView<'_>,
    ) -> usize {
        assert_eq!(records.len(), parsed.len(), "one parse per record");
        for (record, parsed) in records.iter().zip(parsed.iter_mut()) {
            parsed.get_or_insert_with(|| Payment::from_json(record.value));
        }
        let payments = || parsed.iter().map(|p| p.as_ref().and_then(|p| p.as_ref().ok()));
        // The payments are known ahead: their state is hinted before it is read.
        self.batch_keys.clear();
        self.batch_keys.extend(payments().map(|p| p.map_or((0, 0), payment_keys)));
        let past_bound = |p: Option<&Payment>| p.is_some_and(|p| p.event_time_ms > terminals.complete_through_ms);
        let ready = match self.model.uses_terminal_features() {
            true => payments().position(past_bound).unwrap_or(records.len()),
            false => records.len(),
        };
        self.terminal_features.clear();
        if let Some(index) = terminals.index {
            let delay_ms = self.config.label_delay_ms;
            for (i, payment) in payments().take(ready).enumerate() {
                reference_features::prefetch_terminals_ahead(index, &self.batch_keys, i);
                let features = payment.map(|p| index.features(self.batch_keys[i].1, p.event_time_ms, delay_ms));
                self.terminal_features.push(features.unwrap_or_default());
            }
        }
        ready
    }

    /// The rest of [`PartitionProcessor::begin_parsed_batch`], after
    /// [`PartitionProcessor::read_terminal_features`] over the same records returned
    /// `ready`: validates, deduplicates and featurizes the first `ready` records.
    pub fn begin_read_batch(
        &mut self,
        topic: &str,
        records: &[InputRecord<'_>],
        parsed: &mut [Option<Result<Payment, Rejection>>],
        ready: usize,
        out: &mut OutputBatch,
    ) -> usize {
        assert_eq!(self.batch_keys.len(), records.len(), "read_terminal_features read these records");
        assert!(ready <= records.len(), "at most every record is ready");
        let watermark_before = self.state.max_event_time_ms;
        self.pending.clear();
        self.rows.clear();
        self.velocity_events.clear();
        self.batch_newest_ms = watermark_before;
        self.batch_watermark_before_ms = watermark_before;
        let keys = std::mem::take(&mut self.batch_keys);
        for (i, (record, parsed)) in records.iter().zip(parsed.iter_mut()).take(ready).enumerate() {
            let payment = parsed.take().expect("read_terminal_features parsed every record");
            reference_features::prefetch_customers_ahead(&self.state.customers, &keys, i);
            let terminal = self.terminal_features.get(i).copied();
            self.validate_and_featurize(topic, record, payment, keys[i], terminal, out);
        }
        self.batch_keys = keys;
        ready
    }

    /// The counts the feature store must make for the batch begun (in order).
    pub fn velocity_events(&self) -> &[VelocityEvent] {
        &self.velocity_events
    }

    /// The second half of [`PartitionProcessor::process_batch`]: score the whole batch at
    /// once, then decide, post and settle in order. `velocity[i]` answers
    /// `velocity_events()[i]`; `None` (no feature store) leaves decisions without velocity.
    pub fn finish_batch(&mut self, velocity: Option<&[VelocityTotals]>, out: &mut OutputBatch) {
        assert!(
            velocity.is_none_or(|v| v.len() == self.velocity_events.len()),
            "one velocity answer per velocity event"
        );
        let watermark_before = self.batch_watermark_before_ms;
        // score
        let model = self.model.clone();
        self.scores.clear();
        out.counters.count(OperatorId::Score).records_in += self.rows.len() as u64;
        model.score_batch(&self.rows, &mut self.scores);
        out.counters.count(OperatorId::Score).records_out += self.scores.len() as u64;

        let mut max_event_time_ms = watermark_before;
        // Drained, not consumed: the next batch reuses its allocation (2,048 entries of a
        // few hundred bytes, grown from empty every batch before).
        let mut pending = std::mem::take(&mut self.pending);
        for item in pending.drain(..) {
            max_event_time_ms = max_event_time_ms.max(item.payment.event_time_ms);
            let Some(index) = item.scored else {
                out.state_ops.push(item.seen);
                self.apply_ledger_event(item.payment, out);
                continue;
            };
            let mut score = self.scores[index];
            let velocity = velocity.map(|totals| velocity_of(&item.velocity, totals));
            let mut review = false;
            if let Some(reason) = velocity.and_then(|v| self.velocity_reason(&v)) {
                score = with_first_reason(reason, &score);
                review = true;
            }
            if item.late && self.config.late_payments == LatePaymentPolicy::Review {
                // The model's score stays; the late reason comes first.
                score = with_first_reason(LATE_PAYMENT_REASON, &score);
                review = true;
            }
            self.decide_and_post(item.payment, item.seen, &score, review, velocity, out);
        }
        self.pending = pending;
        if max_event_time_ms > watermark_before {
            let applied = self.apply(StateOp::Watermark { max_event_time_ms }, out);
            out.counters.holds_expired += applied.expired_holds.len() as u64;
            self.send_marks(applied.settlement_horizon_ms, out);
        }
    }

    /// Partitions of the input (and so of the settlement-entries topic).
    fn partitions(&self) -> u32 {
        self.config.input_partitions.unwrap_or(1)
    }

    /// After the settlement horizon moved to `horizon`: a mark to every partition, after
    /// every entry this partition wrote for earlier windows.
    fn send_marks(&self, horizon: Option<i64>, out: &mut OutputBatch) {
        let Some(open_from_ms) = horizon else { return };
        for target in 0..self.partitions() {
            let mark = SettlementInput::Mark { source_partition: self.partition, open_from_ms };
            out.settlement_inputs.push((target, mark));
        }
    }

    /// For a partition with no payments to process: takes on the settlement horizon of
    /// the other partitions ([`settlement::SettlementState::idle_horizon`]) so that it
    /// does not hold their windows open, and sends the marks. Nothing if already there.
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
            let inputs = match self.settlement_inputs(record.value) {
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

    /// The inputs of one settlement record, or why it is not one paystream wrote.
    fn settlement_inputs(&self, bytes: &[u8]) -> Result<Vec<SettlementInput>, Rejection> {
        let inputs = settlement::decode_inputs(bytes)
            .map_err(|why| Rejection::new(RejectReason::UnsupportedSchema, format!("settlement inputs: {why}")))?;
        for input in &inputs {
            match input {
                SettlementInput::Entry(entry) if entry.gross_minor < 0 || entry.fee_minor < 0 => {
                    let detail = format!("settlement entry {}: negative amount", entry.entry_id);
                    return Err(Rejection::new(RejectReason::NonPositiveAmount, detail));
                }
                SettlementInput::Mark { source_partition, .. } if *source_partition >= self.partitions() => {
                    let detail = format!(
                        "settlement mark from partition {source_partition}; the input has {}",
                        self.partitions()
                    );
                    return Err(Rejection::new(RejectReason::WrongPartition, detail));
                }
                SettlementInput::Entry(_) | SettlementInput::Mark { .. } => {}
            }
        }
        Ok(inputs)
    }

    /// The velocity rule a payment trips, if any (device first).
    fn velocity_reason(&self, velocity: &paystream_domain::Velocity) -> Option<&'static str> {
        let limits = &self.config.velocity;
        let over = |count: Option<u64>, min: Option<u64>| count.zip(min).is_some_and(|(count, min)| count >= min);
        if over(velocity.device_tx_1h, limits.device_tx_1h_review_min) {
            Some(DEVICE_VELOCITY_REASON)
        } else if over(velocity.merchant_tx_1h, limits.merchant_tx_1h_review_min) {
            Some(MERCHANT_VELOCITY_REASON)
        } else {
            None
        }
    }

    /// Validate, deduplicate, features: a new payment ends in `self.pending` with its
    /// feature row in `self.rows`; anything else is counted or dead-lettered here. `keys`:
    /// the payment's (customer, terminal) keys ([`payment_keys`]).
    fn validate_and_featurize(
        &mut self,
        topic: &str,
        record: &InputRecord<'_>,
        parsed: Result<Payment, Rejection>,
        keys: (u64, u64),
        terminal: Option<TerminalFeatures>,
        out: &mut OutputBatch,
    ) {
        let reject = |out: &mut OutputBatch, rejection: Rejection| {
            out.dead_letters.push(self.dead_letter(rejection, topic, record))
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
        if !payment.kind.is_scored() {
            let event_time_ms = payment.event_time_ms;
            let seen = StateOp::SeenId {
                id_hash: id_hash.to_le_bytes(),
                content_hash: content_hash.to_le_bytes(),
                event_time_ms,
            };
            self.state.apply(&seen, &self.config, self.partition);
            self.pending.push(Pending { payment, seen, scored: None, late: false, velocity: [None; 2] });
            return;
        }

        // features
        out.counters.count(OperatorId::Features).records_in += 1;
        let amount_minor = payment.amount.minor_units();
        let t = payment.event_time_ms;
        // Late relative to everything before it, earlier payments of this batch included.
        let late = t < self.batch_newest_ms.saturating_sub(self.config.feature_allowed_lateness_ms);
        self.batch_newest_ms = self.batch_newest_ms.max(t);
        out.counters.late_feature_payments += u64::from(late);
        let (customer_hash, terminal_hash) = keys;
        let mut row = feature_row(&self.state.customers, None, keys, t, amount_minor, self.config.label_delay_ms);
        if let Some(terminal) = terminal {
            terminal.write_to(&mut row);
        }
        let seen = StateOp::Seen {
            id_hash: id_hash.to_le_bytes(),
            content_hash: content_hash.to_le_bytes(),
            customer_hash,
            terminal_hash,
            event_time_ms: t,
            amount_minor,
            approval: None,
        };
        // Applied now (the approval, if any, when decided); logged at decision time.
        self.state.apply(&seen, &self.config, self.partition);
        out.counters.count(OperatorId::Features).records_out += 1;
        let velocity = if self.config.velocity.enabled { self.velocity_entities(&payment) } else { [None; 2] };
        self.pending.push(Pending { payment, seen, scored: Some(self.rows.len()), late, velocity });
        self.rows.push(row);
    }

    /// Queues the velocity counts of a new scored payment; returns their positions.
    fn velocity_entities(&mut self, payment: &Payment) -> [Option<usize>; 2] {
        let merchant = match &payment.payee {
            Payee::Merchant { merchant_id, .. } => Some(format!("merchant:{merchant_id}")),
            Payee::Account { .. } | Payee::OwnWallet => None,
        };
        let device = payment.device_id.as_ref().map(|device_id| format!("device:{device_id}"));
        [merchant, device].map(|entity| {
            entity.map(|entity| {
                self.velocity_events.push(VelocityEvent {
                    entity,
                    event_id: payment.payment_id.clone(),
                    event_time_ms: payment.event_time_ms,
                    amount_minor: payment.amount.minor_units(),
                });
                self.velocity_events.len() - 1
            })
        })
    }

    /// Decide, ledger, settlement, decision record, for a scored payment or authorization.
    /// `at_least_review`: the payment may not be approved (too late for exact features,
    /// or a velocity rule).
    fn decide_and_post(
        &mut self,
        payment: Payment,
        mut seen: StateOp,
        score: &Score,
        at_least_review: bool,
        velocity: Option<paystream_domain::Velocity>,
        out: &mut OutputBatch,
    ) {
        out.counters.count(OperatorId::Decide).records_in += 1;
        let mut outcome = match self.decide(score) {
            Outcome::Approve if at_least_review => Outcome::Review,
            outcome => outcome,
        };
        out.counters.count(OperatorId::Decide).records_out += 1;

        // Only approved payments move money (and may still be refused by the ledger).
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        let mut score = *score;
        if outcome == Outcome::Approve {
            match self.post_new_money(&payment, &event_time, out) {
                Ok(approved) => {
                    if let StateOp::Seen { id_hash, amount_minor, event_time_ms, approval, .. } = &mut seen {
                        self.state.approve(*id_hash, &approved, *amount_minor, *event_time_ms);
                        *approval = Some(approved);
                    }
                }
                Err(reason) => {
                    out.counters.count(OperatorId::Ledger).records_error += 1;
                    out.counters.ledger_declines += 1;
                    outcome = Outcome::Decline;
                    score = with_first_reason(reason, &score);
                }
            }
        }
        // Logged now, with the approval: see `StateOp::Seen`.
        out.state_ops.push(seen);
        out.counters.outcomes[outcome as usize] += 1;
        self.push_decision(payment, event_time, outcome, &score, velocity, out);
    }

    /// The ledger side of an approved payment or authorization: a wallet payment or any
    /// authorization goes through the accounts (limits, holds); a payment is posted and
    /// settled. Returns what the caller's `Seen` op remembers of it for refunds and
    /// captures.
    fn post_new_money(
        &mut self,
        payment: &Payment,
        event_time: &str,
        out: &mut OutputBatch,
    ) -> Result<ledger::Approval, &'static str> {
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
        Ok(ledger::Approval {
            kind: payment.kind,
            funding,
            fee_basis_points,
            parties_hash: ledger::parties_hash(payment),
        })
    }

    /// Opens what a transfer from `funding` needs (see [`ledger::LedgerState::missing_accounts`])
    /// and returns the funding's state account.
    fn open_accounts(
        &mut self,
        payer_account_id: &str,
        funding: Funding,
        currency: Currency,
        open_wallet: bool,
        out: &mut OutputBatch,
    ) -> String {
        let overdraft = (funding == Funding::Wallet).then(|| self.config.wallet_overdraft_for(payer_account_id));
        for mut account in self.state.ledger.missing_accounts(payer_account_id, funding, currency, open_wallet) {
            if account.kind == accounts::AccountKind::CustomerWallet {
                account.overdraft_limit_minor = overdraft;
            }
            self.apply(StateOp::OpenAccount { account: Box::new(account) }, out);
        }
        let id = funding.state_account(payer_account_id, currency);
        // An open wallet takes on its configured limit if that changed since it opened.
        let stale = |account: &accounts::Account| account.overdraft_limit_minor != overdraft;
        if overdraft.is_some() && self.state.ledger.accounts().get(&id).is_some_and(stale) {
            self.apply(StateOp::SetOverdraft { account_id: id.clone(), limit_minor: overdraft }, out);
        }
        id
    }

    /// Logs and applies the transfer the event `payment` makes (its id, currency and time).
    fn transfer(
        &mut self,
        payment: &Payment,
        kind: TransferKind,
        amount_minor: i64,
        out: &mut OutputBatch,
    ) -> Result<(), &'static str> {
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
    fn apply_transfer(&mut self, transfer: Transfer, out: &mut OutputBatch) -> Result<(), &'static str> {
        match self.apply(StateOp::Transfer { transfer: Box::new(transfer) }, out).transfer {
            Some(Err(error)) => Err(ledger::refusal_reason(&error)),
            _ => Ok(()),
        }
    }

    /// Posts a payment or capture of `amount_minor` and adds it to its settlement window.
    fn post_and_settle(
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
        if let Payee::Account { account_id } = &payment.payee {
            out.transfer_legs.push(TransferLeg {
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
            });
        }
    }

    /// Applies transfer legs from `paystream-transfers` (this partition's accounts are
    /// their targets), in offset order: each once (deduplicated by leg id), a credit into
    /// the payee's wallet — or, if the wallet refuses it (another currency), a return leg
    /// back to the payer — and a return into the payer's funding. Unreadable records are
    /// dead-lettered. Never waits: legs need no features.
    pub fn process_transfer_legs(&mut self, topic: &str, records: &[InputRecord<'_>], out: &mut OutputBatch) {
        for record in records {
            let reject = |out: &mut OutputBatch, reason: RejectReason, detail: String| {
                out.dead_letters.push(self.dead_letter(Rejection::new(reason, detail), topic, record));
            };
            let leg: TransferLeg = match serde_json::from_slice(record.value) {
                Ok(leg) => leg,
                Err(error) => {
                    reject(out, RejectReason::MalformedJson, format!("transfer leg: {error}"));
                    continue;
                }
            };
            if leg.amount_minor <= 0 {
                reject(out, RejectReason::NonPositiveAmount, format!("transfer leg {}: amount", leg.leg_id));
                continue;
            }
            // Its id is remembered by event time like a payment's: without one it could
            // be forgotten at once and applied twice.
            let event_time_ms = match paystream_domain::time::parse_rfc3339_ms(&leg.event_time) {
                Ok(time) => time,
                Err(error) => {
                    reject(
                        out,
                        RejectReason::InvalidTimestamp,
                        format!("transfer leg {}: event_time: {error}", leg.leg_id),
                    );
                    continue;
                }
            };
            let id_hash = xxhash_rust::xxh3::xxh3_128(format!("leg:{}", leg.leg_id).as_bytes());
            let content_hash = xxhash_rust::xxh3::xxh3_64(record.value);
            match self.state.dedupe.check(id_hash, content_hash) {
                Seen::New => {}
                Seen::Retry => {
                    out.counters.retries += 1;
                    continue;
                }
                Seen::Conflict => {
                    let detail = format!("transfer leg {:?} was seen before with different content", leg.leg_id);
                    reject(out, RejectReason::DuplicatePaymentConflict, detail);
                    continue;
                }
            }
            let seen = StateOp::SeenId {
                id_hash: id_hash.to_le_bytes(),
                content_hash: content_hash.to_le_bytes(),
                event_time_ms,
            };
            self.apply(seen, out);
            self.apply_transfer_leg(leg, event_time_ms, out);
        }
    }

    fn apply_transfer_leg(&mut self, leg: TransferLeg, event_time_ms: i64, out: &mut OutputBatch) {
        let currency = leg.currency;
        let clearing = ledger::clearing_account(currency);
        let (owner, open_wallet, target) = match leg.kind {
            LegKind::Credit => (leg.payee_account_id.clone(), true, ledger::wallet_account(&leg.payee_account_id)),
            LegKind::Return => (leg.payer_account_id.clone(), false, leg.payer_funding_account.clone()),
        };
        // Partition state follows wallets only; external funding takes the posting alone.
        if target.starts_with("wallet:") {
            self.open_accounts(&owner, Funding::Wallet, currency, open_wallet, out);
            let transfer = Transfer {
                id: leg.leg_id.clone(),
                kind: TransferKind::Single { debit: clearing, credit: target },
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
                out.counters.ledger_declines += 1;
                return;
            }
        }
        match leg.kind {
            LegKind::Credit => out.counters.transfer_credits += 1,
            LegKind::Return => out.counters.transfer_returns += 1,
        }
        out.ledger.push(ledger::post_transfer_leg(&leg));
    }

    /// Payer side: places a merchant's entry in its settlement window, names the
    /// settlement in the transaction and sends the entry to the merchant's partition;
    /// nothing for account payees. Changes no state: the window follows from the horizon.
    fn settle(
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

    /// A capture, void, refund, chargeback or top-up: approved if the ledger accepts it,
    /// else declined with the reason.
    fn apply_ledger_event(&mut self, payment: Payment, out: &mut OutputBatch) {
        out.counters.count(OperatorId::Ledger).records_in += 1;
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        let (outcome, score) = match self.ledger_event(&payment, &event_time, out) {
            Ok(()) => {
                out.counters.count(OperatorId::Ledger).records_out += 1;
                (Outcome::Approve, Score::new(0.0))
            }
            Err(reason) => {
                out.counters.count(OperatorId::Ledger).records_error += 1;
                out.counters.ledger_declines += 1;
                (Outcome::Decline, with_first_reason(reason, &Score::new(0.0)))
            }
        };
        out.counters.outcomes[outcome as usize] += 1;
        self.push_decision(payment, event_time, outcome, &score, None, out);
    }

    fn ledger_event(&mut self, payment: &Payment, event_time: &str, out: &mut OutputBatch) -> Result<(), &'static str> {
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
        if matches!(payment.payee, Payee::Account { .. })
            && matches!(payment.kind, PaymentKind::Refund | PaymentKind::Chargeback)
        {
            // A payment to another account is in that account's wallet, on its partition:
            // returning it is a new payment from that account.
            return Err(decline::TRANSFER_NOT_REFUNDABLE);
        }
        let original_hash = xxhash_rust::xxh3::xxh3_128(original_id.as_bytes());
        let record = self.state.ledger.record(original_hash).ok_or(decline::ORIGINAL_NOT_FOUND)?.clone();
        if record.parties_hash != ledger::parties_hash(payment) {
            return Err(decline::ORIGINAL_MISMATCH);
        }
        match payment.kind {
            PaymentKind::Capture | PaymentKind::Void if record.kind != PaymentKind::Authorize => {
                Err(decline::ORIGINAL_NOT_AN_AUTHORIZATION)
            }
            PaymentKind::Capture => {
                let kind = TransferKind::Post { pending_id: original_id.to_string() };
                self.transfer(payment, kind, amount_minor, out)?;
                self.apply(StateOp::Captured { id_hash: original_hash.to_le_bytes(), amount_minor }, out);
                self.post_and_settle(payment, record.funding, amount_minor, record.fee_basis_points, event_time, out);
                Ok(())
            }
            PaymentKind::Void => {
                if amount_minor != record.amount_minor {
                    return Err(decline::AMOUNT_MISMATCH);
                }
                let kind = TransferKind::Void { pending_id: original_id.to_string() };
                self.transfer(payment, kind, 0, out)
            }
            PaymentKind::Refund | PaymentKind::Chargeback => {
                if amount_minor > record.captured_minor - record.returned_minor {
                    return Err(decline::EXCEEDS_CAPTURED_AMOUNT);
                }
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

    fn push_decision(
        &mut self,
        payment: Payment,
        event_time: String,
        outcome: Outcome,
        score: &Score,
        velocity: Option<paystream_domain::Velocity>,
        out: &mut OutputBatch,
    ) {
        out.decisions.push(Decision {
            kind: payment.kind,
            payment_id: payment.payment_id,
            original_payment_id: payment.original_payment_id,
            payer_account_id: payment.payer_account_id,
            merchant_id: match payment.payee {
                paystream_domain::Payee::Merchant { merchant_id, .. } => Some(merchant_id),
                paystream_domain::Payee::Account { .. } | paystream_domain::Payee::OwnWallet => None,
            },
            amount: payment.amount.to_decimal_string(),
            currency: payment.amount.currency(),
            event_time,
            outcome,
            score: score.value,
            reasons: score.reasons().iter().map(|r| std::borrow::Cow::Borrowed(*r)).collect(),
            model_version: self.model_version.clone(),
            velocity,
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

/// A payment's velocity features from the feature store's answers.
fn velocity_of(positions: &[Option<usize>; 2], totals: &[VelocityTotals]) -> paystream_domain::Velocity {
    let [merchant, device] = positions.map(|position| position.map(|i| totals[i]));
    paystream_domain::Velocity {
        merchant_tx_1h: merchant.map(|t| t.count),
        merchant_amount_1h_minor: merchant.map(|t| t.amount_minor),
        device_tx_1h: device.map(|t| t.count),
        device_amount_1h_minor: device.map(|t| t.amount_minor),
    }
}

/// `score` with `reason` first (the model's reasons after it, as many as fit).
fn with_first_reason(reason: &'static str, score: &Score) -> Score {
    let mut first = Score::new(score.value);
    first.push_reason(reason);
    for reason in score.reasons() {
        first.push_reason(reason);
    }
    first
}
