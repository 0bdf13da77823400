//! The reweighting strategies: losses that keep every decision and give it a loss and a
//! gradient norm (`ce`, `alpha_ce`, `focal`, `qfl`, `vfl`). One file each, behind
//! [`Reweighting`]; [`super::weighted::WeightedAcc`] sums any of them by bucket and by image.
//!
//! The strategies are listed once, in `crate::vocab::strategy_list!`; this module expands that
//! list into [`Reweighter`], the dispatch over the `reweight(..)` entries. Adding a reweighting
//! strategy is a new file here (its struct, `impl Reweighting`, its tests) and one line in the
//! list (docs/architecture.md).

pub mod alpha_ce;
pub mod ce;
pub mod focal;
pub mod qfl;
pub mod vfl;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decisions::{DecisionChunk, Meta, Terms};
use super::sum::ExactSum;
use super::BucketAcc;
use crate::config::{AnalysisConfig, StrategyKind};
use crate::input::ImageKey;
use crate::loss::Decision;

/// A strategy's parameters as the report shows them.
pub type Params = BTreeMap<String, serde_json::Value>;

/// [`Params`] from (name, value) pairs.
pub fn params<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> Params {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A loss that keeps every decision: its parameters, validated in [`crate::config`], and its
/// per-decision loss and gradient norm.
pub trait Reweighting: Copy {
    /// The strategy's settings, taken from the validated analysis settings.
    fn from_config(config: &AnalysisConfig) -> Self;

    /// The parameters shown in the report (`params` of the strategy's entry).
    fn params(&self) -> Params;

    /// The loss of one decision and the norm of its gradient with respect to the logit, both
    /// unweighted (the pass multiplies by the decision's sample weight).
    fn terms(&self, d: &Decision) -> (f64, f64);

    /// Sums one chunk into `sums`. The default calls [`Reweighting::terms`] per decision;
    /// strategies whose terms the chunk already holds ([`super::decisions::Terms`]) override it
    /// to read them instead (chosen once per chunk, with the same bits).
    #[inline]
    fn sum_chunk(&self, chunk: &DecisionChunk<'_>, sums: &mut Sums) {
        sums.add(chunk, |_, d| self.terms(d));
    }

    /// Which of the chunk's precomputed terms are this strategy's loss and gradient, if any
    /// (the same bits as [`Reweighting::terms`]): the pass then sums every such strategy in one
    /// walk over the chunk ([`sum_precomputed`]) instead of one walk each.
    #[inline]
    fn precomputed(&self, _terms: &Terms) -> Option<Precomputed> {
        None
    }
}

/// A loss and gradient that [`Terms`] holds per decision (the discriminant indexes
/// [`sum_precomputed`]'s lanes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precomputed {
    /// CE and |p - y|.
    Ce = 0,
    /// alpha_t CE and alpha_t |p - y|.
    AlphaCe = 1,
    /// The focal loss and its gradient norm at the terms' gamma and alpha.
    Focal = 2,
}

/// Sums one chunk into the sums of the strategies whose terms are precomputed, in one walk:
/// per decision, each requested [`Precomputed`] loss and gradient into lanes laid out as
/// [`Sums::add`]'s, so each strategy's sums are the bits its own walk would give.
pub fn sum_precomputed(chunk: &DecisionChunk<'_>, targets: &mut [(Precomputed, &mut Sums)]) {
    let has = |k: Precomputed| targets.iter().any(|(p, _)| *p == k);
    // One monomorphic walk per set of kinds: the kinds not requested cost nothing.
    match (has(Precomputed::Ce), has(Precomputed::AlphaCe), has(Precomputed::Focal)) {
        (true, true, true) => walk::<true, true, true>(chunk, targets),
        (true, true, false) => walk::<true, true, false>(chunk, targets),
        (true, false, true) => walk::<true, false, true>(chunk, targets),
        (false, true, true) => walk::<false, true, true>(chunk, targets),
        (true, false, false) => walk::<true, false, false>(chunk, targets),
        (false, true, false) => walk::<false, true, false>(chunk, targets),
        (false, false, true) => walk::<false, false, true>(chunk, targets),
        (false, false, false) => {}
    }
}

