//! Fraud models: a feature vector in, a score in [0, 1] and reason codes out.
//!
//! Today there is one model, [`RuleModel`], a small weighted rule set over amount and
//! customer velocity. Learned models (logistic regression, tree ensembles trained by
//! `paystream train`) implement the same [`FraudModel`] trait. Models are pure: no IO,
//! no clock.

pub mod boosting;
pub mod logistic;
pub mod metrics;

use serde::{Deserialize, Serialize};

/// Online features of one payment, computed by the features operator. Amounts are
/// integer minor units of the payment's currency.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Features {
    pub amount_minor: i64,
    pub during_weekend: bool,
    pub during_night: bool,
    /// Customer's payments in the 1, 7 and 30 days ending at this payment (inclusive).
    pub customer_count_1d: u32,
    pub customer_count_7d: u32,
    pub customer_count_30d: u32,
    /// Average amount (minor units, rounded down) over the same windows.
    pub customer_average_minor_1d: i64,
    pub customer_average_minor_7d: i64,
    pub customer_average_minor_30d: i64,
}

/// Why a score is high: a stable, machine-readable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    AmountAboveLimit,
    AmountFarAboveCustomerAverage,
    CustomerVelocityHigh,
}

impl ReasonCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasonCode::AmountAboveLimit => "amount_above_limit",
            ReasonCode::AmountFarAboveCustomerAverage => "amount_far_above_customer_average",
            ReasonCode::CustomerVelocityHigh => "customer_velocity_high",
        }
    }
}

/// Reasons of one score, strongest first; at most [`REASONS_MAX`].
pub const REASONS_MAX: usize = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub value: f32,
    pub reasons: Vec<ReasonCode>,
}

pub trait FraudModel: Send + Sync {
    /// Stamped on every decision this model produces.
    fn version(&self) -> &str;
    fn score(&self, features: &Features) -> Score;
}

/// Configuration of the rule model. Points add up; the score is points / 1000, capped at 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleModelConfig {
    /// Amounts strictly above this (minor units) score `amount_limit_points`.
    pub amount_limit_minor: i64,
    pub amount_limit_points: u32,
    /// An amount at least this many times the customer's 30-day average, once the
    /// customer has `history_count_min` payments, scores `average_multiple_points`.
    pub average_multiple: i64,
    pub history_count_min: u32,
    pub average_multiple_points: u32,
    /// More than this many payments by one customer within a day scores `velocity_points`.
    pub velocity_count_1d_max: u32,
    pub velocity_points: u32,
}

impl Default for RuleModelConfig {
    fn default() -> Self {
        RuleModelConfig {
            amount_limit_minor: 220_00,
            amount_limit_points: 900,
            average_multiple: 4,
            history_count_min: 5,
            average_multiple_points: 600,
            velocity_count_1d_max: 10,
            velocity_points: 300,
        }
    }
}

pub struct RuleModel {
    config: RuleModelConfig,
}

pub const RULE_MODEL_VERSION: &str = "rules-v1";
const POINTS_MAX: u32 = 1_000;

impl RuleModel {
    pub fn new(config: RuleModelConfig) -> RuleModel {
        RuleModel { config }
    }
}

impl FraudModel for RuleModel {
    fn version(&self) -> &str {
        RULE_MODEL_VERSION
    }

