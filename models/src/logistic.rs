//! Logistic regression fraud model: standardized features, trained with linfa-logistic,
//! saved as a versioned JSON model file, scored a whole batch at a time with ndarray.
//!
//! The file holds each feature's mean and scale (std), the coefficients and intercept; a
//! scale MUST be positive (a zero one would score NaN: refused when read). A feature's
//! contribution to a score, for its reasons, is coefficient × standardized value.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("training failed: {0}")]
    Training(String),
    #[error("training data needs both classes and at least one row")]
    OneClass,
    #[error("model file: {0}")]
    File(String),
    #[error("feature vector has {got} values, the model expects {expected}")]
    FeatureCount { got: usize, expected: usize },
}

/// Current version of the model file format.
pub const MODEL_FILE_FORMAT: u32 = 1;

/// What a trained logistic regression needs to score, plus how it was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogisticModel {
    pub format: u32,
    pub kind: String,
    /// Stamped on every decision: kind, training window and a hash of the parameters.
    pub version: String,
    pub feature_names: Vec<String>,
    /// Standardization fitted on the training set: (x − mean) / std.
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub training_rows: usize,
    pub training_frauds: usize,
    /// Free-form description of the training data (window, data set).
    pub trained_on: String,
    /// The label delay the terminal features were computed with; the pipeline refuses a
    /// model whose delay differs from its own (the features would not be the same).
    #[serde(default)]
    pub label_delay_ms: Option<i64>,
}

/// Training options.
#[derive(Clone, Debug)]
pub struct LogisticOptions {
    /// L2 regularization strength (linfa's alpha).
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for LogisticOptions {
    fn default() -> Self {
        LogisticOptions { alpha: 1.0, max_iterations: 200 }
    }
}

/// Checks training data (both classes present, every row `width` long); returns the
/// number of frauds.
pub(crate) fn check_training_data(width: usize, rows: &[Vec<f64>], labels: &[bool]) -> Result<usize, ModelError> {
    let frauds = labels.iter().filter(|l| **l).count();
    if rows.is_empty() || rows.len() != labels.len() || frauds == 0 || frauds == rows.len() {
        return Err(ModelError::OneClass);
    }
    if let Some(row) = rows.iter().find(|r| r.len() != width) {
        return Err(ModelError::FeatureCount { got: row.len(), expected: width });
    }
    Ok(frauds)
}

fn standardize(rows: &Array2<f64>, means: &[f64], stds: &[f64]) -> Array2<f64> {
    let mut scaled = rows.clone();
    for (j, mut column) in scaled.axis_iter_mut(Axis(1)).enumerate() {
        column.mapv_inplace(|x| (x - means[j]) / stds[j]);
    }
    scaled
}

impl LogisticModel {
    /// Trains on `rows` (one feature vector each) and fraud `labels`.
    pub fn train(
        feature_names: &[&str],
        rows: &[Vec<f64>],
        labels: &[bool],
        options: &LogisticOptions,
        trained_on: &str,
    ) -> Result<LogisticModel, ModelError> {
        let width = feature_names.len();
        let frauds = check_training_data(width, rows, labels)?;
        let x = Array2::from_shape_vec((rows.len(), width), rows.concat()).expect("shape checked above");
        let means: Vec<f64> = x.mean_axis(Axis(0)).expect("non-empty").to_vec();
        let stds: Vec<f64> = x.std_axis(Axis(0), 0.0).iter().map(|s| if *s > 0.0 { *s } else { 1.0 }).collect();
        let scaled = standardize(&x, &means, &stds);
        let dataset = Dataset::new(scaled, Array1::from_vec(labels.to_vec()));
        let fitted = LogisticRegression::default()
            .alpha(options.alpha)
            .max_iterations(options.max_iterations)
            .fit(&dataset)
            .map_err(|e| ModelError::Training(e.to_string()))?;
        // linfa models the probability of its "positive" class label; make it fraud.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let coefficients: Vec<f64> = fitted.params().iter().map(|c| sign * c).collect();
        let intercept = sign * fitted.intercept();
        let fingerprint =
            coefficients.iter().chain([intercept].iter()).fold(0u64, |h, c| h.rotate_left(7) ^ c.to_bits());
        Ok(LogisticModel {
            format: MODEL_FILE_FORMAT,
            kind: "logistic_regression".into(),
            version: format!("logistic-{fingerprint:016x}"),
            feature_names: feature_names.iter().map(|s| s.to_string()).collect(),
            means,
            stds,
            coefficients,
            intercept,
            training_rows: rows.len(),
            training_frauds: frauds,
            trained_on: trained_on.to_string(),
            label_delay_ms: None,
        })
    }

