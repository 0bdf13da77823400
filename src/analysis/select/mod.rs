//! Per-image selection strategies (`ohem`, `ssd`, `sampled`), the overlaps between their
//! selections, and the hard-example export behind `hardmine mine`.
//!
//! The unit of selection is the *candidate*: an anchor of a dense dump (its C sigmoid decisions
//! move together; a softmax anchor is one decision) or a row of a binary dump. A candidate is
//! positive when one of its decisions is, and is scored by the sum of its decisions' CE.
//!
//! Selection needs all candidates of an image, so the accumulator keeps the candidates of images
//! that may still continue ("open") and finalises an image as soon as the dump has moved past it:
//! inside a row group every image but the first and the last is complete; at a merge, every open
//! image but the last one of the later part is. Rows of one image must therefore be contiguous in
//! the dump (the usual layout, sorted by image); an image found again after it was finalised is
//! an error that says how to fix the dump.
//!
//! Ties in loss are broken by dump position (file, then row): the earlier candidate ranks first.
//!
//! Each selector lives in its own file behind [`Selector`] and is listed once, in
//! `crate::vocab::strategy_list!` (`select(Type)` lines), which this module expands into
//! [`Selecting`]: the pass runs every listed selector on each complete image and computes the
//! overlaps between whatever selectors ran (see docs/architecture.md).

pub mod ohem;
pub mod pile;
pub mod sampled;
pub mod spill;
pub mod ssd;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::decisions::{ChunkRun, DecisionChunk, Focus, Meta};
use super::sum::ExactSum;
use super::BucketAcc;
use crate::config::{AnalysisConfig, StrategyKind};
use crate::input::{Batch, ImageKey, Targets};
use crate::report::{Jaccard, Overlaps, StrategyReport};
pub use pile::{Pile, Piles};

/// Rows of an image found again after the image was complete: the input is not grouped by
/// image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reappeared {
    /// The image id.
    pub image: String,
    /// File index where it reappeared.
    pub file: usize,
    /// First row of the part where it reappeared.
    pub row: u64,
}

/// One selectable unit: an anchor (dense) or a decision (binary), as the spill writes it. An
/// image's candidates are held in columns ([`Pile`]) until the image is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// File index in the dump.
    pub file: u32,
    /// Decisions per bucket (easy_negative, hard_negative, easy_positive, hard_positive).
    pub count: [u16; 4],
    /// Whether one of its decisions is positive.
    pub positive: bool,
    /// Row within the file.
    pub row: u64,
    /// CE summed over the candidate's decisions (times the binary `weight`): its score.
    pub ce: f64,
    /// Focal loss summed over its decisions.
    pub focal: f64,
    /// CE per bucket.
    pub loss: [f64; 4],
    /// CE gradient norm per bucket.
    pub grad: [f64; 4],
    /// Box and identifiers, only when NMS or an export needs them.
    pub info: Option<Box<CandidateInfo>>,
}

/// The parts of a candidate only NMS and exports need. The default (label 0, nothing else)
/// means the same as none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CandidateInfo {
    /// The box.
    pub bbox: Option<[f32; 4]>,
    /// `anchor_id`.
    pub anchor_id: Option<i64>,
    /// `level`.
    pub level: Option<i64>,
    /// Dense: the label as dumped; binary: 1 for a positive, 0 for a negative.
    pub label: i32,
    /// Binary: the `class` column.
    pub class: Option<i32>,
    /// The `box_loss` column, when the dump has one and OHEM runs.
    #[serde(default)]
    pub box_loss: Option<f64>,
}

impl Candidate {
    /// Decisions in the candidate.
    pub fn decisions(&self) -> u64 {
        self.count.iter().map(|&c| u64::from(c)).sum()
    }

    /// The box (all zeros when the dump has none).
    pub fn bbox(&self) -> [f32; 4] {
        self.info.as_ref().and_then(|i| i.bbox).unwrap_or([0.0; 4])
    }

    /// Its box-regression loss (0 when the dump has none).
    #[inline]
    pub fn box_loss(&self) -> f64 {
        self.info.as_ref().and_then(|i| i.box_loss).unwrap_or(0.0)
    }

    /// Positive decisions in the candidate.
    pub fn positive_decisions(&self) -> u64 {
        u64::from(self.count[2]) + u64::from(self.count[3])
    }
}

/// A key whose ascending order is "hardest first" (higher score first, by `f64::total_cmp`,
/// then earlier in the dump) for candidates listed in dump order: the score's bits mapped to an unsigned integer in descending `total_cmp` order, then the
/// index (which, in dump order, is the position). Sorting 16-byte keys instead of indices with
/// a comparator that reads the candidates avoids a cache miss per comparison.
#[inline]
pub fn rank_key(score: f64, index: usize) -> (u64, usize) {
    let bits = score.to_bits();
    // Ascending total order: flip every bit of negatives, only the sign bit of the rest.
    let ascending = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
    (!ascending, index)
}

/// The score whose [`rank_key`] is `key` (its inverse).
fn score_of_key(key: u64) -> f64 {
    let ascending = !key;
    f64::from_bits(if ascending >> 63 == 1 { ascending & !(1 << 63) } else { !ascending })
}

/// `scored` (index, score) ordered hardest first (ties go to the lower index).
pub fn rank(scored: impl IntoIterator<Item = (usize, f64)>) -> Vec<usize> {
    top(scored, usize::MAX)
}

/// The `m` hardest of `scored` (index, score; each index once), hardest first (ties go to the
/// lower index: indices in dump order).
pub fn top(scored: impl IntoIterator<Item = (usize, f64)>, m: usize) -> Vec<usize> {
    if m == 0 {
        return Vec::new();
    }
    let scored = scored.into_iter();
    let mut top = Top::new(m, scored.size_hint().0);
    scored.for_each(|(i, score)| top.offer(i, score));
    top.finish()
}

/// [`top`] of the candidates of `piles` (only the positives or only the negatives when
/// `positive` says so) by CE, from a loop over each segment's columns.
pub fn top_ce(piles: &Piles, positive: Option<bool>, m: usize) -> Vec<usize> {
    if m == 0 {
        return Vec::new();
    }
    let mut top = Top::new(m, piles.len());
    // A CE below the bound's score cannot be kept: its key is above the bound's (the numeric
    // order of two numbers that are not NaN is their `total_cmp` order, but for -0.0 and +0.0,
    // which `<` does not separate).
    piles.each_ce_not_below(positive, &mut top, |top| top.bound_score, |top, i, ce| top.offer(i, ce));
    top.finish()
}

/// The `m` (> 0) hardest of the scores offered, as [`top`] finds them.
struct Top {
    m: usize,
    cap: usize,
    keys: Vec<(u64, usize)>,
    bound: (u64, usize),
    /// The score of the bound's key (-inf before there is a bound: no score is below it).
    bound_score: f64,
}

impl Top {
    /// Nothing offered yet; about `hint` scores to come.
    fn new(m: usize, hint: usize) -> Top {
        debug_assert!(m > 0);
        // The keys are distinct (one index each), so the m smallest are one set whatever the
        // order they are met in. A key above the m-th smallest key seen so far cannot be among
        // them: buffer keys until `cap`, cut back to the m smallest, and from then on let in
        // only keys below the largest kept. For a small m this reads each score once and keeps
        // a few keys, instead of building and partitioning a key per candidate.
        let cap = m.saturating_mul(2).max(256);
        let keys = Vec::with_capacity(cap.min(hint));
        Top { m, cap, keys, bound: (u64::MAX, usize::MAX), bound_score: f64::NEG_INFINITY }
    }

    /// Offers candidate `i` with `score`.
    #[inline(always)]
    fn offer(&mut self, i: usize, score: f64) {
        let k = rank_key(score, i);
        // The order of the keys, with the common case (a score below the bound's) first.
        if k.0 > self.bound.0 || (k.0 == self.bound.0 && k.1 > self.bound.1) {
            return;
        }
        self.keys.push(k);
        if self.keys.len() == self.cap {
            let m = self.m;
            self.keys.select_nth_unstable(m - 1);
            self.keys.truncate(m);
            self.bound = self.keys[m - 1];
            self.bound_score = score_of_key(self.bound.0);
        }
    }

    /// The m hardest offered, hardest first.
    fn finish(self) -> Vec<usize> {
        let (m, mut keys) = (self.m, self.keys);
        if m < keys.len() {
            keys.select_nth_unstable(m - 1);
            keys.truncate(m);
        }
        keys.sort_unstable();
        keys.into_iter().map(|(_, i)| i).collect()
    }
}

/// An image's candidates split into positives (indices) and negatives (the others), with its
/// decisions per bucket, from one scan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Positive candidates, in order.
    pub pos: Vec<usize>,
    /// Negative candidates: every candidate not in `pos` (not listed: almost every candidate
    /// is one; [`Split::negatives`] finds them by rank).
    pub n_neg: usize,
    /// Decisions per bucket.
    pub counts: [u64; 4],
    /// The sampling strata's sums, when asked for ([`Split::with_strata`]).
    pub strata: Option<sampled::Strata>,
}

