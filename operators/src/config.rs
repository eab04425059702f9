//! Configuration of the operator chain ([`OperatorConfig`]) and its parts: fees, late
//! payments, velocity rules. Times are event time, in milliseconds.

use std::collections::{BTreeMap, HashMap};

use paystream_domain::{Channel, Payment};
use paystream_models::RuleModelConfig;
use serde::{Deserialize, Serialize};

use crate::error::OperatorError;
use crate::limits::FEE_RATE_BASIS_POINTS_MAX;
use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR, MILLIS_PER_MINUTE};

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
    pub wallet_overdrafts: BTreeMap<String, i64>,
    /// Closed settlements are paid out merchant → this account → `bank_account_id`.
    #[serde(default = "default_settlement_account_id")]
    pub settlement_account_id: String,
    #[serde(default = "default_bank_account_id")]
    pub bank_account_id: String,
    /// Shared velocity features and their rules (needs a feature store in the runtime).
    #[serde(default)]
    pub velocity: VelocityConfig,
    /// How far a payment's event time may be ahead of its record's log timestamp (the
    /// producers' clock skew); beyond it the payment is dead-lettered
    /// `event_time_in_future` and moves nothing.
    #[serde(default = "default_max_event_time_skew_ms")]
    pub max_event_time_skew_ms: i64,
}

/// Velocity features: per merchant and per device, the payments (and their amount) in
/// the hour up to each payment, counted across every partition by a shared feature
/// store (embedded or Redis) — see [`PaymentBatch`](crate::PaymentBatch).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VelocityConfig {
    /// Ask the runtime's feature store for velocity (decisions carry it).
    pub enabled: bool,
    /// A payment whose device made at least this many payments in the hour (it
    /// included) is decided at least `review`, reason
    /// [`DEVICE_VELOCITY_REASON`](crate::DEVICE_VELOCITY_REASON) first.
    pub device_tx_1h_review_min: Option<u64>,
    /// Likewise for the merchant's payments in the hour, reason
    /// [`MERCHANT_VELOCITY_REASON`](crate::MERCHANT_VELOCITY_REASON).
    pub merchant_tx_1h_review_min: Option<u64>,
}

fn default_refund_window_ms() -> i64 {
    30 * MILLIS_PER_DAY
}

fn default_max_event_time_skew_ms() -> i64 {
    5 * MILLIS_PER_MINUTE
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
    pub channels: HashMap<Channel, u32>,
    #[serde(default)]
    pub merchants: HashMap<String, u32>,
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
    /// At least `review`, with the reason [`LATE_PAYMENT_REASON`](crate::decide::LATE_PAYMENT_REASON) first.
    #[default]
    Review,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            dedupe_retention_ms: 7 * MILLIS_PER_DAY,
            settlement_window_ms: MILLIS_PER_DAY,
            settlement_allowed_lateness_ms: MILLIS_PER_HOUR,
            review_score_min: 0.5,
            decline_score_min: 0.8,
            fees: FeeSchedule::flat(120),
            fees_account_id: "fees:paystream".into(),
            rules: RuleModelConfig::default(),
            label_delay_ms: 7 * MILLIS_PER_DAY,
            feature_allowed_lateness_ms: MILLIS_PER_HOUR,
            late_payments: LatePaymentPolicy::default(),
            input_partitions: None,
            refund_window_ms: default_refund_window_ms(),
            authorization_timeout_ms: default_authorization_timeout_ms(),
            wallet_overdraft_minor: 0,
            wallet_overdrafts: Default::default(),
            settlement_account_id: default_settlement_account_id(),
            bank_account_id: default_bank_account_id(),
            velocity: VelocityConfig::default(),
            max_event_time_skew_ms: default_max_event_time_skew_ms(),
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
            || self.max_event_time_skew_ms < 0
        {
            return fail("windows, retention and timeouts must be positive, lateness and skew non-negative");
        }
        if self.wallet_overdraft_minor < 0 {
            return fail("the wallet overdraft limit must not be negative");
        }
        if let Some((account, limit)) = self.wallet_overdrafts.iter().find(|(_, limit)| **limit < 0) {
            return fail(&format!("the overdraft limit of {account:?} must not be negative, not {limit}"));
        }
        if let Some(rate) = self.fees.rates().find(|rate| *rate > FEE_RATE_BASIS_POINTS_MAX) {
            return fail(&format!(
                "fee rates are at most {FEE_RATE_BASIS_POINTS_MAX} basis points (100 %), not {rate}"
            ));
        }
        if !(0.0..=1.0).contains(&self.review_score_min) || self.decline_score_min < self.review_score_min {
            return fail("need 0 <= review_score_min <= decline_score_min");
        }
        Ok(())
    }
}
