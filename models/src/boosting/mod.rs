//! Gradient-boosted decision trees for fraud scoring: histogram-based (features binned
//! into at most [`BINS_MAX`] quantile bins), logistic loss, depth-limited trees grown
//! level by level, optional up-weighting of frauds for class imbalance (off by default:
//! on the reference data it lowered average precision). Trained and scored by
//! paystream itself; saved in the same versioned JSON model-file style as logistic
//! regression.
//!
//! A model file's trees are checked when read: a tree whose walk could loop or read past
//! the row is refused. A score is explained by Saabas attribution: along each row's path,
//! every split adds the change of the node's value to its feature's contribution.
//! [`CompiledTrees`] walks complete trees in heap order branch-free; on a CPU with
//! AVX-512F or AVX2, detected at run time (the build targets baseline x86-64), it walks 8
//! or 4 rows at once, every split of a tree evaluated under a mask of the rows that reach
//! it. The wide walk MUST stay bit-identical to the scalar walk (a property test compares
//! them on every walk the CPU has).
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
