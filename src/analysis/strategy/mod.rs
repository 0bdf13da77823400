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

use super::decisions::DecisionChunk;
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
            let key = &chunk.batch.images[run.image].key;
            match self.per_image.get_mut(key) {
                Some(s) => *s += image_loss,
                None => {
                    self.per_image.insert(key.clone(), image_loss);
                }
            }
        }
        // Every decision is selected with weight 1: the selected sum is the count.
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
    use crate::config::AnalysisParams;

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