    /// Per feature, coefficient / std: [`explain`](Self::explain) computes
    /// (v − mean) / std × coefficient as (v − mean) × this, with no division per value.
    /// Compute once per model, not per batch.
    pub fn contribution_scales(&self) -> Vec<f64> {
        self.coefficients.iter().zip(&self.stds).map(|(c, s)| c / s).collect()
    }

    /// Per-feature contributions to the logit (coefficient × standardized value) of a
    /// batch whose columns are the model's features, in place; writes one logit per row.
    /// `scales` are [`contribution_scales`](Self::contribution_scales).
    pub fn explain(&self, scales: &[f64], mut x: ndarray::ArrayViewMut2<f64>, logits: &mut [f64]) {
        assert_eq!(x.nrows(), logits.len(), "one logit per row");
        let width = self.coefficients.len();
        assert_eq!(scales.len(), width, "one scale per feature");
        let (means, scales) = (&self.means[..width], &scales[..width]);
        // Row by row over contiguous rows (a standard-layout batch): the two parameter
        // slices are zipped with each row, so the loop has no bounds checks and vectorizes.
        for (mut row, logit) in x.rows_mut().into_iter().zip(logits.iter_mut()) {
            let mut sum = self.intercept;
            for ((v, mean), scale) in row.iter_mut().zip(means).zip(scales) {
                *v = (*v - mean) * scale;
                sum += *v;
            }
            *logit = sum;
        }
    }

    /// Fraud probabilities of a batch of feature vectors.
    pub fn score_batch(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ModelError> {
        let width = self.coefficients.len();
        if let Some(row) = rows.iter().find(|r| r.len() != width) {
            return Err(ModelError::FeatureCount { got: row.len(), expected: width });
        }
        let x = Array2::from_shape_vec((rows.len(), width), rows.concat()).expect("shape checked above");
        let scaled = standardize(&x, &self.means, &self.stds);
        let logits = scaled.dot(&Array1::from_vec(self.coefficients.clone())) + self.intercept;
        Ok(logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model serializes")
    }

    pub fn from_json(text: &str) -> Result<LogisticModel, ModelError> {
        let model: LogisticModel = serde_json::from_str(text).map_err(|e| ModelError::File(e.to_string()))?;
        if model.format != MODEL_FILE_FORMAT {
            return Err(ModelError::File(format!("format {} is not {MODEL_FILE_FORMAT}", model.format)));
        }
        let n = model.feature_names.len();
        if [model.means.len(), model.stds.len(), model.coefficients.len()].iter().any(|l| *l != n) {
            return Err(ModelError::File("feature names, scaling and coefficients differ in length".into()));
        }
        // A zero scale would score NaN (JSON numbers are finite already).
        if !model.stds.iter().all(|s| *s > 0.0) {
            return Err(ModelError::File("every feature's scale (std) must be positive".into()));
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_separable_rule_and_round_trips() {
        // Fraud when the first feature is large; the second is noise.
        let rows: Vec<Vec<f64>> = (0..400).map(|i| vec![(i % 100) as f64, ((i * 37) % 11) as f64]).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r[0] >= 80.0).collect();
        let model =
            LogisticModel::train(&["amount", "noise"], &rows, &labels, &LogisticOptions::default(), "unit test")
                .unwrap();
        assert!(model.coefficients[0] > 0.0, "{model:?}");
        let scores = model.score_batch(&[vec![95.0, 3.0], vec![5.0, 3.0]]).unwrap();
        assert!(scores[0] > 0.9 && scores[1] < 0.1, "{scores:?}");
        let auc = crate::metrics::roc_auc(&model.score_batch(&rows).unwrap(), &labels).unwrap();
        assert!(auc > 0.99);
        let restored = LogisticModel::from_json(&model.to_json()).unwrap();
        assert_eq!(restored, model);
        assert!(matches!(model.score_batch(&[vec![1.0]]), Err(ModelError::FeatureCount { .. })));
        assert!(matches!(
            LogisticModel::train(&["a"], &[vec![1.0]], &[true], &LogisticOptions::default(), ""),
            Err(ModelError::OneClass)
        ));
    }
}
