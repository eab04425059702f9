//! [`CompiledTrees`]: a model's trees laid out for branch-free batch scoring, walked one
//! row at a time on any CPU or several rows at once with AVX2 or AVX-512.

#[cfg(target_arch = "x86_64")]
use super::lanes;
use super::model::{BoostedTrees, Node};

/// Most depth [`CompiledTrees`] handles (a complete tree of this depth has 2^13 − 1 nodes).
const COMPILED_DEPTH_MAX: usize = 12;

/// The trees of a model laid out as complete binary trees in heap order (node i has
/// children 2i + 1 and 2i + 2), shallow leaves padded with splits that always go left to
/// a copy of themselves. Walking one is a fixed number of branch-free steps, and a batch
/// is scored tree by tree, so the nodes of a tree stay in cache across rows. Scores and
/// attributions are bit-identical to [`BoostedTrees::explain_row`] (same additions in the
/// same order; a padding split adds 0).
#[derive(Clone, Debug)]
pub struct CompiledTrees {
    depth: usize,
    /// Per tree, per node: split feature (0 for leaves), threshold, value, and the value
    /// minus its parent's (0 at the root): the node's Saabas attribution to its parent's
    /// split feature, computed once here rather than per row.
    features: Vec<u32>,
    thresholds: Vec<f64>,
    values: Vec<f64>,
    deltas: Vec<f64>,
    base_logit: f64,
    width: usize,
    /// The widest vector walk this CPU has (see `explain_wide`), detected when compiled.
    wide: Option<Wide>,
}

/// Vector instruction sets the wide walk uses, when the CPU has them (the build itself
/// targets baseline x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wide {
    /// 4 rows at once.
    Avx2,
    /// 8 rows at once.
    Avx512,
}

/// Most depth the wide walk takes. It evaluates every split of a tree (2^depth − 1) for
/// 4 or 8 rows at once, about 8 instructions each, where the scalar walk takes `depth`
/// steps of about 11 instructions per row; past depth 5 the scalar walk does less work.
const WIDE_DEPTH_MAX: usize = 5;

fn tree_depth(tree: &[Node], node: usize) -> usize {
    match tree[node].feature {
        None => 0,
        Some(_) => 1 + tree_depth(tree, tree[node].left).max(tree_depth(tree, tree[node].right)),
    }
}

impl CompiledTrees {
    /// None when a tree is deeper than [`COMPILED_DEPTH_MAX`] or splits on a feature
    /// the model does not have (model files are checked when read; this is what makes
    /// the unchecked indexing in `explain_fixed` sound whatever the caller built).
    pub fn new(model: &BoostedTrees) -> Option<CompiledTrees> {
        let depth = model.trees.iter().map(|t| tree_depth(t, 0)).max().unwrap_or(0);
        let width = model.feature_names.len();
        if depth > COMPILED_DEPTH_MAX || model.trees.iter().flatten().any(|n| n.feature.is_some_and(|f| f >= width)) {
            return None;
        }
        let nodes = (1usize << (depth + 1)) - 1;
        let mut compiled = CompiledTrees {
            depth,
            features: Vec::with_capacity(nodes * model.trees.len()),
            thresholds: Vec::with_capacity(nodes * model.trees.len()),
            values: Vec::with_capacity(nodes * model.trees.len()),
            deltas: Vec::with_capacity(nodes * model.trees.len()),
            base_logit: model.base_logit,
            width,
            wide: wide_detected(),
        };
        for tree in &model.trees {
            let base = compiled.values.len();
            // The source node at each heap position, level by level.
            let mut source = vec![0usize; nodes];
            for heap in 0..nodes {
                let node = &tree[source[heap]];
                let (feature, threshold) = match node.feature {
                    Some(f) => (f as u32, node.threshold),
                    None => (0, f64::INFINITY),
                };
                compiled.features.push(feature);
                compiled.thresholds.push(threshold);
                compiled.values.push(node.value);
                if 2 * heap + 2 < nodes {
                    let (left, right) = match node.feature {
                        Some(_) => (node.left, node.right),
                        None => (source[heap], source[heap]),
                    };
                    source[2 * heap + 1] = left;
                    source[2 * heap + 2] = right;
                }
            }
            let values = &compiled.values[base..];
            compiled.deltas.push(0.0);
            compiled.deltas.extend((1..nodes).map(|heap| values[heap] - values[(heap - 1) / 2]));
        }
        Some(compiled)
    }