/// One run's f64 subtotals of one kind: per bucket, the loss lanes and the gradient lanes
/// (`[bucket][0 = loss, 1 = gradient][lane]`; decision j of a run in lane j % 4). The four lanes
/// of a quantity side by side, so that four consecutive decisions of one bucket (the common
/// case) are one 4-wide add per quantity.
type Cells = [[[f64; 4]; 2]; 4];

/// [`sum_precomputed`]'s walk: `CE`, `ALPHA_CE`, `FOCAL` say which kinds are summed.
#[inline(always)]
fn walk<const CE: bool, const ALPHA_CE: bool, const FOCAL: bool>(
    chunk: &DecisionChunk<'_>,
    targets: &mut [(Precomputed, &mut Sums)],
) {
    let unit = chunk.batch.weight.is_none();
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::is_x86_feature_detected!("avx2");
    let t = chunk.terms;
    let mut count = [0u64; 4];
    for run in chunk.runs {
        // cells[k]: Precomputed's kind k.
        let mut cells = [[[[0.0f64; 4]; 2]; 4]; 3];
        let range = run.start..run.end;
        let columns = Columns {
            ce: &chunk.decisions.ce[range.clone()],
            meta: &chunk.meta[range.clone()],
            weights: chunk.batch.weight.as_deref(),
            alpha_t: &t.alpha_t[range.clone()],
            ce_grad: &t.ce_grad[range.clone()],
            focal: &t.focal[range.clone()],
            focal_grad: &t.focal_grad[range],
        };
        'added: {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the processor has AVX2 (checked above).
                unsafe {
                    if unit {
                        add_run_avx2::<CE, ALPHA_CE, FOCAL, true>(&mut cells, &mut count, &columns)
                    } else {
                        add_run_avx2::<CE, ALPHA_CE, FOCAL, false>(&mut cells, &mut count, &columns)
                    }
                }
                break 'added;
            }
            if unit {
                add_run::<CE, ALPHA_CE, FOCAL, true>(&mut cells, &mut count, &columns);
            } else {
                add_run::<CE, ALPHA_CE, FOCAL, false>(&mut cells, &mut count, &columns);
            }
        }
        let key = &chunk.batch.images[run.image].key;
        for (kind, sums) in targets.iter_mut() {
            sums.fold_run(&cells[*kind as usize], key);
        }
    }
    for (_, sums) in targets.iter_mut() {
        sums.add_counts(count);
    }
}

/// A run's cross-entropies, metadata and precomputed terms (parallel slices), and the batch's
/// weights ([`Meta::weight`]).
struct Columns<'a> {
    ce: &'a [f64],
    meta: &'a [Meta],
    weights: Option<&'a [f64]>,
    alpha_t: &'a [f64],
    ce_grad: &'a [f64],
    focal: &'a [f64],
    focal_grad: &'a [f64],
}

