//! An image's candidates held column by column.
//!
//! Selection scans an image's candidates several times (the split and the sampling strata, the
//! OHEM and SSD rankings, the sampling variance, the overlaps), and an image's candidates do not
//! fit in cache: every scan is a trip to memory. Held as one struct per candidate (over 100
//! bytes, two cache lines), each scan would read every byte of every candidate; held in columns,
//! a ranking reads 8 bytes per candidate (its CE) and the overlaps 11.
//!
//! Almost every candidate is *pure*: all its decisions fall in one bucket (an easy background
//! anchor: C easy negatives). Its decisions, CE and gradient norm per bucket are then its
//! decision count, CE and gradient norm in that bucket and zeros (+0.0) in the others, with the
//! same bits (the same values added in the same order from +0.0), so a pile keeps a bucket tag
//! and three numbers per candidate, and the four buckets' values only for the few *mixed*
//! candidates, on the side. A [`Pile`] gives back the same numbers as the [`Candidate`]s it
//! stands for, with the same bits.

use serde::{Deserialize, Serialize};

use super::{Candidate, CandidateInfo};

/// [`Pile`] tag bit: the candidate has a positive decision.
const POSITIVE: u8 = 4;
/// [`Pile`] tag bit: its decisions fall in several buckets (its values are in `mixed`).
const MIXED: u8 = 8;

/// One candidate's decisions, CE and CE gradient norm per bucket (easy_negative,
/// hard_negative, easy_positive, hard_positive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parts {
    /// Decisions per bucket.
    pub count: [u16; 4],
    /// CE per bucket.
    pub loss: [f64; 4],
    /// CE gradient norm per bucket.
    pub grad: [f64; 4],
}

impl Parts {
    /// The parts of a pure candidate: its `n` decisions, CE `ce` and gradient norm `g` in
    /// `bucket`, zeros elsewhere (branch-free: the scans call it for every candidate).
    #[inline(always)]
    fn pure(bucket: u8, n: u16, ce: f64, g: f64) -> Parts {
        let b = bucket & 3;
        Parts {
            count: [0u8, 1, 2, 3].map(|k| if k == b { n } else { 0 }),
            loss: [0u8, 1, 2, 3].map(|k| if k == b { ce } else { 0.0 }),
            grad: [0u8, 1, 2, 3].map(|k| if k == b { g } else { 0.0 }),
        }
    }

    /// Adds a decision of bucket `b` (0-3) with CE `ce` and gradient norm `g`. The other
    /// buckets add +0.0, which changes no sum that starts at +0.0: the sums are those of adding
    /// to bucket `b` alone, bit for bit. Branch-free, so that the sums of a candidate's
    /// decisions stay in registers (indexed by `b`, each add would wait on the store of the one
    /// before).
    #[inline(always)]
    pub fn add(&mut self, b: usize, ce: f64, g: f64) {
        for k in 0..4 {
            let hit = k == b;
            self.count[k] += u16::from(hit);
            self.loss[k] += if hit { ce } else { 0.0 };
            self.grad[k] += if hit { g } else { 0.0 };
        }
    }

    /// The parts of the decisions whose buckets, CE and gradient norms are `buckets`, `ces`
    /// and `grads`: [`Parts::add`] of each, in order. A function of its own (not inlined), so
    /// that its twelve sums get registers: inlined into the fill of whole rows, they were kept
    /// on the stack, and each add waited on a store.
    #[inline(never)]
    pub fn of(buckets: impl Iterator<Item = usize>, ces: &[f64], grads: &[f64]) -> Parts {
        let mut parts = Parts::default();
        for ((b, &ce), &g) in buckets.zip(ces).zip(grads) {
            parts.add(b, ce, g);
        }
        parts
    }

    /// The bucket of a candidate whose parts are `self`, `ce` and `positive`, if they are those
    /// of a pure candidate (bit for bit), and its gradient norm.
    fn as_pure(&self, ce: f64, positive: bool) -> Option<(u8, f64)> {
        let mut buckets = (0..4).filter(|&k| self.count[k] > 0);
        let b = buckets.next()?;
        let zero_elsewhere =
            (0..4).filter(|&k| k != b).all(|k| self.loss[k].to_bits() == 0 && self.grad[k].to_bits() == 0);
        (buckets.next().is_none()
            && zero_elsewhere
            && self.loss[b].to_bits() == ce.to_bits()
            && positive == (b >= 2))
            .then_some((b as u8, self.grad[b]))
    }
}

/// What a scan does with each candidate ([`Pile::visit`]).
pub trait Visit {
    /// A pure candidate: `n` decisions, all in bucket `B` (positive when `B >= 2`), with CE
    /// `ce` and CE gradient norm `g`; its parts are [`Parts`] with those in `B` and zeros
    /// elsewhere.
    fn pure<const B: usize>(&mut self, n: u16, ce: f64, g: f64);

    /// A mixed candidate (`positive` or not) and its parts.
    fn mixed(&mut self, positive: bool, parts: &Parts);

