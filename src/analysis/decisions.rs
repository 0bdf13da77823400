//! Expands a [`Batch`] of rows into chunks of [`Decision`]s, computed once and observed by every
//! accumulator.
//!
//! Dense sigmoid: an anchor with label c gives C decisions (target 1 for class c, 0 for the rest),
//! a background anchor (-1) C negatives, an ignored anchor (-2) none. Dense softmax: one decision
//! per non-ignored anchor, positive unless its label is the background class. Binary: one
//! decision per row. Chunks never split an anchor's decisions, and each chunk lists the image
//! runs it covers.

use crate::config::{Activation, ScoreKind};
use crate::input::{Batch, DumpShape, Targets};
use crate::loss::{Decision, DecisionColumns, Decisions};
use std::mem::MaybeUninit;

/// What the expansion needs to know about a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expansion {
    /// Layout, score kind and activation.
    pub shape: DumpShape,
    /// Scores per row (C, K or 1).
    pub width: usize,
    /// Softmax background class.
    pub background_class: u32,
}

/// Decisions per chunk (at most, unless one row holds more): large enough to amortise
/// per-chunk work (a summation block's exact folds), small enough to stay in cache. A block is
/// a power of two of rows ([`Expansion::block_rows`]), so it holds between half of this and
/// all of it: 6,144 gives 64 rows of 80 classes (5,120 decisions) and 1,024 rows of 4 (4,096),
/// where 4,096 gave 32 rows of 80 (2,560) and 8,192 gave 2,048 rows of 4, which no longer
/// stay in cache (see docs/benchmarks.md).
pub const CHUNK: usize = 6144;

impl Expansion {
    /// The expansion of `dump`'s rows (input/ knows nothing of analysis/: the dependency goes
    /// one way).
    pub fn of(dump: &crate::input::Dump) -> Expansion {
        Expansion { shape: dump.shape(), width: dump.width(), background_class: dump.background_class() }
    }

    /// Decisions per row: C for dense sigmoid dumps, 1 otherwise.
    pub fn decisions_per_row(&self) -> usize {
        match (self.shape.layout, self.shape.activation) {
            (crate::config::Layout::Dense, Activation::Sigmoid) => self.width.max(1),
            _ => 1,
        }
    }

    /// Rows per summation block: the largest power of two whose decisions fit in [`CHUNK`]
    /// (at least 1). Blocks are file rows `k * block_rows .. (k + 1) * block_rows`; see
    /// [`super::edges`].
    pub fn block_rows(&self) -> u64 {
        let fit = (CHUNK / self.decisions_per_row()).max(1);
        1u64 << fit.ilog2()
    }
}

/// The four buckets of the easy/hard x positive/negative split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Bucket {
    /// Negative with p_t >= tau.
    EasyNegative = 0,
    /// Negative with p_t < tau.
    HardNegative = 1,
    /// Positive with p_t >= tau.
    EasyPositive = 2,
    /// Positive with p_t < tau.
    HardPositive = 3,
}

impl Bucket {
    /// All buckets, in report order.
    pub const ALL: [Bucket; 4] =
        [Bucket::EasyNegative, Bucket::HardNegative, Bucket::EasyPositive, Bucket::HardPositive];

    /// The bucket of a decision.
    #[inline]
    pub fn of(positive: bool, p_t: f64, tau: f64) -> Bucket {
        // An index computed without a branch (whether p_t >= tau is a coin toss for the branch
        // predictor), then each index to the bucket of that discriminant: the compiler makes
        // the match the identity (no branch, no table load).
        let easy = p_t >= tau; // false for a NaN p_t
        match 2 * u8::from(positive) + u8::from(!easy) {
            0 => Bucket::EasyNegative,
            1 => Bucket::HardNegative,
            2 => Bucket::EasyPositive,
            _ => Bucket::HardPositive,
        }
    }

    /// Whether the bucket holds positives.
    pub fn is_positive(self) -> bool {
        matches!(self, Bucket::EasyPositive | Bucket::HardPositive)
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::EasyNegative => "easy_negative",
            Bucket::HardNegative => "hard_negative",
            Bucket::EasyPositive => "easy_positive",
            Bucket::HardPositive => "hard_positive",
        }
    }
}

/// Where a decision came from, and its bucket. Its sample weight is its row's in the batch's
/// `weight` column (binary dumps), or 1 ([`Meta::weight`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    /// Row within the batch.
    pub row: u32,
    /// Class index (dense sigmoid: the decision's class; softmax: the label; binary: the `class`
    /// column or 0). At most 65,535: the input checks bound the width and the `class` column.
    pub class: u16,
    /// Easy/hard x positive/negative.
    pub bucket: Bucket,
}

impl Meta {
    /// The decision's loss weight: its row's in `weights` (the batch's `weight` column), 1
    /// without one.
    #[inline(always)]
    pub fn weight(&self, weights: Option<&[f64]>) -> f64 {
        weights.map_or(1.0, |w| w[self.row as usize])
    }
}

