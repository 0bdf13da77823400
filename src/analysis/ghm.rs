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
use super::decisions::{DecisionChunk, Meta};
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
    /// Per-chunk lanes kept between chunks (no sums between calls).
    #[serde(skip)]
    scratch: Scratch,
}

/// The bin of a gradient norm in [0, 1] (anything above 1 in the last bin, NaN and negatives in
/// the first). Branch-free (selects, so that a loop binning several norms vectorises): the scaled
/// norm is clamped to `[0, bins - 1]` in f64, where NaN gives 0 (`f64::max` returns the other
/// operand), then truncated: the bins of a saturating conversion, at every edge.
#[inline(always)]
pub fn bin_of(g: f64, bins: usize) -> usize {
    let clamped = (g * bins as f64).max(0.0).min((bins - 1) as f64);
    // SAFETY: `clamped` is a number in [0, bins - 1] (never NaN: `max` returned 0.0 for a NaN
    // product), and `bins` is at most 10,000 ([`GhmParams::check`]; the breakdown's density
    // uses 100): it truncates to an `i32` in range.
    (unsafe { clamped.to_int_unchecked::<i32>() }) as usize
}

impl GhmAcc {
    /// An empty accumulator.
    pub fn new(params: GhmParams) -> GhmAcc {
        GhmAcc { params, groups: BTreeMap::new(), per_image: BTreeMap::new(), scratch: Scratch::default() }
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

/// One density group's f64 subtotals within a chunk: per bucket and bin (cell `bucket * bins +
/// bin`), the decisions (exact: far fewer than 2^53), CE and gradient norm, each in four lanes
/// (decision j of a run in lane j % 4: most decisions fall in the same bin, and one chain would
/// serialise their adds). The lanes of a cell side by side, so that four consecutive decisions
/// of one cell (the common case) are one 4-wide add per quantity.
#[derive(Clone, Debug, Default)]
struct Lanes {
    level: i64,
    cells: Vec<[[f64; 4]; 3]>,
}

/// The groups' lanes kept between chunks (all zero between runs: every cell read is reset), so
/// that a chunk neither allocates nor zeroes them; `used` are the chunk's groups, in order of
/// appearance. Holds no sums between calls: any two compare equal.
#[derive(Clone, Debug, Default)]
struct Scratch {
    slots: Vec<Lanes>,
    used: usize,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Scratch) -> bool {
        true
    }
}

impl Scratch {
    /// The slot of density group `level` in this chunk, taken when first met.
    fn slot_of(&mut self, level: i64, cells: usize) -> usize {
        if let Some(k) = self.slots[..self.used].iter().position(|s| s.level == level) {
            return k;
        }
        if self.used == self.slots.len() {
            self.slots.push(Lanes::default());
        }
        let s = &mut self.slots[self.used];
        s.level = level;
        // All zero: fresh, or reset by the runs that used it.
        s.cells.resize(cells, [[0.0; 4]; 3]);
        self.used += 1;
        self.used - 1
    }
}

/// Adds decisions `from..to` of a run (indices within the run: decision j in lane j % 4) to a
/// group's cells, in order within each lane (the same adds, in the same order, as one decision
/// at a time). Four consecutive decisions (lanes 0-3) of one cell take one 4-wide add per
/// quantity. Without weights (`UNIT`: every weight 1) the products by the weight are left out:
/// x * 1 is x.
#[inline(always)]
fn add_lanes<const UNIT: bool>(
    cells: &mut [[[f64; 4]; 3]],
    n: usize,
    (ces, grads): (&[f64], &[f64]),
    meta: &[Meta],
    weights: Option<&[f64]>,
    from: usize,
    to: usize,
) {
    let one = |cells: &mut [[[f64; 4]; 3]], j: usize| {
        let (ce, m, g) = (ces[j], &meta[j], grads[j]);
        let cell = &mut cells[m.bucket as usize * n + bin_of(g, n)];
        let (ce, grad) = if UNIT { (ce, g) } else { (ce * m.weight(weights), g * m.weight(weights)) };
        let lane = j & 3;
        cell[0][lane] += 1.0;
        cell[1][lane] += ce;
        cell[2][lane] += grad;
    };
    let mut j = from;
    while j < to && j & 3 != 0 {
        one(cells, j);
        j += 1;
    }
    // The cell of the last groups of four, held in `held` (a copy, in registers) while the
    // groups after it fall in the same cell, which most do: added in memory, each group would
    // wait on the store of the one before. Written back before any other cell is touched, so
    // every cell gets the same adds in the same order.
    let (mut at, mut held) = (usize::MAX, [[0.0f64; 4]; 3]);
    let write_back = |cells: &mut [[[f64; 4]; 3]], at: usize, held: [[f64; 4]; 3]| {
        if at != usize::MAX {
            cells[at] = held;
        }
    };
    while j + 4 <= to {
        let (cs, ms, gs) = (&ces[j..j + 4], &meta[j..j + 4], &grads[j..j + 4]);
        let bin: [usize; 4] = std::array::from_fn(|l| bin_of(gs[l], n));
        let bucket: [u8; 4] = std::array::from_fn(|l| ms[l].bucket as u8);
        let same = |x: &[usize; 4]| (x[0] == x[1]) & (x[0] == x[2]) & (x[0] == x[3]);
        if same(&bin) & (u32::from_ne_bytes(bucket) == u32::from(bucket[0]) * 0x0101_0101) {
            let w = |l: usize| ms[l].weight(weights);
            let ce: [f64; 4] = std::array::from_fn(|l| if UNIT { cs[l] } else { cs[l] * w(l) });
            let grad: [f64; 4] = std::array::from_fn(|l| if UNIT { gs[l] } else { gs[l] * w(l) });
            let k = usize::from(bucket[0]) * n + bin[0];
            if k != at {
                write_back(cells, at, held);
                (at, held) = (k, cells[k]);
            }
            for l in 0..4 {
                held[0][l] += 1.0;
                held[1][l] += ce[l];
                held[2][l] += grad[l];
            }
        } else {
            write_back(cells, at, held);
            at = usize::MAX;
            for k in j..j + 4 {
                one(cells, k);
            }
        }
        j += 4;
    }
    write_back(cells, at, held);
    while j < to {
        one(cells, j);
        j += 1;
    }
}

/// [`add_lanes`] compiled for AVX2 (the four bins and the 4-wide adds in one register each; no
/// fused multiply-adds: the same bits).
///
/// # Safety
/// The processor must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_lanes_avx2<const UNIT: bool>(
    cells: &mut [[[f64; 4]; 3]],
    n: usize,
    (ces, grads): (&[f64], &[f64]),
    meta: &[Meta],
    weights: Option<&[f64]>,
    from: usize,
    to: usize,
) {
    add_lanes::<UNIT>(cells, n, (ces, grads), meta, weights, from, to)
}

