//! A mergeable, log-binned histogram of loss values: counts and exact sums per bin.
//!
//! Bins are [e^(k/R), e^((k+1)/R)) over ln(loss) in [`LN_MIN`], [`LN_MAX`] with R = [`PER_E`]
//! bins per e-fold, plus one bin below (losses < e^-70 ≈ 4e-31, zeros included) and one above.
//! Within a bin the largest loss is at most e^(1/R) ≈ 1.051 times the smallest, which bounds the
//! error of every quantity read off the histogram:
//!
//! - the loss share of the hardest fraction f of the samples is exact except for the one bin the
//!   cut falls in, which is counted at its mean loss: the error is at most (e^(1/R) - 1) times
//!   that bin's loss share (reported as `error_bound`);
//! - the fraction of samples needed to reach a loss share is interpolated linearly in count
//!   within one bin: the error is at most that bin's share of the samples.

use serde::{Deserialize, Serialize};

use super::sum::ExactSum;

/// Smallest ln(loss) with its own bins.
pub const LN_MIN: f64 = -70.0;
/// Largest ln(loss) with its own bins.
pub const LN_MAX: f64 = 15.0;
/// Bins per e-fold.
pub const PER_E: f64 = 20.0;
/// Bins between LN_MIN and LN_MAX.
const INNER: usize = ((LN_MAX - LN_MIN) * PER_E) as usize;

/// Relative width of a bin: within a bin the largest loss is at most (1 + this) times the
/// smallest.
pub fn bin_ratio() -> f64 {
    (1.0 / PER_E).exp_m1()
}

/// Counts and loss sums per log bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogHist {
    count: Vec<u64>,
    sum: Vec<ExactSum>,
}

impl Default for LogHist {
    fn default() -> Self {
        LogHist { count: vec![0; INNER + 2], sum: vec![ExactSum::ZERO; INNER + 2] }
    }
}

/// Slots of a [`RunBins`]: two per bin (negatives, positives), rounded up to a power of two,
/// so that a masked slot needs no bounds check.
const SLOTS: usize = 4096;
const _: () = assert!(2 * (INNER + 2) <= SLOTS && SLOTS <= 1 << 16);

/// One summation block's counts and f64 loss subtotals for a pair of [`LogHist`]s (negatives,
/// positives), folded into them by [`RunBins::drain_into`] at the end of the block (see
/// `analysis::edges`). A loss of bin b on side s (0 negative, 1 positive) goes to slot
/// 2b + s ([`slot_of`]): the two sides' bins interleave, so that the slots of a block lie in one
/// range ([`RunBins::cover`]), which the drain scans. Fixed-size arrays and a masked slot make
/// [`RunBins::add`] a count and an add, without bounds checks, resizes or branches, and no
/// list or bitmap of touched slots is kept: a block's slots are dense in their range
/// (on a dense dump, about a third of some 1,000 slots for 4,096 decisions), so scanning the
/// range once costs less than marking every slot a loss goes to.
///
/// Every slot holds 0.0 between blocks, so a slot's first loss of a block is added to 0.0, as
/// it would be to a fresh subtotal: the subtotals' bits are those of per-bin f64 sums started
/// at 0.0 (losses are >= 0, so no -0.0 is lost either).
#[derive(Clone, Debug)]
pub struct RunBins {
    sum: Box<[f64; SLOTS]>,
    count: Box<[u32; SLOTS]>,
    /// Where [`RunBins::drain_into`] lists the counted slots (scratch; eight more than the
    /// slots, for the AVX2 listing's last whole store).
    counted: Box<[u16; SLOTS + 8]>,
    /// The range of slots covered since the last drain, `lo..=hi` (empty: `lo > hi`).
    lo: usize,
    hi: usize,
}

impl Default for RunBins {
    fn default() -> Self {
        RunBins {
            sum: Box::new([0.0; SLOTS]),
            count: Box::new([0; SLOTS]),
            counted: Box::new([0; SLOTS + 8]),
            lo: SLOTS,
            hi: 0,
        }
    }
}

/// The [`RunBins`] slot of bin `bin` (from [`bin_of_ln`]) on side `side` (0 negatives, 1
/// positives). Plain arithmetic, so that a loop computing slots vectorises.
#[inline(always)]
pub fn slot_of(bin: usize, side: u32) -> u32 {
    2 * bin as u32 + side
}

