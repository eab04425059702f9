//! Gradient-boosted decision trees for fraud scoring: histogram-based (features binned
//! into at most [`BINS_MAX`] quantile bins), logistic loss, depth-limited trees grown
//! level by level, optional up-weighting of frauds for class imbalance (off by default:
//! on the reference data it lowered average precision). Trained and scored by
//! paystream itself; saved in the same versioned JSON model-file style as logistic
//! regression.
//!
//! Codemap: `train.rs` (binning, tree growing, [`BoostingOptions`]), `model.rs` (the
//! model file [`BoostedTrees`]: reading, scoring one row at a time, attribution),
//! `compiled.rs` ([`CompiledTrees`], the branch-free batch layout) and `lanes.rs` (its
//! vector operations per instruction set).

mod compiled;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod model;
mod train;

pub use compiled::CompiledTrees;
pub use model::{BoostedTrees, Node};
pub use train::{BINS_MAX, BoostingOptions};