impl Split {
    /// The split of `piles`.
    pub fn of(piles: &Piles) -> Split {
        Split::scan(piles, false)
    }

    /// The split of `piles` and the sums of its sampling strata, in the same scan (an image's
    /// candidates do not fit in cache: every scan is a trip to memory).
    pub fn with_strata(piles: &Piles) -> Split {
        Split::scan(piles, true)
    }

    #[inline(always)]
    fn scan(piles: &Piles, with_strata: bool) -> Split {
        let mut pos = Vec::new();
        let (index, counts, strata) = if with_strata {
            let mut scan = Scan::<true>::new(&mut pos);
            for (_, pile) in piles.segments() {
                pile.visit(&mut scan);
            }
            let strata = sampled::Strata::of(&scan.negatives, &scan.positives);
            (scan.index, scan.counts, Some(strata))
        } else {
            let mut scan = Scan::<false>::new(&mut pos);
            for (_, pile) in piles.segments() {
                pile.visit(&mut scan);
            }
            (scan.index, scan.counts, None)
        };
        Split { n_neg: index - pos.len(), pos, counts, strata }
    }
}

impl Split {
    /// The indices of the negatives of ascending ranks `ranks` (rank j: the (j+1)-th negative
    /// in order), in order.
    pub fn negatives<'a, R: IntoIterator<Item = usize> + 'a>(
        &'a self,
        ranks: R,
    ) -> impl Iterator<Item = usize> + 'a {
        // The negative of rank j is candidate j + q, q the positives before it: the first q
        // with pos[q] > j + q (pos[q] - q, the negatives before positive q, never decreases as
        // q grows, so q only moves forward for ascending ranks).
        let mut q = 0;
        ranks.into_iter().map(move |j| {
            while q < self.pos.len() && self.pos[q] <= j + q {
                q += 1;
            }
            j + q
        })
    }
}

/// The scan behind [`Split`]: candidate after candidate, the positives' indices, the
/// decisions per bucket, and (`STRATA`) each stratum's sums apart. The sums are plain values
/// of a struct that holds no vector (the positives' list is borrowed), so that the compiler
/// keeps them in registers instead of loading and storing each one per candidate.
struct Scan<'p, const STRATA: bool> {
    pos: &'p mut Vec<usize>,
    index: usize,
    counts: [u64; 4],
    negatives: sampled::Stratum,
    positives: sampled::Stratum,
}

impl<'p, const STRATA: bool> Scan<'p, STRATA> {
    fn new(pos: &'p mut Vec<usize>) -> Self {
        Scan {
            pos,
            index: 0,
            counts: [0; 4],
            negatives: sampled::Stratum::default(),
            positives: sampled::Stratum::default(),
        }
    }

    #[inline(always)]
    fn place(&mut self, positive: bool) {
        if positive {
            self.pos.push(self.index);
        }
        self.index += 1;
    }
}

impl<const STRATA: bool> pile::Visit for Scan<'_, STRATA> {
    #[inline(always)]
    fn pure<const B: usize>(&mut self, n: u16, ce: f64, g: f64) {
        self.place(B >= 2);
        self.counts[B] += u64::from(n);
        if STRATA {
            let stratum = if B >= 2 { &mut self.positives } else { &mut self.negatives };
            stratum.add_pure::<B>(n, ce, g);
        }
    }

    /// The sums of the run's stratum and count in locals (the same adds in the same order as
    /// [`Scan::pure`]'s).
    #[inline(always)]
    fn easy_negatives(&mut self, n: &[u16], ce: &[f64], g: &[f64]) {
        self.index += n.len();
        let mut decisions = self.counts[0];
        if !STRATA {
            for &k in n {
                decisions += u64::from(k);
            }
            self.counts[0] = decisions;
            return;
        }
        let s = &mut self.negatives;
        let (mut count, mut loss, mut grad) = (s.count[0], s.loss[0], s.grad[0]);
        for ((&k, &ce), &g) in n.iter().zip(ce).zip(g) {
            decisions += u64::from(k);
            count += f64::from(k);
            loss += ce;
            grad += g;
        }
        (self.counts[0], s.count[0], s.loss[0], s.grad[0]) = (decisions, count, loss, grad);
        s.n += n.len();
    }

    #[inline(always)]
    fn mixed(&mut self, positive: bool, parts: &pile::Parts) {
        self.place(positive);
        for (n, &k) in self.counts.iter_mut().zip(&parts.count) {
            *n += u64::from(k);
        }
        if STRATA {
            let stratum = if positive { &mut self.positives } else { &mut self.negatives };
            stratum.add(&parts.count, &parts.loss, &parts.grad);
        }
    }
}

/// Which strategy `hardmine mine` exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MineStrategy {
    /// The OHEM top-k.
    Ohem,
    /// SSD's positives and mined negatives.
    Ssd,
    /// One seeded draw of the sampler (the first of `--draws`).
    Sampled,
    /// The candidates with the highest focal loss.
    Focal,
}

impl MineStrategy {
    /// The selector whose selection is exported (`None` for `focal`: every candidate, ranked by
    /// focal loss).
    pub fn selector(self) -> Option<StrategyKind> {
        match self {
            MineStrategy::Ohem => Some(StrategyKind::Ohem),
            MineStrategy::Ssd => Some(StrategyKind::Ssd),
            MineStrategy::Sampled => Some(StrategyKind::Sampled),
            MineStrategy::Focal => None,
        }
    }

    /// Its name in exports.
    pub fn name(self) -> &'static str {
        match self {
            MineStrategy::Ohem => "ohem",
            MineStrategy::Ssd => "ssd",
            MineStrategy::Sampled => "sampled",
            MineStrategy::Focal => "focal",
        }
    }
}

/// What to export, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MineSpec {
    /// The strategy whose selection is exported.
    pub strategy: MineStrategy,
    /// At most this many rows per image, the hardest first.
    pub top: Option<usize>,
}

/// One exported hard example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportRow {
    /// The image.
    pub image: ImageKey,
    /// File index in the dump.
    pub file: u32,
    /// Row within the file.
    pub row: u64,
    /// `anchor_id`, if the dump has one.
    pub anchor_id: Option<i64>,
    /// `level`, if the dump has one.
    pub level: Option<i64>,
    /// Dense label, or 1/0 for binary positives/negatives.
    pub label: i32,
    /// Binary `class`.
    pub class: Option<i32>,
    /// The strategy's loss of the candidate (CE; OHEM's ranking loss, CE + box loss, when the
    /// dump has a `box_loss` column; the focal loss for `focal`).
    pub loss: f64,
    /// 1-based rank within the image, hardest first.
    pub rank: u32,
    /// The candidate's weight: 1, or the focal weight alpha_t (1 - p_t)^gamma (for an anchor of
    /// several decisions, focal loss / CE).
    pub weight: f64,
}

/// The settings the selection strategies need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// The selectors that run, in list order (`StrategyKind::ALL`), whatever order the
    /// strategies were requested in: the overlaps' pairs follow it.
    pub selectors: Vec<Selecting>,
    /// The analysis's focal gamma and alpha (the candidates' focal loss: the focal mass inside
    /// the OHEM selection, and focal exports).
    pub focus: Focus,
    /// The export, if any.
    pub mine: Option<MineSpec>,
}

impl SelectConfig {
    /// The selection part of an analysis config, or `None` when no selection strategy is asked.
    pub fn from_config(config: &AnalysisConfig, mine: Option<MineSpec>) -> Option<SelectConfig> {
        let selectors: Vec<Selecting> = StrategyKind::ALL
            .iter()
            .filter(|&&k| config.has(k))
            .filter_map(|&k| Selecting::of(k, config))
            .collect();
        assert!(selectors.len() <= 32, "selection membership is a 32-bit mask");
        (!selectors.is_empty() || mine.is_some()).then(|| SelectConfig {
            selectors,
            focus: Focus { gamma: config.gamma(), alpha: config.alpha() },
            mine,
        })
    }

    /// Per-selector totals, empty.
    fn empty_totals(&self) -> SelectTotals {
        SelectTotals {
            per: self.selectors.iter().map(Selecting::empty_totals).collect(),
            overlap: OverlapSums::new(self.selectors.len()),
            ..SelectTotals::default()
        }
    }
}

/// One complete image, as every selector sees it.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    /// Its id.
    pub key: &'a ImageKey,
    /// Its candidates, in dump order.
    pub pile: &'a Piles,
    /// Their split into positives and negatives, and the decisions per bucket.
    pub split: &'a Split,
    /// max(1, positive decisions of the image): the normaliser of its selected loss.
    pub norm: f64,
}

