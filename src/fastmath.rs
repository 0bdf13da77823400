//! Branch-free `exp` and `ln(1 + x)` for the sigmoid kernel, and `ln` for the sweep's
//! histogram bins, written so that the compiler vectorises them over a chunk of decisions.
//!
//! The sigmoid decision of a logit needs e = exp(-|z|) and ln(1 + e) (see [`crate::loss`]).
//! libm computes them one value at a time (about 9 ns per decision for both); these versions
//! use only +, -, *, / and bit operations, with no branches and no table, so a loop over a
//! chunk compiles to SIMD code (SSE2 on every x86-64, AVX2 where the processor has it, chosen
//! at run time).
//!
//! Fused multiply-adds: [`exp_neg_with`] and [`ln_1p_unit_given_with`] take `FUSED`. Unfused,
//! every copy (SSE2, AVX2) gives the same bits: Rust never contracts `a * b + c` into an FMA on
//! its own. The sigmoid kernel fuses them where the processor has AVX2 and FMA ([`fused`]):
//! the polynomials are then one instruction per coefficient instead of two, and the kernel,
//! bound by its floating-point operations, takes about a fifth less time. Fused values differ
//! from unfused ones in the last bits, within the same bounds (the tests check both), so
//! `analyze`'s JSON is byte-identical between runs on processors alike in FMA support, and may
//! differ in the last digits between one with it and one without. `Decision::from_logit`
//! fuses exactly when the kernel does (through `f64::mul_add`, which outside the kernel's FMA
//! copy is libm's `fma`: correctly rounded, as the instruction is), so both give the same bits
//! on every processor. The other functions here are never fused.
//!
//! Both polynomials are evaluated mostly by Estrin's scheme (independent pairs
//! `c_j + c_{j+1} x` combined by powers of x) rather than Horner's: the dependency chain is
//! a few multiplications deep instead of one per coefficient, so a core keeps several
//! vectors in flight (the kernel was latency-bound with Horner).
//!
//! Error bounds (checked against libm over 10^6 points in the tests, and by the
//! hard-coded bounds below):
//! - [`exp_neg`]: range reduction by ln 2 in two parts (fdlibm's split, exact products) and the
//!   degree-13 Taylor polynomial on |r| <= ln(2)/2, whose truncation error is below 4e-18
//!   relative. Its three lowest steps are Horner's (1 + r (1 + r (1/2 + r Q))), so the
//!   rounding of the large terms is as in Horner's scheme; Q (degree 10) is Estrin's. The
//!   result is within 1 ulp of exp(t) at every tested point (the test allows 2). Arguments
//!   below -708 give 0 (the true value is below 3.3e-308: every loss term it feeds is far
//!   below what the exact sums resolve, 2^-63).
//! - [`ln_1p_unit`]: fdlibm's `log1p` method (s_log1p.c), without its branches since
//!   e is in [0, 1]: 1 + e = 2^k (1 + f) with k = 0, f = e for e < sqrt(2) - 1, else k = 1,
//!   f = (1 + e) / 2 - 1 (exact) and c the rounding error of 1 + e; then
//!   ln(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with s = f / (2 + f), |s| <= 0.1716, and R
//!   fdlibm's degree-7 polynomial in s^2 (error below 2^-58.45). Within 1 ulp of libm at
//!   every tested point (the test allows 3). [`ln_1p_unit_given`] takes 1 / (1 + e), which
//!   the kernel has anyway, so c / (1 + e) costs a product, not a division.
//! - [`ln_normal`]: fdlibm's `log` (e_log.c) for positive normal numbers, without its
//!   branches: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1 (exact), then the same
//!   polynomial as `log1p`. Within 1 ulp of libm at every tested point (the test allows 1);
//!   [`ln_all`] takes libm's value for every other input.

/// Whether the sigmoid kernel fuses its multiply-adds on this processor (it has AVX2 and FMA;
/// std caches the detection). Fused or not, every value is within the stated bounds; they
/// differ in the last bits, so the JSON of one dump is byte-identical on processors alike in
/// this.
pub fn fused() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 2^52 + 2^51: adding it rounds a float below 2^51 in magnitude to an integer, in the
/// low bits of the mantissa.
const ROUND: f64 = 6_755_399_441_055_744.0;
const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// ln 2 in two parts (fdlibm): `n * LN2_HI` is exact for |n| < 2^11. The digits are fdlibm's,
/// as written there (more than an f64 holds; the constant is the nearest f64).
#[allow(clippy::excessive_precision)]
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
#[allow(clippy::excessive_precision)]
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
/// Below this exp(t) is subnormal; the kernel returns 0.
pub const EXP_MIN_ARG: f64 = -708.0;

