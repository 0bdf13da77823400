//! Numerically stable loss kernels.
//!
//! Every quantity comes from the logit through log-sigmoid / log-sum-exp, never through
//! `ln(sigmoid(x))`, so losses stay finite and accurate at logits of +-100 and beyond. All
//! arithmetic is f64, whatever the dump's float width.
//!
//! A [`Decision`] holds what every strategy needs about one binary (sigmoid) or categorical
//! (softmax) decision: p_t, 1 - p_t and its log, the cross-entropy, and the two terms from which
//! the gradient of the focal loss for any gamma follows (many decisions are kept field by field,
//! in [`DecisionColumns`]):
//!
//! dFL/dx = alpha_t (1 - p_t)^gamma (a + gamma * b), with a = dCE/dx.
//!
//! For a hard target, a = -(1 - p_t) s and b = -p_t CE s (s = +1 for y = 1, -1 for y = 0), so
//! |dFL/dx| = alpha_t (1 - p_t)^gamma ((1 - p_t) + gamma p_t CE). For a soft target y in (0, 1)
//! (torchvision's sigmoid_focal_loss accepts them), a = p - y and
//! b = -p (1 - p) (2y - 1) CE / (1 - p_t).

use crate::fastmath::{exp_neg, exp_neg_with, ln_1p_unit_given, ln_1p_unit_given_with};
use std::mem::MaybeUninit;

/// Torch's binary/categorical cross-entropy on probabilities clamps `ln p` at this value.
pub const LOG_CLAMP: f64 = -100.0;

/// What every strategy needs about one decision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Decision {
    /// The target y in [0, 1] (softmax: 1 for a foreground anchor, 0 for background).
    pub y: f64,
    /// p_t = p y + (1 - p)(1 - y) (softmax: the probability of the labelled class).
    pub p_t: f64,
    /// 1 - p_t, computed without cancellation.
    pub q: f64,
    /// ln(1 - p_t); may be -inf when 1 - p_t underflows to 0.
    pub ln_q: f64,
    /// Cross-entropy of the decision (>= 0).
    pub ce: f64,
    /// dCE/dx, signed (softmax: with respect to the labelled class's logit).
    pub a: f64,
    /// The focal term: dFL/dx = alpha_t (1 - p_t)^gamma (a + gamma b).
    pub b: f64,
}

impl Decision {
    /// A sigmoid decision from its logit `x` and target `y` in [0, 1].
    #[inline]
    pub fn from_logit(x: f64, y: f64) -> Decision {
        if y == 1.0 || y == 0.0 {
            // z is the logit of the true outcome: p_t = sigmoid(z). Fused where the kernel
            // fuses, so that both give the same bits (`f64::mul_add` outside the kernel's AVX2
            // copy is libm's `fma`, correctly rounded like the instruction).
            let z = if y == 1.0 { x } else { -x };
            if crate::fastmath::fused() {
                hard_of_z_with::<true>(z, y)
            } else {
                hard_of_z_with::<false>(z, y)
            }
        } else {
            let e = exp_neg(-x.abs());
            let inv = 1.0 / (1.0 + e);
            let l = ln_1p_unit_given(e, inv);
            let (p, one_minus_p) = if x >= 0.0 { (inv, e * inv) } else { (e * inv, inv) };
            // torch.nn.functional.binary_cross_entropy_with_logits
            let ce = x.max(0.0) - x * y + l;
            soft(y, p, one_minus_p, ce)
        }
    }

    /// A sigmoid decision from a probability `p` in [0, 1] and target `y` in [0, 1]. Logs are
    /// clamped at [`LOG_CLAMP`], as `torch.nn.functional.binary_cross_entropy` does.
    #[inline]
    pub fn from_prob(p: f64, y: f64) -> Decision {
        let one_minus_p = 1.0 - p;
        if y == 1.0 || y == 0.0 {
            let s = if y == 1.0 { 1.0 } else { -1.0 };
            let (p_t, q) = if y == 1.0 { (p, one_minus_p) } else { (one_minus_p, p) };
            let ce = -clamped_ln(p_t);
            Decision { y, p_t, q, ln_q: q.ln(), ce, a: -q * s, b: -p_t * ce * s }
        } else {
            let ce = -(y * clamped_ln(p) + (1.0 - y) * clamped_ln(one_minus_p));
            soft(y, p, one_minus_p, ce)
        }
    }

    /// A softmax decision from a row of logits and the labelled class `t`. `y` is 1 for a
    /// foreground label and 0 for background (it only selects alpha_t).
    #[inline]
    pub fn from_softmax_logits(logits: &[f64], t: usize, y: f64) -> Decision {
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut others = 0.0;
        for (k, &x) in logits.iter().enumerate() {
            if k != t {
                others += (x - m).exp();
            }
        }
        let own = (logits[t] - m).exp();
        let total = own + others;
        let ln_total = total.ln();
        // log-sum-exp: CE = m + ln(sum exp(x - m)) - x_t
        let ce = (m - logits[t] + ln_total).max(0.0);
        let p_t = own / total;
        let q = others / total;
        let ln_q = others.ln() - ln_total;
        Decision { y, p_t, q, ln_q, ce, a: -q, b: -p_t * ce }
    }

    /// A softmax decision from a row of probabilities and the labelled class `t`.
    #[inline]
    pub fn from_softmax_probs(probs: &[f64], t: usize, y: f64) -> Decision {
        let p_t = probs[t];
        let q = 1.0 - p_t;
        let ce = -clamped_ln(p_t);
        Decision { y, p_t, q, ln_q: q.ln(), ce, a: -q, b: -p_t * ce }
    }

    /// Whether the decision is a positive (target > 0, the quality-focal-loss convention).
    #[inline]
    pub fn is_positive(&self) -> bool {
        self.y > 0.0
    }