    /// A run of easy negatives (pure candidates of bucket 0, the common kind), the columns of
    /// their decision counts, CE and gradient norms: `pure::<0>` of each, in order. A visitor
    /// whose sums live in its struct overrides it with a loop over local copies of them: the
    /// compiler does not keep a struct's fields in registers across such a loop, and each
    /// add would then wait on the store of the one before.
    #[inline(always)]
    fn easy_negatives(&mut self, n: &[u16], ce: &[f64], g: &[f64]) {
        for ((&n, &ce), &g) in n.iter().zip(ce).zip(g) {
            self.pure::<0>(n, ce, g);
        }
    }
}

/// The columns of a [`Pile`], for appending candidates column by column
/// ([`Pile::extend_columns`]).
pub(super) struct Columns<'a> {
    /// File index in the dump.
    pub file: &'a mut Vec<u32>,
    /// Row within the file.
    pub row: &'a mut Vec<u64>,
    /// The candidate's tag: [`Pile::pure_tag`] of a pure candidate.
    pub tag: &'a mut Vec<u8>,
    /// Decisions in the candidate.
    pub n: &'a mut Vec<u16>,
    /// CE summed over its decisions.
    pub ce: &'a mut Vec<f64>,
    /// CE gradient norm summed over its decisions.
    pub g: &'a mut Vec<f64>,
    /// Focal loss summed over its decisions.
    pub focal: &'a mut Vec<f64>,
}

/// A mixed candidate's parts, by its index in the pile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Mixed {
    index: usize,
    parts: Parts,
}

/// Candidates in columns, all of the same length (`info` is either empty or of that length).
/// A segment of an image (one batch's rows of it) is in dump order; an image's segments joined
/// by [`Pile::join`] are in dump order too.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Pile {
    /// File index in the dump.
    pub file: Vec<u32>,
    /// Row within the file.
    pub row: Vec<u64>,
    /// The bucket of a pure candidate (bits 0-1), [`POSITIVE`], [`MIXED`].
    tag: Vec<u8>,
    /// Decisions in the candidate.
    n: Vec<u16>,
    /// CE summed over the candidate's decisions (times the binary `weight`): its score.
    pub ce: Vec<f64>,
    /// CE gradient norm summed over its decisions (times the binary `weight`); read for pure
    /// candidates only.
    g: Vec<f64>,
    /// Focal loss summed over its decisions.
    pub focal: Vec<f64>,
    /// The parts of the mixed candidates, in index order.
    mixed: Vec<Mixed>,
    /// Box and identifiers, only when NMS or an export needs them (else empty).
    pub info: Vec<CandidateInfo>,
    /// Known to be in dump order: each candidate was appended at or after the one before
    /// (checked while it was in cache), so that [`Pile::in_dump_order`] need not read the
    /// positions again. False when not known (a pile read back from a saved state, or not
    /// in order); not part of the saved state, nor of equality.
    #[serde(skip)]
    ordered: bool,
}

impl PartialEq for Pile {
    fn eq(&self, o: &Pile) -> bool {
        // Every column; not `ordered`, which only says what is known.
        (&self.file, &self.row, &self.tag, &self.n, &self.ce, &self.g, &self.focal, &self.mixed, &self.info)
            == (&o.file, &o.row, &o.tag, &o.n, &o.ce, &o.g, &o.focal, &o.mixed, &o.info)
    }
}

impl Pile {
    /// An empty pile with room for `n` candidates (and their info, when `with_info`).
    pub fn with_capacity(n: usize, with_info: bool) -> Pile {
        Pile {
            file: Vec::with_capacity(n),
            row: Vec::with_capacity(n),
            tag: Vec::with_capacity(n),
            n: Vec::with_capacity(n),
            ce: Vec::with_capacity(n),
            g: Vec::with_capacity(n),
            focal: Vec::with_capacity(n),
            mixed: Vec::new(),
            info: Vec::with_capacity(if with_info { n } else { 0 }),
            ordered: true,
        }
    }

    /// The position (file, row) of the last candidate.
    #[inline(always)]
    fn last_position(&self) -> Option<(u32, u64)> {
        self.file.last().copied().zip(self.row.last().copied())
    }

    /// Whether the pile is known to be in dump order (see `ordered`; an empty pile is).
    #[inline(always)]
    fn known_ordered(&self) -> bool {
        self.ordered || self.ce.is_empty()
    }

    /// Candidates in the pile.
    #[inline]
    pub fn len(&self) -> usize {
        self.ce.len()
    }

    /// Whether the pile has no candidates.
    pub fn is_empty(&self) -> bool {
        self.ce.is_empty()
    }