/// What a selector kept of an image.
#[derive(Clone, Debug, PartialEq)]
pub enum Kept {
    /// These candidates (indices into the image's), each once.
    These(Vec<usize>),
    /// Each positive candidate with probability `p_pos` and each negative with `p_neg` (a
    /// sampler's expectation).
    Each {
        /// Inclusion probability of a positive candidate.
        p_pos: f64,
        /// Inclusion probability of a negative candidate.
        p_neg: f64,
    },
}

impl Kept {
    /// The probability that a candidate (`positive` or not) is kept; `member` holds bit `s`
    /// for the candidates selector `s` kept, when it keeps [`Kept::These`].
    #[inline]
    fn inclusion(&self, positive: bool, member: u32, s: usize) -> f64 {
        match self {
            Kept::These(_) => f64::from((member >> s) & 1),
            Kept::Each { p_pos, p_neg } => {
                if positive {
                    *p_pos
                } else {
                    *p_neg
                }
            }
        }
    }
}

/// A per-image selection strategy: what it keeps of each complete image, its totals over the
/// images, and its report entry. Its parameters are validated in [`crate::config`].
pub trait Selector: Sized {
    /// The selector's sums over images.
    type Totals: Clone + std::fmt::Debug + Default + PartialEq + Serialize + for<'de> Deserialize<'de> + Send;

    /// The selector with its settings from the validated analysis settings.
    fn from_config(config: &AnalysisConfig) -> Self;

    /// Whether its image scan needs the sampling strata ([`Split::with_strata`]).
    fn needs_strata(&self) -> bool {
        false
    }

    /// Selects from one complete image and adds the image to `totals`.
    fn select(&self, image: &Image<'_>, totals: &mut Self::Totals) -> Kept;

    /// The candidates `hardmine mine` exports for the image, given what [`Selector::select`]
    /// kept (the default: the kept candidates, or none for a probabilistic selection).
    fn export(&self, _image: &Image<'_>, kept: Kept) -> Vec<usize> {
        match kept {
            Kept::These(v) => v,
            Kept::Each { .. } => Vec::new(),
        }
    }

    /// Adds another part's totals.
    fn merge(totals: &mut Self::Totals, other: &Self::Totals);

    /// The report entry. `images` counts every image of the dump (the normaliser's mean runs
    /// over all of them) and `positives` its positive decisions.
    fn report(&self, totals: &Self::Totals, images: u64, positives: u64) -> StrategyReport;
}

/// Expands the strategy list into [`Selecting`] and [`SelectorTotals`], keeping the
/// `select(..)` lines.
macro_rules! define_selectors {
    (@keep [$($out:tt)*]) => {
        define_selectors!(@emit $($out)*);
    };
    (@keep [$($out:tt)*] $(#[$doc:meta])* $variant:ident $name:literal $default:ident $act:ident
        select($($ty:tt)*), $($rest:tt)*) => {
        define_selectors!(@keep [$($out)* $variant($($ty)*)] $($rest)*);
    };
    (@keep [$($out:tt)*] $(#[$doc:meta])* $variant:ident $name:literal $default:ident $act:ident
        $family:ident $(($($ty:tt)*))?, $($rest:tt)*) => {
        define_selectors!(@keep [$($out)*] $($rest)*);
    };
    (@emit $($variant:ident($ty:ty))*) => {
        /// One selector with its settings (the `select(..)` lines of the list).
        #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Selecting {
            $(
                #[doc = concat!("`", stringify!($ty), "`.")]
                $variant($ty),
            )*
        }

        /// One selector's totals.
        // A few per pass (one per selector and part): their size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum SelectorTotals {
            $(
                #[doc = concat!("Of `", stringify!($ty), "`.")]
                $variant(<$ty as Selector>::Totals),
            )*
        }

        impl Selecting {
            /// The selector `kind` with its settings from `config`, if `kind` is one.
            pub fn of(kind: StrategyKind, config: &AnalysisConfig) -> Option<Selecting> {
                match kind {
                    $(StrategyKind::$variant => Some(Selecting::$variant(<$ty>::from_config(config))),)*
                    _ => None,
                }
            }

            /// Which strategy this is.
            pub fn kind(&self) -> StrategyKind {
                match self {
                    $(Selecting::$variant(_) => StrategyKind::$variant,)*
                }
            }

            /// See [`Selector::needs_strata`].
            pub fn needs_strata(&self) -> bool {
                match self {
                    $(Selecting::$variant(s) => s.needs_strata(),)*
                }
            }

            /// Empty totals of this selector.
            pub fn empty_totals(&self) -> SelectorTotals {
                match self {
                    $(Selecting::$variant(_) => SelectorTotals::$variant(Default::default()),)*
                }
            }

            /// See [`Selector::select`]; `totals` must be this selector's.
            pub fn select(&self, image: &Image<'_>, totals: &mut SelectorTotals) -> Kept {
                match (self, totals) {
                    $((Selecting::$variant(s), SelectorTotals::$variant(t)) => s.select(image, t),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("totals are made by the selector they belong to"),
                }
            }

            /// See [`Selector::export`].
            pub fn export(&self, image: &Image<'_>, kept: Kept) -> Vec<usize> {
                match self {
                    $(Selecting::$variant(s) => s.export(image, kept),)*
                }
            }

            /// See [`Selector::report`]; `totals` must be this selector's.
            pub fn report(&self, totals: &SelectorTotals, images: u64, positives: u64) -> StrategyReport {
                match (self, totals) {
                    $((Selecting::$variant(s), SelectorTotals::$variant(t)) => s.report(t, images, positives),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("totals are made by the selector they belong to"),
                }
            }
        }

        impl SelectorTotals {
            /// Adds another part's totals of the same selector.
            pub fn merge(&mut self, other: &SelectorTotals) {
                match (self, other) {
                    $((SelectorTotals::$variant(a), SelectorTotals::$variant(b)) => <$ty as Selector>::merge(a, b),)*
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("parts of one run hold the same selectors in the same order"),
                }
            }
        }
    };
    ($($lines:tt)*) => {
        define_selectors!(@keep [] $($lines)*);
    };
}

crate::vocab::strategy_list!(define_selectors);

/// Totals of one selection strategy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    /// Per bucket: all decisions (`count`) and the selected ones (`selected`, `loss`, `grad`).
    pub buckets: [BucketAcc; 4],
    /// Sum over images of the selected loss / max(1, positives in the image).
    pub normalized: ExactSum,
}

impl Chosen {
    /// Adds an image's decisions per bucket ([`Split::counts`]) to the bucket counts.
    pub fn count_all(&mut self, counts: &[u64; 4]) {
        for (b, &n) in self.buckets.iter_mut().zip(counts) {
            b.count += n;
        }
    }

    /// Adds candidate `i` of `piles` with selection weight `w`; returns its weighted CE.
    pub fn select(&mut self, piles: &Piles, i: usize, w: f64) -> f64 {
        let (pile, i) = piles.at(i);
        let pile::Parts { count, loss, grad } = pile.parts(i);
        for (b, bucket) in self.buckets.iter_mut().enumerate() {
            bucket.selected += w * f64::from(count[b]);
            bucket.loss += w * loss[b];
            bucket.grad += w * grad[b];
        }
        w * pile.ce[i]
    }

    /// Adds `image` whose selected candidates are `sel` (weight 1); returns them as kept.
    pub fn take(&mut self, image: &Image<'_>, sel: Vec<usize>) -> Kept {
        self.count_all(&image.split.counts);
        let mut loss = ExactSum::ZERO;
        for &i in &sel {
            loss += self.select(image.pile, i, 1.0);
        }
        self.normalized += loss.value() / image.norm;
        Kept::These(sel)
    }

    /// The normalised loss: the mean over `images` of each image's selected loss / its
    /// normaliser.
    pub fn mean(&self, images: u64) -> f64 {
        self.normalized.value() / images.max(1) as f64
    }

    /// Adds another part's totals.
    pub fn merge(&mut self, o: &Chosen) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.merge(b);
        }
        self.normalized += o.normalized;
    }
}

/// Sums behind the Jaccard indices between selections (decision-weighted; a sampler's selection
/// counts with its inclusion probabilities, a fuzzy Jaccard: sum of min / sum of max).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OverlapSums {
    /// Per pair of selectors (a, b), a < b in the config's order: intersection, union.
    pub pairs: Vec<[ExactSum; 2]>,
    /// Focal loss of the OHEM selection, and of everything.
    pub focal_in_ohem: [ExactSum; 2],
}

/// The pairs (a, b), a < b, of `n` selectors, in order.
fn pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect()
}

impl OverlapSums {
    fn new(selectors: usize) -> OverlapSums {
        OverlapSums { pairs: vec![[ExactSum::ZERO; 2]; pairs(selectors).len()], ..OverlapSums::default() }
    }