    /// Tree number `tree` of `nodes` nodes each: its split features, thresholds, values
    /// and deltas, in heap order.
    #[inline(always)]
    fn tree(&self, tree: usize, nodes: usize) -> (&[u32], &[f64], &[f64], &[f64]) {
        let base = tree * nodes;
        (
            &self.features[base..base + nodes],
            &self.thresholds[base..base + nodes],
            &self.values[base..base + nodes],
            &self.deltas[base..base + nodes],
        )
    }

    /// Logits of `rows` (row-major, `width` values each) into `logits`, and each row's
    /// attributions into `contributions` (row-major, zeroed by the caller).
    pub fn explain_batch(&self, rows: &[f64], logits: &mut [f64], contributions: &mut [f64]) {
        assert_eq!(rows.len(), logits.len() * self.width, "one row per logit");
        assert_eq!(contributions.len(), rows.len(), "one contribution per value");
        #[cfg(target_arch = "x86_64")]
        if let Some(wide) = self.wide
            && self.depth <= WIDE_DEPTH_MAX
        {
            // SAFETY: `wide` names only an instruction set this CPU has.
            unsafe {
                match wide {
                    Wide::Avx512 => self.explain_avx512(rows, logits, contributions),
                    Wide::Avx2 => self.explain_avx2(rows, logits, contributions),
                }
            }
            return;
        }
        self.explain_scalar(rows, logits, contributions);
    }

    /// [`explain_batch`](Self::explain_batch) one row at a time, on any CPU.
    fn explain_scalar(&self, rows: &[f64], logits: &mut [f64], contributions: &mut [f64]) {
        // The depth is a constant in each instance: the walk unrolls, and the per-row
        // overhead (trees of the default depth have 3 splits) stays small.
        match self.depth {
            0 => self.explain_fixed::<0>(rows, logits, contributions),
            1 => self.explain_fixed::<1>(rows, logits, contributions),
            2 => self.explain_fixed::<2>(rows, logits, contributions),
            3 => self.explain_fixed::<3>(rows, logits, contributions),
            4 => self.explain_fixed::<4>(rows, logits, contributions),
            5 => self.explain_fixed::<5>(rows, logits, contributions),
            6 => self.explain_fixed::<6>(rows, logits, contributions),
            7 => self.explain_fixed::<7>(rows, logits, contributions),
            8 => self.explain_fixed::<8>(rows, logits, contributions),
            9 => self.explain_fixed::<9>(rows, logits, contributions),
            10 => self.explain_fixed::<10>(rows, logits, contributions),
            11 => self.explain_fixed::<11>(rows, logits, contributions),
            12 => self.explain_fixed::<12>(rows, logits, contributions),
            _ => unreachable!("CompiledTrees::new refuses trees deeper than COMPILED_DEPTH_MAX"),
        }
    }

    fn explain_fixed<const DEPTH: usize>(&self, rows: &[f64], logits: &mut [f64], contributions: &mut [f64]) {
        const { assert!(DEPTH <= COMPILED_DEPTH_MAX) };
        let nodes = (1usize << (DEPTH + 1)) - 1;
        let width = self.width;
        logits.fill(self.base_logit);
        for tree in 0..self.features.len() / nodes {
            let (features, thresholds, values, deltas) = self.tree(tree, nodes);
            let rows_and_contributions = rows.chunks_exact(width).zip(contributions.chunks_exact_mut(width));
            for ((row, contribution), logit) in rows_and_contributions.zip(logits.iter_mut()) {
                let mut node = 0usize;
                for _ in 0..DEPTH {
                    // SAFETY: after k < DEPTH steps node < 2^(k+1) - 1 < nodes, and so its
                    // child < 2^(k+2) - 1 <= nodes; `new` checked every feature < width.
                    unsafe {
                        let feature = *features.get_unchecked(node) as usize;
                        // `!(x <= t)`, not `x > t`: a NaN goes right, as in `explain_row`.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let right = !(*row.get_unchecked(feature) <= *thresholds.get_unchecked(node));
                        let child = 2 * node + 1 + usize::from(right);
                        *contribution.get_unchecked_mut(feature) += *deltas.get_unchecked(child);
                        node = child;
                    }
                }
                // SAFETY: after DEPTH steps node < 2^(DEPTH+1) - 1 = nodes.
                *logit += unsafe { *values.get_unchecked(node) };
            }
        }
    }