    /// Adds a pure candidate: `n` decisions, all in `bucket` (0-3, [`Bucket`](crate::analysis::decisions::Bucket) order),
    /// with CE `ce`, CE gradient norm `g` and focal loss `focal` (its info, if the pile keeps
    /// infos, is pushed apart).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn push_pure(&mut self, file: u32, row: u64, bucket: u8, n: u16, ce: f64, g: f64, focal: f64) {
        let positive = if bucket >= 2 { POSITIVE } else { 0 };
        self.push_columns(file, row, (bucket & 3) | positive, n, ce, g, focal);
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn push_columns(&mut self, file: u32, row: u64, tag: u8, n: u16, ce: f64, g: f64, focal: f64) {
        self.ordered = self.known_ordered() && self.last_position().is_none_or(|p| p <= (file, row));
        self.file.push(file);
        self.row.push(row);
        self.tag.push(tag);
        self.n.push(n);
        self.ce.push(ce);
        self.g.push(g);
        self.focal.push(focal);
    }

    /// Adds a candidate given by its columns (its info, if the pile keeps infos, is pushed
    /// apart): kept as a pure candidate when it is one, bit for bit.
    #[inline]
    pub fn push_parts(&mut self, file: u32, row: u64, positive: bool, ce: f64, focal: f64, parts: Parts) {
        match parts.as_pure(ce, positive) {
            Some((bucket, g)) => {
                self.push_pure(file, row, bucket, parts.count[usize::from(bucket)], ce, g, focal)
            }
            None => {
                let count = parts.count;
                self.mixed.push(Mixed { index: self.len(), parts });
                let n = count.iter().map(|&c| u32::from(c)).sum::<u32>().min(u32::from(u16::MAX)) as u16;
                let tag = MIXED | if positive { POSITIVE } else { 0 };
                self.push_columns(file, row, tag, n, ce, 0.0, focal);
            }
        }
    }

    /// Adds candidate `c` ([`Pile::push_parts`] of its fields; its info apart).
    fn push_candidate(&mut self, c: &Candidate) {
        self.push_parts(
            c.file,
            c.row,
            c.positive,
            c.ce,
            c.focal,
            Parts { count: c.count, loss: c.loss, grad: c.grad },
        );
    }

    /// Appends candidates column by column: `fill` pushes the same number of values to every
    /// column of [`Columns`] (a pure candidate's tag is [`Pile::pure_tag`]; a mixed one's is
    /// then set by [`Pile::set_mixed`]). Appending whole columns from exact-size iterators
    /// writes each value without the per-push capacity check and length update of seven
    /// pushes per candidate.
    #[inline(always)]
    pub(super) fn extend_columns(&mut self, fill: impl FnOnce(Columns<'_>)) {
        let (first, ordered, last) = (self.len(), self.known_ordered(), self.last_position());
        fill(Columns {
            file: &mut self.file,
            row: &mut self.row,
            tag: &mut self.tag,
            n: &mut self.n,
            ce: &mut self.ce,
            g: &mut self.g,
            focal: &mut self.focal,
        });
        debug_assert!(
            [self.file.len(), self.row.len(), self.tag.len(), self.n.len(), self.g.len(), self.focal.len()]
                .iter()
                .all(|&n| n == self.ce.len()),
            "every column has a value per candidate"
        );
        // The new candidates' order, while they are in cache.
        let new = Pile::positions_in_order(&self.file[first..], &self.row[first..]);
        let joined = match (last, self.file.get(first).copied().zip(self.row.get(first).copied())) {
            (Some(a), Some(b)) => a <= b,
            _ => true,
        };
        self.ordered = ordered && joined && new;
    }

    /// The tag of a pure candidate whose decisions are all in `bucket` (0-3).
    #[inline(always)]
    pub(super) fn pure_tag(bucket: u8) -> u8 {
        (bucket & 3) | if bucket >= 2 { POSITIVE } else { 0 }
    }

    /// Makes candidate `i`, appended by [`Pile::extend_columns`] after every mixed candidate so
    /// far, a mixed one (`positive` or not) with `parts`: what [`Pile::push_parts`] keeps for a
    /// candidate whose decisions fall in several buckets (its decision count stays the one
    /// appended; its gradient column is +0.0).
    pub(super) fn set_mixed(&mut self, i: usize, positive: bool, parts: Parts) {
        debug_assert!(self.mixed.last().is_none_or(|m| m.index < i), "mixed candidates in index order");
        debug_assert!(parts.count.iter().filter(|&&c| c > 0).count() > 1, "decisions in several buckets");
        self.tag[i] = MIXED | if positive { POSITIVE } else { 0 };
        self.g[i] = 0.0;
        self.mixed.push(Mixed { index: i, parts });
    }

    /// Whether candidate `i` is positive (one of its decisions is).
    #[inline]
    pub fn positive(&self, i: usize) -> bool {
        self.tag[i] & POSITIVE != 0
    }

    /// Whether each candidate is positive, and its decisions, in order ([`Pile::positive`] and
    /// [`Pile::decisions`] of every candidate, from two columns).
    #[inline]
    pub fn positives_and_decisions(&self) -> impl Iterator<Item = (bool, u64)> + '_ {
        self.tag.iter().zip(&self.n).map(|(&tag, &n)| (tag & POSITIVE != 0, u64::from(n)))
    }