    fn merge(&mut self, o: &OverlapSums) {
        debug_assert_eq!(self.pairs.len(), o.pairs.len(), "parts of one run hold the same selectors");
        for (a, b) in self
            .pairs
            .iter_mut()
            .chain([&mut self.focal_in_ohem])
            .zip(o.pairs.iter().chain([&o.focal_in_ohem]))
        {
            a[0] += b[0];
            a[1] += b[1];
        }
    }
}

/// Everything finalised images contributed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectTotals {
    /// Per selector, in the config's order.
    pub per: Vec<SelectorTotals>,
    /// Overlaps.
    pub overlap: OverlapSums,
    /// Images finalised.
    pub images: u64,
    /// Exported rows not yet drained, by the dump position (file, row) of the image's first row,
    /// so that rows leave in dump order whatever order images were finalised in.
    #[serde(with = "crate::analysis::pairs")]
    pub export: BTreeMap<(u32, u64), Vec<ExportRow>>,
}

impl SelectTotals {
    fn merge(&mut self, mut o: SelectTotals) {
        debug_assert_eq!(self.per.len(), o.per.len(), "parts of one run hold the same selectors");
        for (a, b) in self.per.iter_mut().zip(&o.per) {
            a.merge(b);
        }
        self.overlap.merge(&o.overlap);
        self.images += o.images;
        self.export.append(&mut o.export);
    }
}

/// The per-image selection accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectAcc {
    config: SelectConfig,
    /// Candidates of images that may continue, by image, in segments (one per part, so that
    /// merging moves no candidates).
    #[serde(with = "crate::analysis::pairs")]
    open: BTreeMap<ImageKey, Vec<Pile>>,
    /// Complete images waiting to be finalised, in dump order.
    ready: Vec<(ImageKey, Vec<Pile>)>,
    /// Images already complete (to detect rows of one image in two places).
    done: BTreeSet<ImageKey>,
    /// The first and last image seen, in dump order.
    first: Option<ImageKey>,
    last: Option<ImageKey>,
    /// Where this part starts (file index, row), for error messages.
    origin: Option<(usize, u64)>,
    /// Images may be anywhere in the dump: keep every candidate for the spill (see [`spill`]).
    #[serde(default)]
    partitioned: bool,
    /// This part starts at the beginning of the dump, so its first image cannot continue
    /// leftwards. Parts that do not (the driver's per-unit parts) keep their first image open,
    /// which makes merging associative: `(a + b) + c == a + (b + c)` for consecutive parts.
    #[serde(default)]
    starts_dump: bool,
    /// Results of finalised images.
    pub totals: SelectTotals,
}

impl SelectAcc {
    /// An empty accumulator.
    pub fn new(config: SelectConfig) -> SelectAcc {
        SelectAcc {
            open: BTreeMap::new(),
            ready: Vec::new(),
            done: BTreeSet::new(),
            first: None,
            last: None,
            origin: None,
            partitioned: false,
            starts_dump: false,
            totals: config.empty_totals(),
            config,
        }
    }

    /// Keeps every candidate until [`SelectAcc::take_open`] moves it to the spill, instead of
    /// finalising images as the dump moves past them.
    pub fn set_partitioned(&mut self) {
        self.partitioned = true;
    }

    /// Marks this (empty) accumulator as the one that starts at the beginning of the dump: the
    /// parts merged into it, in order, finalise every image but the last as soon as it is
    /// complete.
    pub fn set_starts_dump(&mut self) {
        self.starts_dump = true;
    }

    /// Takes every open image's candidates (partitioned mode: they go to the spill).
    pub fn take_open(&mut self) -> Vec<(ImageKey, Vec<Candidate>)> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(k, segments)| (k, segments.iter().flat_map(Pile::candidates).collect()))
            .collect()
    }

    /// Finalises complete images read back from the spill.
    pub fn finalize_groups(&mut self, groups: Vec<(ImageKey, Vec<Candidate>)>) {
        self.ready.extend(groups.into_iter().map(|(k, c)| (k, vec![Pile::from_candidates(&c)])));
        self.finalize_ready();
    }

    /// The settings.
    pub fn config(&self) -> &SelectConfig {
        &self.config
    }

    /// Notes the batch's position and image order.
    pub fn observe_batch(&mut self, batch: &Batch) {
        if self.origin.is_none() {
            self.origin = Some((batch.file, batch.first_row));
        }
        if let (None, Some(r)) = (&self.first, batch.images.first()) {
            self.first = Some(r.key.clone());
        }
        if let Some(r) = batch.images.last() {
            self.last = Some(r.key.clone());
        }
        // Every image strictly inside the batch's sequence of runs is complete once the batch
        // is observed; it is moved to `ready` by `settle`.
    }

    /// Builds the candidates of a chunk.
    pub fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        let batch = chunk.batch;
        let focus = self.config.focus;
        let pre = chunk.terms.focal_for(focus);
        let with_info = batch.boxes.is_some() || batch.box_loss.is_some() || self.config.mine.is_some();
        let (decisions, meta, ce_grad) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let dense = chunk.dense_width() == Some(batch.width());
        for run in chunk.runs {
            let key = &batch.images[run.image].key;
            let segments = match self.open.get_mut(key) {
                Some(l) => l,
                None => {
                    // At most one candidate per row of the image in this batch: no regrowth.
                    let image = &batch.images[run.image];
                    let rows = image.end - image.start;
                    self.open.entry(key.clone()).or_insert_with(|| vec![Pile::with_capacity(rows, with_info)])
                }
            };
            let pile = segments.last_mut().expect("segments are never empty");
            let fill = Fill { chunk, run, with_info, dense };
            // Without a weight column every weight is 1: the products by it are the values
            // themselves, bit for bit, and are skipped.
            match (batch.weight.is_some(), pre) {
                (false, Some(focal)) => {
                    // Whole dense rows column by column, then the rest (if any) one by one.
                    let start = if with_info { run.start } else { fill.whole_rows(pile, focal) };
                    fill.pile(pile, start, |k| (decisions.ce[k], ce_grad[k], focal[k]))
                }
                _ => fill.pile(pile, run.start, |k| {
                    let (d, w) = (decisions.get(k), meta[k].weight(batch.weight.as_deref()));
                    let focal = pre.map_or_else(|| d.focal(focus.gamma, focus.alpha), |v| v[k]);
                    (d.ce * w, ce_grad[k] * w, focal * w)
                }),
            }
        }
    }

    /// Moves every open image except the first and last seen to `ready` (used inside one row
    /// group, where those two may continue in the neighbouring row groups).
    pub fn settle_interior(&mut self) -> Result<(), Reappeared> {
        if self.partitioned {
            return Ok(());
        }
        let keep: Vec<ImageKey> = self.first.iter().chain(self.last.iter()).cloned().collect();
        self.settle(&keep)
    }

    fn settle(&mut self, keep: &[ImageKey]) -> Result<(), Reappeared> {
        let complete: Vec<ImageKey> = self.open.keys().filter(|k| !keep.contains(k)).cloned().collect();
        for k in complete {
            let cands = self.open.remove(&k).unwrap_or_default();
            if !self.done.insert(k.clone()) {
                return Err(self.unsorted(&k));
            }
            self.ready.push((k, cands));
        }
        Ok(())
    }

    fn unsorted(&self, key: &ImageKey) -> Reappeared {
        let (file, row) = self.origin.unwrap_or((0, 0));
        Reappeared { image: key.to_string(), file, row }
    }

    /// Absorbs the next part of the dump (in dump order), then readies every image that cannot
    /// continue.
    pub fn merge(&mut self, mut other: SelectAcc) -> Result<(), Reappeared> {
        for k in other.open.keys().chain(other.done.iter()) {
            if self.done.contains(k) {
                return Err(other.unsorted(k));
            }
        }
        for k in &other.done {
            if self.open.contains_key(k) {
                return Err(other.unsorted(k));
            }
        }
        for (k, mut v) in std::mem::take(&mut other.open) {
            self.open.entry(k).or_default().append(&mut v);
        }
        self.ready.append(&mut other.ready);
        self.done.append(&mut other.done);
        self.totals.merge(std::mem::take(&mut other.totals));
        if self.first.is_none() {
            self.first = other.first.take();
        }
        if other.last.is_some() {
            self.last = other.last.take();
        }
        if self.origin.is_none() {
            self.origin = other.origin;
        }
        let keep: Vec<ImageKey> = if self.starts_dump {
            self.last.iter().cloned().collect()
        } else {
            self.first.iter().chain(self.last.iter()).cloned().collect()
        };
        self.settle(&keep)
    }

    /// Finalises the ready images, in parallel, adding their results in dump order.
    pub fn finalize_ready(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let config = &self.config;
        let results: Vec<SelectTotals> =
            ready.into_par_iter().map(|(key, segments)| finalize_image(config, key, segments)).collect();
        for r in results {
            self.totals.merge(r);
        }
    }

    /// Readies and finalises every remaining image (at the end of the pass).
    pub fn finish_all(&mut self) -> Result<(), Reappeared> {
        self.settle(&[])?;
        self.finalize_ready();
        Ok(())
    }

    /// Takes the exported rows of every finalised image that comes, in dump order, before all
    /// images still open or waiting; call after [`SelectAcc::finalize_ready`].
    pub fn drain_export(&mut self) -> Vec<ExportRow> {
        let first = |segments: &Vec<Pile>| segments.iter().filter_map(Pile::first_position).min();
        let watermark = self.open.values().chain(self.ready.iter().map(|(_, s)| s)).filter_map(first).min();
        let later = match watermark {
            Some(w) => self.totals.export.split_off(&w),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut self.totals.export, later);
        done.into_values().flatten().collect()
    }
}