    /// [`explain_wide`](Self::explain_wide) compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn explain_avx512(&self, rows: &[f64], logits: &mut [f64], contributions: &mut [f64]) {
        // SAFETY: the caller's, and `self.depth` is `DEPTH`.
        unsafe { dispatch_depth!(self, explain_wide, lanes::Avx512, rows, logits, contributions) }
    }

    /// [`explain_wide`](Self::explain_wide) compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn explain_avx2(&self, rows: &[f64], logits: &mut [f64], contributions: &mut [f64]) {
        // SAFETY: the caller's, and `self.depth` is `DEPTH`.
        unsafe { dispatch_depth!(self, explain_wide, lanes::Avx2, rows, logits, contributions) }
    }

    /// The walk for `L::LANES` rows at once, with no dependent loads and no per-row
    /// branches. The block's rows are transposed (feature-major), so a split's feature is
    /// one vector load. Every split of a tree is evaluated in heap order, each with a mask
    /// of the rows whose path reaches it: the split adds its left or right child's
    /// attribution to its feature in those rows (−0.0 in the others: x + −0.0 is x for
    /// every x, where + 0.0 would turn −0.0 into +0.0), and hands each child the rows that
    /// go its way; each leaf gives its value to the rows that reach it, added to their
    /// logits. A row's additions are the scalar walk's, in the same order (its path, root
    /// first), so the results are bit-identical.
    ///
    /// # Safety
    /// The CPU must have `L`'s instruction set, and this must be inlined into a function
    /// compiled for it; `DEPTH` must be `self.depth` (at most [`WIDE_DEPTH_MAX`]).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn explain_wide<L: lanes::Lanes, const DEPTH: usize>(
        &self,
        rows: &[f64],
        logits: &mut [f64],
        contributions: &mut [f64],
    ) {
        const { assert!(DEPTH <= WIDE_DEPTH_MAX) };
        debug_assert_eq!(DEPTH, self.depth);
        let splits = (1usize << DEPTH) - 1;
        let nodes = 2 * splits + 1;
        let width = self.width;
        // The block's values and contributions, feature-major: feature f of lane l at
        // f · LANES + l.
        let mut values_t = vec![0.0f64; width * L::LANES];
        let mut contributions_t = vec![0.0f64; width * L::LANES];
        // Per node (heap order), the lanes whose path reaches it.
        let mut reached = [unsafe { L::all() }; 1 << (WIDE_DEPTH_MAX + 1)];
        let blocks = rows
            .chunks(width * L::LANES)
            .zip(logits.chunks_mut(L::LANES))
            .zip(contributions.chunks_mut(width * L::LANES));
        for ((block_rows, block_logits), block_contributions) in blocks {
            let lanes = block_logits.len();
            // The lanes past a short last block compute on zeros and are not copied out.
            values_t.fill(0.0);
            contributions_t.fill(0.0);
            for lane in 0..lanes {
                for feature in 0..width {
                    values_t[feature * L::LANES + lane] = block_rows[lane * width + feature];
                    contributions_t[feature * L::LANES + lane] = block_contributions[lane * width + feature];
                }
            }
            let mut logit = unsafe { L::splat(self.base_logit) };
            for tree in 0..self.features.len() / nodes {
                let (features, thresholds, values, deltas) = self.tree(tree, nodes);
                reached[0] = unsafe { L::all() };
                for split in 0..splits {
                    let offset = features[split] as usize * L::LANES;
                    let here = reached[split];
                    // SAFETY: `new` checked every feature < width, and both buffers hold
                    // width · LANES values: LANES from `offset` are in bounds.
                    unsafe {
                        let right = L::right(L::load(values_t.as_ptr().add(offset)), thresholds[split]);
                        let delta = L::select(right, L::splat(deltas[2 * split + 1]), L::splat(deltas[2 * split + 2]));
                        let delta = L::select(here, L::splat(-0.0), delta);
                        let sum = contributions_t.as_mut_ptr().add(offset);
                        L::store(sum, L::add(L::load(sum), delta));
                        reached[2 * split + 1] = L::and_not(right, here);
                        reached[2 * split + 2] = L::and(right, here);
                    }
                }
                // Each lane reaches one leaf: pick its value, then add once (masked adds
                // into the logits would be a chain of one addition per leaf).
                let mut leaf_value = unsafe { L::splat(0.0) };
                for leaf in splits..nodes {
                    leaf_value = unsafe { L::select(reached[leaf], leaf_value, L::splat(values[leaf])) };
                }
                logit = unsafe { L::add(logit, leaf_value) };
            }
            let mut block_logits_all = [0.0f64; lanes::LANES_MAX];
            // SAFETY: the array holds LANES_MAX ≥ LANES values.
            unsafe { L::store(block_logits_all.as_mut_ptr(), logit) };
            block_logits.copy_from_slice(&block_logits_all[..lanes]);
            for lane in 0..lanes {
                for feature in 0..width {
                    block_contributions[lane * width + feature] = contributions_t[feature * L::LANES + lane];
                }
            }
        }
    }
}

