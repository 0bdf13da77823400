//! The gamma x alpha sweep, the loss CDFs of the focal-loss paper's Fig. 4, and the
//! recommendation.
//!
//! The alpha grid is free: for every gamma the pass keeps the alpha-free focal loss
//! (1 - p_t)^gamma CE summed per bucket (positives and negatives apart), per image and per log
//! bin; any alpha then follows as alpha S_pos + (1 - alpha) S_neg. Each gamma costs one `exp` per
//! decision (none for gamma 0, 1 and 2); adding alphas costs nothing in the pass. All gammas
//! share the decision's log(1 - p_t) and log(CE).
//!
//! With alpha, per-decision weights are alpha_t (1 - p_t)^gamma CE; the effective number of
//! contributing decisions (sum w)^2 / sum w^2 follows from per-gamma sums of squares the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::ImageCounts;
use super::decisions::DecisionChunk;
use super::hist::{bin_of_ln, slot_of, LogHist, RunBins};
use super::sum::ExactSum;
use super::Accumulator;
use crate::config::SweepGrid;
use crate::input::ImageKey;
use crate::loss::Power;
use crate::report::{
    AlphaSource, BalancedAlpha, BucketShares, Cdf, CdfSide, GammaRule, Recommendation, Share, SweepCell,
    SweepReport, Table1bRow,
};

/// Per-gamma sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct GammaSums {
    /// Alpha-free focal loss per bucket.
    loss: [ExactSum; 4],
    /// Sum of squared alpha-free losses: negatives, positives.
    sq: [ExactSum; 2],
    /// Log-binned losses: negatives, positives.
    hist: [LogHist; 2],
}

/// The sweep accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepAcc {
    grid: SweepGrid,
    sums: Vec<GammaSums>,
    /// Per image, per gamma: alpha-free loss of negatives and positives.
    #[serde(with = "crate::analysis::pairs")]
    per_image: BTreeMap<ImageKey, Vec<[ExactSum; 2]>>,
    #[serde(skip)]
    scratch: SweepScratch,
}

impl SweepAcc {
    /// An empty accumulator for `grid`.
    pub fn new(grid: SweepGrid) -> SweepAcc {
        let sums = vec![GammaSums::default(); grid.gammas.len()];
        SweepAcc { grid, sums, per_image: BTreeMap::new(), scratch: SweepScratch::default() }
    }
}

impl Accumulator for SweepAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        // The AVX2 copy where the processor has it: the loss and bin loops four wide, the sums'
        // four lanes in one register each (`Lanes::add_step`). The same bits: Rust never fuses
        // a multiply and an add.
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(acc: &mut SweepAcc, chunk: &DecisionChunk<'_>) {
                acc.observe_body::<true>(chunk)
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor supports AVX2 (checked just above).
                return unsafe { avx2(self, chunk) };
            }
        }
        self.observe_body::<false>(chunk)
    }

    fn merge(&mut self, other: Self) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            for i in 0..4 {
                a.loss[i] += b.loss[i];
            }
            for s in 0..2 {
                a.sq[s] += b.sq[s];
                a.hist[s].merge(&b.hist[s]);
            }
        }
        for (k, v) in other.per_image {
            let e = self.per_image.entry(k).or_insert_with(|| vec![[ExactSum::ZERO; 2]; v.len()]);
            for (a, b) in e.iter_mut().zip(v) {
                a[0] += b[0];
                a[1] += b[1];
            }
        }
    }
}

impl SweepAcc {
    /// [`Accumulator::observe`]'s body, for every instruction set (`AVX2`: the processor has
    /// it, and the sums take [`Lanes`]' AVX2 adds).
    ///
    /// Per gamma, f64 subtotals within a run of a summation block (see `analysis::edges`),
    /// folded exactly once per run: loss per bucket, squares and image sums per side
    /// ([`SlotSums`], from [`Lanes`]), and the histogram bins' losses ([`RunBins`]). The run is
    /// walked once per gamma, with the branch on gamma taken once per walk ([`walk_gamma`]);
    /// each gamma's subtotals see the decisions in the same order as a walk over decisions and
    /// then gammas would, so the bits are the same. The image's sums take each run's subtotal
    /// directly: adding it to a zero sum and merging that, as before, adds the same fixed-point
    /// term.
    #[inline(always)]
    fn observe_body<const AVX2: bool>(&mut self, chunk: &DecisionChunk<'_>) {
        let g = self.grid.gammas.len();
        let SweepScratch { mut terms, mut bins } = std::mem::take(&mut self.scratch);
        bins.resize_with(g, RunBins::default);
        for run in chunk.runs {
            let (decisions, meta) =
                (chunk.decisions.slice(run.start..run.end), &chunk.meta[run.start..run.end]);
            terms.gather(decisions, meta, chunk.batch.weight.as_deref());
            let qs = (decisions.q, decisions.ln_q);
            // The image's sums, looked up once per run (the key cloned only for a new image).
            let key = &chunk.batch.images[run.image].key;
            let image = match self.per_image.get_mut(key) {
                Some(e) => e,
                None => self.per_image.entry(key.clone()).or_insert_with(|| vec![[ExactSum::ZERO; 2]; g]),
            };
            let sums = self.sums.iter_mut().zip(image.iter_mut());
            for ((&gamma, bins), (s, image)) in self.grid.gammas.iter().zip(&mut bins).zip(sums) {
                let p = walk_gamma::<AVX2>(&terms, qs, gamma, bins).0;
                // Every subtotal folded, zeros too (a no-op on an exact sum), as before.
                for (loss, &x) in s.loss.iter_mut().zip(&p[..4]) {
                    *loss += x;
                }
                for ((sq, image), (&x2, &x)) in s.sq.iter_mut().zip(image).zip(p[4..6].iter().zip(&p[6..])) {
                    *sq += x2;
                    *image += x;
                }
                bins.drain_into(&mut s.hist);
            }
        }
        self.scratch = SweepScratch { terms, bins };
    }
}