/// A run of decisions of one image within a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRun {
    /// Index into the batch's image runs.
    pub image: usize,
    /// First decision of the run within the chunk.
    pub start: usize,
    /// One past the last decision.
    pub end: usize,
}

/// The focal loss's parameters that the accumulators share: the analysis's gamma and alpha.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Focus {
    /// Focusing parameter gamma.
    pub gamma: f64,
    /// alpha, `None` = no alpha weighting.
    pub alpha: Option<f64>,
}

/// What turns rows into decisions: the easy threshold and the focal parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scoring {
    /// Easy threshold tau on p_t.
    pub tau: f64,
    /// gamma and alpha of [`Terms`].
    pub focus: Focus,
}

/// Per-decision quantities several accumulators need, computed once per chunk, parallel to
/// [`DecisionChunk::decisions`], with the same bits as the [`Decision`] methods give.
#[derive(Clone, Debug, Default)]
pub struct Terms {
    /// The gamma and alpha of `focal` and `focal_grad`.
    pub focus: Focus,
    /// alpha_t ([`Decision::alpha_t`]).
    pub alpha_t: Vec<f64>,
    /// |p - y| ([`Decision::ce_grad`]).
    pub ce_grad: Vec<f64>,
    /// Focal loss ([`Decision::focal`]), unweighted.
    pub focal: Vec<f64>,
    /// Its gradient norm ([`Decision::focal_grad`]), unweighted.
    pub focal_grad: Vec<f64>,
}

impl Terms {
    /// Appends the terms of `decisions` (the chunk's next decisions): the AVX2 copy where the
    /// processor has it (the same bits: Rust never fuses a multiply and an add).
    fn extend(&mut self, decisions: Decisions<'_>) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(terms: &mut Terms, decisions: Decisions<'_>) {
                terms.extend_body(decisions)
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor supports AVX2 (checked just above).
                return unsafe { avx2(self, decisions) };
            }
        }
        self.extend_body(decisions)
    }

    /// [`Terms::extend`]'s body, for every instruction set.
    #[inline(always)]
    fn extend_body(&mut self, decisions: Decisions<'_>) {
        if decisions.is_empty() {
            return;
        }
        let gamma = self.focus.gamma;
        // The modulating factor's branch on gamma, out of the loop (the same bits as
        // `loss::modulating`).
        if gamma == 2.0 {
            self.fill(decisions, |q, _| q * q);
        } else if gamma == 0.0 {
            self.fill(decisions, |_, _| 1.0);
        } else {
            self.fill(decisions, |q, ln_q| crate::loss::modulating(gamma, q, ln_q));
        }
    }

    /// Writes the terms of `decisions` into the columns' reserved capacity, then counts them
    /// once: no zero-filling, no capacity check per value, no copy.
    #[inline(always)]
    fn fill(&mut self, decisions: Decisions<'_>, factor: impl Fn(f64, f64) -> f64) {
        let Focus { gamma, alpha } = self.focus;
        let n = decisions.len();
        let len = self.len();
        let Terms { alpha_t, ce_grad, focal, focal_grad, .. } = self;
        assert!(
            ce_grad.len() == len && focal.len() == len && focal_grad.len() == len,
            "term columns of one length"
        );
        alpha_t.reserve(n);
        ce_grad.reserve(n);
        focal.reserve(n);
        focal_grad.reserve(n);
        let (a_out, g_out) = (&mut alpha_t.spare_capacity_mut()[..n], &mut ce_grad.spare_capacity_mut()[..n]);
        let (f_out, fg_out) =
            (&mut focal.spare_capacity_mut()[..n], &mut focal_grad.spare_capacity_mut()[..n]);
        fill_columns(decisions, (a_out, g_out, f_out, fg_out), gamma, alpha, factor);
        // SAFETY: the `n` values past `len` of each column were written just above (the four
        // columns had `len` values: asserted above).
        unsafe {
            self.alpha_t.set_len(len + n);
            self.ce_grad.set_len(len + n);
            self.focal.set_len(len + n);
            self.focal_grad.set_len(len + n);
        }
    }

    fn clear(&mut self) {
        self.alpha_t.clear();
        self.ce_grad.clear();
        self.focal.clear();
        self.focal_grad.clear();
    }

    fn len(&self) -> usize {
        self.alpha_t.len()
    }

    /// The precomputed focal losses, when `focus` is the one the terms were computed with
    /// (decide once per chunk, not per decision; otherwise use [`Decision::focal`]).
    #[inline]
    pub fn focal_for(&self, focus: Focus) -> Option<&[f64]> {
        (focus == self.focus).then_some(self.focal.as_slice())
    }
}

/// Four columns of uninitialised values.
type Columns<'a> = (
    &'a mut [MaybeUninit<f64>],
    &'a mut [MaybeUninit<f64>],
    &'a mut [MaybeUninit<f64>],
    &'a mut [MaybeUninit<f64>],
);