    /// alpha_t = alpha y + (1 - alpha)(1 - y); 1 when alpha weighting is disabled.
    #[inline]
    pub fn alpha_t(&self, alpha: Option<f64>) -> f64 {
        match alpha {
            Some(a) => a * self.y + (1.0 - a) * (1.0 - self.y),
            None => 1.0,
        }
    }

    /// The modulating factor (1 - p_t)^gamma, from ln(1 - p_t) so it never cancels.
    #[inline]
    pub fn focal_factor(&self, gamma: f64) -> f64 {
        modulating(gamma, self.q, self.ln_q)
    }

    /// Gradient norm of cross-entropy, |dCE/dx| (= |p - y|).
    #[inline]
    pub fn ce_grad(&self) -> f64 {
        self.a.abs()
    }

    /// Focal loss alpha_t (1 - p_t)^gamma CE.
    #[inline]
    pub fn focal(&self, gamma: f64, alpha: Option<f64>) -> f64 {
        self.alpha_t(alpha) * self.focal_factor(gamma) * self.ce
    }

    /// Gradient norm of the focal loss, |dFL/dx|.
    #[inline]
    pub fn focal_grad(&self, gamma: f64, alpha: Option<f64>) -> f64 {
        self.alpha_t(alpha) * self.focal_factor(gamma) * (self.a + gamma * self.b).abs()
    }
}

impl Decision {
    /// The fields in [`DecisionColumns`]' order: y, p_t, q, ln_q, ce, a, b.
    #[inline(always)]
    fn fields(&self) -> [f64; FIELDS] {
        [self.y, self.p_t, self.q, self.ln_q, self.ce, self.a, self.b]
    }
}

/// Fields of a [`Decision`].
const FIELDS: usize = 7;

/// Decisions stored field by field: a column per field of [`Decision`], so that a pass that
/// reads one or two fields of many decisions loads only those, four to a vector load, and the
/// kernel ([`hard_target_decisions`]) stores each field of four decisions with one store.
/// The columns always have one length. Read them through [`DecisionColumns::view`].
#[derive(Clone, Debug, Default)]
pub struct DecisionColumns {
    /// The columns, in the order of [`Decision::fields`].
    cols: [Vec<f64>; FIELDS],
}

impl DecisionColumns {
    /// The number of decisions.
    #[inline]
    pub fn len(&self) -> usize {
        self.cols[0].len()
    }

    /// Whether there is none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one decision.
    #[inline]
    pub fn push(&mut self, d: Decision) {
        for (col, v) in self.cols.iter_mut().zip(d.fields()) {
            col.push(v);
        }
    }

    /// Removes every decision (the capacity is kept).
    pub fn clear(&mut self) {
        self.cols.iter_mut().for_each(Vec::clear);
    }

    /// Reserves room for `n` more decisions.
    pub fn reserve(&mut self, n: usize) {
        self.cols.iter_mut().for_each(|c| c.reserve(n));
    }

    /// The decisions, as slices.
    #[inline]
    pub fn view(&self) -> Decisions<'_> {
        let [y, p_t, q, ln_q, ce, a, b] = &self.cols;
        Decisions { y, p_t, q, ln_q, ce, a, b }
    }

    /// Room for `n` more decisions: each column's next `n` slots, uninitialised (in the order
    /// of [`Decision::fields`]). The caller writes them all, then counts them with
    /// [`DecisionColumns::grow`].
    #[inline(always)]
    fn spare(&mut self, n: usize) -> [&mut [MaybeUninit<f64>]; FIELDS] {
        fn cut(c: &mut Vec<f64>, n: usize) -> &mut [MaybeUninit<f64>] {
            c.reserve(n);
            &mut c.spare_capacity_mut()[..n]
        }
        // Column by column (`map` over the array was a call of its own).
        let [c0, c1, c2, c3, c4, c5, c6] = &mut self.cols;
        [cut(c0, n), cut(c1, n), cut(c2, n), cut(c3, n), cut(c4, n), cut(c5, n), cut(c6, n)]
    }

    /// Counts `n` more decisions.
    ///
    /// # Safety
    /// Each column's `n` slots past its length must have been written (see
    /// [`DecisionColumns::spare`]).
    #[inline(always)]
    unsafe fn grow(&mut self, n: usize) {
        for c in &mut self.cols {
            // SAFETY: the caller wrote the `n` slots past the length (reserved by `spare`).
            unsafe { c.set_len(c.len() + n) };
        }
    }
}

impl FromIterator<Decision> for DecisionColumns {
    fn from_iter<I: IntoIterator<Item = Decision>>(iter: I) -> DecisionColumns {
        let mut out = DecisionColumns::default();
        iter.into_iter().for_each(|d| out.push(d));
        out
    }
}

/// Decisions in columns, borrowed ([`DecisionColumns::view`]): one slice per field of
/// [`Decision`], all of one length. A pass reads the columns it needs (`chunk.decisions.ce`),
/// or whole decisions with [`Decisions::get`].
#[derive(Clone, Copy, Debug)]
pub struct Decisions<'a> {
    /// The targets y.
    pub y: &'a [f64],
    /// p_t.
    pub p_t: &'a [f64],
    /// 1 - p_t.
    pub q: &'a [f64],
    /// ln(1 - p_t).
    pub ln_q: &'a [f64],
    /// The cross-entropies.
    pub ce: &'a [f64],
    /// dCE/dx.
    pub a: &'a [f64],
    /// The focal terms b.
    pub b: &'a [f64],
}

impl<'a> Decisions<'a> {
    /// The number of decisions.
    #[inline]
    pub fn len(&self) -> usize {
        self.ce.len()
    }