/// The candidates of one image run of a chunk.
struct Fill<'c, 'a> {
    chunk: &'c DecisionChunk<'a>,
    run: &'c ChunkRun,
    with_info: bool,
    /// The chunk is dense sigmoid ([`DecisionChunk::dense_width`] is the batch's width): every
    /// row of the run is whole.
    dense: bool,
}

impl Fill<'_, '_> {
    /// Adds the run's candidates from decision `start` on to `pile`; `terms(k)` gives decision
    /// `k`'s weighted CE, CE gradient norm and focal loss.
    #[inline(always)]
    fn pile(&self, pile: &mut Pile, start: usize, terms: impl Fn(usize) -> (f64, f64, f64)) {
        let (batch, meta, run) = (self.chunk.batch, self.chunk.meta, self.run);
        let (file, width) = (batch.file as u32, batch.width());
        let mut i = start;
        while i < run.end {
            let first = i;
            let row = meta[first].row;
            let r = row as usize;
            if self.with_info {
                pile.info.push(info(batch, r));
            }
            // The candidate's decisions: a dense sigmoid row's `width` (its last one is of the
            // row and the next one is not: a row has at most `width`), else found one by one.
            let whole_row = width > 1
                && first + width <= run.end
                && meta[first + width - 1].row == row
                && (first + width == run.end || meta[first + width].row != row);
            let end = if whole_row {
                first + width
            } else {
                let mut end = first + 1;
                while end < run.end && meta[end].row == row {
                    end += 1;
                }
                end
            };
            i = end;
            // Its sums over its decisions, and the buckets they fall in (a bit each).
            let (mut ce, mut g, mut focal, mut buckets) = (0.0f64, 0.0f64, 0.0f64, 0u32);
            for (k, m) in (first..end).zip(&meta[first..end]) {
                let (c, gk, f) = terms(k);
                ce += c;
                g += gk;
                focal += f;
                buckets |= 1 << (m.bucket as u32);
            }
            // At most u16::MAX decisions per candidate: the width is checked.
            let n = (end - first) as u16;
            if buckets.is_power_of_two() {
                // All in one bucket: its sums there are `ce` and `g` (the same values added in
                // the same order), zeros elsewhere.
                let bucket = buckets.trailing_zeros() as u8;
                pile.push_pure(file, batch.file_row(r), bucket, n, ce, g, focal);
                continue;
            }
            // An anchor with decisions in several buckets: its sums per bucket, in decision
            // order again.
            let mut parts = pile::Parts::default();
            for (k, m) in (first..end).zip(&meta[first..end]) {
                let (c, gk, _) = terms(k);
                parts.add(m.bucket as usize, c, gk);
            }
            let positive = buckets & 0b1100 != 0;
            pile.push_parts(file, batch.file_row(r), positive, ce, focal, parts);
        }
    }
}

impl Fill<'_, '_> {
    /// Adds the candidates of the whole dense rows at the start of the run (every decision of
    /// weight 1, `focal` the decisions' focal losses, no infos), column by column, and returns
    /// where the rest of the run starts. The same candidates with the same bits as
    /// [`Fill::pile`]: a row is whole on the same test, and each sum adds the row's values in
    /// decision order from +0.0.
    fn whole_rows(&self, pile: &mut Pile, focal: &[f64]) -> usize {
        // The common widths as constants: each row's sums unrolled.
        match self.chunk.batch.width() {
            0 | 1 => self.run.start,
            2 => self.whole_rows_of::<2>(pile, focal, 2),
            3 => self.whole_rows_of::<3>(pile, focal, 3),
            4 => self.whole_rows_of::<4>(pile, focal, 4),
            5 => self.whole_rows_of::<5>(pile, focal, 5),
            6 => self.whole_rows_of::<6>(pile, focal, 6),
            8 => self.whole_rows_of::<8>(pile, focal, 8),
            w => self.whole_rows_of::<0>(pile, focal, w),
        }
    }

    /// [`Fill::whole_rows`] for rows of `width` decisions (`W` when it is not 0).
    #[inline(always)]
    fn whole_rows_of<const W: usize>(&self, pile: &mut Pile, focal: &[f64], width: usize) -> usize {
        let w = if W > 0 { W } else { width };
        let (chunk, run) = (self.chunk, self.run);
        let batch = chunk.batch;
        // The whole rows at the start: [`Fill::pile`]'s test (a row's last decision is of the
        // row and the next one is not), row after row.
        let meta = &chunk.meta[run.start..run.end];
        let mut at = 0;
        if self.dense {
            // Every row is whole (the test below passes at every row): no need to look.
            debug_assert_eq!(meta.len() % w, 0);
            at = meta.len();
        }
        while at + w <= meta.len() {
            let row = meta[at].row;
            if meta[at + w - 1].row != row || meta.get(at + w).is_some_and(|m| m.row == row) {
                break;
            }
            at += w;
        }
        if at == 0 {
            return run.start;
        }
        let end = run.start + at;
        let (meta, ces) = (&meta[..at], &chunk.decisions.ce[run.start..end]);
        let (ce_grad, focal) = (&chunk.terms.ce_grad[run.start..end], &focal[run.start..end]);
        let rows = at / w;
        let first = pile.len();
        let mut mixed = Vec::new();
        pile.extend_columns(|c| {
            c.file.resize(first + rows, batch.file as u32);
            match &batch.row_index {
                Some(ix) => c.row.extend(meta.chunks_exact(w).map(|m| ix[m[0].row as usize])),
                None => c.row.extend(meta.chunks_exact(w).map(|m| batch.first_row + u64::from(m[0].row))),
            }
            // At most u16::MAX decisions per candidate: the width is checked.
            c.n.resize(first + rows, w as u16);
            row_sums::<W>(ces, w, c.ce);
            row_sums::<W>(ce_grad, w, c.g);
            row_sums::<W>(focal, w, c.focal);
            // Written in place (a push per row stored the length each time).
            c.tag.resize(first + rows, 0);
            let tags = &mut c.tag[first..];
            row_buckets::<W>(meta, w, |j, buckets| {
                if !buckets.is_power_of_two() {
                    mixed.push((j, buckets));
                }
                tags[j] = Pile::pure_tag(buckets.trailing_zeros() as u8);
            });
        });
        // An anchor with decisions in several buckets (a positive, or a negative with a hard
        // class: a third of the anchors of 80 classes): its sums per bucket, in decision order
        // again.
        for (j, buckets) in mixed {
            let at = j * w..(j + 1) * w;
            let of = meta[at.clone()].iter().map(|m| m.bucket as usize);
            let parts = pile::Parts::of(of, &ces[at.clone()], &ce_grad[at]);
            pile.set_mixed(first + j, buckets & 0b1100 != 0, parts);
        }
        end
    }
}

/// Appends to `out` the sum of each row of `values`, rows of `width` decisions (`W` when it is
/// not 0; `values` holds whole rows), each from +0.0 in decision order: what [`Fill::pile`]
/// adds. A width known at compile time unrolls each row's adds; any other width sums eight
/// rows side by side, so that their chains of dependent adds overlap (one row at a time, a wide
/// row waits on the latency of each add in turn).
#[inline(always)]
fn row_sums<const W: usize>(values: &[f64], width: usize, out: &mut Vec<f64>) {
    let sum = |values: &[f64]| values.iter().fold(0.0f64, |s, &v| s + v);
    if W > 0 {
        out.extend(values.chunks_exact(W).map(sum));
        return;
    }
    debug_assert!(width > 0 && values.len() % width == 0, "whole rows");
    out.reserve(values.len() / width);
    // Eight rows side by side: eight chains keep two adders busy at a latency of four cycles.
    // Each sum a named local, so that it stays in a register.
    let mut blocks = values.chunks_exact(8 * width);
    for block in &mut blocks {
        let (a, b) = block.split_at(4 * width);
        let ((r0, r1), (r2, r3)) = (a[..2 * width].split_at(width), a[2 * width..].split_at(width));
        let ((r4, r5), (r6, r7)) = (b[..2 * width].split_at(width), b[2 * width..].split_at(width));
        let (mut s0, mut s1, mut s2, mut s3) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let (mut s4, mut s5, mut s6, mut s7) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for k in 0..width {
            s0 += r0[k];
            s1 += r1[k];
            s2 += r2[k];
            s3 += r3[k];
            s4 += r4[k];
            s5 += r5[k];
            s6 += r6[k];
            s7 += r7[k];
        }
        out.extend_from_slice(&[s0, s1, s2, s3, s4, s5, s6, s7]);
    }
    out.extend(blocks.remainder().chunks_exact(width).map(sum));
}