/// What the sweep reads of a run's decisions, gathered once for all gammas, in columns (besides
/// 1 - p_t and its log, which it reads from the chunk's columns).
#[derive(Clone, Debug, Default)]
struct RunTerms {
    /// CE times the sample weight, and its log.
    ce: Vec<f64>,
    ln_ce: Vec<f64>,
    /// The bucket (0 to 3, [`Bucket`](super::decisions::Bucket)'s order: negatives first).
    bucket: Vec<u8>,
    /// The side: 0 negative, 1 positive.
    side: Vec<u32>,
}

impl RunTerms {
    /// Replaces the columns with those of `decisions` (their CE weighted by `weights`: see
    /// [`Meta::weight`](super::decisions::Meta::weight)).
    ///
    /// The logs of the CE through [`crate::fastmath::ln_all`] (vectorised; libm's `log`, out of
    /// line, only for zeros and other values that are not normal: called from AVX2 code it took
    /// four times as long). Inline, so that [`SweepAcc::observe`]'s AVX2 copy holds its loops.
    #[inline(always)]
    fn gather(
        &mut self,
        decisions: crate::loss::Decisions<'_>,
        meta: &[super::decisions::Meta],
        weights: Option<&[f64]>,
    ) {
        let n = decisions.len().min(meta.len());
        let (decisions, meta) = (decisions.slice(0..n), &meta[..n]);
        self.ce.clear();
        self.ce.extend(decisions.ce.iter().zip(meta).map(|(ce, m)| ce * m.weight(weights)));
        self.ln_ce.clear();
        crate::fastmath::ln_all(&self.ce, &mut self.ln_ce);
        self.bucket.clear();
        self.bucket.extend(meta.iter().map(|m| m.bucket as u8));
        self.side.clear();
        self.side.extend(meta.iter().map(|m| u32::from(m.bucket.is_positive())));
    }
}

/// The scratch of [`SweepAcc::observe`], kept between calls to avoid allocating per chunk:
/// the run's columns and, per gamma, its histogram subtotals (drained at the end of every run,
/// so any two scratches hold the same, no, sums: they compare equal).
#[derive(Clone, Debug, Default)]
struct SweepScratch {
    terms: RunTerms,
    bins: Vec<RunBins>,
}

impl PartialEq for SweepScratch {
    fn eq(&self, _: &SweepScratch) -> bool {
        true
    }
}

/// One run's f64 subtotals for one gamma: the loss per bucket (slots 0 to 3), the squared
/// loss per side (4, 5: negatives, positives) and the loss per side (6, 7: the image's sums),
/// from the run's [`Lanes`].
#[derive(Clone, Copy, Debug, Default)]
struct SlotSums([f64; 8]);

/// Lanes of the sums of a run: decision i of the run (from 0) in lane i % 4 of each sum, so
/// that four consecutive decisions take one 4-wide add per sum and no add waits for the one
/// before it. Sums 0 to 3: the loss per bucket; 4 and 5: the squared loss of the negatives and
/// of the positives.
#[derive(Clone, Copy, Debug, Default)]
struct Lanes([[f64; 4]; 6]);

impl Lanes {
    /// Adds loss `l` of a decision of `bucket` (0 to 3) in lane `lane`: to its bucket's sum and
    /// its square to its side's. Every sum of the lane gets an addition, the others of +0.0
    /// (the loss masked off): s + 0.0 is s bit for bit for every s but -0.0 (NaN included),
    /// and a sum started at +0.0 never becomes -0.0 (+0.0 + -0.0 and x + -x are +0.0), so each
    /// sum holds what adding its own decisions alone would give, without a branch or an index.
    #[inline(always)]
    fn add(&mut self, lane: usize, bucket: u8, l: f64) {
        let keep = |x: f64, yes: bool| f64::from_bits(x.to_bits() & 0u64.wrapping_sub(u64::from(yes)));
        let ll = l * l;
        for (b, sum) in self.0[..4].iter_mut().enumerate() {
            sum[lane] += keep(l, usize::from(bucket) == b);
        }
        let positive = bucket >= 2;
        self.0[4][lane] += keep(ll, !positive);
        self.0[5][lane] += keep(ll, positive);
    }