/// Adds a run's decisions to `cells` (per [`Precomputed`] kind) and their counts per bucket to
/// `count`: decision j to lane j % 4, in order within each lane. Four consecutive decisions of
/// one bucket take one 4-wide add per quantity (the same adds, in the same order, as one
/// decision at a time). Without weights (`UNIT`: every weight 1) the products by the weight are
/// left out: x * 1 is x.
#[inline(always)]
fn add_run<const CE: bool, const ALPHA_CE: bool, const FOCAL: bool, const UNIT: bool>(
    cells: &mut [Cells; 3],
    count: &mut [u64; 4],
    c: &Columns<'_>,
) {
    let n = c.ce.len().min(c.meta.len()).min(c.alpha_t.len()).min(c.ce_grad.len());
    let n = n.min(c.focal.len()).min(c.focal_grad.len());
    let (ces, meta, alpha_t) = (&c.ce[..n], &c.meta[..n], &c.alpha_t[..n]);
    let (ce_grad, focal, focal_grad) = (&c.ce_grad[..n], &c.focal[..n], &c.focal_grad[..n]);
    let weigh = |x: f64, w: f64| if UNIT { x } else { x * w };
    let one = |cells: &mut [Cells; 3], count: &mut [u64; 4], j: usize| {
        let (ce, m) = (ces[j], &meta[j]);
        let (b, w, l) = (m.bucket as usize, m.weight(c.weights), j & 3);
        let (a, g) = (alpha_t[j], ce_grad[j]);
        if CE {
            cells[0][b][0][l] += weigh(ce, w);
            cells[0][b][1][l] += weigh(g, w);
        }
        if ALPHA_CE {
            cells[1][b][0][l] += weigh(a * ce, w);
            cells[1][b][1][l] += weigh(a * g, w);
        }
        if FOCAL {
            cells[2][b][0][l] += weigh(focal[j], w);
            cells[2][b][1][l] += weigh(focal_grad[j], w);
        }
        count[b] += 1;
    };
    // The cells of the last groups' bucket, per kind, held in `held` (a copy, in registers)
    // while the groups after it are of the same bucket, which most are: added in memory, each
    // group would wait on the store of the one before. Written back before any other bucket's
    // cells are touched, so every cell gets the same adds in the same order.
    let (mut at, mut held) = (usize::MAX, [[[0.0f64; 4]; 2]; 3]);
    let write_back = |cells: &mut [Cells; 3], at: usize, held: &[[[f64; 4]; 2]; 3]| {
        if at != usize::MAX {
            for (kind, h) in cells.iter_mut().zip(held) {
                kind[at] = *h;
            }
        }
    };
    let mut j = 0;
    while j + 4 <= n {
        let ms = &meta[j..j + 4];
        let bucket: [u8; 4] = std::array::from_fn(|l| ms[l].bucket as u8);
        if u32::from_ne_bytes(bucket) == u32::from(bucket[0]) * 0x0101_0101 {
            let b = usize::from(bucket[0]);
            if b != at {
                write_back(cells, at, &held);
                (at, held) = (b, [cells[0][b], cells[1][b], cells[2][b]]);
            }
            let cs = &ces[j..j + 4];
            let (a, g) = (&alpha_t[j..j + 4], &ce_grad[j..j + 4]);
            let (f, fg) = (&focal[j..j + 4], &focal_grad[j..j + 4]);
            let ce: [f64; 4] = std::array::from_fn(|l| cs[l]);
            let w: [f64; 4] = std::array::from_fn(|l| ms[l].weight(c.weights));
            let weighed = |x: [f64; 4]| -> [f64; 4] { std::array::from_fn(|l| weigh(x[l], w[l])) };
            let g: [f64; 4] = std::array::from_fn(|l| g[l]);
            if CE {
                add4(&mut held[0][0], weighed(ce));
                add4(&mut held[0][1], weighed(g));
            }
            if ALPHA_CE {
                let a: [f64; 4] = std::array::from_fn(|l| a[l]);
                add4(&mut held[1][0], weighed(std::array::from_fn(|l| a[l] * ce[l])));
                add4(&mut held[1][1], weighed(std::array::from_fn(|l| a[l] * g[l])));
            }
            if FOCAL {
                add4(&mut held[2][0], weighed(std::array::from_fn(|l| f[l])));
                add4(&mut held[2][1], weighed(std::array::from_fn(|l| fg[l])));
            }
            count[b] += 4;
        } else {
            write_back(cells, at, &held);
            at = usize::MAX;
            for k in j..j + 4 {
                one(cells, count, k);
            }
        }
        j += 4;
    }
    write_back(cells, at, &held);
    while j < n {
        one(cells, count, j);
        j += 1;
    }
}

/// `acc[l] += x[l]` for the four lanes, written as one 4-wide add.
#[inline(always)]
fn add4(acc: &mut [f64; 4], x: [f64; 4]) {
    *acc = [acc[0] + x[0], acc[1] + x[1], acc[2] + x[2], acc[3] + x[3]];
}

