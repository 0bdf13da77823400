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
use crate::error::ConfigError;
use crate::input::ImageKey;
use crate::report::StrategyReport;

/// GHM-C settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GhmParams {
    /// Equal-width gradient-norm bins over [0, 1] (`--ghm-bins`, default 30).
    pub bins: usize,
    /// The gradient density per FPN level, as mmdetection's `AnchorHead.loss` runs `GHMC` once
    /// per level (`--ghm-per-level`; needs a `level` column). Default: over all decisions.
    #[serde(default)]
    pub per_level: bool,
}

impl Default for GhmParams {
    fn default() -> Self {
        GhmParams { bins: 30, per_level: false }
    }
}

impl GhmParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.bins) {
            return Err(ConfigError::invalid(
                "--ghm-bins",
                self.bins,
                "use 1 to 10000 bins (mmdetection uses 10, the paper 30)",
            ));
        }
        Ok(())
    }
}

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
    params: GhmParams,
    /// Per density group (the FPN level with `per_level`, else the single group 0), per
    /// bucket: the bins.
    groups: BTreeMap<i64, [Bins; 4]>,
    /// Per image, per group: CE per bin (for the normalised loss).
    #[serde(with = "crate::analysis::pairs")]
    per_image: BTreeMap<ImageKey, BTreeMap<i64, Vec<ExactSum>>>,
}

/// The bin of a gradient norm in [0, 1] (anything above 1 in the last bin, NaN and negatives in
/// the first). Converted through `i32`, whose saturating conversion is one instruction and two
/// fix-ups where `usize`'s takes several more; the same bin for every input as through `usize` (`bins`
/// is at most 10,000: [`GhmParams::check`]).
#[inline(always)]
pub fn bin_of(g: f64, bins: usize) -> usize {
    ((g * bins as f64) as i32).clamp(0, bins as i32 - 1) as usize
}

impl GhmAcc {
    /// An empty accumulator.
    pub fn new(params: GhmParams) -> GhmAcc {
        GhmAcc { params, groups: BTreeMap::new(), per_image: BTreeMap::new() }
    }

    /// The weight of each bin of a density group: N / (count n), 0 for empty bins.
    fn group_weights(&self, buckets: &[Bins; 4]) -> Vec<f64> {
        let counts: Vec<u64> =
            (0..self.params.bins).map(|i| buckets.iter().map(|b| b.count[i]).sum()).collect();
        let total: u64 = counts.iter().sum();
        let nonempty = counts.iter().filter(|&&c| c > 0).count() as f64;
        counts.iter().map(|&c| if c > 0 { total as f64 / (c as f64 * nonempty) } else { 0.0 }).collect()
    }

    /// The weights of each density group, by level (one group, 0, unless `per_level`).
    pub fn weights_by_level(&self) -> BTreeMap<i64, Vec<f64>> {
        self.groups.iter().map(|(&l, b)| (l, self.group_weights(b))).collect()
    }

    /// Builds the report entry.
    pub fn finish(&self, images: &BTreeMap<ImageKey, ImageCounts>) -> StrategyReport {
        let weights = self.weights_by_level();
        let weighted = |sums: &[ExactSum], w: &[f64], into: &mut ExactSum| {
            for (x, wi) in sums.iter().zip(w) {
                *into += x.value() * wi;
            }
        };
        let n = self.params.bins;
        let mut sums = [(0u64, 0.0f64, 0.0f64, 0.0f64); 4];
        // mmdetection divides each GHMC call's weighted sum by its own valid count and the head
        // adds the levels' losses.
        let mut mmdetection = ExactSum::ZERO;
        let mut loss_b = [ExactSum::ZERO; 4];
        let mut grad_b = [ExactSum::ZERO; 4];
        for (level, buckets) in &self.groups {
            let w = &weights[level];
            let mut group = ExactSum::ZERO;
            let mut count = 0u64;
            for (b, bins) in buckets.iter().enumerate() {
                let c: u64 = bins.count.iter().take(n).sum();
                sums[b].0 += c;
                count += c;
                let mut l = ExactSum::ZERO;
                weighted(&bins.ce, w, &mut l);
                loss_b[b] += l;
                group += l;
                weighted(&bins.grad, w, &mut grad_b[b]);
            }
            mmdetection += group.value() / count.max(1) as f64;
        }
        for b in 0..4 {
            sums[b].1 = sums[b].0 as f64;
            sums[b].2 = loss_b[b].value();
            sums[b].3 = grad_b[b].value();
        }
        let mut normalized = ExactSum::ZERO;
        for (key, counts) in images {
            if let Some(groups) = self.per_image.get(key) {
                let mut s = ExactSum::ZERO;
                for (level, ce) in groups {
                    weighted(ce, &weights[level], &mut s);
                }
                normalized += s.value() / counts.positives.max(1) as f64;
            }
        }
        let mut params = BTreeMap::new();
        params.insert("bins".to_string(), serde_json::json!(n));
        params.insert("momentum".to_string(), serde_json::json!(0.0));
        if self.params.per_level {
            params.insert("per_level".to_string(), serde_json::json!(true));
        }
        let mut report = StrategyReport::from_buckets(
            "ghm",
            params,
            sums,
            normalized.value() / images.len().max(1) as f64,
        );
        // One group: the same division, of the report's total.
        let mmdetection_loss = if self.params.per_level {
            mmdetection.value()
        } else {
            report.loss.total / sums.iter().map(|s| s.0).sum::<u64>().max(1) as f64
        };
        report.extra.insert("mmdetection_loss".into(), serde_json::json!(mmdetection_loss));
        if self.params.per_level {
            let by_level: BTreeMap<String, Vec<f64>> =
                weights.into_iter().map(|(l, w)| (l.to_string(), w)).collect();
            report.extra.insert("bin_weights_by_level".into(), serde_json::json!(by_level));
        } else {
            // One density group (0), or none in a dump without decisions.
            let w = weights.get(&0).cloned().unwrap_or_else(|| vec![0.0; n]);
            report.extra.insert("bin_weights".into(), serde_json::json!(w));
        }
        report
    }
}