/// `a * b + c`: fused (one rounding: `f64::mul_add`) when `FUSED`, else a product and a sum.
#[inline(always)]
fn madd<const FUSED: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// exp(t) for t <= 0 (0 for t < [`EXP_MIN_ARG`]). Branch-free.
#[inline(always)]
pub fn exp_neg(t: f64) -> f64 {
    exp_neg_with::<false>(t)
}

/// [`exp_neg`] with its multiply-adds fused when `FUSED` (see [`fused`]).
#[inline(always)]
pub fn exp_neg_with<const FUSED: bool>(t: f64) -> f64 {
    let small = t < EXP_MIN_ARG;
    let t = if small { 0.0 } else { t };
    let k = madd::<FUSED>(t, LOG2_E, ROUND);
    let n = k - ROUND;
    // n * LN2_HI is exact: fused or not, the first difference is the same.
    let r = madd::<FUSED>(-n, LN2_LO, t - n * LN2_HI);
    // Taylor coefficients 1/j!.
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let m = madd::<FUSED>;
    let pair = |j: usize| m(C[j + 1], r, C[j]);
    // Q = sum of C[j] r^(j - 3) for j = 3..=13, by Estrin's scheme.
    let q = m(r8, m(r2, C[13], pair(11)), m(r4, m(r2, pair(9), pair(7)), m(r2, pair(5), pair(3))));
    let p = m(r, m(r, m(r, q, C[2]), C[1]), C[0]);
    // 2^n from the integer in the low mantissa bits of k (n in -1022..=0 here).
    let n_int = (k.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64);
    let scale = f64::from_bits(((n_int + 1023) << 52) as u64);
    if small {
        0.0
    } else {
        p * scale
    }
}

/// fdlibm's log1p coefficients Lp1..Lp7 (s_log1p.c; their bit patterns are checked in the
/// tests).
#[allow(clippy::excessive_precision)]
const LP: [f64; 7] = [
    6.666_666_666_666_735_130e-1,
    3.999_999_999_940_941_908e-1,
    2.857_142_874_366_239_149e-1,
    2.222_219_843_214_978_396e-1,
    1.818_357_216_161_805_012e-1,
    1.531_383_769_920_937_332e-1,
    1.479_819_860_511_658_591e-1,
];
/// Above this, 1 + e is reduced to (1 + e) / 2 (fdlibm's sqrt(2) boundary).
const SQRT2_M1: f64 = std::f64::consts::SQRT_2 - 1.0;

/// ln(1 + e) for e in [0, 1]. Branch-free.
#[inline(always)]
pub fn ln_1p_unit(e: f64) -> f64 {
    ln_1p_unit_given(e, 1.0 / (1.0 + e))
}

/// [`ln_1p_unit`] given `inv` = `1.0 / (1.0 + e)` (the same bits as `ln_1p_unit(e)`).
#[inline(always)]
pub fn ln_1p_unit_given(e: f64, inv: f64) -> f64 {
    ln_1p_unit_given_with::<false>(e, inv)
}

/// [`ln_1p_unit_given`] with its multiply-adds fused when `FUSED` (see [`fused`]).
#[inline(always)]
pub fn ln_1p_unit_given_with<const FUSED: bool>(e: f64, inv: f64) -> f64 {
    let u = 1.0 + e;
    let big = e >= SQRT2_M1;
    // u in [sqrt 2, 2]: u / 2 - 1 is exact, and e - (u - 1) is the rounding error of u.
    let f = if big { 0.5 * u - 1.0 } else { e };
    let c = if big { (e - (u - 1.0)) * inv } else { 0.0 };
    let k = if big { 1.0 } else { 0.0 };
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let r = log_poly::<FUSED>(s);
    // k * LN2_HI is exact (k is 0 or 1).
    k * LN2_HI - ((hfsq - madd::<FUSED>(s, hfsq + r, madd::<FUSED>(k, LN2_LO, c))) - f)
}

/// fdlibm's polynomial R(s^2) of `log1p` and `log` (Lp1..Lp7; by Estrin's scheme). The last
/// step around it stays written out in each: shared in one function as well, it changed how
/// the compiler laid out the sigmoid kernel (+16% instructions there).
#[inline(always)]
fn log_poly<const FUSED: bool>(s: f64) -> f64 {
    let m = madd::<FUSED>;
    let z = s * s;
    let z2 = z * z;
    let z4 = z2 * z2;
    z * m(z4, m(z2, LP[6], m(z, LP[5], LP[4])), m(z2, m(z, LP[3], LP[2]), m(z, LP[1], LP[0])))
}