    /// Adds a step's decisions (their buckets and losses, the first in lane 0): four at a time
    /// in AVX2 registers when `AVX2` (the processor must have it: [`SweepAcc::observe`] checks),
    /// one 4-wide masked add per sum, with the same operands as [`Lanes::add`], so the same
    /// bits; the decisions left over (fewer than four) one at a time.
    #[inline(always)]
    fn add_step<const AVX2: bool>(&mut self, buckets: &[u8], losses: &[f64]) {
        let n = buckets.len().min(losses.len());
        let mut whole = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            whole = n - n % 4;
            // SAFETY: the caller says the processor supports AVX2.
            unsafe { self.add4s_avx2(&buckets[..whole], &losses[..whole]) };
        }
        for k in whole..n {
            self.add(k % 4, buckets[k], losses[k]);
        }
    }

    /// [`Lanes::add`] for each group of four decisions (`buckets` and `losses` of a length
    /// that is a multiple of 4), in AVX2 registers.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add4s_avx2(&mut self, buckets: &[u8], losses: &[f64]) {
        use std::arch::x86_64::*;
        let mut acc = self.0.map(|s| _mm256_loadu_pd(s.as_ptr()));
        let ids = [0, 1, 2, 3].map(|b| _mm256_set1_epi64x(b));
        for (l, b) in losses.chunks_exact(4).zip(buckets.chunks_exact(4)) {
            let l = _mm256_loadu_pd(l.as_ptr());
            let b = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(i32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            let ll = _mm256_mul_pd(l, l);
            for (sum, id) in acc[..4].iter_mut().zip(ids) {
                let mine = _mm256_castsi256_pd(_mm256_cmpeq_epi64(b, id));
                *sum = _mm256_add_pd(*sum, _mm256_and_pd(l, mine));
            }
            let positive = _mm256_castsi256_pd(_mm256_cmpgt_epi64(b, ids[1]));
            acc[4] = _mm256_add_pd(acc[4], _mm256_andnot_pd(positive, ll));
            acc[5] = _mm256_add_pd(acc[5], _mm256_and_pd(positive, ll));
        }
        for (s, v) in self.0.iter_mut().zip(acc) {
            _mm256_storeu_pd(s.as_mut_ptr(), v);
        }
    }

    /// The run's subtotals: each sum's lanes added as (0 + 1) + (2 + 3); a side's loss is its
    /// two buckets' sums added (negatives first).
    fn slots(&self) -> SlotSums {
        let [s0, s1, s2, s3, s4, s5] = self.0.map(super::sum::lanes_total);
        SlotSums([s0, s1, s2, s3, s4, s5, s0 + s1, s2 + s3])
    }
}

/// Decisions per step of [`walk`]: their losses and bins are computed together (a loop
/// without branches or calls, which vectorises), then added in decision order.
const STEP: usize = 128;

/// One gamma's walk over a run ([`walk`]), with the branch on gamma taken once: one
/// monomorphic walk per kind of gamma (`at` of a known variant inlines to its one formula).
#[inline(always)]
fn walk_gamma<const AVX2: bool>(
    terms: &RunTerms,
    qs: (&[f64], &[f64]),
    gamma: f64,
    bins: &mut RunBins,
) -> SlotSums {
    macro_rules! walk {
        ($power:expr) => {
            walk::<AVX2>(terms, qs, gamma, bins, |q, ln_q| $power.at(q, ln_q))
        };
    }
    match Power::of(gamma) {
        Power::One => walk!(Power::One),
        Power::Q => walk!(Power::Q),
        Power::Square => walk!(Power::Square),
        // The sweep's usual whole and half-integer gammas with their exponent a constant (the
        // products unroll), any other through the general loop.
        Power::Int(3) => walk!(Power::Int(3)),
        Power::Int(4) => walk!(Power::Int(4)),
        Power::Int(5) => walk!(Power::Int(5)),
        Power::Int(n) => walk!(Power::Int(n)),
        Power::HalfInt(0) => walk!(Power::HalfInt(0)),
        Power::HalfInt(1) => walk!(Power::HalfInt(1)),
        Power::HalfInt(n) => walk!(Power::HalfInt(n)),
        Power::Exp(e) => walk!(Power::Exp(e)),
    }
}