    fn score(&self, f: &Features) -> Score {
        let c = &self.config;
        // At most three rules: a fixed array, no allocation until the reasons.
        let mut hits: [(u32, Option<ReasonCode>); 3] = [(0, None); 3];
        let mut push = |points: u32, reason: ReasonCode| {
            if let Some(slot) = hits.iter_mut().find(|(_, r)| r.is_none()) {
                *slot = (points, Some(reason));
            }
        };
        if f.amount_minor > c.amount_limit_minor {
            push(c.amount_limit_points, ReasonCode::AmountAboveLimit);
        }
        // The 30-day window includes this payment; judge against the history before it.
        let history = f.customer_count_30d.saturating_sub(1);
        if history >= c.history_count_min {
            let total = i128::from(f.customer_average_minor_30d) * i128::from(f.customer_count_30d);
            let previous_average = (total - i128::from(f.amount_minor)) / i128::from(history);
            if previous_average > 0 && i128::from(f.amount_minor) >= previous_average * i128::from(c.average_multiple) {
                push(c.average_multiple_points, ReasonCode::AmountFarAboveCustomerAverage);
            }
        }
        if f.customer_count_1d > c.velocity_count_1d_max {
            push(c.velocity_points, ReasonCode::CustomerVelocityHigh);
        }
        let points: u32 = hits.iter().map(|(p, _)| p).sum::<u32>().min(POINTS_MAX);
        if points == 0 {
            return Score { value: 0.0, reasons: Vec::new() };
        }
        // Strongest first; stable for equal points.
        let mut reasons: Vec<(u32, ReasonCode)> = hits.iter().filter_map(|(p, r)| r.map(|r| (*p, r))).collect();
        reasons.sort_by(|a, b| b.0.cmp(&a.0));
        Score {
            value: points as f32 / POINTS_MAX as f32,
            reasons: reasons.into_iter().take(REASONS_MAX).map(|(_, r)| r).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(amount: i64, count_30d: u32, average_30d: i64, count_1d: u32) -> Features {
        Features {
            amount_minor: amount,
            customer_count_1d: count_1d,
            customer_count_30d: count_30d,
            customer_average_minor_30d: average_30d,
            ..Features::default()
        }
    }

    #[test]
    fn rules_fire_on_their_conditions() {
        let model = RuleModel::new(RuleModelConfig::default());
        let ordinary = model.score(&features(50_00, 20, 50_00, 2));
        assert_eq!(ordinary.value, 0.0);
        assert!(ordinary.reasons.is_empty());

        let large = model.score(&features(250_00, 1, 250_00, 1));
        assert_eq!(large.reasons, vec![ReasonCode::AmountAboveLimit]);
        assert!((large.value - 0.9).abs() < 1e-6);

        // 10 earlier payments averaging 10.00, then 60.00: the 30-day average including
        // it is (100 + 60) / 11 = 14.54; the earlier average is 10.00; 60 >= 4 × 10.
        let spike = model.score(&features(60_00, 11, 160_00 / 11, 3));
        assert_eq!(spike.reasons, vec![ReasonCode::AmountFarAboveCustomerAverage]);

        let all = model.score(&features(300_00, 11, 40_00, 12));
        assert_eq!(all.value, 1.0);
        assert_eq!(all.reasons.len(), 3);
        assert_eq!(all.reasons[0], ReasonCode::AmountAboveLimit);
    }

    #[test]
    fn too_little_history_is_not_judged() {
        let model = RuleModel::new(RuleModelConfig::default());
        assert!(model.score(&features(60_00, 3, 30_00, 3)).reasons.is_empty());
    }
}

/// A model trained by paystream, of any kind; what a model file holds.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainedModel {
    Logistic(logistic::LogisticModel),
    Boosted(boosting::BoostedTrees),
}

/// Model kinds `TrainedModel::train` accepts.
pub const MODEL_KINDS: [&str; 2] = ["logistic", "gbt"];

impl TrainedModel {
    /// Trains a model of `kind` (see [`MODEL_KINDS`]) with default options.
    pub fn train(
        kind: &str,
        feature_names: &[&str],
        rows: &[Vec<f64>],
        labels: &[bool],
        trained_on: &str,
    ) -> Result<TrainedModel, logistic::ModelError> {
        match kind {
            "logistic" => Ok(TrainedModel::Logistic(logistic::LogisticModel::train(
                feature_names,
                rows,
                labels,
                &logistic::LogisticOptions::default(),
                trained_on,
            )?)),
            "gbt" => Ok(TrainedModel::Boosted(boosting::BoostedTrees::train(
                feature_names,
                rows,
                labels,
                &boosting::BoostingOptions::default(),
                trained_on,
            )?)),
            other => {
                Err(logistic::ModelError::File(format!("unknown model kind {other:?}: use one of {MODEL_KINDS:?}")))
            }
        }
    }

    pub fn version(&self) -> &str {
        match self {
            TrainedModel::Logistic(m) => &m.version,
            TrainedModel::Boosted(m) => &m.version,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            TrainedModel::Logistic(m) => &m.kind,
            TrainedModel::Boosted(m) => &m.kind,
        }
    }

    pub fn training_frauds(&self) -> usize {
        match self {
            TrainedModel::Logistic(m) => m.training_frauds,
            TrainedModel::Boosted(m) => m.training_frauds,
        }
    }

    pub fn score_batch(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, logistic::ModelError> {
        match self {
            TrainedModel::Logistic(m) => m.score_batch(rows),
            TrainedModel::Boosted(m) => m.score_batch(rows),
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            TrainedModel::Logistic(m) => m.to_json(),
            TrainedModel::Boosted(m) => m.to_json(),
        }
    }
}