/// [`add_run`] compiled for AVX2 (the 4-wide adds in one register each; no fused
/// multiply-adds: the same bits).
///
/// # Safety
/// The processor must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_run_avx2<const CE: bool, const ALPHA_CE: bool, const FOCAL: bool, const UNIT: bool>(
    cells: &mut [Cells; 3],
    count: &mut [u64; 4],
    c: &Columns<'_>,
) {
    add_run::<CE, ALPHA_CE, FOCAL, UNIT>(cells, count, c)
}

/// A reweighting strategy's sums: per bucket, and the loss per image (for the normaliser).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    /// Per bucket: count, selected (= count), loss and gradient norm.
    pub buckets: [BucketAcc; 4],
    /// The loss per image.
    #[serde(with = "crate::analysis::pairs")]
    pub per_image: BTreeMap<ImageKey, ExactSum>,
}

impl Sums {
    /// Sums one chunk; `terms(i, d)` gives decision `i`'s loss and gradient norm (unweighted).
    #[inline(always)]
    pub fn add(&mut self, chunk: &DecisionChunk<'_>, terms: impl Fn(usize, &Decision) -> (f64, f64)) {
        if chunk.batch.weight.is_none() {
            self.add_with::<true>(chunk, terms);
        } else {
            self.add_with::<false>(chunk, terms);
        }
    }

    /// [`Sums::add`]; `UNIT`: every weight is 1, and the products by it are left out (x * 1 is
    /// x).
    #[inline(always)]
    fn add_with<const UNIT: bool>(
        &mut self,
        chunk: &DecisionChunk<'_>,
        terms: impl Fn(usize, &Decision) -> (f64, f64),
    ) {
        // f64 subtotals within a run of a summation block, one exact add per run (see
        // `analysis::edges`): the same rows always form the same runs, whatever the batching.
        let weights = chunk.batch.weight.as_deref();
        let weigh = |x: f64, m: &Meta| if UNIT { x } else { x * m.weight(weights) };
        let mut count = [0u64; 4];
        for run in chunk.runs {
            // Bucket sums in four interleaved lanes (decision i goes to lane i % 4): four
            // independent add chains instead of one, combined at the end of the run in a fixed
            // order, so the result depends only on the run's decisions. Four consecutive
            // decisions of one bucket take one 4-wide add per quantity (the same adds, in the
            // same order).
            let mut cells: Cells = [[[0.0f64; 4]; 2]; 4];
            let decisions = chunk.decisions.slice(run.start..run.end);
            let meta = &chunk.meta[run.start..run.end];
            let n = decisions.len().min(meta.len());
            let (decisions, meta) = (decisions.slice(0..n), &meta[..n]);
            // One decision's terms into lane `l` of its bucket.
            let one =
                |cells: &mut Cells, count: &mut [u64; 4], l: usize, (loss, grad): (f64, f64), m: &Meta| {
                    let b = m.bucket as usize;
                    cells[b][0][l] += weigh(loss, m);
                    cells[b][1][l] += weigh(grad, m);
                    count[b] += 1;
                };
            let mut i = 0;
            while i + 4 <= n {
                let t: [(f64, f64); 4] =
                    std::array::from_fn(|l| terms(run.start + i + l, &decisions.get(i + l)));
                let ms = &meta[i..i + 4];
                let bucket: [u8; 4] = std::array::from_fn(|l| ms[l].bucket as u8);
                if u32::from_ne_bytes(bucket) == u32::from(bucket[0]) * 0x0101_0101 {
                    let b = usize::from(bucket[0]);
                    add4(&mut cells[b][0], std::array::from_fn(|l| weigh(t[l].0, &ms[l])));
                    add4(&mut cells[b][1], std::array::from_fn(|l| weigh(t[l].1, &ms[l])));
                    count[b] += 4;
                } else {
                    for l in 0..4 {
                        one(&mut cells, &mut count, l, t[l], &ms[l]);
                    }
                }
                i += 4;
            }
            while i < n {
                one(&mut cells, &mut count, i & 3, terms(run.start + i, &decisions.get(i)), &meta[i]);
                i += 1;
            }
            self.fold_run(&cells, &chunk.batch.images[run.image].key);
        }
        self.add_counts(count);
    }