/// One gamma's walk over a run (`terms`, and `(q, ln_q)`: its decisions' 1 - p_t and its log,
/// from the chunk's columns): `factor(q, ln q)` is (1 - p_t)^gamma. Per step of [`STEP`]
/// decisions, their losses and slots are computed together (a loop without branches or calls,
/// bar `Exp`'s, which vectorises), then added to the run's [`Lanes`] four at a time, and to
/// `bins` in decision order. Returns the run's [`SlotSums`].
#[inline(always)]
fn walk<const AVX2: bool>(
    terms: &RunTerms,
    (q, ln_q): (&[f64], &[f64]),
    gamma: f64,
    bins: &mut RunBins,
    factor: impl Fn(f64, f64) -> f64,
) -> SlotSums {
    const { assert!(STEP % 4 == 0, "a step starts at lane 0") };
    let n = terms.bucket.len();
    let (q, ln_q, ce, ln_ce) = (&q[..n], &ln_q[..n], &terms.ce[..n], &terms.ln_ce[..n]);
    let (bucket, side) = (&terms.bucket[..n], &terms.side[..n]);
    let mut lanes = Lanes::default();
    let mut losses = [0.0f64; STEP];
    let mut slots = [0u32; STEP];
    let mut start = 0;
    while start < n {
        let end = (start + STEP).min(n);
        let m = end - start;
        let (q, ln_q, ce, ln_ce) = (&q[start..end], &ln_q[start..end], &ce[start..end], &ln_ce[start..end]);
        let inputs = q.iter().zip(ln_q).zip(ce.iter().zip(ln_ce)).zip(&side[start..end]);
        for ((loss, slot), (((&q, &ln_q), (&ce, &ln_ce)), &side)) in
            losses[..m].iter_mut().zip(&mut slots[..m]).zip(inputs)
        {
            let l = factor(q, ln_q) * ce;
            // ln l = gamma ln(1 - p_t) + ln CE: no log per gamma.
            let ln_l = if l > 0.0 { gamma * ln_q + ln_ce } else { f64::NEG_INFINITY };
            *loss = l;
            *slot = slot_of(bin_of_ln(ln_l), side);
        }
        lanes.add_step::<AVX2>(&bucket[start..end], &losses[..m]);
        bins.cover(&slots[..m]);
        for (&l, &slot) in losses[..m].iter().zip(&slots[..m]) {
            bins.add(slot, l);
        }
        start = end;
    }
    lanes.slots()
}

/// The sample fractions at which CDF points are reported: 0 to 1 by 0.01, plus a finer tail.
pub fn cdf_grid() -> Vec<f64> {
    let mut xs: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    xs.extend([0.995, 0.999, 0.9995, 0.9999, 0.99999]);
    xs.sort_by(f64::total_cmp);
    xs
}

/// The focal-loss paper's Table 1b (RetinaNet, ResNet-50-FPN, 600 px, COCO minival): AP for each
/// gamma with its best alpha. Columns: gamma, best alpha, AP, AP50, AP75; rows by rising gamma.
pub const TABLE_1B: [(f64, f64, f64, f64, f64); 7] = [
    (0.0, 0.75, 31.1, 49.4, 33.0),
    (0.1, 0.75, 31.4, 49.9, 33.1),
    (0.2, 0.75, 31.9, 50.7, 33.4),
    (0.5, 0.50, 32.9, 51.7, 35.2),
    (1.0, 0.25, 33.7, 52.0, 36.2),
    (2.0, 0.25, 34.0, 52.5, 36.5),
    (5.0, 0.25, 32.2, 49.6, 34.8),
];

/// The paper's best alpha at one gamma and the Table 1b rows it comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperAlpha {
    /// The alpha.
    pub alpha: f64,
    /// A row, between rows, or beyond the table's ends.
    pub source: AlphaSource,
    /// Indices into [`TABLE_1B`] of the rows used (equal for a row or beyond the ends).
    pub rows: (usize, usize),
}

/// The paper's best alpha at `gamma`: Table 1b's best alpha, linear in gamma between the two
/// rows around it, and the end row's alpha held constant beyond the table (gamma above 5; the
/// table starts at gamma 0, the smallest gamma there is). The paper measured AP only at its
/// rows: between them this is a reading of its trend (alpha falling as gamma rises), not a
/// measurement.
pub fn paper_alpha(gamma: f64) -> PaperAlpha {
    let last = TABLE_1B.len() - 1;
    let row = |i: usize| PaperAlpha { alpha: TABLE_1B[i].1, source: AlphaSource::Table1b, rows: (i, i) };
    let clamped = |i: usize| PaperAlpha { source: AlphaSource::Table1bClamped, ..row(i) };
    if gamma < TABLE_1B[0].0 {
        return clamped(0);
    }
    if gamma > TABLE_1B[last].0 {
        return clamped(last);
    }
    if let Some(i) = TABLE_1B.iter().position(|r| r.0 == gamma) {
        return row(i);
    }
    // Not a row and within the table: strictly between rows i and i + 1.
    let i = TABLE_1B.iter().rposition(|r| r.0 < gamma).unwrap_or(0);
    let ((g0, a0, ..), (g1, a1, ..)) = (TABLE_1B[i], TABLE_1B[i + 1]);
    PaperAlpha {
        alpha: a0 + (a1 - a0) * (gamma - g0) / (g1 - g0),
        source: AlphaSource::Table1bInterpolated,
        rows: (i, i + 1),
    }
}