    /// Whether there is none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ce.is_empty()
    }

    /// Decision `i`, gathered from the columns.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Decision {
        Decision {
            y: self.y[i],
            p_t: self.p_t[i],
            q: self.q[i],
            ln_q: self.ln_q[i],
            ce: self.ce[i],
            a: self.a[i],
            b: self.b[i],
        }
    }

    /// The decisions `range`.
    #[inline(always)]
    pub fn slice(&self, r: std::ops::Range<usize>) -> Decisions<'a> {
        Decisions {
            y: &self.y[r.clone()],
            p_t: &self.p_t[r.clone()],
            q: &self.q[r.clone()],
            ln_q: &self.ln_q[r.clone()],
            ce: &self.ce[r.clone()],
            a: &self.a[r.clone()],
            b: &self.b[r],
        }
    }

    /// The decisions in order, gathered one by one.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Decision> + 'a {
        let d = *self;
        (0..d.len()).map(move |i| d.get(i))
    }

    /// The decisions, copied out.
    pub fn to_vec(&self) -> Vec<Decision> {
        self.iter().collect()
    }
}

/// The modulating factor (1 - p_t)^gamma from q = 1 - p_t and ln q: [`Power`], decided for
/// this call.
#[inline]
pub fn modulating(gamma: f64, q: f64, ln_q: f64) -> f64 {
    Power::of(gamma).at(q, ln_q)
}

/// How the modulating factor (1 - p_t)^gamma is computed for one gamma, decided once: products
/// (and one square root) for gammas that are multiples of 1/2 from 0 to 16, as the sweep's grid
/// and the usual settings are; `exp(gamma ln q)` otherwise (a negative gamma too: the
/// analysis's settings refuse them, a caller of the library may not). [`modulating`] decides
/// it per call; the sweep once per gamma, so that each of its walks inlines one formula.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Power {
    /// gamma 0.
    One,
    /// gamma 1.
    Q,
    /// gamma 2.
    Square,
    /// Another whole gamma up to 16: `powi`.
    Int(i32),
    /// A half-integer gamma up to 16: `powi` of the whole part times a square root.
    HalfInt(i32),
    /// Any other gamma: `exp(gamma ln q)`.
    Exp(f64),
}

impl Power {
    /// The computation for `gamma`.
    pub fn of(gamma: f64) -> Power {
        if gamma == 0.0 {
            Power::One
        } else if gamma == 1.0 {
            Power::Q
        } else if gamma == 2.0 {
            Power::Square
        } else if (0.0..=16.0).contains(&gamma) && (2.0 * gamma).fract() == 0.0 {
            if gamma.fract() == 0.0 {
                Power::Int(gamma as i32)
            } else {
                Power::HalfInt(gamma as i32)
            }
        } else {
            Power::Exp(gamma)
        }
    }

    /// (1 - p_t)^gamma from q = 1 - p_t and ln q (read by `Exp` only).
    #[inline(always)]
    pub fn at(self, q: f64, ln_q: f64) -> f64 {
        match self {
            Power::One => 1.0,
            Power::Q => q,
            Power::Square => q * q,
            Power::Int(n) => powi(q, n),
            Power::HalfInt(n) => powi(q, n) * q.sqrt(),
            Power::Exp(gamma) => (gamma * ln_q).exp(),
        }
    }
}

/// `q.powi(n)` for `n` in 0..=16, inline (no call: it can be vectorised, and a constant `n`
/// unrolls): the products of the runtime's `__powidf2` in its order (square-and-multiply from
/// the lowest bit), so the same bits (tested against `f64::powi`).
#[inline(always)]
fn powi(q: f64, n: i32) -> f64 {
    debug_assert!((0..=16).contains(&n), "Power::of gives whole parts 0 to 16, not {n}");
    let (mut base, mut bits, mut product) = (q, n.unsigned_abs(), 1.0);
    loop {
        if bits & 1 != 0 {
            product *= base;
        }
        bits >>= 1;
        if bits == 0 {
            return product;
        }
        base *= base;
    }
}

/// q^gamma for q in [0, 1]: [`modulating`] with ln q computed only where it needs it
/// ([`Power::Exp`]).
#[inline]
pub fn power(gamma: f64, q: f64) -> f64 {
    match Power::of(gamma) {
        power @ Power::Exp(_) => power.at(q, q.ln()),
        power => power.at(q, f64::NAN),
    }
}

/// p (1 - p) of a sigmoid decision (p = sigmoid of its logit): p_t (1 - p_t) for hard targets,
/// (y + a)(1 - y - a) from a = p - y for soft ones (whose error, about 1e-16 y, is negligible
/// against the terms it multiplies).
#[inline]
pub fn sigmoid_variance(d: &Decision) -> f64 {
    if d.y == 0.0 || d.y == 1.0 {
        d.p_t * d.q
    } else {
        (d.y + d.a) * ((1.0 - d.y) - d.a)
    }
}

/// Sigmoid decisions of logits `xs` with hard targets `ys` (each 0 or 1), appended to `out`:
/// the same values as [`Decision::from_logit`], bit for bit, with the transcendental part
/// computed over whole lanes of values (see [`crate::fastmath`]).
pub fn hard_logit_decisions(xs: &[f64], ys: &[f64], out: &mut DecisionColumns) {
    debug_assert_eq!(xs.len(), ys.len());
    let mut z = [0.0f64; LANES];
    for (xs, ys) in xs.chunks(LANES).zip(ys.chunks(LANES)) {
        let n = xs.len().min(ys.len());
        for i in 0..n {
            z[i] = if ys[i] == 1.0 { xs[i] } else { -xs[i] };
        }
        hard_target_decisions(&z[..n], &ys[..n], out);
    }
}