    /// The decisions, CE and gradient norm per bucket of candidate `i`.
    #[inline]
    pub fn parts(&self, i: usize) -> Parts {
        let tag = self.tag[i];
        if tag & MIXED == 0 {
            return Parts::pure(tag, self.n[i], self.ce[i], self.g[i]);
        }
        match self.mixed.binary_search_by_key(&i, |m| m.index) {
            Ok(k) => self.mixed[k].parts,
            Err(_) => Parts::default(), // not reached: every mixed candidate has its parts
        }
    }

    /// The CE per bucket of candidate `i` (its [`Parts`]' `loss`, reading no gradient).
    #[inline]
    pub fn loss(&self, i: usize) -> [f64; 4] {
        let tag = self.tag[i];
        if tag & MIXED == 0 {
            let (b, ce) = (tag & 3, self.ce[i]);
            return [0u8, 1, 2, 3].map(|k| if k == b { ce } else { 0.0 });
        }
        self.parts(i).loss
    }

    /// Shows every candidate to `v`, in order: one pass over the tag, count, CE and gradient
    /// columns, and a pure candidate's bucket as a constant, so that `v` can keep its sums per
    /// bucket in registers.
    #[inline(always)]
    pub fn visit(&self, v: &mut impl Visit) {
        let mut mixed = self.mixed.iter();
        let len = self.len();
        let (tag, n, ce, g) = (&self.tag[..len], &self.n[..len], &self.ce[..len], &self.g[..len]);
        let mut j = 0;
        while j < len {
            // The common candidate (an easy negative: all its decisions in bucket 0) in runs of
            // their own, which touch only the visitor's bucket-0 sums.
            let run = tag[j..].iter().position(|&t| t != 0).unwrap_or(len - j);
            if run > 0 {
                let at = j..j + run;
                v.easy_negatives(&n[at.clone()], &ce[at.clone()], &g[at]);
                j += run;
            }
            if j == len {
                break;
            }
            // A pure candidate is positive exactly when its bucket is (push_pure).
            match tag[j] {
                1 => v.pure::<1>(n[j], ce[j], g[j]),
                6 => v.pure::<2>(n[j], ce[j], g[j]),
                7 => v.pure::<3>(n[j], ce[j], g[j]),
                t => {
                    if let Some(m) = mixed.next() {
                        v.mixed(t & POSITIVE != 0, &m.parts);
                    }
                }
            }
            j += 1;
        }
    }

    /// The candidates, one struct each (an info that is all defaults stays one: it means the
    /// same as none).
    pub fn candidates(&self) -> Vec<Candidate> {
        (0..self.len()).map(|i| self.candidate(i)).collect()
    }

    /// Candidate `i` as a struct.
    fn candidate(&self, i: usize) -> Candidate {
        let Parts { count, loss, grad } = self.parts(i);
        Candidate {
            file: self.file[i],
            count,
            positive: self.positive(i),
            row: self.row[i],
            ce: self.ce[i],
            focal: self.focal[i],
            loss,
            grad,
            info: self.info.get(i).map(|x| Box::new(x.clone())),
        }
    }

    /// The pile of `cands` (when some carry an info and others do not, the others get the
    /// default info, which means the same as none).
    pub fn from_candidates(cands: &[Candidate]) -> Pile {
        let with_info = cands.iter().any(|c| c.info.is_some());
        let mut p = Pile::with_capacity(cands.len(), with_info);
        for c in cands {
            p.push_candidate(c);
            if with_info {
                p.info.push(c.info.as_deref().cloned().unwrap_or_default());
            }
        }
        p
    }

    /// Moves `other`'s candidates to the end of this pile.
    pub fn append(&mut self, other: &mut Pile) {
        let (a, b) = (self.len(), other.len());
        let joined = match (self.last_position(), other.file.first().copied().zip(other.row.first().copied()))
        {
            (Some(x), Some(y)) => x <= y,
            _ => true,
        };
        self.ordered = self.known_ordered() && other.known_ordered() && joined;
        match (self.info.is_empty() && a > 0, other.info.is_empty() && b > 0) {
            (false, false) => self.info.append(&mut other.info),
            (true, false) => {
                self.info.resize(a, CandidateInfo::default());
                self.info.append(&mut other.info);
            }
            (false, true) => self.info.resize(a + b, CandidateInfo::default()),
            (true, true) => {}
        }
        self.mixed.extend(other.mixed.drain(..).map(|m| Mixed { index: m.index + a, ..m }));
        self.file.append(&mut other.file);
        self.row.append(&mut other.row);
        self.tag.append(&mut other.tag);
        self.n.append(&mut other.n);
        self.ce.append(&mut other.ce);
        self.g.append(&mut other.g);
        self.focal.append(&mut other.focal);
    }

    /// Room for `n` more candidates (and their infos, when `with_info`).
    pub fn reserve(&mut self, n: usize, with_info: bool) {
        self.file.reserve(n);
        self.row.reserve(n);
        self.tag.reserve(n);
        self.n.reserve(n);
        self.ce.reserve(n);
        self.g.reserve(n);
        self.focal.reserve(n);
        if with_info {
            self.info.reserve(n);
        }
    }