    /// Folds a run's lanes (per bucket: the loss's four lanes and the gradient's) into the
    /// bucket sums and the image's loss, exactly once per run, combining the lanes in a fixed
    /// order.
    #[inline]
    fn fold_run(&mut self, cells: &Cells, key: &ImageKey) {
        let fold = |x: &[f64; 4]| crate::analysis::sum::lanes_total(*x);
        let mut image_loss = ExactSum::ZERO;
        for (b, cell) in cells.iter().enumerate() {
            let (loss, grad) = (fold(&cell[0]), fold(&cell[1]));
            self.buckets[b].loss += loss;
            self.buckets[b].grad += grad;
            image_loss += loss;
        }
        match self.per_image.get_mut(key) {
            Some(s) => *s += image_loss,
            None => {
                self.per_image.insert(key.clone(), image_loss);
            }
        }
    }

    /// Adds the chunk's decision counts per bucket; every decision is selected with weight 1,
    /// so the selected sum is the count.
    fn add_counts(&mut self, count: [u64; 4]) {
        for (b, n) in self.buckets.iter_mut().zip(count) {
            b.count += n;
            b.selected += n as f64;
        }
    }

    /// Adds another part's sums.
    pub fn merge(&mut self, other: Sums) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.merge(b);
        }
        for (k, v) in other.per_image {
            *self.per_image.entry(k).or_default() += v;
        }
    }
}