/// [`Terms::fill`]'s loop: the terms of `decisions` written to the columns (alpha_t, |p - y|,
/// focal loss, focal gradient; each at least as long as `decisions`).
#[inline(always)]
fn fill_columns(
    decisions: Decisions<'_>,
    (a_out, g_out, f_out, fg_out): Columns<'_>,
    gamma: f64,
    alpha: Option<f64>,
    factor: impl Fn(f64, f64) -> f64,
) {
    let n = decisions.len();
    let (a_out, g_out, f_out, fg_out) = (&mut a_out[..n], &mut g_out[..n], &mut f_out[..n], &mut fg_out[..n]);
    let Decisions { y, p_t, q, ln_q, ce, a, b } = decisions.slice(0..n);
    let one = |d: Decision,
               a: &mut MaybeUninit<f64>,
               g: &mut MaybeUninit<f64>,
               f: &mut MaybeUninit<f64>,
               fg: &mut MaybeUninit<f64>| {
        let alpha_t = d.alpha_t(alpha);
        let m = factor(d.q, d.ln_q);
        a.write(alpha_t);
        g.write(d.ce_grad());
        f.write(alpha_t * m * d.ce);
        fg.write(alpha_t * m * (d.a + gamma * d.b).abs());
    };
    // Whole groups through arrays of fixed length (the loop the compiler vectorises best),
    // then the rest one at a time.
    let whole = n - n % GROUP;
    for k in (0..whole / GROUP).map(|q| q * GROUP) {
        fn group(c: &mut [MaybeUninit<f64>], k: usize) -> &mut [MaybeUninit<f64>; GROUP] {
            (&mut c[k..k + GROUP]).try_into().expect("a whole group")
        }
        fn fields(c: &[f64], k: usize) -> &[f64; GROUP] {
            c[k..k + GROUP].try_into().expect("a whole group")
        }
        // Arrays of fixed length, read field by field (the loads of fields the terms do not
        // use are left out by the compiler).
        let (ys, p_ts, qs, ln_qs) = (fields(y, k), fields(p_t, k), fields(q, k), fields(ln_q, k));
        let (ces, as_, bs) = (fields(ce, k), fields(a, k), fields(b, k));
        let (a, g, f, fg) = (group(a_out, k), group(g_out, k), group(f_out, k), group(fg_out, k));
        for i in 0..GROUP {
            let (y, p_t, q, ln_q, ce) = (ys[i], p_ts[i], qs[i], ln_qs[i], ces[i]);
            let d = Decision { y, p_t, q, ln_q, ce, a: as_[i], b: bs[i] };
            one(d, &mut a[i], &mut g[i], &mut f[i], &mut fg[i]);
        }
    }
    for i in whole..n {
        one(decisions.get(i), &mut a_out[i], &mut g_out[i], &mut f_out[i], &mut fg_out[i]);
    }
}

/// Decisions per vectorised group of [`fill_columns`] (16: four AVX2 vectors; 64 measured
/// slower, as it leaves more of a kernel call's decisions to the loop one at a time).
const GROUP: usize = 16;

/// A slice of decisions, with their metadata and image runs.
#[derive(Clone, Copy, Debug)]
pub struct DecisionChunk<'a> {
    /// The batch the decisions came from.
    pub batch: &'a Batch,
    /// The decisions, in columns.
    pub decisions: Decisions<'a>,
    /// Per-decision metadata, parallel to `decisions`.
    pub meta: &'a [Meta],
    /// Image runs covering all decisions, in order.
    pub runs: &'a [ChunkRun],
    /// Per-decision terms, parallel to `decisions`.
    pub terms: &'a Terms,
    /// Whether the chunk is a whole summation block (all rows of the block it lies in). The
    /// rows of a block that a batch boundary cuts come again, joined, in a whole chunk later
    /// (see [`super::edges`]); accumulators that sum in f64 within a chunk observe whole
    /// chunks only.
    pub whole: bool,
}

impl DecisionChunk<'_> {
    /// The width of the chunk's rows when it is dense sigmoid: every row gives `width`
    /// consecutive decisions of classes 0..width with weight 1, the only expansion that gives
    /// two decisions of one row (see the module's doc); `None` for every other chunk (and rows
    /// of one class). Its image runs then hold whole rows too (images change between rows).
    pub fn dense_width(&self) -> Option<usize> {
        let batch = self.batch;
        if !matches!(batch.targets, Targets::Labels(_)) || batch.rows == 0 {
            return None;
        }
        let width = batch.width();
        let meta = self.meta;
        let n = meta.len();
        let dense = width >= 2
            && n % width == 0
            && n > 0
            && self.decisions.len() == n
            && self.terms.ce_grad.len() == n
            && meta[0].row == meta[width - 1].row;
        debug_assert!(
            !dense
                || meta
                    .iter()
                    .enumerate()
                    .all(|(i, m)| m.class as usize == i % width && m.row == meta[i - i % width].row)
                    && batch.weight.is_none()
                    && self.runs.iter().all(|r| r.start % width == 0 && r.end % width == 0)
        );
        dense.then_some(width)
    }
}