impl Accumulator for GhmAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        if chunk.batch.weight.is_none() {
            self.observe_with::<true>(chunk);
        } else {
            self.observe_with::<false>(chunk);
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

impl GhmAcc {
    /// [`Accumulator::observe`]; `UNIT`: every weight is 1.
    fn observe_with<const UNIT: bool>(&mut self, chunk: &DecisionChunk<'_>) {
        // f64 subtotals within a run of a summation block, one exact add per run and bin (see
        // `analysis::edges`).
        // Decision i goes to lane i % 4 (four independent add chains: most decisions fall in
        // the same bin); the lanes are combined in a fixed order at the end of the run.
        let n = self.params.bins;
        let width = 4 * n;
        let levels = if self.params.per_level { chunk.batch.level.as_deref() } else { None };
        let weights = chunk.batch.weight.as_deref();
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2");
        // Per density group met in the chunk: its level and lanes.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.used = 0;
        for run in chunk.runs {
            let ces = &chunk.decisions.ce[run.start..run.end];
            let meta = &chunk.meta[run.start..run.end];
            let grads = &chunk.terms.ce_grad[run.start..run.end];
            let len = ces.len().min(meta.len()).min(grads.len());
            let (ces, meta, grads) = (&ces[..len], &meta[..len], &grads[..len]);
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
                let k = scratch.slot_of(level, width);
                let cells = &mut scratch.slots[k].cells[..];
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the processor has AVX2 (checked above).
                    unsafe { add_lanes_avx2::<UNIT>(cells, n, (ces, grads), meta, weights, i, stop) };
                    i = stop;
                    continue;
                }
                add_lanes::<UNIT>(cells, n, (ces, grads), meta, weights, i, stop);
                i = stop;
            }
            let key = &chunk.batch.images[run.image].key;
            let image = match self.per_image.get_mut(key) {
                Some(e) => e,
                None => self.per_image.entry(key.clone()).or_default(),
            };
            for Lanes { level, cells } in &mut scratch.slots[..scratch.used] {
                let buckets =
                    self.groups.entry(*level).or_insert_with(|| std::array::from_fn(|_| Bins::new(n)));
                let image_ce = image.entry(*level).or_insert_with(|| vec![ExactSum::ZERO; n]);
                for (b, cells) in buckets.iter_mut().zip(cells.chunks_exact_mut(n)) {
                    // `bin` indexes the cells, the bucket's three sums and the image's.
                    #[allow(clippy::needless_range_loop)]
                    for bin in 0..n {
                        let cell = &mut cells[bin];
                        let sum = |f: usize| super::sum::lanes_total(cell[f]);
                        let c = sum(0);
                        if c == 0.0 {
                            continue;
                        }
                        let (ce_sum, grad_sum) = (sum(1), sum(2));
                        b.count[bin] += c as u64;
                        b.ce[bin] += ce_sum;
                        b.grad[bin] += grad_sum;
                        image_ce[bin] += ce_sum;
                        *cell = [[0.0; 4]; 3];
                    }
                }
            }
        }
        self.scratch = scratch;
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

    /// The sums one decision at a time, as before the lanes of a cell sat side by side: per
    /// lane (decision j of a run in lane j % 4), bucket and bin, folded per run in the same
    /// order, with fresh lanes per chunk.
    fn observe_one_at_a_time(acc: &mut GhmAcc, chunk: &DecisionChunk<'_>) {
        let n = acc.params.bins;
        let width = 4 * n;
        let levels = if acc.params.per_level { chunk.batch.level.as_deref() } else { None };
        let mut slots: Vec<(i64, Vec<[f64; 3]>)> = Vec::new();
        for run in chunk.runs {
            for j in 0..run.end - run.start {
                let i = run.start + j;
                let (d, m, g) = (&chunk.decisions.get(i), &chunk.meta[i], chunk.terms.ce_grad[i]);
                let level = levels.map_or(0, |l| l[m.row as usize]);
                let k = slots.iter().position(|s| s.0 == level).unwrap_or_else(|| {
                    slots.push((level, vec![[0.0; 3]; 4 * width]));
                    slots.len() - 1
                });
                let cell = &mut slots[k].1[(j & 3) * width + m.bucket as usize * n + bin_of(g, n)];
                cell[0] += 1.0;
                let w = m.weight(chunk.batch.weight.as_deref());
                cell[1] += d.ce * w;
                cell[2] += g * w;
            }
            let image = acc.per_image.entry(chunk.batch.images[run.image].key.clone()).or_default();
            for (level, cells) in &mut slots {
                let buckets =
                    acc.groups.entry(*level).or_insert_with(|| std::array::from_fn(|_| Bins::new(n)));
                let image_ce = image.entry(*level).or_insert_with(|| vec![ExactSum::ZERO; n]);
                for (bucket, b) in buckets.iter_mut().enumerate() {
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
                        b.count[bin] += c as u64;
                        b.ce[bin] += sum(1);
                        b.grad[bin] += sum(2);
                        image_ce[bin] += sum(1);
                        for k in lanes {
                            cells[k] = [0.0; 3];
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn lanes_kept_across_chunks_give_the_sums_of_one_decision_at_a_time() {
        use crate::analysis::decisions::{for_each_chunk, Expansion, Focus, Scoring};
        use crate::config::{Activation, Layout, ScoreKind};
        use crate::input::{DumpShape, ScoreValues, Targets};
        let mut rng = crate::rng::Rng::new(7, 3);
        // Dense rows of 3 classes, images of 41 rows (several runs per chunk, unaligned), levels
        // changing every 29 rows (groups met in different orders, chunk after chunk); logits from
        // very easy to very hard, so that groups of four share a cell or not.
        let rows = 6000;
        let labels: Vec<i32> = (0..rows).map(|_| rng.below(5) as i32 - 2).map(|l| l.min(2)).collect();
        let scores: Vec<f32> = (0..rows * 3)
            .map(|_| if rng.below(4) == 0 { rng.normal() * 3.0 } else { -6.0 + rng.normal() } as f32)
            .collect();
        let mut dense = crate::input::test_batch(
            (0..rows).map(|r| (r / 41) as i64),
            Targets::Labels(labels),
            ScoreValues::from_f32(scores),
            5,
        );
        dense.level = Some((0..rows).map(|r| [3, 4, 3, 5, 6, 4][(r / 29) % 6]).collect());
        // Binary rows with weights (the products by the weight).
        let mut binary = crate::input::test_batch(
            (0..rows).map(|r| (r / 37) as i64),
            Targets::Binary((0..rows).map(|_| f64::from(rng.below(3) == 0)).collect()),
            ScoreValues::from_f32((0..rows).map(|_| (rng.normal() * 4.0) as f32).collect()),
            0,
        );
        binary.weight = Some((0..rows).map(|r| 0.5 + (r % 3) as f64).collect());
        binary.level = dense.level.clone();
        let scoring = Scoring { tau: 0.7, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
        for (batch, layout, width) in [(&dense, Layout::Dense, 3), (&binary, Layout::Binary, 1)] {
            let shape = DumpShape { layout, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
            let exp = Expansion { shape, width, background_class: 0 };
            for (bins, per_level) in [(30, false), (30, true), (7, true), (1, false)] {
                let params = GhmParams { bins, per_level };
                let (mut kept, mut want) = (GhmAcc::new(params), GhmAcc::new(params));
                let mut chunks = 0;
                for_each_chunk(&exp, batch, &scoring, &mut |chunk| {
                    kept.observe(chunk);
                    observe_one_at_a_time(&mut want, chunk);
                    chunks += 1;
                });
                assert!(chunks > 1 && kept.scratch.used > usize::from(per_level), "{chunks}");
                assert_eq!(kept, want, "{layout:?} {bins} {per_level}");
                assert!(kept.groups.len() == if per_level { 4 } else { 1 });
                // And the same bits from fresh lanes for every chunk.
                let mut fresh = GhmAcc::new(params);
                for_each_chunk(&exp, batch, &scoring, &mut |chunk| {
                    fresh.scratch = Scratch::default();
                    fresh.observe(chunk);
                });
                assert_eq!(serde_json::to_string(&fresh).unwrap(), serde_json::to_string(&kept).unwrap());
            }
        }
    }
}
