//! Fraud models: feature vectors in (see [`features`]), a score in [0, 1] and reason
//! codes out.
//!
//! [`RuleModel`] (`rules-v1`) is a small weighted rule set over amount and customer
//! velocity; [`TrainedModel`]s (logistic regression on linfa, or paystream's gradient-
//! boosted trees) are trained by `paystream train` and loaded from model files as a
//! [`LoadedModel`]. Both implement [`FraudModel`], which scores a whole batch at once.
//! Models are pure: no IO, no clock.
//!
//! Every model reads the same feature row ([`features`]), computed by the feature
//! operators (`paystream-operators`, `features`) for training, backtests and the live
//! pipeline alike. `paystream train` and `paystream backtest` (`cli/src/backtest.rs`)
//! replay a data set through them, train a [`TrainedModel`] and evaluate it with
//! [`metrics`] (ROC AUC, average precision, Card Precision@k); measured quality and
//! timings: benches/README.md.
//!
//! Model files are versioned JSON recording the feature names, the scaling
//! ([`logistic`]) or the trees ([`boosting`]), a description of the training data and the
//! label delay d the terminal features were computed with (the pipeline refuses a model
//! trained with another d). A file is checked when loaded, and refused with the reason if
//! it could crash a worker or score NaN: trees whose walk could loop or read past the
//! row, a feature paystream does not compute or one listed twice, no feature at all, a
//! zero scale.
//!
//! [`LoadedModel`] locates the model's features in the row and scores a batch in chunks
//! of [`SCORE_CHUNK_ROWS`] rows (one ndarray matrix each, small enough to stay in L1 while
//! every tree passes over it); trees go through [`boosting::CompiledTrees`] (complete
//! trees in heap order, walked branch-free, several rows at once where the CPU allows;
//! trees too deep for it are walked node by node). Each score is explained: its reasons
//! are the up to [`REASONS_MAX`] features with the largest positive contribution
//! (logistic: coefficient × standardized value; trees: Saabas attribution along each
//! path). `rules-v1` reads the same row and gives rule codes as reasons.
//!
//! The pipeline holds the model through a handle it reloads when the model file changes
//! (`pipeline/src/connectors/model_file.rs`); every decision carries the version that
//! scored it.

// Amounts in minor units are written like 220_00 (= 220.00), not 22_000.
#![allow(clippy::inconsistent_digit_grouping)]

pub mod boosting;
pub mod features;
pub mod logistic;
pub mod metrics;

use features::{FEATURE_NAMES, FeatureRow, index};
use serde::{Deserialize, Serialize};

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

/// A score and its reasons: rule codes for rules, the names of the features that pushed
/// the score up the most for learned models. Fixed size: no allocation per payment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    pub value: f32,
    reasons: [&'static str; REASONS_MAX],
    reason_count: u8,
}

impl Score {
    pub fn new(value: f32) -> Score {
        Score { value, ..Score::default() }
    }

    /// Strongest first.
    pub fn reasons(&self) -> &[&'static str] {
        &self.reasons[..usize::from(self.reason_count)]
    }

    /// Adds a reason unless [`REASONS_MAX`] are there; call strongest first.
    pub fn push_reason(&mut self, reason: &'static str) {
        if usize::from(self.reason_count) < REASONS_MAX {
            self.reasons[usize::from(self.reason_count)] = reason;
            self.reason_count += 1;
        }
    }
}

pub trait FraudModel: Send + Sync {
    /// Stamped on every decision this model produces.
    fn version(&self) -> &str;
    /// Whether the model reads terminal-keyed features (see
    /// [`features::is_terminal_feature`]): the pipeline then waits until those are
    /// complete for a payment's event time before scoring it.
    fn uses_terminal_features(&self) -> bool;
    /// Scores every row (in [`FEATURE_NAMES`] order), appending one score per row.
    fn score_batch(&self, rows: &[FeatureRow], scores: &mut Vec<Score>);
}