/// Reusable buffers for one thread.
#[derive(Default)]
struct Buffers {
    decisions: DecisionColumns,
    meta: Vec<Meta>,
    runs: Vec<ChunkRun>,
    row: Vec<f64>,
    /// Hard-target logit decisions queued for the vectorised kernel: the logit of the true
    /// outcome z (x for y = 1, -x for y = 0) and y. They are computed (with their buckets
    /// and terms) as soon as [`LANES`] are queued, while they are in L1.
    zs: Vec<f64>,
    /// The targets of the queued decisions, `ys[..zs.len()]`; every value past them is 0.0
    /// (the queue resets the ones it used when it is computed), so a dense row writes only
    /// its label's 1.0.
    ys: Vec<f64>,
    /// The dense rows whose decisions are queued (each gives `row_width` decisions of
    /// classes 0..C): their metadata is written once, with the bucket, by `settle`. Binary
    /// rows write theirs when queued (`meta[decisions.len()..]`), and `settle` sets the bucket.
    rows: Vec<u32>,
    row_width: usize,
    tau: f64,
    /// Terms of `decisions[..terms.len()]`: the kernel's decisions get theirs at once, the
    /// others at the next flush or kernel call.
    terms: Terms,
}

/// Queued decisions per kernel call (a little more when a row does not fit): a multiple of the
/// kernel's groups of 16 and of the common widths 4, 20 and 80, so that their rows fill whole
/// calls of whole groups. 240 (60 rows of 4, 12 of 20, 3 of 80) took 3% fewer instructions than
/// 64 (which gave one row of 80 per call) on S1-S3-shaped dumps, and 5% less time on S3 (1
/// thread); 256 left 4 of every 260 decisions of rows of 20 to the kernel's scalar tail.
const LANES: usize = 240;

impl Buffers {
    /// Counts `n` more decisions (the next ones, queued or not) in `image`'s run.
    fn extend_run(&mut self, image: usize, n: usize) {
        let start = self.decisions.len() + self.zs.len();
        match self.runs.last_mut() {
            Some(r) if r.image == image => r.end += n,
            _ => self.runs.push(ChunkRun { image, start, end: start + n }),
        }
    }

    fn push(&mut self, image: usize, d: Decision, m: Meta) {
        if !self.zs.is_empty() {
            self.settle();
        }
        self.extend_run(image, 1);
        self.decisions.push(d);
        self.meta.push(m);
    }

    /// Queues a hard-target logit decision (`meta[decisions.len()..]` are the queued ones);
    /// its bucket is set when the queue is computed.
    fn push_logit(&mut self, image: usize, x: f64, y: f64, row: u32, class: u16) {
        debug_assert!(self.rows.is_empty());
        self.extend_run(image, 1);
        self.zs.push(if y == 1.0 { x } else { -x });
        self.targets_up_to(self.zs.len());
        self.ys[self.zs.len() - 1] = y;
        self.meta.push(Meta { row, class, bucket: Bucket::EasyNegative });
        if self.zs.len() >= LANES {
            self.settle();
        }
    }

    /// Queues the hard-target logit decisions of dense sigmoid rows (C each, C = `width`):
    /// rows `first..` of the batch, with `labels`, of one image and one summation block.
    fn push_logit_rows<T: Copy + Into<f64>>(
        &mut self,
        image: usize,
        labels: &[i32],
        scores: &[T],
        width: usize,
        first: usize,
    ) {
        let c = width;
        debug_assert!(self.rows.is_empty() || self.row_width == c);
        let rows = labels.iter().filter(|&&l| l != -2).count();
        if rows == 0 {
            return;
        }
        self.extend_run(image, rows * c);
        if c == 0 {
            return;
        }
        self.row_width = c;
        // Rows in slices of one kernel call: a slice of several rows without ignored ones
        // (nearly every one) is queued in one pass, not row by row (with few classes per row,
        // that overhead was a large part of the work). A slice is the fewest rows that fill
        // the queue (what it lacks of LANES, over C, rounded up): the kernel gets the calls
        // that queuing row by row gives (with 20 classes, 240 decisions: fifteen whole groups
        // of 16; slices that are not a multiple of 16 leave the rest to its scalar tail).
        let mut at = 0;
        while at < labels.len() {
            let per = LANES.saturating_sub(self.zs.len()).div_ceil(c).max(1);
            let end = (at + per).min(labels.len());
            let slice = &labels[at..end];
            let (r0, r1) = (first + at, first + end);
            if per > 1 && slice.iter().all(|&l| l != -2) {
                let from = self.zs.len();
                // Every class a negative (z = -x), then each label's one flipped to a positive.
                self.zs.extend(scores[r0 * c..r1 * c].iter().map(|&x| -x.into()));
                self.targets_up_to(self.zs.len());
                for (i, &label) in slice.iter().enumerate() {
                    self.flip_label(from + i * c, label, c);
                }
                self.rows.extend((r0..r1).map(|r| r as u32));
            } else {
                for (row, &label) in (r0..).zip(slice) {
                    if label == -2 {
                        continue;
                    }
                    let from = self.zs.len();
                    self.zs.extend(scores[row * c..(row + 1) * c].iter().map(|&x| -x.into()));
                    self.targets_up_to(from + c);
                    self.flip_label(from, label, c);
                    self.rows.push(row as u32);
                }
            }
            if self.zs.len() >= LANES {
                self.settle();
            }
            at = end;
        }
    }