impl SweepAcc {
    /// Builds the sweep section of the report. `images` holds every image of the dump.
    pub fn finish(&self, images: &BTreeMap<ImageKey, ImageCounts>) -> SweepReport {
        let n_images = images.len().max(1) as f64;
        let mut grid = Vec::new();
        let mut balanced = Vec::new();
        let mut by_gamma = Vec::new();
        let mut cdfs = Vec::new();
        for (gi, &gamma) in self.grid.gammas.iter().enumerate() {
            let s = &self.sums[gi];
            let loss = s.loss.map(|x| x.value());
            let (s_neg, s_pos) = (loss[0] + loss[1], loss[2] + loss[3]);
            let (q_neg, q_pos) = (s.sq[0].value(), s.sq[1].value());
            let (top1, _) = s.hist[0].top_share(0.01);
            let (top10, _) = s.hist[0].top_share(0.10);
            for &alpha in &self.grid.alphas {
                let (wp, wn) = match alpha {
                    Some(a) => (a, 1.0 - a),
                    None => (1.0, 1.0),
                };
                let total = wp * s_pos + wn * s_neg;
                let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
                let bucket = |b: usize| Share { loss_share: share(if b >= 2 { wp } else { wn } * loss[b]) };
                let buckets = BucketShares {
                    easy_negative: bucket(0),
                    hard_negative: bucket(1),
                    easy_positive: bucket(2),
                    hard_positive: bucket(3),
                };
                let mut normalized = ExactSum::ZERO;
                for (key, counts) in images {
                    if let Some(v) = self.per_image.get(key) {
                        let l = wp * v[gi][1].value() + wn * v[gi][0].value();
                        normalized += l / counts.positives.max(1) as f64;
                    }
                }
                let sum_w = total;
                let sum_w2 = wp * wp * q_pos + wn * wn * q_neg;
                grid.push(SweepCell {
                    gamma,
                    alpha,
                    loss: crate::report::LossTotals { total, normalized: normalized.value() / n_images },
                    buckets,
                    pos_neg_ratio: if wn * s_neg > 0.0 { wp * s_pos / (wn * s_neg) } else { 0.0 },
                    top1_share: share(wn * s_neg * top1),
                    top10_share: share(wn * s_neg * top10),
                    effective_n: if sum_w2 > 0.0 { sum_w * sum_w / sum_w2 } else { 0.0 },
                });
            }
            let balanced_alpha = if s_pos + s_neg > 0.0 { s_neg / (s_pos + s_neg) } else { 0.5 };
            balanced.push(BalancedAlpha { gamma, alpha: balanced_alpha });
            by_gamma.push(GammaRule {
                gamma,
                easy_negative_share_of_negatives: self.easy_share_of_negatives(gi),
                balanced_alpha,
                paper_alpha: paper_alpha(gamma).alpha,
            });
            let xs = cdf_grid();
            let side = |h: &LogHist| {
                let (f50, e50) = h.fraction_for_share(0.5);
                let (f90, e90) = h.fraction_for_share(0.9);
                CdfSide {
                    y: h.cdf(&xs),
                    hardest_fraction_for_50: f50,
                    hardest_fraction_for_90: f90,
                    fraction_error_bound: e50.max(e90),
                }
            };
            cdfs.push(Cdf { gamma, negatives: side(&s.hist[0]), positives: side(&s.hist[1]) });
        }
        let positives: u64 = images.values().map(|c| c.positives).sum();
        let recommendation = self.recommend(&by_gamma, positives);
        SweepReport {
            grid,
            balanced_alpha: balanced,
            by_gamma,
            recommendation,
            paper_default: BalancedAlpha { gamma: 2.0, alpha: 0.25 },
            table_1b: TABLE_1B
                .iter()
                .map(|&(gamma, alpha, ap, ap50, ap75)| Table1bRow { gamma, alpha, ap, ap50, ap75 })
                .collect(),
            cdf_x: cdf_grid(),
            cdf: cdfs,
            cdf_share_error_factor: super::hist::bin_ratio(),
        }
    }

    /// E / N at gamma index `gi`: the easy negatives' share of the negatives' own focal loss
    /// (0 without negative loss).
    ///
    /// This is what the old rule, "the easy-negative share of the whole loss at the balanced
    /// alpha", measured all along: with P, N and E the alpha-free focal loss of the positives, the
    /// negatives and the easy negatives, the balanced alpha a = N / (P + N) makes a P and
    /// (1 - a) N both equal to P N / (P + N), so the share (1 - a) E / (a P + (1 - a) N) is
    /// E / 2N whatever P is (when P > 0).
    fn easy_share_of_negatives(&self, gi: usize) -> f64 {
        let loss = self.sums[gi].loss.map(|x| x.value());
        let n = loss[0] + loss[1];
        if n > 0.0 {
            loss[0] / n
        } else {
            0.0
        }
    }

