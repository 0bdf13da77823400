//! GHM-C, the gradient harmonizing classification loss (Li et al. 2019), with mmdetection
//! `GHMC` semantics and momentum 0.
//!
//! The gradient norm g = |p - y| of every decision falls in one of `bins` equal bins over
//! [0, 1] (bin i holds [i/bins, (i+1)/bins); g = 1 falls in the last bin, as mmdetection's last
//! edge of 1 + 1e-6 makes it). With N valid decisions and n non-empty bins, a decision in bin b
//! weighs N / (count_b n), and the loss is sum(weight x CE) / N. The weights average 1, so the
//! report's `total` (the weighted sum) is on the same scale as CE's; mmdetection's value, the sum
//! divided by N, is the extra field `mmdetection_loss`.
//!
//! mmdetection computes the density per training batch, optionally smoothed with a momentum
//! across iterations. An offline dump has no iterations: hardmine treats the whole dump as one
//! batch, which is what momentum 0 means for a single step. Everything is a per-bin sum, so the
//! weights, known only at the end, apply to sums kept in one pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::ImageCounts;
use super::decisions::DecisionChunk;
use super::sum::ExactSum;
use super::Accumulator;
use crate::input::ImageKey;
use crate::report::StrategyReport;

/// Per-bin sums of one bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bins {
    count: Vec<u64>,
    ce: Vec<ExactSum>,
    grad: Vec<ExactSum>,
}

impl Bins {
    fn new(n: usize) -> Bins {
        Bins { count: vec![0; n], ce: vec![ExactSum::ZERO; n], grad: vec![ExactSum::ZERO; n] }
    }
}

/// The GHM-C accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GhmAcc {
    bins: usize,
    buckets: [Bins; 4],
    #[serde(with = "crate::analysis::pairs")]
    per_image: BTreeMap<ImageKey, Vec<ExactSum>>,
}

/// The bin of a gradient norm in [0, 1].
pub fn bin_of(g: f64, bins: usize) -> usize {
    ((g * bins as f64) as usize).min(bins - 1)
}

impl GhmAcc {
    /// An empty accumulator with `bins` bins.
    pub fn new(bins: usize) -> GhmAcc {
        GhmAcc {
            bins,
            buckets: [Bins::new(bins), Bins::new(bins), Bins::new(bins), Bins::new(bins)],
            per_image: BTreeMap::new(),
        }
    }

    /// The weight of each bin: N / (count n), 0 for empty bins.
    pub fn weights(&self) -> Vec<f64> {
        let counts: Vec<u64> =
            (0..self.bins).map(|i| self.buckets.iter().map(|b| b.count[i]).sum()).collect();
        let total: u64 = counts.iter().sum();
        let nonempty = counts.iter().filter(|&&c| c > 0).count() as f64;
        counts.iter().map(|&c| if c > 0 { total as f64 / (c as f64 * nonempty) } else { 0.0 }).collect()
    }

    /// Builds the report entry.
    pub fn finish(&self, images: &BTreeMap<ImageKey, ImageCounts>) -> StrategyReport {
        let w = self.weights();
        let weighted = |sums: &[ExactSum]| {
            let mut s = ExactSum::ZERO;
            for (x, wi) in sums.iter().zip(&w) {
                s += x.value() * wi;
            }
            s.value()
        };
        let sums = [0, 1, 2, 3].map(|b| {
            let bins = &self.buckets[b];
            let count: u64 = bins.count.iter().sum();
            (count, count as f64, weighted(&bins.ce), weighted(&bins.grad))
        });
        let mut normalized = ExactSum::ZERO;
        for (key, counts) in images {
            if let Some(s) = self.per_image.get(key) {
                normalized += weighted(s) / counts.positives.max(1) as f64;
            }
        }
        let n_decisions: u64 = sums.iter().map(|s| s.0).sum();
        let mut params = BTreeMap::new();
        params.insert("bins".to_string(), serde_json::json!(self.bins));
        params.insert("momentum".to_string(), serde_json::json!(0.0));
        let mut report = StrategyReport::from_buckets(
            "ghm",
            params,
            sums,
            normalized.value() / images.len().max(1) as f64,
        );
        let total = report.loss.total;
        report.extra.insert("mmdetection_loss".into(), serde_json::json!(total / n_decisions.max(1) as f64));
        report.extra.insert("bin_weights".into(), serde_json::json!(w));
        report
    }
}

impl Accumulator for GhmAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        // f64 subtotals within a run of a summation block, one exact add per run and bin (see
        // `analysis::edges`).
        // Decision i goes to lane i % 4 (four independent add chains: most decisions fall in
        // the same bin); the lanes are combined in a fixed order at the end of the run.
        let n = self.bins;
        let width = 4 * n;
        let mut ce = vec![0.0f64; 4 * width];
        let mut grad = vec![0.0f64; 4 * width];
        let mut count = vec![0u64; 4 * width];
        for run in chunk.runs {
            let mut image = vec![ExactSum::ZERO; n];
            let decisions = &chunk.decisions[run.start..run.end];
            let meta = &chunk.meta[run.start..run.end];
            for (i, (d, m)) in decisions.iter().zip(meta).enumerate() {
                let g = d.ce_grad();
                let at = (i & 3) * width + m.bucket as usize * n + bin_of(g, n);
                count[at] += 1;
                ce[at] += d.ce * m.weight;
                grad[at] += g * m.weight;
            }
            for (bucket, b) in self.buckets.iter_mut().enumerate() {
                for bin in 0..n {
                    let at = bucket * n + bin;
                    let lanes = [at, width + at, 2 * width + at, 3 * width + at];
                    let c: u64 = lanes.iter().map(|&k| count[k]).sum();
                    if c == 0 {
                        continue;
                    }
                    let sum = |v: &[f64]| (v[lanes[0]] + v[lanes[1]]) + (v[lanes[2]] + v[lanes[3]]);
                    let (ce_sum, grad_sum) = (sum(&ce), sum(&grad));
                    b.count[bin] += c;
                    b.ce[bin] += ce_sum;
                    b.grad[bin] += grad_sum;
                    image[bin] += ce_sum;
                    for k in lanes {
                        count[k] = 0;
                        ce[k] = 0.0;
                        grad[k] = 0.0;
                    }
                }
            }
            let key = &chunk.batch.images[run.image].key;
            let entry = match self.per_image.get_mut(key) {
                Some(e) => e,
                None => self.per_image.entry(key.clone()).or_insert_with(|| vec![ExactSum::ZERO; self.bins]),
            };
            for (a, b) in entry.iter_mut().zip(image) {
                *a += b;
            }
        }
    }

    fn merge(&mut self, other: Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            for i in 0..self.bins {
                a.count[i] += b.count[i];
                a.ce[i] += b.ce[i];
                a.grad[i] += b.grad[i];
            }
        }
        for (k, v) in other.per_image {
            let e = self.per_image.entry(k).or_insert_with(|| vec![ExactSum::ZERO; v.len()]);
            for (a, b) in e.iter_mut().zip(v) {
                *a += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_half_open_with_one_in_the_last() {
        assert_eq!(bin_of(0.0, 30), 0);
        assert_eq!(bin_of(0.0333, 30), 0);
        assert_eq!(bin_of(0.5, 30), 15);
        assert_eq!(bin_of(0.999, 30), 29);
        assert_eq!(bin_of(1.0, 30), 29);
    }
}