fn wide_detected() -> Option<Wide> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Wide::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Wide::Avx2);
        }
    }
    None
}

/// Calls `$self.$walk::<$lanes, DEPTH>(…)` with the tree depth as a constant (the
/// wide walk supports depths up to [`WIDE_DEPTH_MAX`]).
macro_rules! dispatch_depth {
    ($self:ident, $walk:ident, $lanes:ty, $($arg:expr),*) => {
        match $self.depth {
            0 => $self.$walk::<$lanes, 0>($($arg),*),
            1 => $self.$walk::<$lanes, 1>($($arg),*),
            2 => $self.$walk::<$lanes, 2>($($arg),*),
            3 => $self.$walk::<$lanes, 3>($($arg),*),
            4 => $self.$walk::<$lanes, 4>($($arg),*),
            _ => $self.$walk::<$lanes, 5>($($arg),*),
        }
    };
}
use dispatch_depth;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boosting::BoostingOptions;
    use proptest::prelude::*;

    /// A small deterministic generator for the property test's trees and rows.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// Splits on the few thresholds rows take, so rows land exactly on them too.
    const EDGE_VALUES: [f64; 8] = [f64::NEG_INFINITY, -1.5, -0.0, 0.0, 0.5, 2.0, 1e300, f64::INFINITY];

    fn random_tree(rng: &mut Rng, width: usize, depth_max: usize) -> Vec<Node> {
        let mut nodes = vec![Node { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.0 }];
        let mut frontier = vec![(0usize, 0usize)];
        while let Some((index, depth)) = frontier.pop() {
            nodes[index].value = rng.next(2001) as f64 / 1000.0 - 1.0;
            if depth == depth_max || rng.next(4) == 0 {
                continue;
            }
            let left = nodes.len();
            nodes.push(nodes[index].clone());
            nodes.push(nodes[index].clone());
            nodes[index].feature = Some(rng.next(width));
            nodes[index].threshold = EDGE_VALUES[rng.next(EDGE_VALUES.len())];
            nodes[index].left = left;
            nodes[index].right = left + 1;
            frontier.push((left, depth + 1));
            frontier.push((left + 1, depth + 1));
        }
        nodes
    }

    fn wide_supported(wide: Option<Wide>) -> bool {
        match wide {
            None => true,
            #[cfg(target_arch = "x86_64")]
            Some(Wide::Avx2) => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Some(Wide::Avx512) => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Some(_) => false,
        }
    }

    proptest! {
        /// Every walk this CPU has (AVX-512 and AVX2 up to depth 5, scalar past it) gives
        /// the scalar walk's and `explain_row`'s bits:
        /// random unbalanced trees, rows on and around the thresholds, NaNs, infinities,
        /// −0.0, short last blocks, and (between the two walks) contributions that do not
        /// start at zero.
        #[test]
        fn every_walk_gives_the_same_bits(seed in 1u64.., width in 1usize..6, depth_max in 0usize..7, row_count in 0usize..40) {
            let mut rng = Rng(seed);
            let trees: Vec<Vec<Node>> = (0..1 + rng.next(12)).map(|_| random_tree(&mut rng, width, depth_max)).collect();
            let model = BoostedTrees {
                format: 1,
                kind: "gradient_boosted_trees".into(),
                version: "test".into(),
                feature_names: (0..width).map(|f| format!("f{f}")).collect(),
                base_logit: -0.25,
                trees,
                training_rows: 0,
                training_frauds: 0,
                trained_on: "test".into(),
                label_delay_ms: None,
            };
            let mut compiled = CompiledTrees::new(&model).expect("shallow trees on the model's features");
            prop_assert_eq!(compiled.wide, wide_detected());
            let pick = |rng: &mut Rng| match rng.next(12) {
                0 => f64::NAN,
                n if n < 9 => EDGE_VALUES[rng.next(EDGE_VALUES.len())],
                _ => rng.next(4001) as f64 / 1000.0 - 2.0,
            };
            let rows: Vec<f64> = (0..row_count * width).map(|_| pick(&mut rng)).collect();
            let start: Vec<f64> = (0..row_count * width).map(|_| if rng.next(3) == 0 { -0.0 } else { pick(&mut rng) }).collect();
            let (mut scalar_logits, mut scalar_contributions) = (vec![0.0; row_count], start.clone());
            compiled.explain_scalar(&rows, &mut scalar_logits, &mut scalar_contributions);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
            let (mut logits, mut contributions) = (Vec::new(), Vec::new());
            for wide in [None, Some(Wide::Avx2), Some(Wide::Avx512)].into_iter().filter(|w| wide_supported(*w)) {
                compiled.wide = wide;
                (logits, contributions) = (vec![0.0; row_count], start.clone());
                compiled.explain_batch(&rows, &mut logits, &mut contributions);
                prop_assert_eq!(bits(&logits), bits(&scalar_logits), "{:?}", wide);
                prop_assert_eq!(bits(&contributions), bits(&scalar_contributions), "{:?}", wide);
            }
            // From zeroed contributions (the contract: a padding split adds +0.0, which
            // `explain_row` does not walk), as `explain_row` attributes.
            contributions.fill(0.0);
            compiled.explain_batch(&rows, &mut logits, &mut contributions);
            for (i, row) in rows.chunks_exact(width).enumerate() {
                let mut expected = vec![0.0; width];
                let logit = model.explain_row(row, &mut expected);
                prop_assert_eq!(logits[i].to_bits(), logit.to_bits(), "row {}", i);
                prop_assert_eq!(bits(&contributions[i * width..(i + 1) * width]), bits(&expected), "row {}", i);
            }
        }
    }

    #[test]
    fn compiled_trees_score_and_attribute_bit_identically() {
        let rows: Vec<Vec<f64>> =
            (0..1_500).map(|i| vec![(i % 50) as f64, ((i / 50) % 30) as f64, ((i * 7) % 13) as f64]).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r[0] >= 40.0 && (r[1] >= 20.0 || r[2] < 2.0)).collect();
        // The default depth, padded shallow trees (4) and deep ones.
        for depth_max in [3, 4, 8] {
            let options = BoostingOptions { trees: 30, depth_max, ..BoostingOptions::default() };
            let model = BoostedTrees::train(&["a", "b", "c"], &rows, &labels, &options, "test").unwrap();
            if depth_max == 4 {
                assert!(
                    model.trees.iter().any(|t| tree_depth(t, 0) < 4),
                    "some trees are shallow (padding is exercised)"
                );
            }
            let compiled = CompiledTrees::new(&model).unwrap();
            let mut broken = model.clone();
            let split = broken.trees[0].iter_mut().find(|n| n.feature.is_some()).unwrap();
            split.feature = Some(3);
            assert!(CompiledTrees::new(&broken).is_none(), "a split on a feature past the row is refused");
            let flat: Vec<f64> = rows.concat();
            let mut logits = vec![0.0; rows.len()];
            let mut contributions = vec![0.0; flat.len()];
            compiled.explain_batch(&flat, &mut logits, &mut contributions);
            for (i, row) in rows.iter().enumerate() {
                let mut expected = vec![0.0; 3];
                let logit = model.explain_row(row, &mut expected);
                assert_eq!(logits[i].to_bits(), logit.to_bits(), "depth {depth_max}, row {i}");
                assert_eq!(&contributions[i * 3..i * 3 + 3], &expected[..], "depth {depth_max}, row {i}");
            }
        }
    }
}
