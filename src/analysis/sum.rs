//! Order-independent sums.
//!
//! A pass over billions of decisions adds the same numbers in a different order depending on the
//! thread count, the row-group sizes and how shards are merged. Plain f64 addition is not
//! associative, so such runs would differ in the last bits and the JSON would not be
//! byte-identical. [`ExactSum`] accumulates in 128-bit fixed point with 63 fractional bits: every
//! term is rounded once (towards zero, to a multiple of 2^-63 ≈ 1.1e-19) and the additions are
//! exact integer additions, so the result depends only on the multiset of terms. Totals up to
//! 2^64 ≈ 1.8e19 are representable; the input checks bound every term far below that
//! (see [`crate::input::MAX_ABS_LOGIT`]).

use serde::{Deserialize, Serialize};

const FRAC_BITS: u32 = 63;
const SCALE: f64 = (1u64 << FRAC_BITS) as f64;

/// An exact, associative and commutative sum of f64 terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactSum {
    fixed: i128,
}

impl ExactSum {
    /// The empty sum.
    pub const ZERO: ExactSum = ExactSum { fixed: 0 };

    /// Adds one finite term.
    #[inline]
    pub fn add(&mut self, x: f64) {
        debug_assert!(x.is_finite() && x.abs() < 1e15, "term out of range: {x}");
        // `as i64` truncates towards zero in one instruction (f64::trunc is a libm call on
        // baseline x86-64).
        let whole = x as i64;
        let frac = ((x - whole as f64) * SCALE) as i64;
        self.fixed = self.fixed.wrapping_add((i128::from(whole) << FRAC_BITS) + i128::from(frac));
    }

    /// Adds another sum (exactly).
    #[inline]
    pub fn merge(&mut self, other: ExactSum) {
        self.fixed = self.fixed.wrapping_add(other.fixed);
    }

    /// The sum, rounded to the nearest f64.
    pub fn value(&self) -> f64 {
        // Split so that both halves convert exactly before the final rounding.
        let whole = self.fixed >> FRAC_BITS;
        let frac = self.fixed - (whole << FRAC_BITS);
        whole as f64 + frac as f64 / SCALE
    }
}

impl std::ops::AddAssign<f64> for ExactSum {
    fn add_assign(&mut self, x: f64) {
        self.add(x);
    }
}

impl std::ops::AddAssign<ExactSum> for ExactSum {
    fn add_assign(&mut self, other: ExactSum) {
        self.merge(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_change_the_sum() {
        let terms: Vec<f64> = (0..10_000)
            .map(|i| ((i * 7919 % 10_007) as f64 * 1.37e-3).powi(3) * if i % 3 == 0 { 1e-9 } else { 1.0 })
            .collect();
        let mut forward = ExactSum::ZERO;
        terms.iter().for_each(|&t| forward += t);
        let mut backward = ExactSum::ZERO;
        terms.iter().rev().for_each(|&t| backward += t);
        let mut halves = [ExactSum::ZERO; 2];
        terms.iter().enumerate().for_each(|(i, &t)| halves[i % 2] += t);
        halves[0] += halves[1];
        assert_eq!(forward, backward);
        assert_eq!(forward, halves[0]);
        // And it is close to the f64 sum.
        let naive: f64 = terms.iter().sum();
        assert!((forward.value() - naive).abs() <= 1e-12 * naive);
    }

    #[test]
    fn small_and_negative_terms_survive() {
        let mut s = ExactSum::ZERO;
        s += 1e12;
        s += 1e-9;
        s += -1e12;
        assert!((s.value() - 1e-9).abs() < 1e-18);
        let mut t = ExactSum::ZERO;
        t += -2.75;
        t += 0.5;
        assert_eq!(t.value(), -2.25);
    }

    #[test]
    fn f64_running_sums_drift_where_exact_sums_do_not() {
        // Why sums are not f32 (or naive f64 in a fixed order): a million 0.1s.
        let mut f32_sum = 0f32;
        let mut exact = ExactSum::ZERO;
        for _ in 0..1_000_000 {
            f32_sum += 0.1;
            exact += 0.1;
        }
        assert!((f32_sum as f64 - 100_000.0).abs() > 100.0);
        assert!((exact.value() - 100_000.0).abs() < 1e-8);
    }
}