    /// An image's segments as one pile in dump order (moved, not copied, when there is only
    /// one in dump order).
    pub fn join(segments: Vec<Pile>) -> Pile {
        let mut segments = segments.into_iter();
        let mut joined = segments.next().unwrap_or_default();
        let rest: Vec<Pile> = segments.collect();
        if !rest.is_empty() {
            let with_info = rest.iter().any(|s| !s.info.is_empty()) || !joined.info.is_empty();
            joined.reserve(rest.iter().map(Pile::len).sum(), with_info);
            for mut s in rest {
                joined.append(&mut s);
            }
        }
        if joined.in_dump_order() {
            joined
        } else {
            joined.sorted()
        }
    }

    /// Whether the candidates are in dump order (file, then row).
    pub fn in_dump_order(&self) -> bool {
        self.known_ordered() || Pile::positions_in_order(&self.file, &self.row)
    }

    /// Whether the positions (`file[i]`, `row[i]`) are in order.
    fn positions_in_order(file: &[u32], row: &[u64]) -> bool {
        // The usual segment holds rows of one file: then rows in order say it, from two loops
        // without an early exit, which the compiler vectorises.
        let one_file = file.first().is_none_or(|&f| file.iter().fold(true, |ok, &g| ok & (g == f)));
        if one_file {
            return row.windows(2).fold(true, |ok, w| ok & (w[0] <= w[1]));
        }
        let pos = || file.iter().zip(row);
        pos().zip(pos().skip(1)).all(|(a, b)| a <= b)
    }

    /// The pile in dump order (a stable sort: candidates at the same position keep their
    /// order).
    pub fn sorted(&self) -> Pile {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| (self.file[i], self.row[i]));
        let with_info = !self.info.is_empty();
        let mut p = Pile::with_capacity(self.len(), with_info);
        for &i in &order {
            let c = self.candidate(i);
            p.push_candidate(&c);
            if with_info {
                p.info.push(self.info[i].clone());
            }
        }
        p
    }

    /// The earliest dump position (file, row) of a candidate.
    pub fn first_position(&self) -> Option<(u32, u64)> {
        self.file.iter().copied().zip(self.row.iter().copied()).min()
    }

    /// Decisions in candidate `i`.
    #[inline]
    pub fn decisions(&self, i: usize) -> u64 {
        u64::from(self.n[i])
    }

    /// The info of candidate `i`, if the pile keeps infos.
    #[inline]
    pub fn info(&self, i: usize) -> Option<&CandidateInfo> {
        self.info.get(i)
    }

    /// The box of candidate `i` (all zeros when the dump has none).
    pub fn bbox(&self, i: usize) -> [f32; 4] {
        self.info(i).and_then(|x| x.bbox).unwrap_or([0.0; 4])
    }

    /// Whether the candidates carry box losses (all of them do, or none: the column is the
    /// dump's; the first one says).
    pub fn has_box_loss(&self) -> bool {
        self.info.first().is_some_and(|x| x.box_loss.is_some())
    }

    /// The box-regression loss of candidate `i` (0 when the dump has none).
    #[inline]
    pub fn box_loss(&self, i: usize) -> f64 {
        self.info(i).and_then(|x| x.box_loss).unwrap_or(0.0)
    }
}

/// A complete image's candidates: its segments in dump order, seen as one sequence (index `i`
/// is the `i`-th candidate of the image) without copying them into one pile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piles {
    segments: Vec<Pile>,
    /// Index of each segment's first candidate, then the number of candidates.
    starts: Vec<usize>,
}

impl Piles {
    /// The image made of `segments` (its parts in the order they were merged): in dump order
    /// as they are, which is the usual case; joined and sorted otherwise.
    pub fn new(segments: Vec<Pile>) -> Piles {
        let mut segments: Vec<Pile> = segments.into_iter().filter(|s| !s.is_empty()).collect();
        let last = |s: &Pile| (s.file[s.len() - 1], s.row[s.len() - 1]);
        let first = |s: &Pile| (s.file[0], s.row[0]);
        let ordered = segments.iter().all(Pile::in_dump_order)
            && segments.windows(2).all(|w| last(&w[0]) <= first(&w[1]));
        if !ordered {
            segments = vec![Pile::join(segments)];
        }
        let mut starts = Vec::with_capacity(segments.len() + 1);
        let mut n = 0;
        for s in &segments {
            starts.push(n);
            n += s.len();
        }
        starts.push(n);
        Piles { segments, starts }
    }

    /// Candidates in the image.
    #[inline]
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the image has no candidates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments, in dump order, with the index of their first candidate.
    pub fn segments(&self) -> impl Iterator<Item = (usize, &Pile)> {
        self.starts.iter().copied().zip(&self.segments)
    }

    /// The segment holding candidate `i`, and its index there.
    #[inline]
    pub fn at(&self, i: usize) -> (&Pile, usize) {
        let s = match self.segments.len() {
            1 => 0,
            _ => self.starts.partition_point(|&start| start <= i).saturating_sub(1),
        };
        (&self.segments[s], i - self.starts[s])
    }