/// ln(x) for a positive normal x (finite, at least `f64::MIN_POSITIVE`; anything else gives a
/// meaningless number: [`ln_all`] handles every input). Branch-free: fdlibm's `log`
/// (e_log.c): x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1, and ln(1 + f) by the same
/// polynomial in s = f / (2 + f) as [`ln_1p_unit`] (fdlibm's Lg1..Lg7 are its Lp1..Lp7).
/// Within 1 ulp of libm at every tested point.
#[inline(always)]
pub fn ln_normal(x: f64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    let bits = x.to_bits();
    // m in [1, 2), and the unbiased exponent.
    let m = f64::from_bits((bits & MANTISSA) | 1.0f64.to_bits());
    let k = ((bits >> 52) as i64 - 1023) as f64;
    let big = m >= std::f64::consts::SQRT_2;
    // m / 2 is exact.
    let f = if big { 0.5 * m } else { m } - 1.0;
    let k = if big { k + 1.0 } else { k };
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let r = log_poly::<false>(s);
    // f is exact: no correction term.
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// `ln(x)` of every value of `xs`, appended to `out`: [`ln_normal`] over the whole slice (a
/// loop that vectorises; the AVX2 copy where the processor has it), then libm's `ln` for the
/// values that are not positive normal numbers (zeros, subnormals, infinities, NaN,
/// negatives: none but zeros in a chunk of losses).
pub fn ln_all(xs: &[f64], out: &mut Vec<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(xs: &[f64], out: &mut Vec<f64>) -> bool {
            // Written out, not through a shared function: `extend` there was not inlined, so
            // its loop was compiled without AVX2 (+4% instructions in the sweep).
            out.extend(xs.iter().map(|&x| ln_normal(x)));
            all_normal(xs)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            if !unsafe { avx2(xs, out) } {
                fix_special(xs, out);
            }
            return;
        }
    }
    out.extend(xs.iter().map(|&x| ln_normal(x)));
    if !all_normal(xs) {
        fix_special(xs, out);
    }
}

/// Whether every value of `xs` is a positive normal number (a fold without early exit, which
/// vectorises).
#[inline(always)]
fn all_normal(xs: &[f64]) -> bool {
    xs.iter().fold(true, |all, &x| all & positive_normal(x))
}

/// Whether `x` is a positive normal number, the domain of [`ln_normal`].
#[inline(always)]
fn positive_normal(x: f64) -> bool {
    (f64::MIN_POSITIVE..f64::INFINITY).contains(&x)
}