/// Calls `f(j, buckets)` for each row j of `meta` in order, rows of `width` decisions (`W` when
/// it is not 0; `meta` holds whole rows), `buckets` a bit per bucket its decisions fall in. A
/// width not known at compile time takes four rows side by side, as [`row_sums`] does.
#[inline(always)]
fn row_buckets<const W: usize>(meta: &[Meta], width: usize, mut f: impl FnMut(usize, u32)) {
    let buckets = |row: &[Meta]| row.iter().fold(0u32, |b, m| b | 1 << (m.bucket as u32));
    if W > 0 {
        meta.chunks_exact(W).enumerate().for_each(|(j, row)| f(j, buckets(row)));
        return;
    }
    let mut blocks = meta.chunks_exact(4 * width);
    let mut j = 0;
    for block in &mut blocks {
        let (a, b) = block.split_at(2 * width);
        let ((r0, r1), (r2, r3)) = (a.split_at(width), b.split_at(width));
        let (mut b0, mut b1, mut b2, mut b3) = (0u32, 0u32, 0u32, 0u32);
        for k in 0..width {
            b0 |= 1 << (r0[k].bucket as u32);
            b1 |= 1 << (r1[k].bucket as u32);
            b2 |= 1 << (r2[k].bucket as u32);
            b3 |= 1 << (r3[k].bucket as u32);
        }
        for bits in [b0, b1, b2, b3] {
            f(j, bits);
            j += 1;
        }
    }
    for row in blocks.remainder().chunks_exact(width) {
        f(j, buckets(row));
        j += 1;
    }
}

/// The box and identifiers of row `r` of `batch`.
fn info(batch: &Batch, r: usize) -> CandidateInfo {
    CandidateInfo {
        bbox: batch.boxes.as_ref().map(|b| b[r]),
        anchor_id: batch.anchor_id.as_ref().map(|a| a[r]),
        level: batch.level.as_ref().map(|l| l[r]),
        label: match &batch.targets {
            Targets::Labels(l) => l[r],
            Targets::Binary(t) => i32::from(t[r] > 0.0),
        },
        class: batch.class.as_ref().map(|c| c[r]),
        box_loss: batch.box_loss.as_ref().map(|b| b[r]),
    }
}

/// Runs every selector on one complete image.
fn finalize_image(config: &SelectConfig, key: ImageKey, segments: Vec<Pile>) -> SelectTotals {
    // A canonical order, whatever order the parts were merged in (sorted dumps already are).
    let pile = Piles::new(segments);
    // One scan for the split, the counts and the strata (an image's candidates do not fit in
    // cache: every scan is a trip to memory).
    let split = if config.selectors.iter().any(Selecting::needs_strata) {
        Split::with_strata(&pile)
    } else {
        Split::of(&pile)
    };
    let norm = (split.counts[2] + split.counts[3]).max(1) as f64;
    let mut t = config.empty_totals();
    t.images = 1;
    let image = Image { key: &key, pile: &pile, split: &split, norm };
    let kept: Vec<Kept> =
        config.selectors.iter().zip(&mut t.per).map(|(s, totals)| s.select(&image, totals)).collect();
    overlaps(&image, config, &kept, &mut t.overlap);
    if let Some(spec) = &config.mine {
        let rows = export(&image, config, spec, kept);
        if let Some(position) = pile.first_position() {
            t.export.insert(position, rows);
        }
    }
    t
}

/// Adds an image's overlaps between the selections `kept` (decision-weighted f64 sums over its
/// candidates in dump order, the same whatever the split of the dump; one exact add per image).
fn overlaps(image: &Image<'_>, config: &SelectConfig, kept: &[Kept], sums: &mut OverlapSums) {
    let pile = image.pile;
    let mut member = vec![0u32; pile.len()];
    for (s, k) in kept.iter().enumerate() {
        if let Kept::These(sel) = k {
            for &i in sel {
                member[i] |= 1 << s;
            }
        }
    }
    let pairs = pairs(kept.len());
    let ohem = config.selectors.iter().position(|s| s.kind() == StrategyKind::Ohem);
    // Up to three selectors (the list's), every pair's sums in registers; the general loop for
    // more.
    let (acc, focal) = match pairs.len() {
        0 => pair_sums::<0>(image.pile, &member, kept, &pairs, ohem),
        1 => pair_sums::<1>(image.pile, &member, kept, &pairs, ohem),
        3 => pair_sums::<3>(image.pile, &member, kept, &pairs, ohem),
        _ => pair_sums_any(image.pile, &member, kept, &pairs, ohem),
    };
    for (total, sum) in sums.pairs.iter_mut().zip(acc).chain([(&mut sums.focal_in_ohem, focal)]) {
        total[0] += sum[0];
        total[1] += sum[1];
    }
}

/// Each pair's (min, max) inclusion probabilities for a candidate (`positive` or not, kept by
/// the [`Kept::These`] selections whose bits `member` holds).
#[inline]
fn pair_bounds<const N: usize>(
    kept: &[Kept],
    pairs: &[(usize, usize)],
    positive: bool,
    member: u32,
) -> [[f64; 2]; N] {
    let mut p = [0.0f64; 32];
    for (s, k) in kept.iter().enumerate() {
        p[s] = k.inclusion(positive, member, s);
    }
    std::array::from_fn(|q| {
        let (a, b) = pairs[q];
        [p[a].min(p[b]), p[a].max(p[b])]
    })
}

/// What the overlap sums read of every candidate, in dump order: whether it is positive, its
/// decisions, its focal loss, and its bits of `member`. One loop per segment (a loop over the
/// segments' flattened columns steps an adapter per candidate).
#[inline(always)]
fn overlap_columns(piles: &Piles, member: &[u32], mut each: impl FnMut(bool, u64, f64, u32)) {
    for (start, s) in piles.segments() {
        let member = &member[start..start + s.len()];
        for (((positive, d), &c_focal), &m) in s.positives_and_decisions().zip(&s.focal).zip(member) {
            each(positive, d, c_focal, m);
        }
    }
}

/// The overlap sums of [`overlaps`] for `N` pairs: per pair, the decision-weighted sums of
/// the min and max inclusion probabilities, candidate after candidate in dump order; and the
/// focal loss inside OHEM's selection and in all. The bounds depend only on whether the
/// candidate is positive and which selections hold it, which for most candidates is none:
/// those two cases are computed once.
fn pair_sums<const N: usize>(
    piles: &Piles,
    member: &[u32],
    kept: &[Kept],
    pairs: &[(usize, usize)],
    ohem: Option<usize>,
) -> (Vec<[f64; 2]>, [f64; 2]) {
    let plain = [pair_bounds::<N>(kept, pairs, false, 0), pair_bounds::<N>(kept, pairs, true, 0)];
    let mut acc = [[0.0f64; 2]; N];
    let mut focal = [0.0f64; 2];
    overlap_columns(piles, member, |positive, d, c_focal, m| {
        let bounds =
            if m == 0 { plain[usize::from(positive)] } else { pair_bounds::<N>(kept, pairs, positive, m) };
        add_bounds(&mut acc, d as f64, &bounds);
        add_focal(&mut focal, ohem, m, c_focal);
    });
    (acc.to_vec(), focal)
}

/// [`pair_sums`] for any number of pairs: each selector's inclusion probability once per
/// candidate, then every pair's bounds.
fn pair_sums_any(
    piles: &Piles,
    member: &[u32],
    kept: &[Kept],
    pairs: &[(usize, usize)],
    ohem: Option<usize>,
) -> (Vec<[f64; 2]>, [f64; 2]) {
    let mut acc = vec![[0.0f64; 2]; pairs.len()];
    let mut focal = [0.0f64; 2];
    let mut p = [0.0f64; 32];
    let mut bounds = vec![[0.0f64; 2]; pairs.len()];
    overlap_columns(piles, member, |positive, d, c_focal, m| {
        for (s, k) in kept.iter().enumerate() {
            p[s] = k.inclusion(positive, m, s);
        }
        for (bound, &(a, b)) in bounds.iter_mut().zip(pairs) {
            *bound = [p[a].min(p[b]), p[a].max(p[b])];
        }
        add_bounds(&mut acc, d as f64, &bounds);
        add_focal(&mut focal, ohem, m, c_focal);
    });
    (acc, focal)
}

