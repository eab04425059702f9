//! The model file: [`BoostedTrees`] (its trees of [`Node`]s and provenance), reading it
//! with its trees checked, scoring rows one at a time and attributing a score to features.

use serde::{Deserialize, Serialize};

use crate::logistic::ModelError;

/// A tree node: a split (`feature`, `threshold`: go left when value <= threshold) or a
/// leaf (`feature` = None) with its `value` (a logit increment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: Option<usize>,
    pub threshold: f64,
    pub left: usize,
    pub right: usize,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoostedTrees {
    pub format: u32,
    pub kind: String,
    pub version: String,
    pub feature_names: Vec<String>,
    pub base_logit: f64,
    pub trees: Vec<Vec<Node>>,
    pub training_rows: usize,
    pub training_frauds: usize,
    pub trained_on: String,
    /// See [`crate::logistic::LogisticModel::label_delay_ms`].
    #[serde(default)]
    pub label_delay_ms: Option<i64>,
}

pub(super) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl BoostedTrees {
    /// Reads a model file, checking that every tree is well formed.
    pub fn from_json(text: &str) -> Result<BoostedTrees, ModelError> {
        let model: BoostedTrees = serde_json::from_str(text).map_err(|e| ModelError::File(e.to_string()))?;
        if model.format != crate::logistic::MODEL_FILE_FORMAT {
            return Err(ModelError::File(format!(
                "format {} is not {}",
                model.format,
                crate::logistic::MODEL_FILE_FORMAT
            )));
        }
        let width = model.feature_names.len();
        for (t, tree) in model.trees.iter().enumerate() {
            // Children come after their parent, so walking a tree always ends at a leaf.
            let bad = tree.is_empty()
                || tree.iter().enumerate().any(|(i, n)| {
                    n.feature
                        .is_some_and(|f| f >= width || n.left <= i || n.right <= i || n.left.max(n.right) >= tree.len())
                });
            if bad {
                return Err(ModelError::File(format!("tree {t} is malformed")));
            }
        }
        Ok(model)
    }

    /// Logit of one row, adding each split's change of the expected value to the
    /// contribution of its feature (the Saabas attribution), in the model's columns.
    pub fn explain_row(&self, row: &[f64], contributions: &mut [f64]) -> f64 {
        let mut logit = self.base_logit;
        for tree in &self.trees {
            let mut node = &tree[0];
            while let Some(feature) = node.feature {
                let child = if row[feature] <= node.threshold { &tree[node.left] } else { &tree[node.right] };
                contributions[feature] += child.value - node.value;
                node = child;
            }
            logit += node.value;
        }
        logit
    }

    /// Fraud scores in (0, 1) of a batch of feature vectors (monotone in the fraud odds;
    /// with up-weighted positives they rank, they are not calibrated probabilities).
    pub fn score_batch(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ModelError> {
        let width = self.feature_names.len();
        rows.iter()
            .map(|row| {
                if row.len() != width {
                    return Err(ModelError::FeatureCount { got: row.len(), expected: width });
                }
                let logit = self.base_logit + self.trees.iter().map(|tree| predict_raw(tree, row)).sum::<f64>();
                Ok(sigmoid(logit))
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model serializes")
    }
}

fn predict_raw(tree: &[Node], row: &[f64]) -> f64 {
    let mut node = &tree[0];
    while let Some(feature) = node.feature {
        node = if row[feature] <= node.threshold { &tree[node.left] } else { &tree[node.right] };
    }
    node.value
}
