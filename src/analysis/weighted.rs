//! Strategies that keep every decision and reweight its loss: `ce`, `alpha_ce` and `focal`.
//!
//! | strategy | loss of a decision | gradient norm |
//! |---|---|---|
//! | `ce` | CE | \|p - y\| |
//! | `alpha_ce` | alpha_t CE | alpha_t \|p - y\| |
//! | `focal` | alpha_t (1 - p_t)^gamma CE | \|dFL/dx\| |
//!
//! All three match torchvision's `ops.sigmoid_focal_loss` (gamma 0 gives alpha-CE, gamma 0 with
//! alpha < 0 gives CE) and, for softmax dumps, the categorical focal loss on the labelled class.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::ImageCounts;
use super::decisions::{DecisionChunk, Focus};
use super::sum::ExactSum;
use super::{Accumulator, BucketAcc};
use crate::config::StrategyKind;
use crate::input::ImageKey;
use crate::loss::Decision;
use crate::report::StrategyReport;

/// The reweighting strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightedKind {
    /// `ce`.
    Ce,
    /// `alpha_ce`.
    AlphaCe,
    /// `focal`.
    Focal,
}

impl WeightedKind {
    /// The reweighting strategy behind a strategy name, if it is one.
    pub fn of(kind: StrategyKind) -> Option<WeightedKind> {
        match kind {
            StrategyKind::Ce => Some(WeightedKind::Ce),
            StrategyKind::AlphaCe => Some(WeightedKind::AlphaCe),
            StrategyKind::Focal => Some(WeightedKind::Focal),
            _ => None,
        }
    }

    fn strategy(self) -> StrategyKind {
        match self {
            WeightedKind::Ce => StrategyKind::Ce,
            WeightedKind::AlphaCe => StrategyKind::AlphaCe,
            WeightedKind::Focal => StrategyKind::Focal,
        }
    }
}

/// The loss function of a reweighting strategy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weighting {
    /// Which strategy this is.
    pub kind: WeightedKind,
    /// Focusing parameter (0 for ce and alpha_ce).
    pub gamma: f64,
    /// Alpha, `None` = no alpha weighting.
    pub alpha: Option<f64>,
}

/// Accumulates a reweighting strategy's loss by bucket and by image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedAcc {
    weighting: Weighting,
    buckets: [BucketAcc; 4],
    #[serde(with = "crate::analysis::pairs")]
    per_image: BTreeMap<ImageKey, ExactSum>,
}

impl WeightedAcc {
    /// An empty accumulator for `kind` with the configured gamma and alpha.
    pub fn new(kind: WeightedKind, gamma: f64, alpha: Option<f64>) -> WeightedAcc {
        let weighting = match kind {
            WeightedKind::Ce => Weighting { kind, gamma: 0.0, alpha: None },
            WeightedKind::AlphaCe => Weighting { kind, gamma: 0.0, alpha },
            WeightedKind::Focal => Weighting { kind, gamma, alpha },
        };
        WeightedAcc { weighting, buckets: Default::default(), per_image: BTreeMap::new() }
    }

    /// Builds the report entry. `images` holds every image of the dump (for the normaliser).
    pub fn finish(&self, images: &BTreeMap<ImageKey, ImageCounts>) -> StrategyReport {
        let Weighting { kind, gamma, alpha } = self.weighting;
        let mut params = BTreeMap::new();
        if kind == WeightedKind::Focal {
            params.insert("gamma".to_string(), serde_json::json!(gamma));
        }
        if kind != WeightedKind::Ce {
            params.insert("alpha".to_string(), serde_json::json!(alpha));
        }
        let mut normalized = ExactSum::ZERO;
        for (key, counts) in images {
            if let Some(s) = self.per_image.get(key) {
                normalized += s.value() / counts.positives.max(1) as f64;
            }
        }
        let n_images = images.len().max(1) as f64;
        StrategyReport::from_buckets(
            kind.strategy().name(),
            params,
            super::bucket_sums(&self.buckets),
            normalized.value() / n_images,
        )
    }
}

impl WeightedAcc {
    /// Sums one chunk; `terms(i, d)` gives decision `i`'s loss and gradient norm (unweighted).
    #[inline(always)]
    fn observe_with(&mut self, chunk: &DecisionChunk<'_>, terms: impl Fn(usize, &Decision) -> (f64, f64)) {
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
}

impl Accumulator for WeightedAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        let Weighting { kind, gamma, alpha } = self.weighting;
        // The chunk's precomputed terms where they are this strategy's (the same bits as the
        // `Decision` methods), the methods otherwise.
        let t = chunk.terms;
        let shared = t.focus == Focus { gamma, alpha };
        match kind {
            WeightedKind::Ce => self.observe_with(chunk, |i, d| (d.ce, t.ce_grad[i])),
            WeightedKind::AlphaCe if t.focus.alpha == alpha => self.observe_with(chunk, |i, d| {
                let a = t.alpha_t[i];
                (a * d.ce, a * t.ce_grad[i])
            }),
            WeightedKind::AlphaCe => self.observe_with(chunk, |_, d| {
                let a = d.alpha_t(alpha);
                (a * d.ce, a * d.ce_grad())
            }),
            WeightedKind::Focal if shared => self.observe_with(chunk, |i, _| (t.focal[i], t.focal_grad[i])),
            WeightedKind::Focal => {
                self.observe_with(chunk, |_, d| (d.focal(gamma, alpha), d.focal_grad(gamma, alpha)))
            }
        }
    }

    fn merge(&mut self, other: Self) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.merge(b);
        }
        for (k, v) in other.per_image {
            *self.per_image.entry(k).or_default() += v;
        }
    }
}