/// Expands the strategy list into [`Reweighter`], keeping the `reweight(..)` lines.
macro_rules! define_reweighter {
    (@keep [$($out:tt)*]) => {
        define_reweighter!(@emit $($out)*);
    };
    (@keep [$($out:tt)*] $(#[$doc:meta])* $variant:ident $name:literal $default:ident $act:ident
        reweight($($ty:tt)*), $($rest:tt)*) => {
        define_reweighter!(@keep [$($out)* $variant($($ty)*)] $($rest)*);
    };
    (@keep [$($out:tt)*] $(#[$doc:meta])* $variant:ident $name:literal $default:ident $act:ident
        $family:ident $(($($ty:tt)*))?, $($rest:tt)*) => {
        define_reweighter!(@keep [$($out)*] $($rest)*);
    };
    (@emit $($variant:ident($ty:ty))*) => {
        /// One reweighting strategy with its settings (the `reweight(..)` lines of the list).
        #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Reweighter {
            $(
                #[doc = concat!("`", stringify!($ty), "`.")]
                $variant($ty),
            )*
        }

        impl Reweighter {
            /// The reweighting strategy `kind` with its settings from `config`, if `kind` is one.
            pub fn of(kind: StrategyKind, config: &AnalysisConfig) -> Option<Reweighter> {
                match kind {
                    $(StrategyKind::$variant => Some(Reweighter::$variant(<$ty>::from_config(config))),)*
                    _ => None,
                }
            }

            /// Which strategy this is.
            pub fn kind(&self) -> StrategyKind {
                match self {
                    $(Reweighter::$variant(_) => StrategyKind::$variant,)*
                }
            }

            /// The parameters shown in the report.
            pub fn params(&self) -> Params {
                match self {
                    $(Reweighter::$variant(s) => s.params(),)*
                }
            }

            /// Where the chunk's terms hold this strategy's loss (see [`Reweighting::precomputed`]).
            pub fn precomputed(&self, terms: &Terms) -> Option<Precomputed> {
                match self {
                    $(Reweighter::$variant(s) => s.precomputed(terms),)*
                }
            }

            /// Sums one chunk (see [`Reweighting::sum_chunk`]).
            pub fn sum_chunk(&self, chunk: &DecisionChunk<'_>, sums: &mut Sums) {
                match self {
                    $(Reweighter::$variant(s) => s.sum_chunk(chunk, sums),)*
                }
            }
        }
    };
    ($($lines:tt)*) => {
        define_reweighter!(@keep [] $($lines)*);
    };
}

crate::vocab::strategy_list!(define_reweighter);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::decisions::{for_each_chunk, Expansion, Focus, Scoring};
    use crate::config::{Activation, AnalysisParams, Layout, ScoreKind};
    use crate::input::{DumpShape, ScoreValues, Targets};
    use crate::rng::Rng;

    /// Every subset of ce, alpha_ce, focal summed in one walk gives, for each strategy, the
    /// sums of its own walk over its per-decision `terms` (bit for bit: `Sums` compares its
    /// exact sums), on dense logits and on weighted binary probabilities with soft targets.
    #[test]
    fn the_precomputed_walk_gives_each_strategy_the_sums_of_its_own_walk() {
        let mut rng = Rng::new(11, 0);
        let n = 3000;
        let ids: Vec<i64> = (0..n).map(|r| r as i64 / 700).collect();
        let dense = {
            let labels = (0..n).map(|_| [-2, -1, -1, 0, 1, 2][rng.below(6) as usize]).collect();
            let scores = (0..3 * n).map(|_| (rng.normal() * 4.0) as f32).collect();
            crate::input::test_batch(ids.clone(), Targets::Labels(labels), ScoreValues::from_f32(scores), 0)
        };
        let binary = {
            let targets = (0..n).map(|_| [0.0, 1.0, rng.uniform()][rng.below(3) as usize]).collect();
            let scores = (0..n).map(|_| rng.uniform()).collect();
            let mut b =
                crate::input::test_batch(ids, Targets::Binary(targets), ScoreValues::from_f64(scores), 0);
            b.weight = Some((0..n).map(|_| rng.uniform() * 2.0).collect());
            b
        };
        let cases =
            [(dense, Layout::Dense, ScoreKind::Logits, 3), (binary, Layout::Binary, ScoreKind::Probs, 1)];
        // alpha 0.3, not 0.25: products with a power of two would hide a reordered product.
        let focus = Focus { gamma: 2.0, alpha: Some(0.3) };
        let all = [
            (Precomputed::Ce, Reweighter::Ce(ce::Ce)),
            (Precomputed::AlphaCe, Reweighter::AlphaCe(alpha_ce::AlphaCe { alpha: focus.alpha })),
            (Precomputed::Focal, Reweighter::Focal(focal::Focal { focus })),
        ];
        for (batch, layout, scores, width) in cases {
            let shape = DumpShape { layout, scores, activation: Activation::Sigmoid };
            let exp = Expansion { shape, width, background_class: 0 };
            for subset in 1..8usize {
                let chosen: Vec<_> = all.iter().enumerate().filter(|(k, _)| subset >> k & 1 == 1).collect();
                let mut fused = vec![Sums::default(); chosen.len()];
                let mut own = vec![Sums::default(); chosen.len()];
                for_each_chunk(&exp, &batch, &Scoring { tau: 0.5, focus }, &mut |chunk| {
                    let mut targets: Vec<(Precomputed, &mut Sums)> = Vec::new();
                    for ((_, (kind, strategy)), sums) in chosen.iter().zip(fused.iter_mut()) {
                        assert_eq!(strategy.precomputed(chunk.terms), Some(*kind));
                        targets.push((*kind, sums));
                    }
                    sum_precomputed(chunk, &mut targets);
                    for ((_, (_, strategy)), sums) in chosen.iter().zip(own.iter_mut()) {
                        sums.add(chunk, |_, d| match strategy {
                            Reweighter::Ce(s) => s.terms(d),
                            Reweighter::AlphaCe(s) => s.terms(d),
                            Reweighter::Focal(s) => s.terms(d),
                            _ => unreachable!(),
                        });
                    }
                });
                assert_eq!(fused, own, "{layout:?}, subset {subset:03b}");
                assert!(own.iter().all(|s| s.buckets.iter().any(|b| b.loss.value() > 0.0)));
            }
        }
    }

    /// [`Sums::add`] one decision at a time, in the lanes as they were laid out before the 4-wide
    /// adds (`lanes[i % 4][bucket]`, gradient at `4 + bucket`), every term multiplied by its
    /// weight: the reference the 4-wide walks must match bit for bit.
    fn one_at_a_time(
        chunk: &DecisionChunk<'_>,
        sums: &mut Sums,
        terms: impl Fn(usize, &Decision) -> (f64, f64),
    ) {
        let mut count = [0u64; 4];
        for run in chunk.runs {
            let mut lanes = [[0.0f64; 8]; 4];
            for i in run.start..run.end {
                let (d, m) = (&chunk.decisions.get(i), &chunk.meta[i]);
                let (loss, grad) = terms(i, d);
                let b = m.bucket as usize;
                let w = m.weight(chunk.batch.weight.as_deref());
                lanes[(i - run.start) % 4][b] += loss * w;
                lanes[(i - run.start) % 4][4 + b] += grad * w;
                count[b] += 1;
            }
            let mut image_loss = ExactSum::ZERO;
            for b in 0..4 {
                let loss = (lanes[0][b] + lanes[1][b]) + (lanes[2][b] + lanes[3][b]);
                let grad = (lanes[0][4 + b] + lanes[1][4 + b]) + (lanes[2][4 + b] + lanes[3][4 + b]);
                sums.buckets[b].loss += loss;
                sums.buckets[b].grad += grad;
                image_loss += loss;
            }
            *sums.per_image.entry(chunk.batch.images[run.image].key.clone()).or_default() += image_loss;
        }
        sums.add_counts(count);
    }

    /// The 4-wide walks ([`sum_precomputed`] for every subset of ce, alpha_ce, focal, and
    /// [`Sums::add`] for every reweighting strategy) give the sums of one decision at a time,
    /// bit for bit: on dense logits whose decisions are mostly easy negatives (long stretches of
    /// one bucket, cut by others), with and without a weight column on binary probabilities;
    /// images of 701 rows (runs whose lengths are not multiples of 4, several per chunk).
    #[test]
    fn the_four_wide_walks_give_the_sums_of_one_decision_at_a_time() {
        let mut rng = Rng::new(12, 0);
        let n = 5000;
        let ids: Vec<i64> = (0..n).map(|r| r as i64 / 701).collect();
        let mostly_easy =
            |rng: &mut Rng| if rng.below(10) < 8 { -6.0 + rng.normal() } else { rng.normal() * 4.0 };
        let dense = {
            let labels = (0..n)
                .map(|_| if rng.below(10) == 0 { [-2, 0, 1, 2][rng.below(4) as usize] } else { -1 })
                .collect();
            let scores = (0..3 * n).map(|_| mostly_easy(&mut rng) as f32).collect();
            crate::input::test_batch(ids.clone(), Targets::Labels(labels), ScoreValues::from_f32(scores), 0)
        };
        let binary = |rng: &mut Rng, weighted: bool| {
            let targets =
                (0..n).map(|_| [0.0, 0.0, 0.0, 1.0, rng.uniform()][rng.below(5) as usize]).collect();
            let scores = (0..n).map(|_| 1.0 / (1.0 + (-mostly_easy(rng)).exp())).collect();
            let mut b = crate::input::test_batch(
                ids.clone(),
                Targets::Binary(targets),
                ScoreValues::from_f64(scores),
                0,
            );
            if weighted {
                b.weight = Some((0..n).map(|_| rng.uniform() * 2.0).collect());
            }
            b
        };
        let (weighted, unweighted) = (binary(&mut rng, true), binary(&mut rng, false));
        let cases = [
            (dense, Layout::Dense, ScoreKind::Logits, 3),
            (weighted, Layout::Binary, ScoreKind::Probs, 1),
            (unweighted, Layout::Binary, ScoreKind::Probs, 1),
        ];
        let focus = Focus { gamma: 2.0, alpha: Some(0.3) };
        let config =
            AnalysisParams { strategies: StrategyKind::ALL.to_vec(), alpha: 0.3, ..Default::default() }
                .check()
                .unwrap();
        let all: Vec<Reweighter> =
            StrategyKind::ALL.iter().filter_map(|&k| Reweighter::of(k, &config)).collect();
        let terms_of = |s: &Reweighter, d: &Decision| match s {
            Reweighter::Ce(s) => s.terms(d),
            Reweighter::AlphaCe(s) => s.terms(d),
            Reweighter::Focal(s) => s.terms(d),
            Reweighter::Qfl(s) => s.terms(d),
            Reweighter::Vfl(s) => s.terms(d),
        };
        for (batch, layout, scores, width) in cases {
            let shape = DumpShape { layout, scores, activation: Activation::Sigmoid };
            let exp = Expansion { shape, width, background_class: 0 };
            let mut reference = vec![Sums::default(); all.len()];
            let mut own = vec![Sums::default(); all.len()];
            let mut fused = vec![Sums::default(); all.len()];
            let (mut chunks, mut same) = (0, 0);
            for_each_chunk(&exp, &batch, &Scoring { tau: 0.5, focus }, &mut |chunk| {
                chunks += 1;
                assert!(chunk.runs.len() > 1 || chunk.decisions.len() < 4096);
                same +=
                    chunk.meta.chunks_exact(4).filter(|m| m.iter().all(|x| x.bucket == m[0].bucket)).count();
                let mut targets = Vec::new();
                for (k, s) in all.iter().enumerate() {
                    one_at_a_time(chunk, &mut reference[k], |_, d| terms_of(s, d));
                    own[k].add(chunk, |_, d| terms_of(s, d));
                }
                for (s, sums) in all.iter().zip(fused.iter_mut()) {
                    if let Some(kind) = s.precomputed(chunk.terms) {
                        targets.push((kind, sums));
                    }
                }
                assert_eq!(targets.len(), 3);
                sum_precomputed(chunk, &mut targets);
            });
            assert!(chunks > 1 && same > 100, "{layout:?}: {chunks} chunks, {same} groups of one bucket");
            assert_eq!(own, reference, "{layout:?}");
            for (k, s) in all.iter().enumerate() {
                if s.precomputed(&Terms { focus, ..Terms::default() }).is_some() {
                    assert_eq!(fused[k], reference[k], "{layout:?}, {:?}", s.kind());
                }
            }
            assert!(reference.iter().all(|s| s.buckets.iter().all(|b| b.loss.value() > 0.0)));
        }
    }

    #[test]
    fn terms_at_other_settings_are_not_read_as_precomputed() {
        let terms = Terms { focus: Focus { gamma: 2.0, alpha: Some(0.25) }, ..Terms::default() };
        assert_eq!(ce::Ce.precomputed(&terms), Some(Precomputed::Ce));
        assert_eq!(alpha_ce::AlphaCe { alpha: Some(0.5) }.precomputed(&terms), None);
        assert_eq!(alpha_ce::AlphaCe { alpha: Some(0.25) }.precomputed(&terms), Some(Precomputed::AlphaCe));
        let other = Focus { gamma: 1.0, alpha: Some(0.25) };
        assert_eq!(focal::Focal { focus: other }.precomputed(&terms), None);
        assert_eq!(qfl::Qfl { params: qfl::QflParams::default() }.precomputed(&terms), None);
    }

    #[test]
    fn every_reweight_line_of_the_list_dispatches_to_its_own_strategy() {
        let config =
            AnalysisParams { strategies: StrategyKind::ALL.to_vec(), ..Default::default() }.check().unwrap();
        let mut reweighting = 0;
        for &kind in StrategyKind::ALL {
            match Reweighter::of(kind, &config) {
                Some(r) => {
                    assert_eq!(r.kind(), kind);
                    assert!(!kind.selects_per_image(), "{kind}");
                    reweighting += 1;
                }
                None => assert!(kind.selects_per_image() || kind == StrategyKind::Ghm, "{kind}"),
            }
        }
        assert_eq!(reweighting, 5);
    }
}