    /// The documented rule. gamma: the smallest gamma of the grid whose easy negatives carry
    /// less than twice the target of the negatives' own focal loss (E / N < 2 x target, which is
    /// "easy-negative share below the target at the balanced alpha", see
    /// [`Self::easy_share_of_negatives`]); positives play no part. alpha: the paper's best alpha
    /// at that gamma ([`paper_alpha`]). A dump without positive decisions is not what a detector
    /// trains on: then nothing is recommended (`target_met` false, the smallest gamma and alpha
    /// 0.5 as placeholders) and the first reason says why.
    fn recommend(&self, by_gamma: &[GammaRule], positives: u64) -> Recommendation {
        let target = self.grid.target_easy_share;
        let threshold = 2.0 * target;
        let mut order: Vec<usize> = (0..self.grid.gammas.len()).collect();
        order.sort_by(|&a, &b| self.grid.gammas[a].total_cmp(&self.grid.gammas[b]));
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let (last_gamma, last_alpha, ..) = TABLE_1B[TABLE_1B.len() - 1];
        let rule = format!(
            "gamma is the smallest swept gamma at which easy negatives carry less than {} of the negatives' own focal loss (E / N below twice the target {}: at the balanced alpha the easy-negative share of the whole loss is E / 2N, so positives play no part); alpha is the focal-loss paper's best alpha at that gamma, from its Table 1b (linear in gamma between rows, {last_alpha} beyond gamma {last_gamma})",
            pct(threshold),
            pct(target)
        );
        if positives == 0 {
            let gi = order.first().copied().unwrap_or(0);
            let gamma = self.grid.gammas.get(gi).copied().unwrap_or(0.0);
            return Recommendation {
                gamma,
                alpha: 0.5,
                alpha_source: AlphaSource::None,
                balanced_alpha: None,
                easy_negative_share_of_negatives: by_gamma.get(gi).map_or(0.0, |r| r.easy_negative_share_of_negatives),
                rule,
                target_met: false,
                reasons: vec![
                    format!("the dump has no positive decisions: nothing is recommended (gamma {gamma} and alpha 0.5 are placeholders); a detector trains on images with objects, and a dump without them shows neither the imbalance training sees nor a positive loss to weigh alpha against"),
                    "check the label mapping of the dumping code (docs/dumping.md), or dump steps whose images have objects".to_string(),
                ],
            };
        }
        let shares: Vec<(usize, f64)> =
            order.iter().map(|&gi| (gi, by_gamma[gi].easy_negative_share_of_negatives)).collect();
        let chosen = shares.iter().position(|&(_, s)| s < threshold);
        let (pick, met) = match chosen {
            Some(i) => (i, true),
            None => {
                // Not reachable on this grid: take the gamma with the smallest share.
                let i = (0..shares.len()).min_by(|&a, &b| shares[a].1.total_cmp(&shares[b].1)).unwrap_or(0);
                (i, false)
            }
        };
        let (gi, share) = shares[pick];
        let gamma = self.grid.gammas[gi];
        let paper = paper_alpha(gamma);
        let (alpha, balanced) = (paper.alpha, by_gamma[gi].balanced_alpha);
        let mut reasons = Vec::new();
        if met {
            reasons.push(format!(
                "at gamma {gamma}, easy negatives carry {} of the negatives' focal loss (target < {})",
                pct(share),
                pct(threshold)
            ));
        } else {
            reasons.push(format!(
                "no swept gamma brings the easy negatives' share of the negatives' focal loss below {}; gamma {gamma} comes closest with {}",
                pct(threshold),
                pct(share)
            ));
        }
        if pick > 0 {
            let (prev, prev_share) = shares[pick - 1];
            reasons.push(format!(
                "at the next smaller gamma, {}, they carry {}",
                self.grid.gammas[prev],
                pct(prev_share)
            ));
        }
        let (r0, r1) = (TABLE_1B[paper.rows.0], TABLE_1B[paper.rows.1]);
        reasons.push(match paper.source {
            AlphaSource::Table1bInterpolated => format!(
                "alpha {alpha:.3} is the paper's best alpha read linearly between its Table 1b rows gamma {} (alpha {}) and gamma {} (alpha {}); the paper measured AP at its rows only",
                r0.0, r0.1, r1.0, r1.1
            ),
            AlphaSource::Table1bClamped => format!(
                "gamma {gamma} lies beyond the paper's Table 1b, whose last row is gamma {} (alpha {}): that alpha, held constant; the paper measured nothing there",
                r0.0, r0.1
            ),
            _ => format!(
                "alpha {alpha} is the paper's best alpha at gamma {gamma} (Table 1b: RetinaNet, ResNet-50-FPN, COCO minival)"
            ),
        });
        let loss = self.sums[gi].loss.map(|x| x.value());
        let (s_pos, s_neg) = (loss[2] + loss[3], loss[0] + loss[1]);
        let weighted = alpha * s_pos + (1.0 - alpha) * s_neg;
        let pos_share = if weighted > 0.0 { alpha * s_pos / weighted } else { 0.0 };
        reasons.push(format!(
            "diagnostic: the balanced alpha at gamma {gamma} is {balanced:.3} (positives and negatives carry equal loss); at alpha {alpha:.3} positives carry {} of the loss. The paper chose alpha by AP, not to balance the losses: its best alpha fell from 0.75 at gamma 0 to 0.25 at gamma 1 and above, weighting positives less on purpose once gamma down-weights the easy negatives",
            pct(pos_share)
        ));
        reasons.push(
            "the result depends on the checkpoint dumped: the imbalance drifts during training (negatives grow easier as the detector learns), and E / N, the balanced alpha and the chosen gamma drift with it; dump several checkpoints (early, middle, final) and compare"
                .to_string(),
        );
        let (top1, _) = self.sums[gi].hist[0].top_share(0.01);
        reasons.push(format!(
            "the hardest 1% of negatives carry {} of the negative loss at gamma {gamma}",
            pct(top1)
        ));
        reasons.push(
            "this rule reads loss shares on this dump; it does not predict AP: compare with the paper's Table 1b and validate on your detector"
                .to_string(),
        );
        Recommendation {
            gamma,
            alpha,
            alpha_source: paper.source,
            balanced_alpha: Some(balanced),
            easy_negative_share_of_negatives: share,
            rule,
            target_met: met,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of decisions with every bucket in random order, CEs over many decades, zero losses
    /// (a zero weight, a CE that underflows, q = 0) and lengths around the vector widths and
    /// [`STEP`]; with each row's weight (decision i is row i).
    #[allow(clippy::type_complexity)]
    fn runs() -> Vec<(crate::loss::DecisionColumns, Vec<super::super::decisions::Meta>, Vec<f64>)> {
        use super::super::decisions::{Bucket, Meta};
        let mut rng = crate::rng::Rng::new(11, 3);
        [1, 2, 3, 5, 7, 9, 31, 64, 127, 128, 129, 300, 1000]
            .into_iter()
            .map(|len| {
                let (mut decisions, mut meta, mut weights) =
                    (crate::loss::DecisionColumns::default(), Vec::new(), Vec::new());
                for row in 0..len {
                    let y = if rng.uniform() < 0.3 { 1.0 } else { 0.0 };
                    let x = match rng.below(20) {
                        0 => 800.0 * (2.0 * y - 1.0), // CE underflows to 0, q to 0
                        1 => -60.0 * (2.0 * y - 1.0), // a confident mistake
                        _ => rng.normal() * 6.0,
                    };
                    let d = crate::loss::Decision::from_logit(x, y);
                    let weight = match rng.below(10) {
                        0 => 0.0,
                        1 => 0.37,
                        _ => 1.0,
                    };
                    let bucket = Bucket::of(y == 1.0, d.p_t, 0.5);
                    decisions.push(d);
                    meta.push(Meta { row, class: 0, bucket });
                    weights.push(weight);
                }
                (decisions, meta, weights)
            })
            .collect()
    }

    #[test]
    fn the_walk_gives_the_bits_of_a_walk_per_decision() {
        // Every kind of `Power`: 0, 1, 2, the unrolled whole gammas, another whole one, the
        // half-integers (both unrolled ones and another) and a general one.
        let gammas = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 0.5, 1.5, 2.5, 0.3];
        let (mut terms, mut bins) = (RunTerms::default(), RunBins::default());
        let mut zero_losses = 0;
        for (decisions, meta, weights) in runs() {
            let view = decisions.view();
            terms.gather(view, &meta, Some(&weights));
            let qs = (view.q, view.ln_q);
            let decisions = view.to_vec();
            for gamma in gammas {
                // The straightforward walk: per decision, in order, f64 subtotals per bucket
                // and side in four lanes (decision i in lane i % 4) and per histogram bin
                // (started at 0.0), folded at the end of the run.
                let mut lanes = [[0.0f64; 4]; 6];
                let mut subtotals = BTreeMap::new();
                for (i, (d, m)) in decisions.iter().zip(&meta).enumerate() {
                    let ce = d.ce * weights[m.row as usize];
                    let l = crate::loss::modulating(gamma, d.q, d.ln_q) * ce;
                    let ln_l = if l > 0.0 { gamma * d.ln_q + ce.ln() } else { f64::NEG_INFINITY };
                    let side = usize::from(m.bucket.is_positive());
                    lanes[m.bucket as usize][i % 4] += l;
                    lanes[4 + side][i % 4] += l * l;
                    let (count, sum) = subtotals.entry((side, bin_of_ln(ln_l))).or_insert((0u64, 0.0f64));
                    *count += 1;
                    *sum += l;
                    zero_losses += usize::from(l == 0.0);
                }
                // Lanes added (0 + 1) + (2 + 3); a side's loss, its buckets' sums added.
                let s = lanes.map(|x| (x[0] + x[1]) + (x[2] + x[3]));
                let p = [s[0], s[1], s[2], s[3], s[4], s[5], s[0] + s[1], s[2] + s[3]];
                let bits = |p: &[f64]| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let (mut avx2_bins, mut plain_bins) = (RunBins::default(), RunBins::default());
                    let avx2 = walk_gamma::<true>(&terms, qs, gamma, &mut avx2_bins);
                    let plain = walk_gamma::<false>(&terms, qs, gamma, &mut plain_bins);
                    assert_eq!(bits(&avx2.0), bits(&plain.0), "gamma {gamma}: the AVX2 walk's sums");
                    assert_eq!(
                        avx2_bins.subtotals(),
                        plain_bins.subtotals(),
                        "gamma {gamma}: the AVX2 walk's bins"
                    );
                }
                let sums = walk_gamma::<false>(&terms, qs, gamma, &mut bins);
                let what = format!("gamma {gamma}, {} decisions", decisions.len());
                assert_eq!(bits(&sums.0), bits(&p), "{what}");
                let subtotal_bits = |m: &BTreeMap<(usize, usize), (u64, f64)>| {
                    m.iter().map(|(&k, &(count, sum))| (k, count, sum.to_bits())).collect::<Vec<_>>()
                };
                assert_eq!(subtotal_bits(&bins.subtotals()), subtotal_bits(&subtotals), "{what}");
                // Drained: each bin's count and subtotal folded in, the slots emptied.
                let mut expected = [LogHist::default(), LogHist::default()];
                for (&(side, bin), &(count, sum)) in &subtotals {
                    let ln = match bin {
                        0 => f64::NEG_INFINITY,
                        b => super::super::hist::LN_MIN + (b as f64 - 0.5) / super::super::hist::PER_E,
                    };
                    assert_eq!(bin_of_ln(ln), bin);
                    expected[side].add(sum, ln);
                    for _ in 1..count {
                        expected[side].add(0.0, ln);
                    }
                }
                let mut hist = [LogHist::default(), LogHist::default()];
                bins.drain_into(&mut hist);
                assert_eq!(hist, expected, "{what}");
                assert!(bins.subtotals().is_empty(), "{what}");
            }
        }
        assert!(zero_losses > 100, "{zero_losses} zero losses");
    }