/// Values per call of the kernel: its outputs stay in L1.
const LANES: usize = 64;

/// Sigmoid decisions with hard targets `ys` (each 0 or 1) from `zs`, the logits of the true
/// outcome (the logit x for y = 1, -x for y = 0), appended to `out`: the same values as
/// [`Decision::from_logit`]`(x, y)`, bit for bit (-x is exact). The AVX2 copy where the
/// processor has it, with fused multiply-adds where it has FMA too ([`crate::fastmath::fused`];
/// `from_logit` fuses exactly then). Unfused, the AVX2 and the baseline copies give the same
/// bits.
pub fn hard_target_decisions(zs: &[f64], ys: &[f64], out: &mut DecisionColumns) {
    debug_assert_eq!(zs.len(), ys.len());
    #[cfg(target_arch = "x86_64")]
    {
        if crate::fastmath::fused() {
            // SAFETY: the processor supports AVX2 and FMA (`fused` checked both).
            return unsafe { hard_target_avx2_fma(zs, ys, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            return unsafe { hard_target_avx2(zs, ys, out) };
        }
    }
    hard_target_body::<false>(zs, ys, out)
}

/// The kernel compiled for AVX2 and FMA, its multiply-adds fused.
///
/// # Safety
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hard_target_avx2_fma(zs: &[f64], ys: &[f64], out: &mut DecisionColumns) {
    hard_target_body::<true>(zs, ys, out)
}

/// The kernel compiled for AVX2 without FMA: the bits of the baseline copy.
///
/// # Safety
/// The processor must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hard_target_avx2(zs: &[f64], ys: &[f64], out: &mut DecisionColumns) {
    hard_target_body::<false>(zs, ys, out)
}

/// The kernel's body, for every instruction set. Groups of [`INTERLEAVE`] values go through
/// each step together, so that the compiler emits several independent vectors per step (four
/// AVX2 vectors): their latencies overlap instead of adding up. Each field is stored to its
/// column from the registers (no structs to interleave, no arrays in between).
#[inline(always)]
fn hard_target_body<const FUSED: bool>(zs: &[f64], ys: &[f64], out: &mut DecisionColumns) {
    let n = zs.len().min(ys.len());
    let mut spare = out.spare(n);
    let whole = n - n % INTERLEAVE;
    // (Group indices times the step: `step_by` was a cost of its own.)
    for k in (0..whole / INTERLEAVE).map(|q| q * INTERLEAVE) {
        let z: &[f64; INTERLEAVE] = zs[k..k + INTERLEAVE].try_into().expect("a whole group");
        let y: &[f64; INTERLEAVE] = ys[k..k + INTERLEAVE].try_into().expect("a whole group");
        let mut e = [0.0; INTERLEAVE];
        let mut inv = [0.0; INTERLEAVE];
        let mut l = [0.0; INTERLEAVE];
        for j in 0..INTERLEAVE {
            e[j] = exp_neg_with::<FUSED>(-z[j].abs());
        }
        for j in 0..INTERLEAVE {
            inv[j] = 1.0 / (1.0 + e[j]);
        }
        for j in 0..INTERLEAVE {
            l[j] = ln_1p_unit_given_with::<FUSED>(e[j], inv[j]);
        }
        // Each field of the group into its column's reserved slots (arrays of fixed length:
        // one vector store per field and four decisions, no bounds check). Cut one by one:
        // `map` over the array of columns was a call per group.
        let [c0, c1, c2, c3, c4, c5, c6] = &mut spare;
        let (c0, c1, c2, c3) = (group(c0, k), group(c1, k), group(c2, k), group(c3, k));
        let (c4, c5, c6) = (group(c4, k), group(c5, k), group(c6, k));
        store_columns(c0, c1, c2, c3, c4, c5, c6, (z, y), (&e, &l, &inv));
    }
    for i in whole..n {
        let fields = hard_of_z_with::<FUSED>(zs[i], ys[i]).fields();
        for (col, v) in spare.iter_mut().zip(fields) {
            col[i].write(v);
        }
    }
    // SAFETY: every one of the `n` reserved slots of each column was written above (the whole
    // groups, then the rest).
    unsafe { out.grow(n) };
}

/// The `INTERLEAVE` slots of a column from `k`.
#[inline(always)]
fn group(c: &mut [MaybeUninit<f64>], k: usize) -> &mut [MaybeUninit<f64>; INTERLEAVE] {
    (&mut c[k..k + INTERLEAVE]).try_into().expect("a whole group")
}

/// A group's decisions stored field by field into the columns' slots `c0..c6` (in the order of
/// [`Decision::fields`]), from z, y, e = exp(-|z|), l = ln(1 + e) and inv = 1 / (1 + e). The
/// columns are separate arguments so that the compiler knows they do not overlap: it can then
/// store four decisions' field with one vector store.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store_columns(
    c0: &mut [MaybeUninit<f64>; INTERLEAVE],
    c1: &mut [MaybeUninit<f64>; INTERLEAVE],
    c2: &mut [MaybeUninit<f64>; INTERLEAVE],
    c3: &mut [MaybeUninit<f64>; INTERLEAVE],
    c4: &mut [MaybeUninit<f64>; INTERLEAVE],
    c5: &mut [MaybeUninit<f64>; INTERLEAVE],
    c6: &mut [MaybeUninit<f64>; INTERLEAVE],
    (z, y): (&[f64; INTERLEAVE], &[f64; INTERLEAVE]),
    (e, l, inv): (&[f64; INTERLEAVE], &[f64; INTERLEAVE], &[f64; INTERLEAVE]),
) {
    for j in 0..INTERLEAVE {
        let [v0, v1, v2, v3, v4, v5, v6] = hard_of_z(z[j], y[j], e[j], l[j], inv[j]).fields();
        c0[j].write(v0);
        c1[j].write(v1);
        c2[j].write(v2);
        c3[j].write(v3);
        c4[j].write(v4);
        c5[j].write(v5);
        c6[j].write(v6);
    }
}