/// Adds a candidate's pair bounds (min, max), weighted by its `d` decisions, to `acc`.
#[inline(always)]
fn add_bounds(acc: &mut [[f64; 2]], d: f64, bounds: &[[f64; 2]]) {
    for (sum, bound) in acc.iter_mut().zip(bounds) {
        sum[0] += d * bound[0];
        sum[1] += d * bound[1];
    }
}

/// Adds a candidate's focal loss to `focal`: [inside OHEM's selection (selector `ohem`, a bit
/// of the candidate's `member`), in all].
#[inline(always)]
fn add_focal(focal: &mut [f64; 2], ohem: Option<usize>, member: u32, c_focal: f64) {
    if let Some(o) = ohem {
        if (member >> o) & 1 == 1 {
            focal[0] += c_focal;
        }
        focal[1] += c_focal;
    }
}

/// The export rows of an image: what `spec`'s strategy kept, ranked, at most `spec.top`.
fn export(image: &Image<'_>, config: &SelectConfig, spec: &MineSpec, kept: Vec<Kept>) -> Vec<ExportRow> {
    let pile = image.pile;
    let (rows, score): (Vec<usize>, ohem::Score) = match spec.strategy.selector() {
        None => ((0..pile.len()).collect(), |p, j| p.focal[j]),
        Some(kind) => {
            let rows = config
                .selectors
                .iter()
                .zip(kept)
                .find(|(s, _)| s.kind() == kind)
                .map(|(s, k)| s.export(image, k))
                .unwrap_or_default();
            // OHEM's order (CE, plus the box loss where the dump has one); CE for the rest.
            let score: ohem::Score = if kind == StrategyKind::Ohem { ohem::score } else { |p, j| p.ce[j] };
            (rows, score)
        }
    };
    let limit = spec.top.unwrap_or(usize::MAX);
    let ranked = top(
        rows.into_iter().map(|i| {
            let (p, j) = pile.at(i);
            (i, score(p, j))
        }),
        limit,
    );
    let mut out = Vec::with_capacity(ranked.len());
    for (rank, &i) in ranked.iter().enumerate() {
        let (p, j) = pile.at(i);
        let info = p.info(j);
        let (ce, focal) = (p.ce[j], p.focal[j]);
        let weight = match spec.strategy {
            MineStrategy::Focal if ce > 0.0 => focal / ce,
            MineStrategy::Focal => 0.0,
            _ => 1.0,
        };
        out.push(ExportRow {
            image: image.key.clone(),
            file: p.file[j],
            row: p.row[j],
            anchor_id: info.and_then(|i| i.anchor_id),
            level: info.and_then(|i| i.level),
            label: info.map_or(0, |i| i.label),
            class: info.and_then(|i| i.class),
            loss: score(p, j),
            rank: rank as u32 + 1,
            weight,
        });
    }
    out
}

impl SelectAcc {
    /// The report entry of selector `kind`. `images` counts every image of the dump (the
    /// normaliser's mean runs over all of them) and `positives` its positive decisions.
    pub fn report(&self, kind: StrategyKind, images: u64, positives: u64) -> StrategyReport {
        let (s, totals) = self
            .config
            .selectors
            .iter()
            .zip(&self.totals.per)
            .find(|(s, _)| s.kind() == kind)
            .unwrap_or_else(|| panic!("{kind} is not a selector of this pass"));
        s.report(totals, images, positives)
    }

