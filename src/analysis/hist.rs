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

/// f64 subtotals of a few slots out of many (histogram bins, classes), folded into exact sums
/// once per summation block: only the slots touched since the last fold are visited.
#[derive(Clone, Debug, Default)]
pub struct LocalSums {
    sum: Vec<f64>,
    touched: Vec<usize>,
}

/// [`LocalSums`] kept by an accumulator between calls, drained after every use, so that any two
/// hold the same (no) sums: they compare equal, whatever their allocated sizes.
#[derive(Clone, Debug, Default)]
pub struct Scratch(pub Vec<LocalSums>);

impl PartialEq for Scratch {
    fn eq(&self, _: &Scratch) -> bool {
        true
    }
}

impl LocalSums {
    /// Adds `x` to slot `i`.
    #[inline]
    pub fn add(&mut self, i: usize, x: f64) {
        if i >= self.sum.len() {
            self.sum.resize(i + 1, f64::NAN);
        }
        let s = &mut self.sum[i];
        if s.is_nan() {
            // NaN marks an untouched slot (terms are finite), so a slot holding 0.0 is still
            // folded: the result does not depend on which slots happened to sum to zero.
            *s = 0.0;
            self.touched.push(i);
        }
        *s += x;
    }

    /// Hands every touched slot's subtotal to `f` (in the order first touched) and resets.
    pub fn drain(&mut self, mut f: impl FnMut(usize, f64)) {
        for &i in &self.touched {
            f(i, self.sum[i]);
            self.sum[i] = f64::NAN;
        }
        self.touched.clear();
    }
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

    /// Counts a loss in bin `bin` now and adds it to `local`'s f64 subtotal of that bin, which
    /// [`LogHist::absorb`] folds in exactly (once per summation block, see `analysis::edges`).
    #[inline]
    pub fn add_local(&mut self, local: &mut LocalSums, loss: f64, ln_loss: f64) {
        let b = bin_of_ln(ln_loss);
        self.count[b] += 1;
        local.add(b, loss);
    }

    /// [`LogHist::add_local`] with the bin already computed (by [`bin_of_ln`]).
    #[inline]
    pub fn add_binned(&mut self, local: &mut LocalSums, loss: f64, bin: usize) {
        self.count[bin] += 1;
        local.add(bin, loss);
    }

    /// Folds the subtotals of `local` into the exact bin sums and empties it.
    pub fn absorb(&mut self, local: &mut LocalSums) {
        local.drain(|b, x| self.sum[b] += x);
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
                return (taken / total, bin_ratio() * loss / total);
            }
        }
        (taken / total, 0.0)
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