    /// `(i, value(segment, j))` for every candidate `i` (the `j`-th of its segment), in dump
    /// order; only the positives or only the negatives when `positive` says so.
    pub fn values(
        &self,
        value: fn(&Pile, usize) -> f64,
        positive: Option<bool>,
    ) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.segments().flat_map(move |(start, seg)| {
            (0..seg.len())
                .filter(move |&j| positive.is_none_or(|p| seg.positive(j) == p))
                .map(move |j| (start + j, value(seg, j)))
        })
    }

    /// For a scan that keeps the hardest: calls `f(state, i, ce)` for every candidate `i` and
    /// its CE, in dump order (only the positives or only the negatives when `positive` says so;
    /// [`Piles::values`] of the CE, from one loop over each segment's columns), but four at a
    /// time, and for none of the four when every one of them is of the other side or has a CE
    /// below `floor(state)` (read before each four; a NaN floor or CE is never below). Most
    /// candidates of an image are easy and far below the hardest ones: one test for four
    /// instead of a call each.
    #[inline(always)]
    pub fn each_ce_not_below<S>(
        &self,
        positive: Option<bool>,
        state: &mut S,
        floor: impl Fn(&S) -> f64,
        mut f: impl FnMut(&mut S, usize, f64),
    ) {
        let wanted = |tag: u8| positive.is_none_or(|p| (tag & POSITIVE != 0) == p);
        for (start, seg) in self.segments() {
            let n = seg.tag.len().min(seg.ce.len());
            let (tags, ces) = (&seg.tag[..n], &seg.ce[..n]);
            let whole = n - n % 4;
            for j in (0..whole / 4).map(|q| 4 * q) {
                let b = floor(state);
                let (t, c) = (&tags[j..j + 4], &ces[j..j + 4]);
                // Not below: at or above, or either is NaN.
                let not_below = |ce: f64| (ce >= b) | ce.is_nan() | b.is_nan();
                if (0..4).fold(false, |any, l| any | (wanted(t[l]) & not_below(c[l]))) {
                    for l in 0..4 {
                        if wanted(t[l]) {
                            f(state, start + j + l, c[l]);
                        }
                    }
                }
            }
            for j in whole..n {
                if wanted(tags[j]) {
                    f(state, start + j, ces[j]);
                }
            }
        }
    }

    /// Whether the candidates carry box losses (all of them do, or none: the column is the
    /// dump's; the first one says).
    pub fn has_box_loss(&self) -> bool {
        self.segments.first().is_some_and(Pile::has_box_loss)
    }

    /// The dump position (file, row) of the first candidate.
    pub fn first_position(&self) -> Option<(u32, u64)> {
        self.segments.first().map(|s| (s.file[0], s.row[0]))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn parts_add_gives_the_bits_of_adding_to_the_bucket_alone() {
        let mut rng = crate::rng::Rng::new(5, 1);
        for decisions in [1usize, 2, 7, 80] {
            let mut parts = Parts::default();
            let (mut count, mut loss, mut grad) = ([0u16; 4], [0.0f64; 4], [0.0f64; 4]);
            for d in 0..decisions {
                let b = rng.below(4) as usize;
                // Zeros of both signs and tiny values among the CE, where an add of +0.0 to the
                // wrong sum would show.
                let ce = match d % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::MIN_POSITIVE * rng.uniform(),
                    _ => rng.uniform() * 10.0,
                };
                let g = if d % 3 == 0 { -0.0 } else { rng.uniform() };
                parts.add(b, ce, g);
                count[b] += 1;
                loss[b] += ce;
                grad[b] += g;
            }
            assert_eq!(parts.count, count);
            assert_eq!(parts.loss.map(f64::to_bits), loss.map(f64::to_bits), "{decisions} decisions");
            assert_eq!(parts.grad.map(f64::to_bits), grad.map(f64::to_bits), "{decisions} decisions");
        }
    }

    fn cand(file: u32, row: u64, with_info: bool) -> Candidate {
        Candidate {
            file,
            count: [2, 1, 0, 1],
            positive: row % 2 == 0,
            row,
            ce: 0.5 + row as f64,
            focal: 0.125 * row as f64,
            loss: [0.1, 0.2, 0.0, row as f64],
            grad: [0.3, 0.0, 0.0, 0.7],
            info: with_info.then(|| {
                Box::new(CandidateInfo {
                    bbox: Some([1.0, 2.0, 3.0, 4.0 + row as f32]),
                    anchor_id: Some(row as i64),
                    level: None,
                    label: 3,
                    class: None,
                    box_loss: Some(0.25),
                })
            }),
        }
    }

    #[test]
    fn candidates_round_trip_through_a_pile() {
        let cands: Vec<Candidate> = (0..5).map(|r| cand(1, r, true)).collect();
        let pile = Pile::from_candidates(&cands);
        assert_eq!(pile.len(), 5);
        assert_eq!(pile.candidates(), cands);
        assert_eq!(pile.decisions(0), 4);
        assert_eq!(pile.bbox(2), [1.0, 2.0, 3.0, 6.0]);
        assert_eq!(pile.box_loss(3), 0.25);
        let plain: Vec<Candidate> = (0..3).map(|r| cand(0, r, false)).collect();
        let pile = Pile::from_candidates(&plain);
        assert!(pile.info.is_empty());
        assert_eq!(pile.candidates(), plain);
        assert_eq!(pile.bbox(1), [0.0; 4]);
        assert_eq!(pile.box_loss(1), 0.0);
    }

    #[test]
    fn segments_join_in_dump_order_whatever_their_order_and_infos() {
        let a = Pile::from_candidates(&[cand(0, 4, false), cand(0, 5, false)]);
        let b = Pile::from_candidates(&[cand(0, 1, true), cand(0, 2, true)]);
        let joined = Pile::join(vec![a.clone(), b.clone()]);
        assert_eq!(joined.row, vec![1, 2, 4, 5]);
        assert!(joined.in_dump_order());
        // Candidates without an info get the default one, which reads as none.
        assert_eq!(joined.info.len(), 4);
        assert_eq!(joined.bbox(3), [0.0; 4]);
        assert_eq!(joined.info(0).and_then(|x| x.anchor_id), Some(1));
        let want: Vec<Candidate> =
            [cand(0, 1, true), cand(0, 2, true), cand(0, 4, false), cand(0, 5, false)].into();
        for (got, want) in joined.candidates().iter().zip(&want) {
            assert_eq!(
                (got.file, got.row, got.ce, got.loss, got.grad),
                (want.file, want.row, want.ce, want.loss, want.grad)
            );
        }
        assert_eq!(Pile::join(vec![b.clone()]), b);
        // Files order before rows.
        let c = Pile::from_candidates(&[cand(1, 0, false)]);
        let joined = Pile::join(vec![c, a]);
        assert_eq!(joined.file, vec![0, 0, 1]);
        assert_eq!(joined.first_position(), Some((0, 4)));
        assert_eq!(Pile::join(Vec::new()).len(), 0);
    }

    fn segment(rows: &[u64]) -> Pile {
        let mut p = Pile::with_capacity(rows.len(), false);
        for &r in rows {
            p.push_parts(0, r, r % 3 == 0, r as f64, 0.0, Parts { count: [1, 0, 0, 0], ..Parts::default() });
        }
        p
    }

    #[test]
    fn segments_in_dump_order_are_seen_as_one_sequence() {
        let piles = Piles::new(vec![segment(&[0, 1, 2]), Pile::default(), segment(&[5, 6])]);
        assert_eq!(piles.len(), 5);
        let rows: Vec<u64> = (0..5).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 2, 5, 6]);
        let all: Vec<(usize, f64)> = piles.values(|s, j| s.ce[j], None).collect();
        assert_eq!(all, vec![(0, 0.0), (1, 1.0), (2, 2.0), (3, 5.0), (4, 6.0)]);
        let pos: Vec<usize> = piles.values(|s, j| s.ce[j], Some(true)).map(|(i, _)| i).collect();
        assert_eq!(pos, vec![0, 4]);
        let neg: Vec<usize> = piles.values(|s, j| s.ce[j], Some(false)).map(|(i, _)| i).collect();
        assert_eq!(neg, vec![1, 2, 3]);
        assert_eq!(piles.first_position(), Some((0, 0)));
        assert!(Piles::new(Vec::new()).is_empty());
    }

    #[test]
    fn the_order_check_is_the_naive_one_with_one_file_or_several() {
        let mut rng = crate::rng::Rng::new(17, 0);
        for n in [0usize, 1, 2, 3, 5, 17, 64] {
            for files in [1u64, 2] {
                for _ in 0..200 {
                    let mut p = Pile::default();
                    // Mostly ascending positions, sometimes not.
                    let (mut file, mut row) = (0u32, 10u64);
                    for _ in 0..n {
                        file = (file + u32::from(rng.below(20) == 0)).min(files as u32 - 1);
                        row = match rng.below(30) {
                            0 => row.saturating_sub(1 + rng.below(3)),
                            1 => row,
                            _ => row + 1,
                        };
                        if rng.below(50) == 0 {
                            file = rng.below(files) as u32;
                        }
                        p.push_pure(file, row, 0, 1, 0.5, 0.25, 0.0);
                    }
                    let pos: Vec<(u32, u64)> = p.file.iter().copied().zip(p.row.iter().copied()).collect();
                    let naive = pos.windows(2).all(|w| w[0] <= w[1]);
                    assert_eq!(p.in_dump_order(), naive, "{pos:?}");
                    assert_eq!(Pile::positions_in_order(&p.file, &p.row), naive, "{pos:?}");
                    // Not known (as read back from a saved state): checked.
                    let unknown = Pile { ordered: false, ..p.clone() };
                    assert_eq!(unknown.in_dump_order(), naive, "{pos:?}");
                    assert_eq!(unknown, p, "equality ignores what is known");
                    // Appended in two parts, either known or not.
                    let cands = p.candidates();
                    for cut in [0, n / 3, n] {
                        let mut a = Pile::from_candidates(&cands[..cut]);
                        let mut b = Pile::from_candidates(&cands[cut..]);
                        b.ordered &= cut % 2 == 0;
                        a.append(&mut b);
                        assert_eq!(a.in_dump_order(), naive, "{pos:?} cut at {cut}");
                    }
                }
            }
        }
    }

    #[test]
    fn segments_out_of_order_are_joined_and_sorted() {
        let piles = Piles::new(vec![segment(&[5, 6]), segment(&[0, 1])]);
        assert_eq!(piles.segments().count(), 1);
        let rows: Vec<u64> = (0..4).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 5, 6]);
        // Overlapping segments too.
        let piles = Piles::new(vec![segment(&[0, 3]), segment(&[1, 4])]);
        let rows: Vec<u64> = (0..4).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 3, 4]);
    }

    /// Candidates as an image's observe makes them: mostly pure (every decision in one
    /// bucket, the sums per bucket added in decision order), some mixed, some positive.
    pub(crate) fn random_candidates(rng: &mut crate::rng::Rng, n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|row| {
                let decisions = 1 + rng.below(5) as usize;
                let label = rng.below(8); // a positive decision for 0..decisions
                let (mut count, mut loss, mut grad, mut ce) = ([0u16; 4], [0.0f64; 4], [0.0f64; 4], 0.0);
                for d in 0..decisions {
                    let positive = d as u64 == label;
                    let hard = rng.below(20) == 0;
                    let b = 2 * usize::from(positive) + usize::from(hard);
                    let (c, g) = (rng.uniform() * 3.0, rng.uniform());
                    count[b] += 1;
                    for k in 0..4 {
                        loss[k] += if k == b { c } else { 0.0 };
                        grad[k] += if k == b { g } else { 0.0 };
                    }
                    ce += c;
                }
                Candidate {
                    file: 0,
                    count,
                    positive: count[2] + count[3] > 0,
                    row: row as u64,
                    ce,
                    focal: 0.5 * ce,
                    loss,
                    grad,
                    info: None,
                }
            })
            .collect()
    }

    #[test]
    fn pure_and_mixed_candidates_give_back_their_columns_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5, 1);
        let cands = random_candidates(&mut rng, 3000);
        let pile = Pile::from_candidates(&cands);
        let mixed = pile.mixed.len();
        assert!(mixed > 100 && mixed < 2900, "both kinds are tested: {mixed} mixed");
        let bits = |c: &Candidate| {
            (c.count, c.positive, c.ce.to_bits(), c.loss.map(f64::to_bits), c.grad.map(f64::to_bits))
        };
        for (i, c) in cands.iter().enumerate() {
            assert_eq!(bits(&pile.candidate(i)), bits(c), "candidate {i}");
            assert_eq!(pile.decisions(i), c.count.iter().map(|&k| u64::from(k)).sum::<u64>());
            assert_eq!(pile.positive(i), c.positive);
        }
        // A pure candidate pushed as one reads as the same parts.
        let mut direct = Pile::with_capacity(2, false);
        direct.push_pure(0, 0, 1, 3, 2.5, 0.75, 1.0);
        direct.push_pure(0, 1, 3, 1, 0.5, 0.25, 0.0);
        assert_eq!(direct.candidates(), Pile::from_candidates(&direct.candidates()).candidates());
        assert_eq!(
            direct.parts(0),
            Parts { count: [0, 3, 0, 0], loss: [0.0, 2.5, 0.0, 0.0], grad: [0.0, 0.75, 0.0, 0.0] }
        );
        assert!(direct.positive(1) && !direct.positive(0));
        // Not pure bit for bit (a -0.0 elsewhere, a CE other than the bucket's): kept mixed.
        let mut odd = cands[0].clone();
        odd.count = [2, 0, 0, 0];
        odd.loss = [odd.ce, -0.0, 0.0, 0.0];
        let mut off = odd.clone();
        off.loss[1] = 0.0;
        off.ce = odd.ce + 1.0;
        let p = Pile::from_candidates(&[odd.clone(), off.clone()]);
        assert_eq!(p.mixed.len(), 2);
        assert_eq!(bits(&p.candidate(0)), bits(&odd));
        assert_eq!(bits(&p.candidate(1)), bits(&off));
        // Appended, joined and sorted piles keep every candidate's parts.
        let (a, b) = cands.split_at(1700);
        let mut first = Pile::from_candidates(b);
        first.append(&mut Pile::from_candidates(a));
        let sorted = first.sorted();
        for (i, c) in cands.iter().enumerate() {
            assert_eq!(bits(&sorted.candidate(i)), bits(c), "sorted candidate {i}");
        }
        assert_eq!(Pile::join(vec![Pile::from_candidates(b), Pile::from_candidates(a)]), sorted);
    }
}