    fn check(gamma: f64, alpha: f64, source: AlphaSource, rows: (usize, usize)) {
        let p = paper_alpha(gamma);
        assert!((p.alpha - alpha).abs() < 1e-12, "gamma {gamma}: alpha {} instead of {alpha}", p.alpha);
        assert_eq!((p.source, p.rows), (source, rows), "gamma {gamma}");
    }

    #[test]
    fn the_paper_alpha_on_a_table_row_is_that_rows_best_alpha() {
        // The paper's Table 1b: gamma 0, 0.1, 0.2 -> .75; 0.5 -> .5; 1, 2, 5 -> .25.
        for (i, (gamma, alpha)) in
            [(0.0, 0.75), (0.1, 0.75), (0.2, 0.75), (0.5, 0.5), (1.0, 0.25), (2.0, 0.25), (5.0, 0.25)]
                .into_iter()
                .enumerate()
        {
            check(gamma, alpha, AlphaSource::Table1b, (i, i));
        }
    }

    #[test]
    fn the_paper_alpha_between_rows_is_linear_in_gamma() {
        // By hand: 0.75 + (0.5 - 0.75) (gamma - 0.2) / 0.3 between gamma 0.2 and 0.5, and
        // 0.5 + (0.25 - 0.5) (gamma - 0.5) / 0.5 between 0.5 and 1.
        check(0.3, 0.75 - 0.25 / 3.0, AlphaSource::Table1bInterpolated, (2, 3));
        check(0.35, 0.625, AlphaSource::Table1bInterpolated, (2, 3));
        check(0.6, 0.45, AlphaSource::Table1bInterpolated, (3, 4));
        check(0.75, 0.375, AlphaSource::Table1bInterpolated, (3, 4));
        check(0.9, 0.3, AlphaSource::Table1bInterpolated, (3, 4));
        // Rows of equal alpha: constant between them.
        check(0.05, 0.75, AlphaSource::Table1bInterpolated, (0, 1));
        check(1.5, 0.25, AlphaSource::Table1bInterpolated, (4, 5));
        check(3.0, 0.25, AlphaSource::Table1bInterpolated, (5, 6));
    }

    #[test]
    fn the_paper_alpha_beyond_the_table_is_held_at_its_end_rows() {
        check(5.5, 0.25, AlphaSource::Table1bClamped, (6, 6));
        check(crate::config::MAX_GAMMA, 0.25, AlphaSource::Table1bClamped, (6, 6));
        // Unreachable through the checked grid (gammas are >= 0), but defined.
        check(-1.0, 0.75, AlphaSource::Table1bClamped, (0, 0));
    }
}