/// libm's `ln` for the values of `xs` that are not positive normal numbers (`out` ends with
/// their [`ln_normal`]s). Never inlined: compiled for the baseline instruction set, as libm's
/// `log` called from AVX2 code was four times as slow.
#[inline(never)]
fn fix_special(xs: &[f64], out: &mut [f64]) {
    let start = out.len() - xs.len();
    let out = &mut out[start..];
    for (y, &x) in out.iter_mut().zip(xs) {
        if !positive_normal(x) {
            *y = x.ln();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// `n` pseudo-random 64-bit words (xorshift64, a fixed seed).
    fn random_bits(n: usize) -> impl Iterator<Item = u64> {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..n).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
    }

    #[test]
    fn exp_neg_is_within_two_ulp_of_libm() {
        let mut worst = 0;
        for i in 0..1_000_000u64 {
            // Dense near 0 and spread out to the subnormal limit.
            let t = -((i as f64 / 1e6).powi(3) * 708.0);
            worst = worst.max(ulps(exp_neg(t), t.exp()));
            worst = worst.max(ulps(exp_neg_with::<true>(t), t.exp()));
        }
        for t in [0.0, -1e-300, -0.5 * std::f64::consts::LN_2, -std::f64::consts::LN_2, -707.9, -708.0] {
            worst = worst.max(ulps(exp_neg(t), t.exp()));
            worst = worst.max(ulps(exp_neg_with::<true>(t), t.exp()));
        }
        assert!(worst <= 2, "worst {worst} ulp");
        for f in [exp_neg_with::<false>, exp_neg_with::<true>] {
            assert_eq!(f(-709.0), 0.0);
            assert_eq!(f(-1e6), 0.0);
            assert_eq!(f(0.0), 1.0);
        }
    }

    /// [`ln_1p_unit`] with its multiply-adds fused.
    fn ln_1p_unit_fused(e: f64) -> f64 {
        ln_1p_unit_given_with::<true>(e, 1.0 / (1.0 + e))
    }

    #[test]
    fn ln_1p_unit_is_within_three_ulp_of_libm() {
        let mut worst = 0;
        for i in 0..=1_000_000u64 {
            let e = (i as f64 / 1e6).powi(4);
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
            worst = worst.max(ulps(ln_1p_unit_fused(e), e.ln_1p()));
        }
        for e in [0.0, 1e-300, 5e-324, 1e-17, 0.5, 1.0] {
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
            worst = worst.max(ulps(ln_1p_unit_fused(e), e.ln_1p()));
        }
        assert!(worst <= 3, "worst {worst} ulp");
    }

    #[test]
    fn ln_1p_unit_is_within_three_ulp_of_libm_on_random_points_and_the_boundary() {
        // Uniform in [0, 1] (the test above is dense near 0), and around the sqrt(2) - 1
        // switch between the two reductions.
        let mut worst = 0;
        for x in random_bits(1_000_000) {
            let e = (x >> 11) as f64 / (1u64 << 53) as f64;
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
            worst = worst.max(ulps(ln_1p_unit_fused(e), e.ln_1p()));
        }
        let mut e = SQRT2_M1;
        for _ in 0..1000 {
            e = f64::from_bits(e.to_bits() - 1);
        }
        for _ in 0..2000 {
            worst = worst.max(ulps(ln_1p_unit(e), e.ln_1p()));
            worst = worst.max(ulps(ln_1p_unit_fused(e), e.ln_1p()));
            e = f64::from_bits(e.to_bits() + 1);
        }
        assert!(worst <= 3, "worst {worst} ulp");
    }

    #[test]
    fn ln_1p_unit_given_the_reciprocal_is_ln_1p_unit() {
        for i in 0..=100_000u64 {
            let e = i as f64 / 1e5;
            assert_eq!(ln_1p_unit_given(e, 1.0 / (1.0 + e)).to_bits(), ln_1p_unit(e).to_bits(), "{e}");
        }
    }

    #[test]
    fn ln_normal_is_within_one_ulp_of_libm() {
        let mut worst = 0;
        for x in random_bits(1_000_000) {
            // Every exponent of a normal number, any mantissa.
            let v = f64::from_bits((x & ((1 << 52) - 1)) | ((1 + (x >> 52) % 2046) << 52));
            worst = worst.max(ulps(ln_normal(v), v.ln()));
        }
        // Around 1 (f near 0, where cancellation would show), sqrt(2)'s switch, powers of two.
        for i in 0..20_000u64 {
            for v in [
                1.0 + i as f64 * 1e-9,
                1.0 - i as f64 * 1e-9,
                std::f64::consts::SQRT_2 * (1.0 + (i as f64 - 10_000.0) * 1e-12),
            ] {
                worst = worst.max(ulps(ln_normal(v), v.ln()));
            }
        }
        for e in -1022..1024 {
            let v = 2f64.powi(e);
            worst = worst.max(ulps(ln_normal(v), v.ln()));
        }
        assert!(worst <= 1, "worst {worst} ulp");
        assert_eq!(ln_normal(1.0), 0.0);
    }

    #[test]
    fn ln_all_gives_libm_at_zeros_subnormals_infinities_and_nan() {
        let xs = [0.0, -0.0, 5e-324, 1e-310, f64::INFINITY, f64::NAN, -1.0, 2.5, f64::MIN_POSITIVE];
        let mut out = vec![7.0];
        ln_all(&xs, &mut out);
        assert_eq!(out.len(), 1 + xs.len());
        assert_eq!(out[0], 7.0);
        for (&x, &y) in xs.iter().zip(&out[1..]) {
            // libm's value for the special ones, the vectorised one for normal numbers.
            let want = if positive_normal(x) { ln_normal(x) } else { x.ln() };
            assert!(want.is_nan() && y.is_nan() || y.to_bits() == want.to_bits(), "{x}: {y} vs {want}");
        }
        assert_eq!(out[1], f64::NEG_INFINITY);
        assert!(out[6].is_nan() && out[7].is_nan());
        // All normal: the vectorised values, untouched.
        let xs: Vec<f64> = (1..1000).map(|i| f64::from(i) * 0.37).collect();
        let mut out = Vec::new();
        ln_all(&xs, &mut out);
        assert!(xs.iter().zip(&out).all(|(&x, &y)| y.to_bits() == ln_normal(x).to_bits()));
    }

    #[test]
    fn the_log1p_coefficients_are_fdlibms_bits() {
        // s_log1p.c gives each coefficient in hex beside its decimal digits.
        let bits = [
            0x3FE5_5555_5555_5593,
            0x3FD9_9999_9997_FA04,
            0x3FD2_4924_9422_9359,
            0x3FCC_71C5_1D8E_78AF,
            0x3FC7_4664_96CB_03DE,
            0x3FC3_9A09_D078_C69F,
            0x3FC2_F112_DF3E_5244,
        ];
        for (c, b) in LP.iter().zip(bits) {
            assert_eq!(c.to_bits(), b, "{c}");
        }
    }
}