    /// Makes the queued decision of class `label` of the row queued at `from` (C = `c` classes,
    /// all queued as negatives) its positive; a background label (-1) has none.
    #[inline]
    fn flip_label(&mut self, from: usize, label: i32, c: usize) {
        if let Some(k) = usize::try_from(label).ok().filter(|&k| k < c) {
            self.zs[from + k] = -self.zs[from + k];
            self.ys[from + k] = 1.0;
        }
    }

    /// Makes `ys` at least `n` long (the new values 0.0): it grows to the longest queue once.
    #[inline]
    fn targets_up_to(&mut self, n: usize) {
        if self.ys.len() < n {
            self.ys.resize(n, 0.0);
        }
    }

    /// Computes the queued logit decisions (the vectorised kernel), their metadata or
    /// buckets, and the terms of every decision that has none yet.
    fn settle(&mut self) {
        let from = self.decisions.len();
        let queued = self.zs.len();
        crate::loss::hard_target_decisions(&self.zs, &self.ys[..queued], &mut self.decisions);
        let tau = self.tau;
        let all = self.decisions.view();
        let (ys, p_ts) = (&all.y[from..], &all.p_t[from..]);
        if self.rows.is_empty() {
            for ((m, &y), &p_t) in self.meta[from..].iter_mut().zip(ys).zip(p_ts) {
                m.bucket = Bucket::of(y > 0.0, p_t, tau);
            }
        } else {
            let c = self.row_width;
            // Written into the reserved capacity, then counted once (rows of few classes made a
            // call to `extend` per row a large part of the work).
            let n = self.rows.len() * c;
            let len = self.meta.len();
            self.meta.reserve(n);
            let spare = &mut self.meta.spare_capacity_mut()[..n];
            let rows = &self.rows[..];
            // The common widths as constants: each row's loop unrolled.
            match c {
                2 => dense_meta::<2>(rows, (ys, p_ts), spare, c, tau),
                3 => dense_meta::<3>(rows, (ys, p_ts), spare, c, tau),
                4 => dense_meta::<4>(rows, (ys, p_ts), spare, c, tau),
                5 => dense_meta::<5>(rows, (ys, p_ts), spare, c, tau),
                8 => dense_meta::<8>(rows, (ys, p_ts), spare, c, tau),
                _ => dense_meta::<0>(rows, (ys, p_ts), spare, c, tau),
            }
            // SAFETY: the kernel gave `c` decisions per queued row (checked), so the loop wrote
            // all `n` values past `len`.
            assert_eq!(self.decisions.len() - from, n, "the kernel gives C decisions per queued row");
            unsafe { self.meta.set_len(len + n) };
            self.rows.clear();
        }
        self.zs.clear();
        self.ys[..queued].fill(0.0);
        let all = self.decisions.view();
        self.terms.extend(all.slice(self.terms.len()..all.len()));
    }

