//! Order-independent sums.
//!
//! A pass over billions of decisions adds the same numbers in a different order depending on the
//! thread count, the row-group sizes and how shards are merged. Plain f64 addition is not
//! associative, so such runs would differ in the last bits and the JSON would not be
//! byte-identical. [`ExactSum`] accumulates in fixed point with 63 fractional bits: every term is
//! rounded once (towards zero, to a multiple of 2^-63 ≈ 1.1e-19) and the additions are exact
//! integer additions, so the result depends only on the multiset of terms.
//!
//! Range: a term must be finite and below 2^62 ≈ 4.6e18 in magnitude (the pass adds one term per
//! summation block and quantity, e.g. at most 6,144 decisions' CE of at most
//! [`crate::input::MAX_ABS_LOGIT`] each, or their squares: far below). A term (a block's subtotal)
//! smaller than 2^-63 in magnitude counts as 0. The total has no practical bound: the 128-bit
//! accumulator carries into a 64-bit count of wraps, so totals beyond 2^64 ≈ 1.8e19 (squares of
//! large losses over billions of decisions) stay exact instead of wrapping silently.

use serde::{Deserialize, Serialize};

const FRAC_BITS: u32 = 63;
const SCALE: f64 = (1u64 << FRAC_BITS) as f64;
/// 2^128 in units of the result: 2^(128 - 63).
const WRAP: f64 = (1u128 << (128 - FRAC_BITS)) as f64;

/// `x as i64` for x in i64's range, truncated towards zero, in one instruction: CVTTSD2SI on
/// x86-64 (`as` adds the fix-ups of a saturating conversion, a third of an exact add's
/// instructions; out of range and NaN, CVTTSD2SI gives i64::MIN where `as` saturates, and
/// [`ExactSum::add`] takes only terms in range).
#[inline(always)]
fn trunc_i64(x: f64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvttsd_si64, _mm_set_sd};
        // SAFETY: SSE2, all these need, is part of every x86-64 processor.
        unsafe { _mm_cvttsd_si64(_mm_set_sd(x)) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        x as i64
    }
}

/// An exact, associative and commutative sum of f64 terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactSum {
    fixed: i128,
    /// Carries of `fixed` (the sum is `wraps` x 2^128 + `fixed`, in units of 2^-63): 0 unless
    /// the total passed 2^64.
    #[serde(default, skip_serializing_if = "is_zero")]
    wraps: i64,
}

fn is_zero(x: &i64) -> bool {
    *x == 0
}

impl ExactSum {
    /// The empty sum.
    pub const ZERO: ExactSum = ExactSum { fixed: 0, wraps: 0 };

    /// Adds one finite term of magnitude below 2^62.
    #[inline]
    pub fn add(&mut self, x: f64) {
        debug_assert!(x.is_finite() && x.abs() < (1u64 << 62) as f64, "term out of range: {x}");
        // Truncation towards zero (f64::trunc is a libm call on baseline x86-64).
        let whole = trunc_i64(x);
        // |x - whole| < 1: the product is below 2^63 in magnitude.
        let frac = trunc_i64((x - whole as f64) * SCALE);
        self.add_fixed((i128::from(whole) << FRAC_BITS) + i128::from(frac));
    }

    #[inline]
    fn add_fixed(&mut self, t: i128) {
        let (sum, wrapped) = self.fixed.overflowing_add(t);
        self.fixed = sum;
        if wrapped {
            self.wraps += if t > 0 { 1 } else { -1 };
        }
    }

    /// Adds another sum (exactly).
    #[inline]
    pub fn merge(&mut self, other: ExactSum) {
        self.add_fixed(other.fixed);
        self.wraps += other.wraps;
    }

    /// The sum, rounded to the nearest f64 (when it is below 2^64 in magnitude; beyond, within
    /// an ulp).
    pub fn value(&self) -> f64 {
        // Split so that both halves convert exactly before the final rounding.
        let whole = self.fixed >> FRAC_BITS;
        let frac = self.fixed - (whole << FRAC_BITS);
        let v = whole as f64 + frac as f64 / SCALE;
        if self.wraps == 0 {
            v
        } else {
            self.wraps as f64 * WRAP + v
        }
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

/// An f64 sum kept in four lanes, combined in the one fixed order every such sum uses:
/// (0 + 1) + (2 + 3). The lanes are interleaved partial sums (a decision's lane depends only on
/// its place in a run, or its class), so the total depends only on the run's values.
#[inline(always)]
pub fn lanes_total(x: [f64; 4]) -> f64 {
    (x[0] + x[1]) + (x[2] + x[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_that_of_as_over_the_range_of_terms() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut values = vec![0.0, -0.0, 0.5, -0.5, 1.0 - f64::EPSILON, -1.0, 1e-300, -2.5, 4.0e18, -4.6e18];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Magnitudes from 2^-40 to 2^62, either sign.
            let m = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = m * 2f64.powi((x % 103) as i32 - 40);
            values.push(if x & 1 == 0 { v } else { -v });
        }
        for v in values {
            assert_eq!(trunc_i64(v), v as i64, "{v}");
            let frac = (v - trunc_i64(v) as f64) * SCALE;
            assert_eq!(trunc_i64(frac), frac as i64, "{v}");
        }
    }

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
    fn the_documented_range_holds() {
        // Resolution: a term below 2^-63 counts as 0, one of 2^-63 exactly.
        let tiny = (2.0f64).powi(-63);
        let mut s = ExactSum::ZERO;
        s += tiny / 2.0;
        assert_eq!(s, ExactSum::ZERO);
        s += tiny;
        assert_eq!(s.value(), tiny);
        // Totals beyond 2^64 do not wrap: 16 terms of 2^61 (2^65 in all), in any order, and
        // back to zero exactly.
        let big = (2.0f64).powi(61);
        let mut up = ExactSum::ZERO;
        for _ in 0..16 {
            up += big;
        }
        assert_eq!(up.value(), (2.0f64).powi(65));
        let mut mixed = ExactSum::ZERO;
        for i in 0..32 {
            mixed += if i % 2 == 0 { big } else { 0.5 };
        }
        assert_eq!(mixed.value(), 16.0 * big + 8.0);
        let mut down = up;
        for _ in 0..16 {
            down += -big;
        }
        assert_eq!(down, ExactSum::ZERO);
        // Merging wrapped sums is exact and commutative.
        let (mut a, mut b) = (up, ExactSum::ZERO);
        b += -big;
        a.merge(b);
        let mut c = b;
        c.merge(up);
        assert_eq!(a, c);
        assert_eq!(a.value(), 15.0 * big);
        // Negative totals beyond -2^64 too.
        let mut neg = ExactSum::ZERO;
        for _ in 0..20 {
            neg += -big;
        }
        assert_eq!(neg.value(), -20.0 * big);
        // The serialised form of a sum that never wrapped is unchanged (no `wraps` field).
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("{{\"fixed\":{}}}", 1));
        let back: ExactSum = serde_json::from_str(&serde_json::to_string(&up).unwrap()).unwrap();
        assert_eq!(back, up);
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