impl RunBins {
    /// Widens the range the next drain scans to `slots` (a min and a max over them, which
    /// vectorise): every slot passed to [`RunBins::add`] must be covered first.
    #[inline(always)]
    pub fn cover(&mut self, slots: &[u32]) {
        let (lo, hi) = slots.iter().fold((u32::MAX, 0), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        self.lo = self.lo.min(lo as usize);
        self.hi = self.hi.max(hi as usize);
    }

    /// Counts `loss` in `slot` ([`slot_of`], covered by [`RunBins::cover`]) and adds it to the
    /// slot's subtotal.
    #[inline(always)]
    pub fn add(&mut self, slot: u32, loss: f64) {
        let k = slot as usize & (SLOTS - 1);
        debug_assert!(self.lo <= k && k <= self.hi, "slot {k} not covered");
        self.count[k] += 1;
        self.sum[k] += loss;
    }

    /// The counted slots as (side, bin) -> (count, subtotal), for tests.
    #[cfg(test)]
    pub fn subtotals(&self) -> std::collections::BTreeMap<(usize, usize), (u64, f64)> {
        (0..SLOTS)
            .filter(|&k| self.count[k] != 0)
            .map(|k| ((k % 2, k / 2), (u64::from(self.count[k]), self.sum[k])))
            .collect()
    }

    /// Adds the counts and folds the subtotals of the counted slots into `hist` (negatives,
    /// positives) exactly, and empties the slots. Bins are independent exact sums, so the
    /// order of the slots does not matter; a slot not counted holds 0.0 and is skipped. The
    /// counted slots are listed first, without a branch (`list_counted`: about a third of
    /// the range is counted, at random, and a test per slot was mispredicted at every turn),
    /// then folded.
    pub fn drain_into(&mut self, hist: &mut [LogHist; 2]) {
        let (lo, hi) = (self.lo, self.hi.min(SLOTS - 1));
        let n = if lo <= hi { list_counted(&self.count, lo..=hi, &mut self.counted) } else { 0 };
        // The two sides' bins as arrays of their length, looked up once (a slot's bin is at
        // most INNER + 1 by `slot_of`: the `min` only spares the bounds checks).
        let [neg, pos] = hist;
        let counts: [&mut [u64; INNER + 2]; 2] = [&mut neg.count, &mut pos.count]
            .map(|c| c.as_mut_slice().try_into().expect("a histogram has INNER + 2 bins"));
        let sums: [&mut [ExactSum; INNER + 2]; 2] = [&mut neg.sum, &mut pos.sum]
            .map(|s| s.as_mut_slice().try_into().expect("a histogram has INNER + 2 bins"));
        for &k in &self.counted[..n] {
            let k = usize::from(k) & (SLOTS - 1);
            let (side, bin) = (k % 2, (k / 2).min(INNER + 1));
            counts[side][bin] += u64::from(self.count[k]);
            sums[side][bin] += self.sum[k];
            self.count[k] = 0;
            self.sum[k] = 0.0;
        }
        (self.lo, self.hi) = (SLOTS, 0);
    }
}

/// Lists the slots of `range` (within `..SLOTS`) whose count is not 0 into `counted`, in
/// order, from its start; returns how many. Eight slots at a time in AVX2 registers where the
/// processor has it ([`list_counted_avx2`]), otherwise one at a time; the same list.
fn list_counted(
    count: &[u32; SLOTS],
    range: std::ops::RangeInclusive<usize>,
    counted: &mut [u16; SLOTS + 8],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2 (checked just above).
        return unsafe { list_counted_avx2(count, range, counted) };
    }
    list_counted_plain(count, range, counted, 0)
}

/// [`list_counted`] one slot at a time, appending after the first `n` listed.
#[inline(always)]
fn list_counted_plain(
    count: &[u32; SLOTS],
    range: std::ops::RangeInclusive<usize>,
    counted: &mut [u16; SLOTS + 8],
    mut n: usize,
) -> usize {
    for k in range {
        // Every slot is written at `n` (at most `k`: the mask spares a bounds check), and
        // kept by moving past it when counted.
        counted[n & (SLOTS - 1)] = k as u16;
        n += usize::from(count[k & (SLOTS - 1)] != 0);
    }
    n
}

/// Per mask of eight slots (bit i: slot i counted), the indices of its counted slots in
/// order, padded with zeros.
static COUNTED_OF_MASK: [[u16; 8]; 256] = {
    let mut table = [[0u16; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut i, mut n) = (0, 0);
        while i < 8 {
            if mask & (1 << i) != 0 {
                table[mask][n] = i as u16;
                n += 1;
            }
            i += 1;
        }
        mask += 1;
    }
    table
};