/// Values per step of [`hard_target_body`] (16: four AVX2 vectors; 8 and 32 measured slower).
const INTERLEAVE: usize = 16;

/// The hard-target decision of z (the logit of the true outcome) and y: what the kernel
/// computes for one value, fused when `FUSED`.
#[inline(always)]
fn hard_of_z_with<const FUSED: bool>(z: f64, y: f64) -> Decision {
    let e = exp_neg_with::<FUSED>(-z.abs());
    let inv = 1.0 / (1.0 + e);
    hard_of_z(z, y, e, ln_1p_unit_given_with::<FUSED>(e, inv), inv)
}

/// A hard-target sigmoid decision from z (the logit of the true outcome) and y, with
/// e = exp(-|z|), l = ln(1 + e) and inv = 1 / (1 + e); s = +1 for y = 1 and -1 for y = 0.
#[inline(always)]
fn hard_of_z(z: f64, y: f64, e: f64, l: f64, inv: f64) -> Decision {
    let s = if y == 1.0 { 1.0 } else { -1.0 };
    let (p_t, q, ce, ln_q) = if z >= 0.0 { (inv, e * inv, l, -z - l) } else { (e * inv, inv, l - z, -l) };
    Decision { y, p_t, q, ln_q, ce, a: -q * s, b: -p_t * ce * s }
}

#[inline]
fn clamped_ln(p: f64) -> f64 {
    p.ln().max(LOG_CLAMP)
}

