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
use crate::loss::Decision;

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
/// per-chunk work, small enough to stay in cache.
pub const CHUNK: usize = 4096;

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
        match (positive, p_t >= tau) {
            (false, true) => Bucket::EasyNegative,
            (false, false) => Bucket::HardNegative,
            (true, true) => Bucket::EasyPositive,
            (true, false) => Bucket::HardPositive,
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

/// Where a decision came from, and its bucket and sample weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    /// Row within the batch.
    pub row: u32,
    /// Class index (dense sigmoid: the decision's class; softmax: the label; binary: the `class`
    /// column or 0).
    pub class: u32,
    /// Easy/hard x positive/negative.
    pub bucket: Bucket,
    /// Per-decision loss weight (binary `weight` column; 1 otherwise).
    pub weight: f64,
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
    /// Recomputes the terms for `decisions`.
    fn compute(&mut self, decisions: &[Decision]) {
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

    #[inline(always)]
    fn fill(&mut self, decisions: &[Decision], factor: impl Fn(f64, f64) -> f64) {
        let Focus { gamma, alpha } = self.focus;
        let n = decisions.len();
        for v in [&mut self.alpha_t, &mut self.ce_grad, &mut self.focal, &mut self.focal_grad] {
            v.clear();
            v.resize(n, 0.0);
        }
        let columns =
            self.alpha_t.iter_mut().zip(&mut self.ce_grad).zip(&mut self.focal).zip(&mut self.focal_grad);
        for (d, (((alpha_t, ce_grad), focal), focal_grad)) in decisions.iter().zip(columns) {
            let a = d.alpha_t(alpha);
            let m = factor(d.q, d.ln_q);
            *alpha_t = a;
            *ce_grad = d.ce_grad();
            *focal = a * m * d.ce;
            *focal_grad = a * m * (d.a + gamma * d.b).abs();
        }
    }

    /// The precomputed focal losses, when `focus` is the one the terms were computed with
    /// (decide once per chunk, not per decision; otherwise use [`Decision::focal`]).
    #[inline]
    pub fn focal_for(&self, focus: Focus) -> Option<&[f64]> {
        (focus == self.focus).then_some(self.focal.as_slice())
    }
}

/// A slice of decisions, with their metadata and image runs.
#[derive(Clone, Copy, Debug)]
pub struct DecisionChunk<'a> {
    /// The batch the decisions came from.
    pub batch: &'a Batch,
    /// The decisions.
    pub decisions: &'a [Decision],
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

/// Reusable buffers for one thread.
#[derive(Default)]
struct Buffers {
    decisions: Vec<Decision>,
    meta: Vec<Meta>,
    runs: Vec<ChunkRun>,
    row: Vec<f64>,
    /// Logits and hard targets whose decisions are computed at flush, over the whole chunk at
    /// once (the vectorised kernel).
    xs: Vec<f64>,
    ys: Vec<f64>,
    tau: f64,
    terms: Terms,
}

impl Buffers {
    /// Counts one more decision (the next, at index `meta.len()`) in `image`'s run.
    fn extend_run(&mut self, image: usize) {
        let n = self.meta.len();
        match self.runs.last_mut() {
            Some(r) if r.image == image => r.end += 1,
            _ => self.runs.push(ChunkRun { image, start: n, end: n + 1 }),
        }
    }

    fn push(&mut self, image: usize, d: Decision, m: Meta) {
        self.settle();
        self.extend_run(image);
        self.decisions.push(d);
        self.meta.push(m);
    }

    /// Queues a hard-target logit decision (`meta[decisions.len()..]` are the queued ones);
    /// its bucket is set when the queue is computed.
    fn push_logit(&mut self, image: usize, x: f64, y: f64, row: u32, class: u32, weight: f64) {
        self.extend_run(image);
        self.xs.push(x);
        self.ys.push(y);
        self.meta.push(Meta { row, class, bucket: Bucket::EasyNegative, weight });
    }

    /// Queues the C hard-target logit decisions of a dense sigmoid row labelled `label`.
    fn push_logit_row<T: Copy + Into<f64>>(&mut self, image: usize, xs: &[T], label: i32, row: u32) {
        let (n, c) = (self.meta.len(), xs.len());
        match self.runs.last_mut() {
            Some(r) if r.image == image => r.end += c,
            _ => self.runs.push(ChunkRun { image, start: n, end: n + c }),
        }
        self.xs.extend(xs.iter().map(|&x| x.into()));
        self.ys.extend((0..c).map(|k| if label == k as i32 { 1.0 } else { 0.0 }));
        self.meta.extend((0..c as u32).map(|class| Meta {
            row,
            class,
            bucket: Bucket::EasyNegative,
            weight: 1.0,
        }));
    }

    /// Computes the queued logit decisions, over all of them at once (the vectorised kernel).
    fn settle(&mut self) {
        if self.xs.is_empty() {
            return;
        }
        let from = self.decisions.len();
        crate::loss::hard_logit_decisions(&self.xs, &self.ys, &mut self.decisions);
        for (m, d) in self.meta[from..].iter_mut().zip(&self.decisions[from..]) {
            m.bucket = Bucket::of(d.y > 0.0, d.p_t, self.tau);
        }
        self.xs.clear();
        self.ys.clear();
    }

    fn flush(&mut self, batch: &Batch, whole: bool, sink: &mut dyn FnMut(&DecisionChunk<'_>)) {
        self.settle();
        if !self.decisions.is_empty() {
            self.terms.compute(&self.decisions);
            sink(&DecisionChunk {
                batch,
                decisions: &self.decisions,
                meta: &self.meta,
                runs: &self.runs,
                terms: &self.terms,
                whole,
            });
        }
        self.decisions.clear();
        self.meta.clear();
        self.runs.clear();
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
    let mut block = u64::MAX;
    for (image, run) in batch.images.iter().enumerate() {
        for row in run.start..run.end {
            let b = batch.file_row(row) / block_rows;
            if b != block {
                if block != u64::MAX {
                    buf.flush(batch, whole(block), sink);
                }
                block = b;
            }
            match (&batch.targets, shape.activation) {
                (Targets::Labels(labels), Activation::Sigmoid) => {
                    let label = labels[row];
                    if label == -2 {
                        continue;
                    }
                    let xs = &scores[row * width..(row + 1) * width];
                    if logits {
                        buf.push_logit_row(image, xs, label, row as u32);
                        continue;
                    }
                    for (c, &x) in xs.iter().enumerate() {
                        let y = if label == c as i32 { 1.0 } else { 0.0 };
                        let d = Decision::from_prob(x.into(), y);
                        let bucket = Bucket::of(y > 0.0, d.p_t, tau);
                        buf.push(image, d, Meta { row: row as u32, class: c as u32, bucket, weight: 1.0 });
                    }
                }
                (Targets::Labels(labels), Activation::Softmax) => {
                    let label = labels[row];
                    if label == -2 {
                        continue;
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
                    buf.push(image, d, Meta { row: row as u32, class: t as u32, bucket, weight: 1.0 });
                }
                (Targets::Binary(targets), _) => {
                    let y = targets[row];
                    let x: f64 = scores[row].into();
                    let class = batch.class.as_ref().map_or(0, |c| c[row] as u32);
                    let weight = batch.weight.as_ref().map_or(1.0, |w| w[row]);
                    if logits && (y == 0.0 || y == 1.0) {
                        buf.push_logit(image, x, y, row as u32, class, weight);
                    } else {
                        let d = if logits { Decision::from_logit(x, y) } else { Decision::from_prob(x, y) };
                        let bucket = Bucket::of(y > 0.0, d.p_t, tau);
                        buf.push(image, d, Meta { row: row as u32, class, bucket, weight });
                    }
                }
            }
        }
    }
    if block != u64::MAX {
        buf.flush(batch, whole(block), sink);
    }
}