/// One density group's f64 subtotals within a chunk: per lane (decision i in lane i % 4), per
/// bucket, per bin, the decisions (exact: far fewer than 2^53), CE and gradient norm side by
/// side (one cache line per decision, not three).
struct Lanes {
    level: i64,
    cells: Vec<[f64; 3]>,
}

impl Accumulator for GhmAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        // f64 subtotals within a run of a summation block, one exact add per run and bin (see
        // `analysis::edges`).
        // Decision i goes to lane i % 4 (four independent add chains: most decisions fall in
        // the same bin); the lanes are combined in a fixed order at the end of the run.
        let n = self.params.bins;
        let width = 4 * n;
        let levels = if self.params.per_level { chunk.batch.level.as_deref() } else { None };
        // Per density group met in the chunk: its level and lanes.
        let mut slots: Vec<Lanes> = Vec::new();
        let slot_of = |level: i64, slots: &mut Vec<Lanes>| match slots.iter().position(|s| s.level == level) {
            Some(k) => k,
            None => {
                slots.push(Lanes { level, cells: vec![[0.0; 3]; 4 * width] });
                slots.len() - 1
            }
        };
        for run in chunk.runs {
            let decisions = &chunk.decisions[run.start..run.end];
            let meta = &chunk.meta[run.start..run.end];
            let grads = &chunk.terms.ce_grad[run.start..run.end];
            let len = decisions.len().min(meta.len()).min(grads.len());
            // Stretches of decisions of one density group (the whole run unless per level),
            // each summed with its group's lanes borrowed once.
            let level_of = |i: usize| levels.map_or(0, |l| l[meta[i].row as usize]);
            let mut i = 0;
            while i < len {
                let level = level_of(i);
                let stop = if levels.is_some() {
                    (i + 1..len).find(|&k| level_of(k) != level).unwrap_or(len)
                } else {
                    len
                };
                let k = slot_of(level, &mut slots);
                let cells = &mut slots[k].cells[..];
                for j in i..stop {
                    let (d, m, g) = (&decisions[j], &meta[j], grads[j]);
                    let at = (j & 3) * width + m.bucket as usize * n + bin_of(g, n);
                    let cell = &mut cells[at];
                    cell[0] += 1.0;
                    cell[1] += d.ce * m.weight;
                    cell[2] += g * m.weight;
                }
                i = stop;
            }
            let key = &chunk.batch.images[run.image].key;
            let image = match self.per_image.get_mut(key) {
                Some(e) => e,
                None => self.per_image.entry(key.clone()).or_default(),
            };
            for Lanes { level, cells } in &mut slots {
                let buckets =
                    self.groups.entry(*level).or_insert_with(|| std::array::from_fn(|_| Bins::new(n)));
                let image_ce = image.entry(*level).or_insert_with(|| vec![ExactSum::ZERO; n]);
                for (bucket, b) in buckets.iter_mut().enumerate() {
                    // `bin` indexes the lanes, the bucket's three sums and the image's.
                    #[allow(clippy::needless_range_loop)]
                    for bin in 0..n {
                        let at = bucket * n + bin;
                        let lanes = [at, width + at, 2 * width + at, 3 * width + at];
                        let sum = |f: usize| {
                            (cells[lanes[0]][f] + cells[lanes[1]][f])
                                + (cells[lanes[2]][f] + cells[lanes[3]][f])
                        };
                        let c = sum(0);
                        if c == 0.0 {
                            continue;
                        }
                        let (ce_sum, grad_sum) = (sum(1), sum(2));
                        b.count[bin] += c as u64;
                        b.ce[bin] += ce_sum;
                        b.grad[bin] += grad_sum;
                        image_ce[bin] += ce_sum;
                        for k in lanes {
                            cells[k] = [0.0; 3];
                        }
                    }
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        let n = self.params.bins;
        for (level, buckets) in other.groups {
            let mine = self.groups.entry(level).or_insert_with(|| std::array::from_fn(|_| Bins::new(n)));
            for (a, b) in mine.iter_mut().zip(buckets) {
                for i in 0..n {
                    a.count[i] += b.count[i];
                    a.ce[i] += b.ce[i];
                    a.grad[i] += b.grad[i];
                }
            }
        }
        for (k, groups) in other.per_image {
            let image = self.per_image.entry(k).or_default();
            for (level, v) in groups {
                let e = image.entry(level).or_insert_with(|| vec![ExactSum::ZERO; v.len()]);
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b;
                }
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
        // Out of [0, 1]: saturated as the conversion through usize saturates.
        for (g, bins, want) in [
            (f64::NAN, 30, 0),
            (-0.5, 30, 0),
            (f64::NEG_INFINITY, 30, 0),
            (7.0, 30, 29),
            (f64::INFINITY, 30, 29),
            (1e300, 10_000, 9_999),
            (0.99995, 10_000, 9_999),
        ] {
            assert_eq!(bin_of(g, bins), want, "{g} {bins}");
            assert_eq!(bin_of(g, bins), ((g * bins as f64) as usize).min(bins - 1), "{g} {bins}");
        }
    }
}