    fn flush(&mut self, batch: &Batch, whole: bool, sink: &mut dyn FnMut(&DecisionChunk<'_>)) {
        self.settle();
        if !self.decisions.is_empty() {
            sink(&DecisionChunk {
                batch,
                decisions: self.decisions.view(),
                meta: &self.meta,
                runs: &self.runs,
                terms: &self.terms,
                whole,
            });
        }
        self.decisions.clear();
        self.meta.clear();
        self.runs.clear();
        self.terms.clear();
    }
}

/// The metadata of queued dense rows (`rows`, each giving `width` decisions of classes
/// 0..width), written to `out`: row after row of the decisions whose targets and
/// p_t are `(ys, p_ts)`. `W` is the width when it is not 0.
#[inline(always)]
fn dense_meta<const W: usize>(
    rows: &[u32],
    (ys, p_ts): (&[f64], &[f64]),
    out: &mut [MaybeUninit<Meta>],
    width: usize,
    tau: f64,
) {
    let c = if W > 0 { W } else { width };
    let classes = u16::try_from(c).expect("the input checks bound the width to 65,535 classes");
    let targets = ys.chunks_exact(c).zip(p_ts.chunks_exact(c));
    for ((&row, (ys, p_ts)), ms) in rows.iter().zip(targets).zip(out.chunks_exact_mut(c)) {
        for (((&y, &p_t), m), class) in ys.iter().zip(p_ts).zip(ms).zip(0..classes) {
            m.write(Meta { row, class, bucket: Bucket::of(y > 0.0, p_t, tau) });
        }
    }
}

/// Expands a batch into decision chunks, one per summation block (and image run within it),
/// and hands each to `sink`.
pub fn for_each_chunk(
    exp: &Expansion,
    batch: &Batch,
    scoring: &Scoring,
    sink: &mut dyn FnMut(&DecisionChunk<'_>),
) {
    match (batch.scores.f32s(), batch.scores.f64s()) {
        (Some(v), _) => expand(exp, batch, v, scoring, sink),
        (_, Some(v)) => expand(exp, batch, v, scoring, sink),
        (None, None) => unreachable!("scores are float32 or float64"),
    }
}

fn expand<T: Copy + Into<f64>>(
    exp: &Expansion,
    batch: &Batch,
    scores: &[T],
    scoring: &Scoring,
    sink: &mut dyn FnMut(&DecisionChunk<'_>),
) {
    let tau = scoring.tau;
    let shape = exp.shape;
    let width = exp.width;
    let logits = shape.scores == ScoreKind::Logits;
    let mut buf = Buffers { tau, ..Buffers::default() };
    buf.terms.focus = scoring.focus;
    buf.decisions.reserve(CHUNK + width);
    buf.meta.reserve(CHUNK + width);
    let block_rows = exp.block_rows();
    // Whether block `b` lies whole inside the batch's span of file rows.
    let whole = |b: u64| {
        let (start, end) = (b * block_rows, ((b + 1) * block_rows).min(batch.file_rows));
        start >= batch.first_row && end <= batch.end_row
    };
    // Any row but a dense sigmoid logit row, one at a time.
    let expand_row = |buf: &mut Buffers, image: usize, row: usize| {
        match (&batch.targets, shape.activation) {
            (Targets::Labels(labels), Activation::Sigmoid) => {
                let label = labels[row];
                if label == -2 {
                    return;
                }
                // Logits take `Buffers::push_logit_rows`.
                debug_assert!(!logits);
                let xs = &scores[row * width..(row + 1) * width];
                for (c, &x) in xs.iter().enumerate() {
                    let y = if label == c as i32 { 1.0 } else { 0.0 };
                    let d = Decision::from_prob(x.into(), y);
                    let bucket = Bucket::of(y > 0.0, d.p_t, tau);
                    buf.push(image, d, Meta { row: row as u32, class: c as u16, bucket });
                }
            }
            (Targets::Labels(labels), Activation::Softmax) => {
                let label = labels[row];
                if label == -2 {
                    return;
                }
                let t = label as usize;
                buf.row.clear();
                buf.row.extend(scores[row * width..(row + 1) * width].iter().map(|&x| x.into()));
                let y = if t as u32 == exp.background_class { 0.0 } else { 1.0 };
                let d = if logits {
                    Decision::from_softmax_logits(&buf.row, t, y)
                } else {
                    Decision::from_softmax_probs(&buf.row, t, y)
                };
                let bucket = Bucket::of(y > 0.0, d.p_t, tau);
                buf.push(image, d, Meta { row: row as u32, class: t as u16, bucket });
            }
            (Targets::Binary(targets), _) => {
                let y = targets[row];
                let x: f64 = scores[row].into();
                let class = batch.class.as_ref().map_or(0, |c| c[row] as u16);
                if logits && (y == 0.0 || y == 1.0) {
                    buf.push_logit(image, x, y, row as u32, class);
                } else {
                    let d = if logits { Decision::from_logit(x, y) } else { Decision::from_prob(x, y) };
                    let bucket = Bucket::of(y > 0.0, d.p_t, tau);
                    buf.push(image, d, Meta { row: row as u32, class, bucket });
                }
            }
        }
    };
    let mut block = u64::MAX;
    for (image, run) in batch.images.iter().enumerate() {
        // The run's rows in segments that lie in one summation block each.
        let mut start = run.start;
        while start < run.end {
            let b = batch.file_row(start) / block_rows;
            if b != block {
                if block != u64::MAX {
                    buf.flush(batch, whole(block), sink);
                }
                block = b;
            }
            let stop = block_end(batch, start, run.end, b, block_rows);
            match (&batch.targets, shape.activation) {
                // The common case in a loop of its own: whole rows of C logit decisions.
                (Targets::Labels(labels), Activation::Sigmoid) if logits => {
                    buf.push_logit_rows(image, &labels[start..stop], scores, width, start);
                }
                _ => {
                    for row in start..stop {
                        expand_row(&mut buf, image, row);
                    }
                }
            }
            start = stop;
        }
    }
    if block != u64::MAX {
        buf.flush(batch, whole(block), sink);
    }
}

/// One past the last row of `start..end` in summation block `b` (the row `start` is in it).
fn block_end(batch: &Batch, start: usize, end: usize, b: u64, block_rows: u64) -> usize {
    match &batch.row_index {
        // Consecutive file rows: the block's end in closed form.
        None => {
            let left = (b + 1) * block_rows - batch.file_row(start);
            end.min(start.saturating_add(usize::try_from(left).unwrap_or(usize::MAX)))
        }
        Some(_) => (start + 1..end).find(|&r| batch.file_row(r) / block_rows != b).unwrap_or(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layout;
    use crate::input::{test_batch, ScoreValues};

    fn bits(d: &Decision) -> [u64; 7] {
        [d.y, d.p_t, d.q, d.ln_q, d.ce, d.a, d.b].map(f64::to_bits)
    }

    /// A chunk's decisions, metadata, runs and terms, copied out.
    type Owned = (Vec<Decision>, Vec<Meta>, Vec<ChunkRun>, Terms);

    /// Every chunk of `batch`, copied out.
    fn chunks(exp: &Expansion, batch: &Batch, scoring: &Scoring) -> Vec<Owned> {
        let mut out = Vec::new();
        for_each_chunk(exp, batch, scoring, &mut |c| {
            out.push((c.decisions.to_vec(), c.meta.to_vec(), c.runs.to_vec(), c.terms.clone()))
        });
        out
    }

    #[test]
    fn bucket_of_is_the_four_way_split() {
        for positive in [false, true] {
            for p_t in [0.0, 0.2, 0.5, 0.7, 1.0, f64::NAN] {
                let want = match (positive, p_t >= 0.5) {
                    (false, true) => Bucket::EasyNegative,
                    (false, false) => Bucket::HardNegative,
                    (true, true) => Bucket::EasyPositive,
                    (true, false) => Bucket::HardPositive,
                };
                assert_eq!(Bucket::of(positive, p_t, 0.5), want, "{positive} {p_t}");
            }
        }
    }

    #[test]
    fn dense_sigmoid_logit_rows_expand_to_the_scalar_decisions_metadata_and_terms() {
        // 5 classes (rows straddle the kernel's groups), every label kind in every slice of
        // rows (each holds an ignored row: queued row by row).
        check_dense_logit_rows(5, (0..700).map(|i| [-1, 0, 3, -2, 4, -1, 1][i % 7]).collect());
        // Few classes, ignored rows rare: most slices are queued whole (4, 3, 20 and 70
        // classes: slices of up to 60, 80, 12 and 4 rows; shorter after an image's change left
        // decisions in the queue), some row by row; and rows of more decisions than a kernel
        // call (250 classes: one row per slice). 2 and 8 classes: the other widths whose
        // metadata loop is unrolled (a label above the last class marks no decision positive).
        for c in [4, 3, 20, 70, 250, 2, 8] {
            let labels =
                (0..700).map(|i| if i % 97 == 5 { -2 } else { [-1, -1, 0, 2, -1, 1][i % 6] }).collect();
            check_dense_logit_rows(c, labels);
        }
    }

    /// Expands rows of `c` f32 logits with `labels` (two images, logits from -120 to 120) and
    /// compares every decision, its metadata and terms with Decision::from_logit and its methods.
    fn check_dense_logit_rows(c: usize, labels: Vec<i32>) {
        let n = labels.len();
        let ids: Vec<i64> = (0..n).map(|i| if i < 300 { 7 } else { 9 }).collect();
        let logits: Vec<f32> = (0..n * c).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 0.12).collect();
        let batch =
            test_batch(ids, Targets::Labels(labels.clone()), ScoreValues::from_f32(logits.clone()), 0);
        let shape =
            DumpShape { layout: Layout::Dense, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        let exp = Expansion { shape, width: c, background_class: 0 };
        for focus in
            [Focus { gamma: 2.0, alpha: Some(0.25) }, Focus { gamma: 1.5, alpha: None }, Focus::default()]
        {
            let scoring = Scoring { tau: 0.5, focus };
            let (mut k, mut seen) = (0, 0);
            for (decisions, meta, runs, terms) in chunks(&exp, &batch, &scoring) {
                assert_eq!(meta.len(), decisions.len());
                assert_eq!(runs.first().map(|r| r.start), Some(0));
                assert_eq!(runs.last().map(|r| r.end), Some(decisions.len()));
                for w in runs.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                for v in [&terms.alpha_t, &terms.ce_grad, &terms.focal, &terms.focal_grad] {
                    assert_eq!(v.len(), decisions.len());
                }
                for (i, (d, m)) in decisions.iter().zip(&meta).enumerate() {
                    while labels[k / c] == -2 {
                        k += c;
                    }
                    let (row, class) = (k / c, k % c);
                    let y = if labels[row] == class as i32 { 1.0 } else { 0.0 };
                    let want = Decision::from_logit(f64::from(logits[k]), y);
                    assert_eq!(bits(d), bits(&want), "{c} classes: row {row} class {class}");
                    assert_eq!((m.row as usize, m.class as usize, m.weight(None)), (row, class, 1.0));
                    assert_eq!(m.bucket, Bucket::of(y > 0.0, want.p_t, 0.5));
                    let image = runs.iter().find(|r| (r.start..r.end).contains(&i)).unwrap().image;
                    assert_eq!(image, usize::from(row >= 300));
                    let (g, a) = (focus.gamma, focus.alpha);
                    assert_eq!(terms.alpha_t[i].to_bits(), want.alpha_t(a).to_bits());
                    assert_eq!(terms.ce_grad[i].to_bits(), want.ce_grad().to_bits());
                    assert_eq!(terms.focal[i].to_bits(), want.focal(g, a).to_bits());
                    assert_eq!(terms.focal_grad[i].to_bits(), want.focal_grad(g, a).to_bits());
                    k += 1;
                    seen += 1;
                }
            }
            assert_eq!(seen, labels.iter().filter(|&&l| l != -2).count() * c, "{c} classes");
        }
    }

    #[test]
    fn dense_logit_rows_split_into_summation_blocks_by_file_row() {
        // Rows of 3 classes (blocks of 2048 rows), starting mid-block, then the same rows with
        // a row index that skips file rows: each chunk holds the rows of one block, in order,
        // and the decisions are the scalar ones whatever the row numbering.
        const C: usize = 3;
        const BLOCK: u64 = 2048;
        let n = 6000;
        let labels: Vec<i32> = (0..n).map(|i| [-1, 2, -2, 0, -1][i % 5]).collect();
        let logits: Vec<f32> = (0..n * C).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.25).collect();
        let ids: Vec<i64> = (0..n).map(|i| (i / 700) as i64).collect();
        let shape =
            DumpShape { layout: Layout::Dense, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        let exp = Expansion { shape, width: C, background_class: 0 };
        assert_eq!(exp.block_rows(), BLOCK);
        let scoring = Scoring { tau: 0.5, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
        let contiguous = test_batch(
            ids.clone(),
            Targets::Labels(labels.clone()),
            ScoreValues::from_f32(logits.clone()),
            500,
        );
        let mut gaps = contiguous.clone();
        // File rows 500, 501, 503, 504, 506, ...: every third file row is absent.
        let index: Vec<u64> = (0..n as u64).map(|i| 500 + i + i / 2).collect();
        gaps.end_row = index[n - 1] + 1;
        gaps.file_rows = gaps.end_row;
        gaps.row_index = Some(index.clone());
        for (batch, file_row) in
            [(&contiguous, (0..n as u64).map(|i| 500 + i).collect::<Vec<_>>()), (&gaps, index)]
        {
            let mut k = 0;
            let mut blocks = Vec::new();
            for (decisions, meta, runs, _) in chunks(&exp, batch, &scoring) {
                let block = file_row[meta[0].row as usize] / BLOCK;
                blocks.push(block);
                assert!(meta.iter().all(|m| file_row[m.row as usize] / BLOCK == block));
                assert_eq!(runs.last().map(|r| r.end), Some(decisions.len()));
                for (d, m) in decisions.iter().zip(&meta) {
                    while labels[k / C] == -2 {
                        k += C;
                    }
                    let (row, class) = (k / C, k % C);
                    assert_eq!((m.row as usize, m.class as usize), (row, class));
                    let y = if labels[row] == class as i32 { 1.0 } else { 0.0 };
                    assert_eq!(bits(d), bits(&Decision::from_logit(f64::from(logits[k]), y)));
                    k += 1;
                }
            }
            assert_eq!(k, n * C, "every decision once");
            let mut want: Vec<u64> = file_row.iter().map(|r| r / BLOCK).collect();
            want.dedup();
            assert_eq!(blocks, want, "one chunk per block, in order");
        }
    }

    #[test]
    fn binary_rows_mix_queued_logits_and_soft_targets_in_order() {
        // Hard targets go through the kernel's queue, soft ones straight in: the order, the
        // metadata and the terms must come out as one sequence.
        let n = 300;
        let targets: Vec<f64> = (0..n).map(|i| [0.0, 1.0, 0.3, 0.0, 0.0, 1.0, 0.8][i % 7]).collect();
        let logits: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3).collect();
        let mut batch = test_batch(
            (0..n).map(|i| (i / 40) as i64),
            Targets::Binary(targets.clone()),
            ScoreValues::from_f32(logits.clone()),
            0,
        );
        // Classes up to the largest the input checks let through (65,535: `Meta::class` is 16 bits).
        let classes = [0, 1, 65_535];
        batch.class = Some((0..n).map(|i| classes[i % 3]).collect());
        batch.weight = Some((0..n).map(|i| 0.5 + (i % 4) as f64).collect());
        let shape =
            DumpShape { layout: Layout::Binary, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        let exp = Expansion { shape, width: 1, background_class: 0 };
        let scoring = Scoring { tau: 0.5, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
        let mut k = 0;
        for (decisions, meta, _, terms) in chunks(&exp, &batch, &scoring) {
            for (i, (d, m)) in decisions.iter().zip(&meta).enumerate() {
                let want = Decision::from_logit(f64::from(logits[k]), targets[k]);
                assert_eq!(bits(d), bits(&want), "row {k}");
                let weight = m.weight(batch.weight.as_deref());
                let class = classes[k % 3] as usize;
                assert_eq!((m.row as usize, m.class as usize, weight), (k, class, 0.5 + (k % 4) as f64));
                assert_eq!(m.bucket, Bucket::of(targets[k] > 0.0, want.p_t, 0.5));
                assert_eq!(terms.focal[i].to_bits(), want.focal(2.0, Some(0.25)).to_bits());
                k += 1;
            }
        }
        assert_eq!(k, n);
    }
}