/// [`list_counted`] eight slots at a time: their counts compared with 0 at once, and the
/// counted ones' indices (from [`COUNTED_OF_MASK`], plus the first slot's) stored whole at
/// the list's end, which moves past the counted ones only; the slots left over one at a time.
///
/// # Safety
/// The processor must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn list_counted_avx2(
    count: &[u32; SLOTS],
    range: std::ops::RangeInclusive<usize>,
    counted: &mut [u16; SLOTS + 8],
) -> usize {
    use std::arch::x86_64::*;
    let (mut k, end) = (*range.start(), (*range.end() + 1).min(SLOTS));
    let mut n = 0;
    let zero = _mm256_setzero_si256();
    while k + 8 <= end {
        let c = _mm256_loadu_si256(count[k..k + 8].as_ptr().cast());
        let empty = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(c, zero))) as usize;
        let mask = !empty & 0xff;
        // k < SLOTS <= 2^16: the slot numbers fit in 16 bits.
        let at =
            _mm_add_epi16(_mm_loadu_si128(COUNTED_OF_MASK[mask].as_ptr().cast()), _mm_set1_epi16(k as i16));
        // n <= k - start < SLOTS: the eight fit.
        _mm_storeu_si128(counted[n..n + 8].as_mut_ptr().cast(), at);
        n += mask.count_ones() as usize;
        k += 8;
    }
    if k < end {
        n = list_counted_plain(count, k..=end - 1, counted, n);
    }
    n
}

/// The bin of a loss given its natural log (`-inf` for a zero loss). Branch-free (selects, so
/// that a loop binning many losses vectorises): the offset is clamped to `[0, INNER - 1]` in
/// f64, where NaN gives 0 (`f64::max` returns the other operand), then truncated: the bins of
/// a saturating `usize` conversion, at every edge.
#[inline]
pub fn bin_of_ln(ln_loss: f64) -> usize {
    let clamped = ((ln_loss - LN_MIN) * PER_E).max(0.0).min((INNER - 1) as f64);
    // SAFETY: `clamped` is a number in [0, INNER - 1] (never NaN: `max` returned 0.0 for a NaN
    // offset), so it truncates to an `i32` in range: the conversion without its saturating
    // fix-ups, which lets a loop of them vectorise.
    let offset = unsafe { clamped.to_int_unchecked::<i32>() } as usize;
    let inner = 1 + offset;
    let low = if ln_loss < LN_MIN { 0 } else { inner };
    if ln_loss >= LN_MAX {
        INNER + 1
    } else {
        low
    }
}

impl LogHist {
    /// Adds a loss whose log is `ln_loss`.
    #[inline]
    pub fn add(&mut self, loss: f64, ln_loss: f64) {
        let b = bin_of_ln(ln_loss);
        self.count[b] += 1;
        self.sum[b] += loss;
    }

    /// Adds another histogram.
    pub fn merge(&mut self, o: &LogHist) {
        for i in 0..self.count.len() {
            self.count[i] += o.count[i];
            self.sum[i] += o.sum[i];
        }
    }

    /// Samples counted.
    pub fn total_count(&self) -> u64 {
        self.count.iter().sum()
    }

    /// Their summed loss.
    pub fn total_loss(&self) -> f64 {
        let mut s = ExactSum::ZERO;
        for x in &self.sum {
            s += *x;
        }
        s.value()
    }

    /// Non-empty bins from the hardest (largest loss) down: (count, loss).
    fn hardest_first(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        (0..self.count.len())
            .rev()
            .filter(|&i| self.count[i] > 0)
            .map(|i| (self.count[i], self.sum[i].value()))
    }

    /// The share of the total loss carried by the hardest `fraction` of the samples, and the
    /// bound on its error.
    pub fn top_share(&self, fraction: f64) -> (f64, f64) {
        let (n, total) = (self.total_count(), self.total_loss());
        if n == 0 || total <= 0.0 {
            return (0.0, 0.0);
        }
        if fraction >= 1.0 {
            // Every sample: all the loss, exactly (not the bins' f64 sum over their total).
            return (1.0, 0.0);
        }
        let mut need = fraction * n as f64;
        let mut taken = 0.0;
        for (c, loss) in self.hardest_first() {
            if need <= 0.0 {
                break;
            }
            if (c as f64) <= need {
                taken += loss;
                need -= c as f64;
            } else {
                taken += loss * need / c as f64;
                return ((taken / total).min(1.0), bin_ratio() * loss / total);
            }
        }
        // At most 1: the bins' values added in f64 may round above their exact total.
        ((taken / total).min(1.0), 0.0)
    }