/// The soft-target tail shared by logits and probabilities.
#[inline]
fn soft(y: f64, p: f64, one_minus_p: f64, ce: f64) -> Decision {
    let p_t = p * y + one_minus_p * (1.0 - y);
    // 1 - p_t = p (1 - y) + (1 - p) y: no cancellation.
    let q = p * (1.0 - y) + one_minus_p * y;
    let b = if q > 0.0 { -(p * one_minus_p * (2.0 * y - 1.0)) * ce / q } else { 0.0 };
    Decision { y, p_t, q, ln_q: q.ln(), ce, a: p - y, b }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (1 - p_t)^gamma as written out with the runtime's calls (`powi` is `__powidf2`): the
    /// reference [`Power`] must match bit for bit.
    fn modulating_by_calls(gamma: f64, q: f64, ln_q: f64) -> f64 {
        if gamma == 0.0 {
            1.0
        } else if gamma == 1.0 {
            q
        } else if gamma == 2.0 {
            q * q
        } else if gamma <= 16.0 && (2.0 * gamma).fract() == 0.0 {
            let whole = q.powi(gamma as i32);
            if gamma.fract() == 0.0 {
                whole
            } else {
                whole * q.sqrt()
            }
        } else {
            (gamma * ln_q).exp()
        }
    }

    #[test]
    fn the_power_decided_once_gives_the_bits_of_the_runtime_calls() {
        let gammas = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 7.5, 16.0, 16.5, 0.3, 1e-3];
        for gamma in gammas {
            let power = Power::of(gamma);
            for i in 0..=2000 {
                for q in [f64::from(i) / 2000.0, (f64::from(i) / 2000.0).powi(8), 1e-300 * f64::from(i)] {
                    let ln_q = q.ln();
                    let (a, b) = (power.at(q, ln_q), modulating_by_calls(gamma, q, ln_q));
                    assert_eq!(a.to_bits(), b.to_bits(), "gamma {gamma} q {q}: {a} vs {b}");
                    assert_eq!(modulating(gamma, q, ln_q).to_bits(), b.to_bits(), "gamma {gamma} q {q}");
                }
            }
        }
        assert_eq!(Power::of(5.0), Power::Int(5));
        assert_eq!(Power::of(2.5), Power::HalfInt(2));
        assert_eq!(Power::of(0.3), Power::Exp(0.3));
        // Negative gammas (refused by the settings, not by the library): exp(gamma ln q).
        for gamma in [-0.5, -1.0, -2.0, -3.0] {
            assert_eq!(Power::of(gamma), Power::Exp(gamma));
            let q = 0.3f64;
            let want = q.powf(gamma);
            for m in [modulating(gamma, q, q.ln()), power(gamma, q)] {
                assert!((m - want).abs() <= 4.0 * f64::EPSILON * want, "gamma {gamma}: {m} vs {want}");
            }
        }
    }

    fn naive_sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn hard_targets_match_the_naive_formulas_at_moderate_logits() {
        for &x in &[-6.0, -2.5, -0.3, 0.0, 0.7, 3.0, 8.0] {
            for &y in &[0.0, 1.0] {
                let d = Decision::from_logit(x, y);
                let p = naive_sigmoid(x);
                let (p_t, q) = if y == 1.0 { (p, 1.0 - p) } else { (1.0 - p, p) };
                assert!(close(d.p_t, p_t, 1e-12), "{x} {y}");
                assert!(close(d.q, q, 1e-12), "{x} {y}");
                assert!(close(d.ce, -p_t.ln(), 1e-12), "{x} {y}");
                assert!(close(d.ce_grad(), (p - y).abs(), 1e-12), "{x} {y}");
                assert!(close(d.ln_q, q.ln(), 1e-10), "{x} {y}");
            }
        }
    }

    #[test]
    fn focal_gradient_matches_a_central_difference() {
        // Independent check of the closed-form derivative, hard and soft targets.
        for &(x, y) in &[(-3.0, 0.0), (1.2, 0.0), (-0.4, 1.0), (2.5, 1.0), (0.8, 0.3), (-1.5, 0.7)] {
            for &gamma in &[0.0, 0.5, 1.0, 2.0, 3.5] {
                for &alpha in &[None, Some(0.25)] {
                    let f = |x: f64| Decision::from_logit(x, y).focal(gamma, alpha);
                    let h = 1e-6;
                    let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                    let analytic = Decision::from_logit(x, y).focal_grad(gamma, alpha);
                    assert!(
                        (numeric.abs() - analytic).abs() < 1e-7,
                        "x={x} y={y} g={gamma}: {numeric} vs {analytic}"
                    );
                }
            }
        }
    }

    #[test]
    fn losses_stay_finite_and_exact_at_extreme_logits() {
        for &x in &[-100.0, 100.0, -1e4, 1e4] {
            for &y in &[0.0, 1.0, 0.5] {
                let d = Decision::from_logit(x, y);
                for v in [d.p_t, d.q, d.ce, d.a, d.b, d.focal(2.0, Some(0.25)), d.focal_grad(2.0, None)] {
                    assert!(v.is_finite(), "x={x} y={y} {d:?}");
                }
            }
        }
        // A wrong, confident decision costs |x| nats; log(sigmoid(-100)) would underflow in f32.
        assert!(close(Decision::from_logit(-100.0, 1.0).ce, 100.0, 1e-15));
        assert!(close(Decision::from_logit(100.0, 0.0).ce, 100.0, 1e-15));
        // A right, confident one costs ~e^-100, not 0.
        assert!(close(Decision::from_logit(100.0, 1.0).ce, (-100f64).exp(), 1e-12));
    }

    #[test]
    fn focal_loss_is_100x_smaller_at_pt_0_9_and_about_1000x_at_pt_0_968() {
        // The focal-loss paper, section 3.2, with gamma = 2 and no alpha.
        let x = (0.9f64 / 0.1).ln();
        let d = Decision::from_logit(x, 1.0);
        assert!(close(d.p_t, 0.9, 1e-14));
        assert!(close(d.ce / d.focal(2.0, None), 100.0, 1e-10));
        let x = (0.968f64 / 0.032).ln();
        let d = Decision::from_logit(x, 1.0);
        let ratio = d.ce / d.focal(2.0, None);
        assert!((ratio - 976.5625).abs() < 1e-6, "{ratio}");
    }

    #[test]
    fn soft_target_bce_matches_torch_formula() {
        let (x, y) = (0.4f64, 0.3f64);
        let p = naive_sigmoid(x);
        let d = Decision::from_logit(x, y);
        assert!(close(d.ce, -(y * p.ln() + (1.0 - y) * (1.0 - p).ln()), 1e-12));
        assert!(close(d.p_t, p * y + (1.0 - p) * (1.0 - y), 1e-14));
        assert!(close(d.ce_grad(), (p - y).abs(), 1e-14));
    }

    #[test]
    fn probabilities_clamp_the_log_like_torch() {
        let d = Decision::from_prob(0.0, 1.0);
        assert_eq!(d.ce, 100.0);
        let d = Decision::from_prob(0.2, 1.0);
        assert!(close(d.ce, -(0.2f64).ln(), 1e-14));
        let d = Decision::from_prob(0.2, 0.0);
        assert!(close(d.ce, -(0.8f64).ln(), 1e-14));
        assert!(close(d.ce_grad(), 0.2, 1e-14));
    }

    #[test]
    fn softmax_matches_log_sum_exp_and_handles_huge_logits() {
        let row = [1.0, 2.0, 0.5];
        let d = Decision::from_softmax_logits(&row, 1, 1.0);
        let z: f64 = row.iter().map(|x: &f64| x.exp()).sum();
        assert!(close(d.p_t, 2f64.exp() / z, 1e-14));
        assert!(close(d.ce, -(2f64.exp() / z).ln(), 1e-13));
        assert!(close(d.q, 1.0 - 2f64.exp() / z, 1e-13));
        let huge = [1000.0, -1000.0, 0.0];
        let d = Decision::from_softmax_logits(&huge, 1, 0.0);
        assert!(close(d.ce, 2000.0, 1e-12) && d.p_t == 0.0 && d.q == 1.0);
        let d = Decision::from_softmax_logits(&huge, 0, 0.0);
        assert!(d.ce >= 0.0 && d.ce < 1e-300 && d.focal(2.0, None) == 0.0);
        let p = Decision::from_softmax_probs(&[0.1, 0.7, 0.2], 1, 1.0);
        assert!(close(p.ce, -(0.7f64).ln(), 1e-14));
    }

    #[test]
    fn alpha_below_zero_means_no_weighting() {
        let d = Decision::from_logit(-2.0, 0.0);
        assert_eq!(d.alpha_t(None), 1.0);
        assert!(close(d.alpha_t(Some(0.25)), 0.75, 1e-15));
        assert!(close(Decision::from_logit(2.0, 1.0).alpha_t(Some(0.25)), 0.25, 1e-15));
        assert_eq!(d.focal(0.0, None), d.ce);
    }

    /// Logits from -800 to 800, dense near 0, with the signs, zeros and extremes.
    fn spread_of_logits() -> Vec<f64> {
        let mut xs: Vec<f64> =
            (0..20_000).map(|i| ((i as f64 - 10_000.0) / 10_000.0).powi(3) * 800.0).collect();
        xs.extend([0.0, -0.0, 1e-300, -1e-300, 708.0, -708.0, 709.5, -709.5, 1e6, -1e6, f64::from(f32::MAX)]);
        xs
    }

    #[test]
    fn lanes_of_hard_decisions_are_from_logit_bit_for_bit() {
        let xs = spread_of_logits();
        for y in [0.0, 1.0] {
            let ys = vec![y; xs.len()];
            let mut out = DecisionColumns::default();
            out.push(Decision::default()); // appends after what is there
            hard_logit_decisions(&xs, &ys, &mut out);
            assert_eq!(out.len(), xs.len() + 1);
            let out = out.view().to_vec();
            for (&x, d) in xs.iter().zip(&out[1..]) {
                let want = Decision::from_logit(x, y);
                let bits = |d: &Decision| [d.y, d.p_t, d.q, d.ln_q, d.ce, d.a, d.b].map(f64::to_bits);
                assert_eq!(bits(d), bits(&want), "x={x} y={y}");
            }
        }
    }

    #[test]
    fn decision_columns_hold_each_decision_field_by_field() {
        let ds: Vec<Decision> = (0..37)
            .map(|i| {
                Decision::from_logit(
                    f64::from(i) * 0.7 - 12.0,
                    if i % 5 == 0 { 1.0 } else { 0.3 * f64::from(i % 2) },
                )
            })
            .collect();
        let bits = |d: &Decision| [d.y, d.p_t, d.q, d.ln_q, d.ce, d.a, d.b].map(f64::to_bits);
        let mut cols: DecisionColumns = ds.iter().copied().collect();
        assert_eq!(cols.len(), ds.len());
        let view = cols.view();
        for (i, d) in ds.iter().enumerate() {
            let got = view.get(i);
            assert_eq!(bits(&got), bits(d), "decision {i}");
            // Each column holds its own field.
            let columns = [view.y, view.p_t, view.q, view.ln_q, view.ce, view.a, view.b];
            assert_eq!(columns.map(|c| c[i].to_bits()), bits(d), "decision {i}");
        }
        let part = view.slice(5..19);
        assert_eq!(part.len(), 14);
        assert!(part.iter().zip(&ds[5..19]).all(|(a, b)| bits(&a) == bits(b)));
        assert_eq!(
            view.to_vec().iter().map(bits).collect::<Vec<_>>(),
            ds.iter().map(bits).collect::<Vec<_>>()
        );
        cols.clear();
        assert!(cols.is_empty() && cols.view().is_empty());
        cols.push(ds[3]);
        assert_eq!(bits(&cols.view().get(0)), bits(&ds[3]));
    }

    /// A kernel: logits of the true outcome and targets to decisions.
    type Kernel<'a> = &'a dyn Fn(&[f64], &[f64], &mut DecisionColumns);

    #[test]
    fn the_vector_kernel_gives_the_bits_of_the_baseline_one() {
        // `hard_target_decisions` takes the AVX2 copy where the processor has it, fused where
        // it has FMA too; the bodies called here directly are compiled for the baseline
        // instruction set (SSE2 on x86-64; a fused body calls libm's `fma`, correctly rounded
        // like the instruction).
        let zs = spread_of_logits();
        let bits = |d: &Decision| [d.y, d.p_t, d.q, d.ln_q, d.ce, d.a, d.b].map(f64::to_bits);
        let run = |f: Kernel<'_>, ys: &[f64]| {
            let mut out = DecisionColumns::default();
            f(&zs, ys, &mut out);
            out.view().to_vec()
        };
        let all_bits = |ds: &[Decision]| ds.iter().map(bits).collect::<Vec<_>>();
        for y in [0.0, 1.0] {
            let ys = vec![y; zs.len()];
            let fast = run(&hard_target_decisions, &ys);
            let (fused, unfused) =
                (run(&hard_target_body::<true>, &ys), run(&hard_target_body::<false>, &ys));
            let base = if crate::fastmath::fused() { &fused } else { &unfused };
            // Fused or not, the values are a few ulps apart at most, and some differ (else
            // the tests of which copy runs where would test nothing).
            let mut differ = 0;
            for (z, (a, b)) in zs.iter().zip(fused.iter().zip(&unfused)) {
                for (x, w) in bits(a).into_iter().zip(bits(b)) {
                    let (x, w) = (f64::from_bits(x), f64::from_bits(w));
                    assert!(x == w || close(x, w, 8.0 * f64::EPSILON), "z={z}: {x} vs {w}");
                    differ += usize::from(x != w);
                }
            }
            assert!(differ > 0, "the fused kernel gave the unfused bits everywhere");
            // Each copy the machine can run, against its baseline body.
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor supports AVX2 (checked just above).
                    let avx2 = run(&|z, y, o| unsafe { hard_target_avx2(z, y, o) }, &ys);
                    assert_eq!(all_bits(&avx2), all_bits(&unfused));
                }
                if crate::fastmath::fused() {
                    // SAFETY: the processor supports AVX2 and FMA (`fused` checked both).
                    let avx2_fma = run(&|z, y, o| unsafe { hard_target_avx2_fma(z, y, o) }, &ys);
                    assert_eq!(all_bits(&avx2_fma), all_bits(&fused));
                }
            }
            assert_eq!(fast.len(), zs.len());
            assert_eq!(base.len(), zs.len());
            for ((z, f), b) in zs.iter().zip(&fast).zip(base) {
                assert_eq!(bits(f), bits(b), "z={z}");
                // The kernel is what `Decision::from_logit` computes for one value.
                assert_eq!(bits(f), bits(&Decision::from_logit(if y == 1.0 { *z } else { -z }, y)), "z={z}");
                // And against the textbook formulas with libm, to a few ulps (where exp(-|z|)
                // is normal: below, the kernel's is 0).
                if z.abs() <= 700.0 {
                    let p_t = 1.0 / (1.0 + (-z).exp());
                    assert!(close(f.p_t, p_t, 4.0 * f64::EPSILON), "z={z}: {} vs {p_t}", f.p_t);
                    let ce = (-z).exp().ln_1p();
                    assert!(close(f.ce, ce, 4.0 * f64::EPSILON), "z={z}: {} vs {ce}", f.ce);
                }
            }
        }
    }

    mod properties {
        use super::super::*;
        use super::{close, naive_sigmoid};
        use proptest::prelude::*;

        /// Any finite f32, from subnormals to +-f32::MAX.
        fn finite_f32() -> impl Strategy<Value = f32> {
            any::<f32>().prop_filter("finite", |x| x.is_finite())
        }

        /// No alpha weighting, or any alpha in [0, 1].
        fn alpha() -> impl Strategy<Value = Option<f64>> {
            prop_oneof![Just(None), (0.0..=1.0f64).prop_map(Some)]
        }

        /// Hard targets, and soft ones in [0, 1].
        fn target() -> impl Strategy<Value = f64> {
            prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
        }

        fn all_finite_and_non_negative(
            d: &Decision,
            gamma: f64,
            alpha: Option<f64>,
        ) -> Result<(), TestCaseError> {
            for (name, v) in [
                ("ce", d.ce),
                ("focal", d.focal(gamma, alpha)),
                ("ce_grad", d.ce_grad()),
                ("focal_grad", d.focal_grad(gamma, alpha)),
                ("p_t", d.p_t),
                ("q", d.q),
            ] {
                prop_assert!(v.is_finite() && v >= 0.0, "{name} = {v} for {d:?}");
            }
            Ok(())
        }

        /// Non-increasing up to rounding: `a >= b` within a few ulps.
        fn not_above(b: f64, a: f64) -> bool {
            b <= a + 8.0 * f64::EPSILON * a.abs().max(b.abs()) + 1e-300
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn every_loss_is_finite_for_every_finite_f32_logit(
                x in finite_f32(), y in target(), gamma in 0.0..=5.0f64, alpha in alpha(),
            ) {
                all_finite_and_non_negative(&Decision::from_logit(f64::from(x), y), gamma, alpha)?;
            }

            #[test]
            fn every_softmax_loss_is_finite_for_every_finite_f32_row(
                row in prop::collection::vec(finite_f32(), 1..8), t in any::<prop::sample::Index>(),
                gamma in 0.0..=5.0f64, alpha in alpha(),
            ) {
                let row: Vec<f64> = row.into_iter().map(f64::from).collect();
                let t = t.index(row.len());
                all_finite_and_non_negative(&Decision::from_softmax_logits(&row, t, 1.0), gamma, alpha)?;
            }

            #[test]
            fn every_loss_is_finite_for_every_probability(
                p in 0.0..=1.0f64, y in target(), gamma in 0.0..=5.0f64, alpha in alpha(),
            ) {
                all_finite_and_non_negative(&Decision::from_prob(p, y), gamma, alpha)?;
            }

            #[test]
            fn focal_loss_never_exceeds_cross_entropy(
                x in finite_f32(), y in target(), gamma in 0.0..=5.0f64, alpha in alpha(),
            ) {
                let d = Decision::from_logit(f64::from(x), y);
                prop_assert!(d.focal(gamma, alpha) <= d.ce, "{} > {} for {d:?}", d.focal(gamma, alpha), d.ce);
            }

            #[test]
            fn focal_loss_is_cross_entropy_at_gamma_zero_without_alpha(x in finite_f32(), y in target()) {
                let d = Decision::from_logit(f64::from(x), y);
                prop_assert_eq!(d.focal(0.0, None), d.ce);
                prop_assert_eq!(d.focal_grad(0.0, None), d.ce_grad());
            }

            #[test]
            fn p_t_is_the_sigmoid_to_a_few_ulps(x in -700.0..700.0f64, positive in any::<bool>()) {
                // Independent: libm's exp in the textbook formula, accurate for |x| < 709.
                let p = if positive { naive_sigmoid(x) } else { naive_sigmoid(-x) };
                let d = Decision::from_logit(x, if positive { 1.0 } else { 0.0 });
                prop_assert!(close(d.p_t, p, 4.0 * f64::EPSILON), "p_t {} vs {p} at {x}", d.p_t);
            }

            #[test]
            fn losses_fall_as_p_t_rises(
                a in finite_f32(), b in finite_f32(), positive in any::<bool>(),
                gamma in 0.0..=5.0f64, alpha in alpha(),
            ) {
                // For a positive p_t rises with the logit; for a negative it falls.
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let y = if positive { 1.0 } else { 0.0 };
                let (easy, hard) = if positive { (hi, lo) } else { (lo, hi) };
                let (e, h) = (Decision::from_logit(f64::from(easy), y), Decision::from_logit(f64::from(hard), y));
                // p_t itself is ordered up to rounding, not exactly: e * 1/(1 + e) rounds twice
                // (logits 6.07e-16 and 7.12e-16 give p_t one ulp out of order), so its accuracy
                // is checked on its own in `p_t_is_the_sigmoid_to_a_few_ulps`.
                prop_assert!(not_above(h.p_t, e.p_t), "p_t {} at {easy} vs {} at {hard}", e.p_t, h.p_t);
                prop_assert!(not_above(e.ce, h.ce), "CE {} at p_t {} vs {} at {}", e.ce, e.p_t, h.ce, h.p_t);
                prop_assert!(
                    not_above(e.focal(gamma, alpha), h.focal(gamma, alpha)),
                    "FL {} vs {}", e.focal(gamma, alpha), h.focal(gamma, alpha)
                );
                // The same through probabilities.
                let (pe, ph) = (Decision::from_prob(e.p_t, 1.0), Decision::from_prob(h.p_t, 1.0));
                prop_assert!(not_above(pe.focal(gamma, alpha), ph.focal(gamma, alpha)));
            }
        }
    }
}