/// Configuration of the rule model. Points add up; the score is points / 1000, capped at 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleModelConfig {
    /// Amounts strictly above this (minor units) score `amount_limit_points`.
    pub amount_limit_minor: i64,
    pub amount_limit_points: u32,
    /// An amount at least this many times the customer's average of the previous 30
    /// days, once the customer has `history_count_min` payments in them, scores
    /// `average_multiple_points`.
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

    pub fn score(&self, f: &FeatureRow) -> Score {
        let c = &self.config;
        // At most three rules: a fixed array, no allocation.
        let mut hits: [(u32, Option<ReasonCode>); 3] = [(0, None); 3];
        let mut push = |points: u32, reason: ReasonCode| {
            if let Some(slot) = hits.iter_mut().find(|(_, r)| r.is_none()) {
                *slot = (points, Some(reason));
            }
        };
        // TX_AMOUNT is minor units / 100, so this comparison is exact for any realistic amount.
        let amount_minor = (f[index::TX_AMOUNT] * 100.0).round() as i64;
        if amount_minor > c.amount_limit_minor {
            push(c.amount_limit_points, ReasonCode::AmountAboveLimit);
        }
        // The 30-day window includes this payment; judge against the history before it.
        let history = f[index::CUSTOMER_NB_TX_30DAY] - 1.0;
        if history >= f64::from(c.history_count_min)
            && f[index::AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO] >= c.average_multiple as f64
        {
            push(c.average_multiple_points, ReasonCode::AmountFarAboveCustomerAverage);
        }
        if f[index::CUSTOMER_NB_TX_1DAY] > f64::from(c.velocity_count_1d_max) {
            push(c.velocity_points, ReasonCode::CustomerVelocityHigh);
        }
        let points: u32 = hits.iter().map(|(p, _)| p).sum::<u32>().min(POINTS_MAX);
        if points == 0 {
            return Score::new(0.0);
        }
        // Strongest first; stable for equal points.
        hits.sort_by_key(|hit| std::cmp::Reverse(hit.0));
        let mut score = Score::new(points as f32 / POINTS_MAX as f32);
        for reason in hits.iter().filter_map(|(_, r)| *r) {
            score.push_reason(reason.as_str());
        }
        score
    }
}

impl FraudModel for RuleModel {
    fn version(&self) -> &str {
        RULE_MODEL_VERSION
    }

    fn uses_terminal_features(&self) -> bool {
        false
    }

