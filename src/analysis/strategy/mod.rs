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

use super::decisions::{DecisionChunk, Terms};
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

/// [`sum_precomputed`]'s walk: `CE`, `ALPHA_CE`, `FOCAL` say which kinds are summed.
#[inline(always)]
fn walk<const CE: bool, const ALPHA_CE: bool, const FOCAL: bool>(
    chunk: &DecisionChunk<'_>,
    targets: &mut [(Precomputed, &mut Sums)],
) {
    let t = chunk.terms;
    let mut count = [0u64; 4];
    for run in chunk.runs {
        // lanes[lane][k]: Precomputed::ALL[k]'s loss per bucket (0..4) and gradient (4..8).
        let mut lanes = [[[0.0f64; 8]; 3]; 4];
        let mut counts = [[0u64; 4]; 4];
        let range = run.start..run.end;
        let (decisions, meta) = (&chunk.decisions[range.clone()], &chunk.meta[range.clone()]);
        let (alpha_t, ce_grad) = (&t.alpha_t[range.clone()], &t.ce_grad[range.clone()]);
        let (focal, focal_grad) = (&t.focal[range.clone()], &t.focal_grad[range]);
        // Decision i goes to lane i % 4.
        let add = |lane: &mut [[f64; 8]; 3], counts: &mut [u64; 4], i: usize| {
            let (d, m) = (&decisions[i], &meta[i]);
            let (b, w) = (m.bucket as usize, m.weight);
            let (a, g) = (alpha_t[i], ce_grad[i]);
            if CE {
                lane[0][b] += d.ce * w;
                lane[0][4 + b] += g * w;
            }
            if ALPHA_CE {
                lane[1][b] += a * d.ce * w;
                lane[1][4 + b] += a * g * w;
            }
            if FOCAL {
                lane[2][b] += focal[i] * w;
                lane[2][4 + b] += focal_grad[i] * w;
            }
            counts[b] += 1;
        };
        let n = decisions.len().min(meta.len()).min(alpha_t.len()).min(ce_grad.len());
        let n = n.min(focal.len()).min(focal_grad.len());
        // Four decisions at a time, one per lane: the lanes are fixed places, not computed
        // from i.
        let [l0, l1, l2, l3] = &mut lanes;
        let [c0, c1, c2, c3] = &mut counts;
        let whole = n - n % 4;
        for i in (0..whole).step_by(4) {
            add(l0, c0, i);
            add(l1, c1, i + 1);
            add(l2, c2, i + 2);
            add(l3, c3, i + 3);
        }
        for i in whole..n {
            let (lane, c) = match i & 3 {
                0 => (&mut *l0, &mut *c0),
                1 => (&mut *l1, &mut *c1),
                _ => (&mut *l2, &mut *c2),
            };
            add(lane, c, i);
        }
        for c in counts {
            for k in 0..4 {
                count[k] += c[k];
            }
        }
        let key = &chunk.batch.images[run.image].key;
        for (kind, sums) in targets.iter_mut() {
            let k = *kind as usize;
            sums.fold_run(&lanes.map(|lane| lane[k]), key);
        }
    }
    for (_, sums) in targets.iter_mut() {
        sums.add_counts(count);
    }
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
        // f64 subtotals within a run of a summation block, one exact add per run (see
        // `analysis::edges`): the same rows always form the same runs, whatever the batching.
        let mut count = [0u64; 4];
        for run in chunk.runs {
            // Bucket sums in four interleaved lanes (decision i goes to lane i % 4): four
            // independent add chains instead of one, combined at the end of the run in a fixed
            // order, so the result depends only on the run's decisions.
            let mut lanes = [[0.0f64; 8]; 4];
            let mut counts = [[0u64; 4]; 4];
            let decisions = &chunk.decisions[run.start..run.end];
            let meta = &chunk.meta[run.start..run.end];
            for (i, (d, m)) in decisions.iter().zip(meta).enumerate() {
                let (loss, grad) = terms(run.start + i, d);
                let b = m.bucket as usize;
                let lane = &mut lanes[i & 3];
                lane[b] += loss * m.weight;
                lane[4 + b] += grad * m.weight;
                counts[i & 3][b] += 1;
            }
            for c in counts {
                for k in 0..4 {
                    count[k] += c[k];
                }
            }
            self.fold_run(&lanes, &chunk.batch.images[run.image].key);
        }
        self.add_counts(count);
    }

    /// Folds a run's four lanes (loss per bucket in 0..4, gradient in 4..8) into the bucket
    /// sums and the image's loss, exactly once per run, combining the lanes in a fixed order.
    #[inline]
    fn fold_run(&mut self, lanes: &[[f64; 8]; 4], key: &ImageKey) {
        let mut loss_b = [0.0f64; 4];
        let mut grad_b = [0.0f64; 4];
        for k in 0..4 {
            loss_b[k] = (lanes[0][k] + lanes[1][k]) + (lanes[2][k] + lanes[3][k]);
            grad_b[k] = (lanes[0][4 + k] + lanes[1][4 + k]) + (lanes[2][4 + k] + lanes[3][4 + k]);
        }
        let mut image_loss = ExactSum::ZERO;
        for b in 0..4 {
            self.buckets[b].loss += loss_b[b];
            self.buckets[b].grad += grad_b[b];
            image_loss += loss_b[b];
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