    /// The fraction of the samples, hardest first, that carries `share` of the loss, and the
    /// bound on its error.
    pub fn fraction_for_share(&self, share: f64) -> (f64, f64) {
        let (n, total) = (self.total_count(), self.total_loss());
        if n == 0 || total <= 0.0 {
            return (0.0, 0.0);
        }
        let target = share * total;
        let (mut loss_so_far, mut count_so_far) = (0.0, 0.0);
        for (c, loss) in self.hardest_first() {
            if loss_so_far + loss >= target {
                let part = if loss > 0.0 { (target - loss_so_far) / loss } else { 0.0 };
                let frac = (count_so_far + part * c as f64) / n as f64;
                return (frac, c as f64 / n as f64);
            }
            loss_so_far += loss;
            count_so_far += c as f64;
        }
        (1.0, 0.0)
    }

    /// The cumulative distribution of the loss with samples sorted from the smallest loss (the
    /// focal-loss paper's Fig. 4): y(x) = share of the loss carried by the easiest fraction x.
    /// Each y is in [0, 1], and y(0) is 0.
    pub fn cdf(&self, xs: &[f64]) -> Vec<f64> {
        xs.iter().map(|&x| 1.0 - self.top_share(1.0 - x).0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn exact_top_share(mut losses: Vec<f64>, fraction: f64) -> f64 {
        losses.sort_by(|a, b| b.total_cmp(a));
        let total: f64 = losses.iter().sum();
        let k = fraction * losses.len() as f64;
        let whole = k.floor() as usize;
        let mut s: f64 = losses[..whole].iter().sum();
        if whole < losses.len() {
            s += losses[whole] * (k - whole as f64);
        }
        s / total
    }

    #[test]
    fn shares_and_the_cdf_stay_within_0_and_1_when_f64_sums_round_above_the_total() {
        // Hardest first (one per bin), 0.98 + 0.83 + 0.51 + 0.43 is 2.7500000000000004 in
        // f64; their exact total rounds to 2.75.
        let mut h = LogHist::default();
        for loss in [0.43, 0.51, 0.83, 0.98] {
            h.add(loss, f64::ln(loss));
        }
        assert!(0.98 + 0.83 + 0.51 + 0.43 > h.total_loss(), "the case rounds above its total");
        assert_eq!(h.top_share(1.0).0, 1.0);
        // The three hardest (their f64 sum, 2.32, over the exact total): below 1.
        let top3 = h.top_share(0.75).0;
        assert!(top3 < 1.0 && (top3 - 2.32 / 2.75).abs() < 1e-15, "{top3}");
        let cdf = h.cdf(&[0.0, 0.5, 1.0]);
        assert_eq!(cdf[0], 0.0, "{cdf:?}");
        assert!(cdf.iter().all(|y| (0.0..=1.0).contains(y)), "{cdf:?}");
    }

    #[test]
    fn shares_read_off_the_histogram_stay_within_the_stated_bound() {
        let mut rng = Rng::new(5, 5);
        // Losses spread over many decades, like focal losses of easy and hard negatives.
        let losses: Vec<f64> = (0..50_000).map(|_| (rng.normal() * 4.0 - 6.0).exp()).collect();
        let mut h = LogHist::default();
        for &l in &losses {
            h.add(l, l.ln());
        }
        for f in [0.001, 0.01, 0.1, 0.5] {
            let (approx, bound) = h.top_share(f);
            let exact = exact_top_share(losses.clone(), f);
            assert!((approx - exact).abs() <= bound + 1e-12, "f={f}: {approx} vs {exact} (bound {bound})");
            assert!(bound < 0.01, "{bound}");
        }
        let (frac, bound) = h.fraction_for_share(0.5);
        let exact_share = exact_top_share(losses.clone(), frac);
        assert!((exact_share - 0.5).abs() < 0.01 && bound < 0.01, "{frac} {exact_share} {bound}");
        let cdf = h.cdf(&[0.0, 0.5, 1.0]);
        assert!(cdf[0].abs() < 1e-12 && (cdf[2] - 1.0).abs() < 1e-12 && cdf[1] > 0.0 && cdf[1] < 0.1);
    }

    #[test]
    fn the_counted_slots_are_listed_in_order_whatever_the_range() {
        let mut rng = crate::rng::Rng::new(13, 0);
        let mut count = Box::new([0u32; SLOTS]);
        let mut counted = Box::new([0u16; SLOTS + 8]);
        // Ranges of every length modulo 8, at both ends of the slots, with none, some or all
        // of their slots counted.
        let mut ranges =
            vec![(0, 0), (0, SLOTS - 1), (SLOTS - 1, SLOTS - 1), (SLOTS - 9, SLOTS - 1), (5, 12)];
        for _ in 0..300 {
            let lo = rng.below(SLOTS as u64) as usize;
            ranges.push((lo, (lo + rng.below(1200) as usize).min(SLOTS - 1)));
        }
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            let share = [0.0, 0.33, 1.0][i % 3];
            for c in count.iter_mut() {
                *c = u32::from(rng.uniform() < share) * (1 + rng.below(5) as u32);
            }
            let expected: Vec<u16> = (lo..=hi).filter(|&k| count[k] != 0).map(|k| k as u16).collect();
            let n = list_counted(&count, lo..=hi, &mut counted);
            assert_eq!(&counted[..n], &expected[..], "{lo}..={hi}");
            let n = list_counted_plain(&count, lo..=hi, &mut counted, 0);
            assert_eq!(&counted[..n], &expected[..], "{lo}..={hi}, one at a time");
        }
    }

    #[test]
    fn run_bins_hold_f64_subtotals_per_block_and_fold_them_exactly() {
        let mut rng = Rng::new(5, 7);
        let mut bins = RunBins::default();
        let mut hist = [LogHist::default(), LogHist::default()];
        let mut expected = [LogHist::default(), LogHist::default()];
        for block in 0..4 {
            // Both sides, the edge bins (zero losses, losses beyond e^15) and a spread between.
            let losses: Vec<(usize, f64)> = (0..200 + 37 * block)
                .map(|i| {
                    let loss = match i % 7 {
                        0 => 0.0,
                        1 => 1e7 * (1.0 + rng.uniform()),
                        _ => (rng.normal() * 8.0 - 4.0).exp(),
                    };
                    (rng.below(2) as usize, loss)
                })
                .collect();
            let slots: Vec<u32> =
                losses.iter().map(|&(side, l)| slot_of(bin_of_ln(l.ln()), side as u32)).collect();
            bins.cover(&slots);
            let mut naive = std::collections::BTreeMap::new();
            for (&slot, &(side, loss)) in slots.iter().zip(&losses) {
                bins.add(slot, loss);
                let (count, sum) = naive.entry((side, bin_of_ln(loss.ln()))).or_insert((0u64, 0.0f64));
                *count += 1;
                *sum += loss;
            }
            let bits = |m: &std::collections::BTreeMap<(usize, usize), (u64, f64)>| {
                m.iter().map(|(&k, &(c, s))| (k, c, s.to_bits())).collect::<Vec<_>>()
            };
            assert_eq!(bits(&bins.subtotals()), bits(&naive), "block {block}");
            assert!(naive.contains_key(&(0, 0)) && naive.contains_key(&(1, INNER + 1)), "edges: {naive:?}");
            bins.drain_into(&mut hist);
            assert!(bins.subtotals().is_empty());
            for ((side, bin), (count, sum)) in naive {
                expected[side].count[bin] += count;
                expected[side].sum[bin] += sum;
            }
            assert_eq!(hist, expected, "block {block}");
        }
    }

    #[test]
    fn zeros_and_extremes_land_in_the_edge_bins() {
        assert_eq!(bin_of_ln(f64::NEG_INFINITY), 0);
        assert_eq!(bin_of_ln(-80.0), 0);
        assert_eq!(bin_of_ln(LN_MIN), 1);
        assert_eq!(bin_of_ln(20.0), INNER + 1);
        assert!((bin_ratio() - 0.05127).abs() < 1e-4);
    }

    #[test]
    fn bins_clamped_in_f64_are_the_bins_through_usize() {
        let through_usize = |ln: f64| {
            if ln < LN_MIN {
                0
            } else if ln >= LN_MAX {
                INNER + 1
            } else {
                1 + (((ln - LN_MIN) * PER_E) as usize).min(INNER - 1)
            }
        };
        let mut rng = Rng::new(5, 0);
        let edges = (0..=INNER).map(|k| LN_MIN + k as f64 / PER_E);
        let near = edges.flat_map(|x| [x, x.next_down(), x.next_up()]);
        let random = (0..100_000).map(|_| LN_MIN - 5.0 + rng.uniform() * (LN_MAX - LN_MIN + 10.0));
        let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, LN_MAX.next_down(), -0.0, 1e300, -1e300];
        for ln in near.chain(random).chain(special) {
            assert_eq!(bin_of_ln(ln), through_usize(ln), "ln loss {ln}");
        }
    }
}