    fn score_batch(&self, rows: &[FeatureRow], scores: &mut Vec<Score>) {
        scores.extend(rows.iter().map(|row| self.score(row)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(amount_minor: i64, count_30d: u32, previous_average_minor: i64, count_1d: u32) -> FeatureRow {
        let mut row = [0.0; features::FEATURE_COUNT];
        row[index::TX_AMOUNT] = amount_minor as f64 / 100.0;
        row[index::CUSTOMER_NB_TX_30DAY] = f64::from(count_30d);
        row[index::CUSTOMER_NB_TX_1DAY] = f64::from(count_1d);
        row[index::AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO] =
            if previous_average_minor == 0 { 1.0 } else { amount_minor as f64 / previous_average_minor as f64 };
        row
    }

    #[test]
    fn rules_fire_on_their_conditions() {
        let model = RuleModel::new(RuleModelConfig::default());
        let ordinary = model.score(&features(50_00, 20, 50_00, 2));
        assert_eq!(ordinary.value, 0.0);
        assert!(ordinary.reasons().is_empty());

        let large = model.score(&features(250_00, 1, 0, 1));
        assert_eq!(large.reasons(), ["amount_above_limit"]);
        assert!((large.value - 0.9).abs() < 1e-6);
        // The limit is strict and exact at the cent.
        assert!(model.score(&features(220_00, 1, 0, 1)).reasons().is_empty());
        assert_eq!(model.score(&features(220_01, 1, 0, 1)).reasons(), ["amount_above_limit"]);

        // 10 earlier payments averaging 10.00, then 40.00: exactly 4 times the average.
        let spike = model.score(&features(40_00, 11, 10_00, 3));
        assert_eq!(spike.reasons(), ["amount_far_above_customer_average"]);

        let all = model.score(&features(300_00, 11, 40_00, 12));
        assert_eq!(all.value, 1.0);
        assert_eq!(
            all.reasons(),
            ["amount_above_limit", "amount_far_above_customer_average", "customer_velocity_high"]
        );
    }

    #[test]
    fn too_little_history_is_not_judged() {
        let model = RuleModel::new(RuleModelConfig::default());
        assert!(model.score(&features(60_00, 3, 10_00, 3)).reasons().is_empty());
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

impl TrainedModel {
    /// Reads a model file of either kind.
    pub fn from_json(text: &str) -> Result<TrainedModel, logistic::ModelError> {
        #[derive(Deserialize)]
        struct Kind {
            kind: String,
        }
        let kind: Kind = serde_json::from_str(text).map_err(|e| logistic::ModelError::File(e.to_string()))?;
        match kind.kind.as_str() {
            "logistic_regression" => Ok(TrainedModel::Logistic(logistic::LogisticModel::from_json(text)?)),
            "gradient_boosted_trees" => Ok(TrainedModel::Boosted(boosting::BoostedTrees::from_json(text)?)),
            other => Err(logistic::ModelError::File(format!("unknown model kind {other:?}"))),
        }
    }

    pub fn feature_names(&self) -> &[String] {
        match self {
            TrainedModel::Logistic(m) => &m.feature_names,
            TrainedModel::Boosted(m) => &m.feature_names,
        }
    }

    pub fn label_delay_ms(&self) -> Option<i64> {
        match self {
            TrainedModel::Logistic(m) => m.label_delay_ms,
            TrainedModel::Boosted(m) => m.label_delay_ms,
        }
    }

    /// Records the label delay the training features were computed with.
    pub fn set_label_delay_ms(&mut self, delay_ms: i64) {
        match self {
            TrainedModel::Logistic(m) => m.label_delay_ms = Some(delay_ms),
            TrainedModel::Boosted(m) => m.label_delay_ms = Some(delay_ms),
        }
    }
}

/// A trained model ready for the pipeline: its features located in [`FeatureRow`].
pub struct LoadedModel {
    model: TrainedModel,
    /// Position in the feature row of each of the model's features.
    columns: Vec<usize>,
    names: Vec<&'static str>,
    uses_terminal_features: bool,
    /// What scoring needs beyond the model file, derived once when loaded.
    prepared: Prepared,
}

/// A [`LoadedModel`]'s model in the form it scores fastest.
enum Prepared {
    /// Logistic regression's [`logistic::LogisticModel::contribution_scales`].
    Logistic { scales: Vec<f64> },
    /// A tree ensemble in the compiled layout.
    Trees(boosting::CompiledTrees),
    /// Trees too deep to compile: walked node by node.
    DeepTrees,
}

impl LoadedModel {
    /// Fails when the model reads a feature paystream does not compute.
    pub fn new(model: TrainedModel) -> Result<LoadedModel, logistic::ModelError> {
        let mut columns: Vec<usize> = Vec::new();
        for name in model.feature_names() {
            let column = features::feature_index(name).ok_or_else(|| {
                logistic::ModelError::File(format!(
                    "the model reads feature {name:?}, which paystream does not compute"
                ))
            })?;
            if columns.contains(&column) {
                return Err(logistic::ModelError::File(format!("the model lists feature {name:?} twice")));
            }
            columns.push(column);
        }
        if columns.is_empty() {
            // Nothing to score on or to give as a reason (and no row width to walk by).
            return Err(logistic::ModelError::File("the model reads no feature".into()));
        }
        let names = columns.iter().map(|&c| FEATURE_NAMES[c]).collect();
        let uses_terminal_features = columns.iter().any(|&c| features::is_terminal_feature(c));
        let prepared = match &model {
            TrainedModel::Logistic(m) => Prepared::Logistic { scales: m.contribution_scales() },
            TrainedModel::Boosted(m) => boosting::CompiledTrees::new(m).map_or(Prepared::DeepTrees, Prepared::Trees),
        };
        Ok(LoadedModel { model, columns, names, uses_terminal_features, prepared })
    }

    pub fn from_json(text: &str) -> Result<LoadedModel, logistic::ModelError> {
        LoadedModel::new(TrainedModel::from_json(text)?)
    }

    pub fn model(&self) -> &TrainedModel {
        &self.model
    }
}

/// Rows a [`LoadedModel`] scores at once. A chunk's model columns and contributions
/// (2 × 128 × 19 × 8 bytes = 39 KB at most) stay in the core's L1 cache while every tree
/// passes over them, and their buffers are reused from chunk to chunk (a whole 2,048-row
/// batch would be 622 KB, streamed through L2 once per tree).
pub const SCORE_CHUNK_ROWS: usize = 128;

/// Low bits of a [`top_reasons`] key that hold the feature.
const REASON_FEATURE_BITS: u32 = 6;
const REASON_FEATURE_MASK: u64 = (1 << REASON_FEATURE_BITS) - 1;
// A model reads each feature once (`LoadedModel::new`), so its positions fit in a key.
const _: () = assert!(features::FEATURE_COUNT <= 1 << REASON_FEATURE_BITS);

/// Keeps the `REASONS_MAX` largest positive contributions, largest first (ties, and
/// values within 2⁻⁴⁶ of each other, keep the earlier feature first).
fn top_reasons(score: &mut Score, contributions: impl Iterator<Item = f64>, names: &[&'static str]) {
    // Each positive contribution becomes one integer key that orders as it does: a
    // positive f64's bits order like its value; the top bit marks a key (0 = none) and
    // the low bits hold the feature, reversed so that the earlier one is larger. Three
    // running maxima then select the top keys with no branch and short dependency chains
    // (a selection of (value, feature) pairs was a chain of 3 compares per feature).
    let mut top = [0u64; REASONS_MAX];
    for (j, c) in contributions.enumerate() {
        let bits = (c.to_bits() & !REASON_FEATURE_MASK) | (REASON_FEATURE_MASK - j as u64) | (1 << 63);
        let mut key = if c > 0.0 { bits } else { 0 };
        for place in top.iter_mut() {
            let larger = (*place).max(key);
            key = (*place).min(key);
            *place = larger;
        }
    }
    for key in top.iter().take_while(|key| **key != 0) {
        score.push_reason(names[(REASON_FEATURE_MASK - (key & REASON_FEATURE_MASK)) as usize]);
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl FraudModel for LoadedModel {
    fn version(&self) -> &str {
        self.model.version()
    }

    fn uses_terminal_features(&self) -> bool {
        self.uses_terminal_features
    }

    /// The batch in chunks of [`SCORE_CHUNK_ROWS`]: one matrix of the model's columns per
    /// chunk (ndarray); reasons are the features contributing most to each score
    /// (logistic: coefficient × standardized value; trees: Saabas attribution along each
    /// tree's path).
    fn score_batch(&self, rows: &[FeatureRow], scores: &mut Vec<Score>) {
        let width = self.columns.len();
        let chunk_rows_max = rows.len().min(SCORE_CHUNK_ROWS);
        let mut values = Vec::with_capacity(chunk_rows_max * width);
        let mut contributions = Vec::with_capacity(chunk_rows_max * width);
        let mut logits = Vec::with_capacity(chunk_rows_max);
        for chunk in rows.chunks(SCORE_CHUNK_ROWS) {
            values.clear();
            for row in chunk {
                values.extend(self.columns.iter().map(|&c| row[c]));
            }
            logits.clear();
            logits.resize(chunk.len(), 0.0);
            match (&self.model, &self.prepared) {
                (TrainedModel::Logistic(m), Prepared::Logistic { scales }) => {
                    let x = ndarray::ArrayViewMut2::from_shape((chunk.len(), width), &mut values)
                        .expect("chunk rows × model columns");
                    // The values become their contributions.
                    m.explain(scales, x, &mut logits);
                    std::mem::swap(&mut values, &mut contributions);
                }
                (TrainedModel::Boosted(_), Prepared::Trees(compiled)) => {
                    contributions.clear();
                    contributions.resize(values.len(), 0.0);
                    compiled.explain_batch(&values, &mut logits, &mut contributions);
                }
                (TrainedModel::Boosted(m), Prepared::DeepTrees) => {
                    contributions.clear();
                    contributions.resize(values.len(), 0.0);
                    for (i, logit) in logits.iter_mut().enumerate() {
                        let span = i * width..(i + 1) * width;
                        *logit = m.explain_row(&values[span.clone()], &mut contributions[span]);
                    }
                }
                _ => unreachable!("LoadedModel::new prepares each model for its kind"),
            }
            for (i, logit) in logits.iter().enumerate() {
                let mut score = Score::new(sigmoid(*logit) as f32);
                top_reasons(&mut score, contributions[i * width..(i + 1) * width].iter().copied(), &self.names);
                scores.push(score);
            }
        }
    }
}

#[cfg(test)]
mod loaded_model_tests {
    use super::*;

    /// Rows where fraud = large amount at a risky terminal.
    fn data() -> (Vec<FeatureRow>, Vec<bool>) {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..3_000u32 {
            let mut row = [0.0; features::FEATURE_COUNT];
            row[index::TX_AMOUNT] = f64::from(i % 200);
            row[index::TERMINAL_WINDOWS + 3] = f64::from((i / 200) % 10) / 10.0; // 7-day terminal risk
            row[index::TX_DURING_NIGHT] = f64::from(i % 2);
            labels.push(row[index::TX_AMOUNT] > 150.0 && row[index::TERMINAL_WINDOWS + 3] >= 0.5);
            rows.push(row);
        }
        (rows, labels)
    }

    #[test]
    fn learned_models_score_batches_with_reasons_and_round_trip() {
        let (rows, labels) = data();
        let names = ["TX_DURING_NIGHT", "TX_AMOUNT", "TERMINAL_ID_RISK_7DAY_WINDOW"];
        let columns = [index::TX_DURING_NIGHT, index::TX_AMOUNT, index::TERMINAL_WINDOWS + 3];
        let picked: Vec<Vec<f64>> = rows.iter().map(|r| columns.iter().map(|&c| r[c]).collect()).collect();
        for kind in MODEL_KINDS {
            let mut trained = TrainedModel::train(kind, &names, &picked, &labels, "unit test").unwrap();
            trained.set_label_delay_ms(7);
            let loaded = LoadedModel::from_json(&trained.to_json()).unwrap();
            assert_eq!(loaded.model().label_delay_ms(), Some(7));
            assert!(loaded.uses_terminal_features(), "{kind}");
            let mut scores = Vec::new();
            loaded.score_batch(&rows, &mut scores);
            // The batch path scores exactly as the training-side scorer does.
            let expected = trained.score_batch(&picked).unwrap();
            for (s, e) in scores.iter().zip(&expected) {
                assert!((f64::from(s.value) - e).abs() < 1e-6, "{kind}: {} vs {e}", s.value);
            }
            // A clear fraud is explained by amount and terminal risk, never by the noise.
            let fraud = labels.iter().position(|l| *l).unwrap();
            let reasons = scores[fraud].reasons();
            assert!(
                reasons.contains(&"TX_AMOUNT") && reasons.contains(&"TERMINAL_ID_RISK_7DAY_WINDOW"),
                "{kind}: {reasons:?}"
            );
            assert!(!reasons.contains(&"TX_DURING_NIGHT") || reasons.len() == 3, "{kind}: {reasons:?}");
        }
    }

    #[test]
    fn unknown_features_and_malformed_files_are_refused() {
        let (rows, labels) = data();
        let picked: Vec<Vec<f64>> = rows.iter().map(|r| vec![r[0]]).collect();
        let trained = TrainedModel::train("logistic", &["NOT_A_FEATURE"], &picked, &labels, "t").unwrap();
        let error = LoadedModel::new(trained).err().unwrap().to_string();
        assert!(error.contains("NOT_A_FEATURE"), "{error}");
        assert!(LoadedModel::from_json("{\"kind\":\"astrology\"}").is_err());
        assert!(LoadedModel::from_json("not json").is_err());
        let doubled: Vec<Vec<f64>> = rows.iter().map(|r| vec![r[0], r[0]]).collect();
        let twice = TrainedModel::train("logistic", &["TX_AMOUNT", "TX_AMOUNT"], &doubled, &labels, "t");
        let error = LoadedModel::new(twice.unwrap()).err().unwrap().to_string();
        assert!(error.contains("twice"), "{error}");
        let trained = TrainedModel::train("gbt", &["TX_AMOUNT"], &picked, &labels, "t").unwrap();
        let broken = trained.to_json().replacen("\"left\":1", "\"left\":0", 1);
        assert!(TrainedModel::from_json(&broken).is_err(), "a tree that loops is refused");
        // A file with no features (one leaf per tree) parses, but is refused when loaded:
        // the workers would have nothing to walk rows by.
        let mut empty: serde_json::Value = serde_json::from_str(&trained.to_json()).unwrap();
        empty["feature_names"] = serde_json::json!([]);
        empty["trees"] =
            serde_json::json!([[{"feature": null, "threshold": 0.0, "left": 0, "right": 0, "value": 0.5}]]);
        let error = LoadedModel::from_json(&empty.to_string()).err().expect("refused").to_string();
        assert!(error.contains("no feature"), "{error}");
        // A zero scale would score NaN; numbers JSON cannot hold (1e400) are refused by the parser.
        let logistic = TrainedModel::train("logistic", &["TX_AMOUNT"], &picked, &labels, "t").unwrap();
        let mut zero_scale: serde_json::Value = serde_json::from_str(&logistic.to_json()).unwrap();
        zero_scale["stds"] = serde_json::json!([0.0]);
        let error = LoadedModel::from_json(&zero_scale.to_string()).err().expect("refused").to_string();
        assert!(error.contains("scale"), "{error}");
        let huge = trained.to_json().replacen("\"value\":", "\"value\":1e400,\"was\":", 1);
        let error = LoadedModel::from_json(&huge).err().expect("refused").to_string();
        assert!(error.contains("out of range"), "{error}");
    }

    proptest::proptest! {
        /// As sorting: the largest positive contributions, largest first, ties in
        /// feature order.
        #[test]
        fn top_reasons_is_a_sort(
            values in proptest::collection::vec(-3i8..4, 0..=features::FEATURE_COUNT),
            scale in proptest::sample::select(vec![1e-300, 0.5, 3.0, 1e300]),
        ) {
            let names = FEATURE_NAMES;
            let contributions: Vec<f64> = values.iter().map(|v| f64::from(*v) * scale).collect();
            let mut score = Score::new(0.5);
            top_reasons(&mut score, contributions.iter().copied(), &names);
            let mut expected: Vec<(f64, usize)> =
                contributions.iter().copied().enumerate().map(|(j, c)| (c, j)).filter(|(c, _)| *c > 0.0).collect();
            expected.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            let expected: Vec<&str> = expected.iter().take(REASONS_MAX).map(|(_, j)| names[*j]).collect();
            proptest::prop_assert_eq!(score.reasons(), &expected[..]);
        }
    }

    #[test]
    fn top_reasons_keeps_the_largest_positive_contributions() {
        let mut score = Score::new(0.5);
        let names = ["a", "b", "c", "d", "e"];
        top_reasons(&mut score, [0.1, -2.0, 3.0, 0.5, 2.0].into_iter(), &names);
        assert_eq!(score.reasons(), ["c", "e", "d"]);
        // Ties keep the earlier feature first; fewer positive ones than places.
        let mut ties = Score::new(0.5);
        top_reasons(&mut ties, [1.0, 2.0, 1.0, 2.0, -1.0].into_iter(), &names);
        assert_eq!(ties.reasons(), ["b", "d", "a"]);
        let mut one = Score::new(0.5);
        top_reasons(&mut one, [0.0, -1.0, 0.25].into_iter(), &names);
        assert_eq!(one.reasons(), ["c"]);
        let mut none = Score::new(0.1);
        top_reasons(&mut none, [-1.0, 0.0].into_iter(), &names);
        assert!(none.reasons().is_empty());
    }
}