    /// Jaccard indices between the selections that ran, and the focal share inside OHEM's.
    pub fn overlaps(&self) -> Option<Overlaps> {
        let o = &self.totals.overlap;
        let selectors = &self.config.selectors;
        let ratio = |s: &[ExactSum; 2]| if s[1].value() > 0.0 { s[0].value() / s[1].value() } else { 0.0 };
        let jaccard: Vec<Jaccard> = pairs(selectors.len())
            .into_iter()
            .zip(&o.pairs)
            .map(|((a, b), sums)| Jaccard {
                a: selectors[a].kind().name().into(),
                b: selectors[b].kind().name().into(),
                jaccard: ratio(sums),
            })
            .collect();
        let has_ohem = selectors.iter().any(|s| s.kind() == StrategyKind::Ohem);
        let focal_share_in_ohem = has_ohem.then(|| ratio(&o.focal_in_ohem));
        (!jaccard.is_empty() || focal_share_in_ohem.is_some())
            .then_some(Overlaps { jaccard, focal_share_in_ohem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_keys_order_like_total_cmp_descending_then_index() {
        let scores = [
            f64::INFINITY,
            1e300,
            2.5,
            1.0,
            f64::MIN_POSITIVE,
            5e-324,
            0.0,
            -0.0,
            -5e-324,
            -1.0,
            f64::NEG_INFINITY,
        ];
        for (i, &a) in scores.iter().enumerate() {
            for (j, &b) in scores.iter().enumerate() {
                let want = b.total_cmp(&a).then(i.cmp(&j));
                assert_eq!(rank_key(a, i).cmp(&rank_key(b, j)), want, "{a} vs {b}");
            }
            // Equal scores: the earlier index first.
            assert!(rank_key(a, 3) < rank_key(a, 4));
        }
    }

    /// The m hardest by a full sort with the comparator the ranking stands for.
    fn naive_top(scored: &[(usize, f64)], m: usize) -> Vec<usize> {
        let mut all = scored.to_vec();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(m).map(|(i, _)| i).collect()
    }

    #[test]
    fn top_keeps_exactly_the_m_hardest_of_a_full_sort_whatever_m() {
        let mut rng = crate::rng::Rng::new(11, 0);
        for n in [0usize, 1, 7, 255, 256, 257, 600, 5000] {
            // Few distinct scores: many ties, broken by index; a few special values.
            let scored: Vec<(usize, f64)> = (0..n)
                .map(|i| {
                    let s = match rng.below(50) {
                        0 => f64::INFINITY,
                        1 => -0.0,
                        2 => f64::NAN,
                        3 => -1.0,
                        r => (r % 9) as f64 * 0.5,
                    };
                    (i, s)
                })
                .collect();
            for m in [0usize, 1, 2, 100, 127, 128, 129, 255, 256, 300, 4999, 5000, 5001, usize::MAX] {
                assert_eq!(top(scored.iter().copied(), m), naive_top(&scored, m), "n {n}, m {m}");
            }
            // Every other index (as the positives or negatives of an image).
            let odd: Vec<(usize, f64)> = scored.iter().copied().filter(|(i, _)| i % 2 == 1).collect();
            for m in [1usize, 128, 300] {
                assert_eq!(top(odd.iter().copied(), m), naive_top(&odd, m), "odd, n {n}, m {m}");
            }
            assert_eq!(rank(scored.iter().copied()), naive_top(&scored, n));
        }
    }

    /// A candidate's every column, with the bits of its numbers.
    fn candidate_bits(c: &Candidate) -> impl PartialEq + std::fmt::Debug {
        let f = |x: f64| x.to_bits();
        (c.file, c.row, c.count, c.positive, f(c.ce), f(c.focal), c.loss.map(f), c.grad.map(f))
    }

    #[test]
    fn whole_dense_rows_make_the_candidates_of_the_one_by_one_walk_bit_for_bit() {
        use crate::analysis::decisions::{for_each_chunk, Expansion, Scoring};
        use crate::config::{Activation, Layout, ScoreKind};
        use crate::input::{DumpShape, ScoreValues};
        let mut rng = crate::rng::Rng::new(21, 4);
        for width in [2usize, 3, 4, 5, 6, 7, 8, 9, 20] {
            let rows = 3000;
            // Background, ignored (no decisions: rows missing from the chunk) and labelled
            // anchors; logits from confident to wrong, so that some anchors have decisions in
            // several buckets; images of 37 rows (several runs per chunk), a row index on
            // every other width.
            let labels: Vec<i32> = (0..rows)
                .map(|_| rng.below(width as u64 + 3) as i32 - 2)
                .map(|l| l.min(width as i32 - 1))
                .collect();
            let scores: Vec<f32> = (0..rows * width).map(|_| (rng.normal() * 4.0) as f32).collect();
            let mut batch = crate::input::test_batch(
                (0..rows).map(|r| (r / 37) as i64),
                Targets::Labels(labels),
                ScoreValues::from_f32(scores),
                5,
            );
            if width % 2 == 1 {
                batch.row_index = Some((0..rows as u64).map(|r| 3 * r + 1).collect());
            }
            let shape = DumpShape {
                layout: Layout::Dense,
                scores: ScoreKind::Logits,
                activation: Activation::Sigmoid,
            };
            let exp = Expansion { shape, width, background_class: 0 };
            let scoring = Scoring { tau: 0.7, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
            let (mut runs, mut mixed) = (0, 0);
            for_each_chunk(&exp, &batch, &scoring, &mut |chunk| {
                let focal = chunk.terms.focal_for(scoring.focus).expect("the terms' focus");
                let terms = |k: usize| (chunk.decisions.ce[k], chunk.terms.ce_grad[k], focal[k]);
                assert_eq!(chunk.dense_width(), Some(width));
                // Each run with the rows' test, and as a dense chunk (no test).
                for (run, dense) in chunk.runs.iter().flat_map(|run| [(run, false), (run, true)]) {
                    let fill = Fill { chunk, run, with_info: false, dense };
                    let mut naive = Pile::default();
                    fill.pile(&mut naive, run.start, terms);
                    // Appended after candidates already in the pile, as a run of a continuing
                    // image.
                    let mut whole = Pile::from_candidates(&naive.candidates()[..naive.len() / 3]);
                    let before = whole.len();
                    let start = fill.whole_rows(&mut whole, focal);
                    assert_eq!(start, run.end, "every row of a dense chunk is whole");
                    fill.pile(&mut whole, start, terms);
                    let got: Vec<_> = whole.candidates()[before..].iter().map(candidate_bits).collect();
                    let want: Vec<_> = naive.candidates().iter().map(candidate_bits).collect();
                    assert_eq!(got, want, "width {width}");
                    // The order known while appending is the order of the positions (the
                    // run follows a copy of its first third: in order when that is at most
                    // one candidate).
                    assert!(naive.in_dump_order());
                    assert_eq!(whole.in_dump_order(), naive.len() / 3 < 2);
                    let mut fresh = Pile::default();
                    fill.whole_rows(&mut fresh, focal);
                    assert_eq!(fresh, naive);
                    assert!(fresh.in_dump_order());
                    runs += 1;
                    mixed += naive
                        .candidates()
                        .iter()
                        .filter(|c| c.count.iter().filter(|&&n| n > 0).count() > 1)
                        .count();
                }
            });
            assert!(runs > 50 && mixed > 10, "width {width}: {runs} runs, {mixed} mixed candidates");
        }
    }

    #[test]
    fn top_by_ce_from_the_columns_is_the_naive_top_of_every_candidate() {
        let mut rng = crate::rng::Rng::new(13, 3);
        let mut cands = pile::tests::random_candidates(&mut rng, 3000);
        // Ties (broken by index) and special values.
        for (i, c) in cands.iter_mut().enumerate() {
            match i % 97 {
                0 => c.ce = 1.0,
                1 => c.ce = f64::INFINITY,
                2 => c.ce = -0.0,
                3 => c.ce = f64::NAN,
                // Scores below zero (not CEs, but `top_ce`'s filter must hold for any score).
                4 => c.ce = -1.0,
                5 => c.ce = f64::NEG_INFINITY,
                _ => {}
            }
        }
        let piles = Piles::new(vec![
            Pile::from_candidates(&cands[..700]),
            Pile::from_candidates(&cands[700..2900]),
            Pile::from_candidates(&cands[2900..]),
        ]);
        for positive in [None, Some(true), Some(false)] {
            let scored: Vec<(usize, f64)> = cands
                .iter()
                .enumerate()
                .filter(|(_, c)| positive.is_none_or(|p| c.positive == p))
                .map(|(i, c)| (i, c.ce))
                .collect();
            for m in [0usize, 1, 5, 128, 255, 256, 257, 1000, 2999, 3000, usize::MAX] {
                assert_eq!(top_ce(&piles, positive, m), naive_top(&scored, m), "{positive:?}, m {m}");
            }
        }
    }

    #[test]
    fn the_overlap_sums_are_the_naive_sums_over_every_candidate_for_any_number_of_pairs() {
        let mut rng = crate::rng::Rng::new(17, 4);
        let cands = pile::tests::random_candidates(&mut rng, 3000);
        let piles =
            Piles::new(vec![Pile::from_candidates(&cands[..1200]), Pile::from_candidates(&cands[1200..])]);
        // Selections of every kind: kept candidates (a third, a tenth, a half) and expectations.
        let mut pick = |share: f64| Kept::These((0..cands.len()).filter(|_| rng.uniform() < share).collect());
        let all = [
            pick(0.33),
            Kept::Each { p_pos: 0.8, p_neg: 0.01 },
            pick(0.1),
            Kept::Each { p_pos: 0.5, p_neg: 0.002 },
            pick(0.5),
        ];
        for selectors in 2..=all.len() {
            let kept = &all[..selectors];
            let mut member = vec![0u32; cands.len()];
            for (s, k) in kept.iter().enumerate() {
                if let Kept::These(sel) = k {
                    for &i in sel {
                        member[i] |= 1 << s;
                    }
                }
            }
            let pairs = pairs(selectors);
            let ohem = Some(0);
            // The naive sums: each candidate's inclusion probabilities from its membership, in
            // dump order.
            let mut acc = vec![[0.0f64; 2]; pairs.len()];
            let mut focal = [0.0f64; 2];
            for (i, c) in cands.iter().enumerate() {
                let d = c.count.iter().map(|&n| f64::from(n)).sum::<f64>();
                let p = |s: usize| match &kept[s] {
                    Kept::These(sel) => f64::from(u8::from(sel.contains(&i))),
                    Kept::Each { p_pos, p_neg } => {
                        if c.positive {
                            *p_pos
                        } else {
                            *p_neg
                        }
                    }
                };
                for (sum, &(a, b)) in acc.iter_mut().zip(&pairs) {
                    sum[0] += d * p(a).min(p(b));
                    sum[1] += d * p(a).max(p(b));
                }
                if member[i] & 1 == 1 {
                    focal[0] += c.focal;
                }
                focal[1] += c.focal;
            }
            let bits = |(acc, focal): &(Vec<[f64; 2]>, [f64; 2])| {
                (acc.iter().map(|x| x.map(f64::to_bits)).collect::<Vec<_>>(), focal.map(f64::to_bits))
            };
            let naive = bits(&(acc, focal));
            let any = pair_sums_any(&piles, &member, kept, &pairs, ohem);
            assert_eq!(bits(&any), naive, "{selectors} selectors, the general loop");
            let fixed = match pairs.len() {
                1 => Some(pair_sums::<1>(&piles, &member, kept, &pairs, ohem)),
                3 => Some(pair_sums::<3>(&piles, &member, kept, &pairs, ohem)),
                _ => None,
            };
            if let Some(fixed) = fixed {
                assert_eq!(bits(&fixed), naive, "{selectors} selectors, {} pairs in registers", pairs.len());
            }
        }
    }

    #[test]
    fn the_split_and_strata_are_the_sums_over_every_candidate_in_dump_order() {
        let mut rng = crate::rng::Rng::new(9, 2);
        let cands = pile::tests::random_candidates(&mut rng, 5000);
        // In three segments, as an image cut by two batch boundaries.
        let piles = Piles::new(vec![
            Pile::from_candidates(&cands[..1000]),
            Pile::from_candidates(&cands[1000..3500]),
            Pile::from_candidates(&cands[3500..]),
        ]);
        let split = Split::with_strata(&piles);
        // The naive sums: every candidate's four buckets, one struct at a time.
        let (mut pos, mut neg, mut counts) = (Vec::new(), Vec::new(), [0u64; 4]);
        let (mut n, mut count, mut loss, mut grad) =
            ([0usize; 2], [[0.0f64; 4]; 2], [[0.0f64; 4]; 2], [[0.0f64; 4]; 2]);
        for (i, c) in cands.iter().enumerate() {
            let s = usize::from(c.positive);
            if c.positive {
                pos.push(i)
            } else {
                neg.push(i)
            }
            n[s] += 1;
            for b in 0..4 {
                counts[b] += u64::from(c.count[b]);
                count[s][b] += f64::from(c.count[b]);
                loss[s][b] += c.loss[b];
                grad[s][b] += c.grad[b];
            }
        }
        assert_eq!((&split.pos, split.n_neg, split.counts), (&pos, neg.len(), counts));
        // Negatives by rank: all of them, and every third.
        assert_eq!(split.negatives(0..neg.len()).collect::<Vec<_>>(), neg);
        let third: Vec<usize> = neg.iter().copied().step_by(3).collect();
        assert_eq!(split.negatives((0..neg.len()).step_by(3)).collect::<Vec<_>>(), third);
        let strata = split.strata.expect("asked for");
        let bits = |x: [[f64; 4]; 2]| x.map(|v| v.map(f64::to_bits));
        assert_eq!(strata.n, n);
        assert_eq!(bits(strata.count), bits(count));
        assert_eq!(bits(strata.loss), bits(loss));
        assert_eq!(bits(strata.grad), bits(grad));
        assert_eq!(Split::of(&piles).strata, None);
        assert_eq!(Split::of(&piles).n_neg, neg.len());
        // Positives first, last, and in a row.
        let edges = Split { pos: vec![0, 1, 3, 7, 8, 9], n_neg: 4, ..Split::default() };
        assert_eq!(edges.negatives(0..4).collect::<Vec<_>>(), vec![2, 4, 5, 6]);
        assert_eq!(edges.negatives([1, 3]).collect::<Vec<_>>(), vec![4, 6]);
    }
}
