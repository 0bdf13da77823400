//! Imbalance breakdowns (per FPN level, class, class x level, IoU band and image), the gradient
//! density, the per-class gradient balance (EQLv2), the normalisers side by side, and the counts
//! behind the health checks: one accumulator, one pass.
//!
//! The focal loss here uses the analysis's gamma and alpha.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decisions::{DecisionChunk, Focus};
use super::sum::ExactSum;
use super::Accumulator;
use crate::config::Activation;
use crate::input::{Batch, DumpShape, ImageKey, Targets};
use crate::loss::Decision;
use crate::report::{ClassGradient, ClassLevelCell, GradientDensity, GroupRow, Normalizer};

/// Bins of the gradient-norm histograms.
pub const DENSITY_BINS: usize = 100;
/// Independent counters per gradient-density bin (decision i counts in lane i % 8).
const DENSITY_LANES: usize = 8;
/// Width of the IoU bands.
pub const IOU_BANDS: usize = 10;
/// Images listed in each top list.
pub const TOP_IMAGES: usize = 10;

/// Sums of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Rows (anchors).
    pub anchors: u64,
    /// Ignored anchors.
    pub ignored: u64,
    /// Decisions.
    pub decisions: u64,
    /// Positive decisions.
    pub positives: u64,
    /// Easy negatives.
    pub easy_negatives: u64,
    /// CE.
    pub ce: ExactSum,
    /// Focal loss.
    pub focal: ExactSum,
    /// CE of the easy negatives.
    pub en_ce: ExactSum,
    /// Focal loss of the easy negatives.
    pub en_focal: ExactSum,
}

/// f64 subtotals of a group within a run of a summation block, before they go into the exact
/// group sums (see `analysis::edges`: the same rows always form the same runs).
#[derive(Clone, Copy, Debug, Default)]
struct Partial {
    decisions: u64,
    positives: u64,
    easy_negatives: u64,
    ce: f64,
    focal: f64,
    en_ce: f64,
    en_focal: f64,
}

/// f64 subtotals per bucket (indexed by [`Bucket`](super::decisions::Bucket)): decisions, CE and focal loss. One
/// 3-wide add per decision, where the fields of a [`Partial`] would take a branch and seven.
/// The fourth lane (never read) lets the dense walk add the same 4-wide vector as to the
/// cells: its easy negatives' sums stay one register each.
#[derive(Clone, Copy, Debug, Default)]
struct BucketSums([[f64; 4]; 4]);

impl BucketSums {
    #[inline(always)]
    fn add(&mut self, bucket: usize, ce: f64, focal: f64) {
        let t = &mut self.0[bucket];
        t[0] += 1.0;
        t[1] += ce;
        t[2] += focal;
    }

    /// The group sums (counts exact: a block holds far fewer than 2^53 decisions).
    fn partial(&self) -> Partial {
        let [en, hn, ep, hp] = self.0;
        Partial {
            decisions: (en[0] + hn[0] + ep[0] + hp[0]) as u64,
            positives: (ep[0] + hp[0]) as u64,
            easy_negatives: en[0] as u64,
            ce: en[1] + hn[1] + ep[1] + hp[1],
            focal: en[2] + hn[2] + ep[2] + hp[2],
            en_ce: en[1],
            en_focal: en[2],
        }
    }
}

impl Partial {
    fn absorb(&mut self, o: &Partial) {
        self.decisions += o.decisions;
        self.positives += o.positives;
        self.easy_negatives += o.easy_negatives;
        self.ce += o.ce;
        self.focal += o.focal;
        self.en_ce += o.en_ce;
        self.en_focal += o.en_focal;
    }
}

impl Group {
    fn add_partial(&mut self, p: &Partial) {
        self.decisions += p.decisions;
        self.positives += p.positives;
        self.easy_negatives += p.easy_negatives;
        self.ce += p.ce;
        self.focal += p.focal;
        self.en_ce += p.en_ce;
        self.en_focal += p.en_focal;
    }

    fn merge(&mut self, o: &Group) {
        self.anchors += o.anchors;
        self.ignored += o.ignored;
        self.merge_decisions(o);
    }

    fn merge_decisions(&mut self, o: &Group) {
        self.decisions += o.decisions;
        self.positives += o.positives;
        self.easy_negatives += o.easy_negatives;
        self.ce += o.ce;
        self.focal += o.focal;
        self.en_ce += o.en_ce;
        self.en_focal += o.en_focal;
    }

    /// A report row; `with_anchors` says whether anchor counts mean something for this group.
    pub fn row(
        &self,
        key: serde_json::Value,
        with_anchors: bool,
        ce_total: f64,
        focal_total: f64,
    ) -> GroupRow {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let negatives = self.decisions - self.positives;
        GroupRow {
            key,
            anchors: with_anchors.then_some(self.anchors),
            ignored: with_anchors.then_some(self.ignored),
            decisions: self.decisions,
            positives: self.positives,
            negatives,
            neg_pos_ratio: (self.positives > 0).then(|| negatives as f64 / self.positives as f64),
            ce_share: ratio(self.ce.value(), ce_total),
            focal_share: ratio(self.focal.value(), focal_total),
            easy_negative_share: ratio(self.easy_negatives as f64, self.decisions as f64),
            easy_negative_ce_share: ratio(self.en_ce.value(), self.ce.value()),
            easy_negative_focal_share: ratio(self.en_focal.value(), self.focal.value()),
            ce_gradient: None,
        }
    }
}

/// f64 subtotals of one class (at one level, when the dump has levels) within a summation
/// block, per bucket (indexed by [`Bucket`](super::decisions::Bucket)): decisions, CE, focal loss and the gradient norm
/// |p - y| (the last three weighted). One 4-wide add per decision, where the fields of a
/// [`Partial`] would take eight.
#[derive(Clone, Copy, Debug, Default)]
struct ClassPartial([[f64; 4]; 4]);

impl ClassPartial {
    /// Decisions (exact: a block holds far fewer than 2^53).
    fn decisions(&self) -> u64 {
        self.0.iter().map(|b| b[0] as u64).sum()
    }

    /// The group sums, and |p - y| summed over the negatives and over the positives.
    fn sums(&self) -> (Partial, [f64; 2]) {
        let [en, hn, ep, hp] = self.0;
        let sums = Partial {
            decisions: self.decisions(),
            positives: ep[0] as u64 + hp[0] as u64,
            easy_negatives: en[0] as u64,
            ce: en[1] + hn[1] + ep[1] + hp[1],
            focal: en[2] + hn[2] + ep[2] + hp[2],
            en_ce: en[1],
            en_focal: en[2],
        };
        (sums, [en[3] + hn[3], ep[3] + hp[3]])
    }
}

/// An image's sums and its first position in the dump (for dump-order statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGroup {
    /// The sums.
    pub group: Group,
    /// (file, row) of the image's first row.
    pub first: (u32, u64),
}

/// Counts behind the health checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounts {
    /// Confidently wrong decisions, p_t < 1e-7 (CE > 16.1): negatives, positives. States
    /// written before this counter read it as 0.
    #[serde(default)]
    pub confidently_wrong: [u64; 2],
    /// Confidently right decisions, 1 - p_t < 1e-7: negatives, positives. States written
    /// before this counter read it as 0.
    #[serde(default)]
    pub confidently_right: [u64; 2],
    /// Decisions whose p_t rounds to 1 in float32 (1 - p_t < 2^-24).
    pub fp32_one: u64,
    /// Decisions whose focal loss is positive but below fp16's smallest subnormal (2^-24).
    pub fp16_underflow: u64,
    /// Decisions whose logit or CE exceeds fp16's largest finite value (65504).
    pub fp16_overflow: u64,
    /// Sum of the logits of negative decisions: per image run of a summation block, f64 sums
    /// in four lanes by class (class mod 4, in decision order within each lane; see
    /// `LogitLanes`), combined in a fixed order and added exactly.
    pub negative_logit_sum: ExactSum,
    /// Negative decisions.
    pub negatives: u64,
    /// Dense anchors labelled -1.
    pub background_labels: u64,
    /// Dense anchors per label value 0..C-1 (softmax: including the background class).
    pub label_counts: Vec<u64>,
}

/// The breakdown accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakdownAcc {
    gamma: f64,
    alpha: Option<f64>,
    /// Per level (when the dump has one).
    pub level: BTreeMap<i64, Group>,
    /// Per class index, for dumps without a level column (with levels, the per-class sums are
    /// those of `class_level` over levels: `BreakdownAcc::classes`).
    pub class: Vec<Group>,
    /// Per class index: |p - y| summed over its negative (0) and positive (1) decisions,
    /// weighted. States written before this field read it as empty.
    #[serde(default)]
    pub class_grad: Vec<[ExactSum; 2]>,
    /// Per level, per class index: the class x level cells (when the dump has levels; anchor
    /// counts stay 0). States written before this field read it as empty.
    #[serde(default)]
    pub class_level: BTreeMap<i64, Vec<Group>>,
    /// Per IoU band (when the dump has IoU).
    pub iou: Vec<Group>,
    /// Whether any batch had IoU.
    pub has_iou: bool,
    /// Per image.
    #[serde(with = "crate::analysis::pairs")]
    pub images: BTreeMap<ImageKey, ImageGroup>,
    /// Gradient-norm counts: negatives, positives.
    pub density: [Vec<u64>; 2],
    /// Health counts.
    pub health: HealthCounts,
}

fn band(iou: f32) -> usize {
    // Through u8 (saturating, NaN to 0, as through usize): a cheaper conversion.
    const { assert!(IOU_BANDS < 256) };
    usize::from((iou * IOU_BANDS as f32) as u8).min(IOU_BANDS - 1)
}

/// The anchors and ignored anchors (label -2) per IoU band of rows with IoUs `ious` and labels
/// `labels` (none in a binary dump). Nearly every anchor falls in the first band: groups of 8
/// rows all in it are counted at once (a compare and a count the compiler vectorises); other
/// rows one at a time, in local lanes (row r in lane r % 4: one counter would chain every
/// increment through memory).
fn iou_band_counts(ious: &[f32], labels: Option<&[i32]>) -> ([u64; IOU_BANDS], [u64; IOU_BANDS]) {
    let mut anchors = [[0u64; IOU_BANDS]; 4];
    let mut ignored = [[0u64; IOU_BANDS]; 4];
    // band(v) == 0 exactly when v * IOU_BANDS is not >= 1 (NaN and negatives included): the
    // negated comparison is the point.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let first_band = |v: f32| !(v * IOU_BANDS as f32 >= 1.0);
    let n = labels.map_or(ious.len(), |l| l.len().min(ious.len()));
    let (ious, labels) = (&ious[..n], labels.map(|l| &l[..n]));
    let mut r = 0;
    while r < n {
        let end = (r + 8).min(n);
        let group = &ious[r..end];
        if group.len() == 8 && group.iter().fold(true, |a, &v| a & first_band(v)) {
            anchors[0][0] += 8;
            if let Some(l) = labels {
                ignored[0][0] += l[r..end].iter().map(|&x| u64::from(x == -2)).sum::<u64>();
            }
        } else {
            for k in r..end {
                let b = band(ious[k]);
                anchors[k % 4][b] += 1;
                if let Some(l) = labels {
                    ignored[k % 4][b] += u64::from(l[k] == -2);
                }
            }
        }
        r = end;
    }
    let total = |lanes: &[[u64; IOU_BANDS]; 4]| -> [u64; IOU_BANDS] {
        std::array::from_fn(|b| lanes.iter().map(|lane| lane[b]).sum())
    };
    (total(&anchors), total(&ignored))
}

impl BreakdownAcc {
    /// An empty accumulator; the focal loss uses `gamma` and `alpha`.
    pub fn new(gamma: f64, alpha: Option<f64>) -> BreakdownAcc {
        BreakdownAcc {
            gamma,
            alpha,
            level: BTreeMap::new(),
            class: Vec::new(),
            class_grad: Vec::new(),
            class_level: BTreeMap::new(),
            iou: vec![Group::default(); IOU_BANDS],
            has_iou: false,
            images: BTreeMap::new(),
            density: [vec![0; DENSITY_BINS], vec![0; DENSITY_BINS]],
            health: HealthCounts::default(),
        }
    }

    /// Adds a chunk's per (level, class) subtotals exactly to the class gradient balance and to
    /// the class x level cells when the dump has levels (the per-class sums are then the cells'
    /// sums over levels, [`BreakdownAcc::classes`]: one exact fold per cell, not two) and, summed
    /// over classes in f64, to the level sums (one exact fold per level); or to the class sums
    /// when it has none. `cells` holds `width` classes per level of `levels` (slot k: classes
    /// `k * width ..`); the vectors grow to the level's last class with decisions, as if each
    /// level had its own.
    fn fold_classes(&mut self, levels: &[i64], cells: &[ClassPartial], width: usize, has_levels: bool) {
        if width == 0 {
            return;
        }
        for (&l, v) in levels.iter().zip(cells.chunks_exact(width)) {
            let n = v.iter().rposition(|p| p.decisions() > 0).map_or(0, |c| c + 1);
            if self.class_grad.len() < n {
                self.class_grad.resize(n, [ExactSum::ZERO; 2]);
            }
            let groups = if has_levels { self.class_level.entry(l).or_default() } else { &mut self.class };
            if groups.len() < n {
                groups.resize(n, Group::default());
            }
            let mut level = Partial::default();
            for (c, p) in v.iter().enumerate().filter(|(_, p)| p.decisions() > 0) {
                let (sums, grad) = p.sums();
                groups[c].add_partial(&sums);
                level.absorb(&sums);
                self.class_grad[c][0] += grad[0];
                self.class_grad[c][1] += grad[1];
            }
            if has_levels && level.decisions > 0 {
                self.level.entry(l).or_default().add_partial(&level);
            }
        }
    }

    /// The per-class sums: the class x level cells summed over levels (exact sums: the same
    /// totals as adding every subtotal to its class directly), plus the sums of passes without
    /// levels.
    fn classes(&self) -> Vec<Group> {
        let n = self.class_level.values().map(Vec::len).chain([self.class.len()]).max().unwrap_or(0);
        let mut out = self.class.clone();
        out.resize(n, Group::default());
        for cells in self.class_level.values() {
            for (a, b) in out.iter_mut().zip(cells) {
                a.merge_decisions(b);
            }
        }
        out
    }
}

impl Accumulator for BreakdownAcc {
    fn observe_batch(&mut self, batch: &Batch) {
        let labels = match &batch.targets {
            Targets::Labels(l) => Some(&l[..]),
            Targets::Binary(_) => None,
        };
        // Ignored anchors (label -2) among rows `r` (a count the compiler vectorises).
        let ignored = |r: std::ops::Range<usize>| {
            labels.map_or(0, |l| l[r].iter().map(|&x| u64::from(x == -2)).sum::<u64>())
        };
        if let Some(levels) = &batch.level {
            // One map entry per run of rows of one level (anchors come level by level).
            let mut start = 0;
            while start < levels.len() {
                let l = levels[start];
                // Whole groups of 16 of the level first (a comparison the compiler vectorises).
                let same = levels[start..]
                    .chunks_exact(16)
                    .take_while(|g| g.iter().fold(true, |a, &x| a & (x == l)));
                let from = start + 16 * same.count();
                let end = levels[from..].iter().position(|&x| x != l).map_or(levels.len(), |k| from + k);
                let g = self.level.entry(l).or_default();
                g.anchors += (end - start) as u64;
                g.ignored += ignored(start..end);
                start = end;
            }
        }
        if let Some(ious) = &batch.iou {
            self.has_iou = true;
            let (anchors, ignored_rows) = iou_band_counts(ious, labels);
            for (b, g) in self.iou.iter_mut().enumerate() {
                g.anchors += anchors[b];
                g.ignored += ignored_rows[b];
            }
        }
        for run in &batch.images {
            let first = (batch.file as u32, batch.file_row(run.start));
            let e =
                self.images.entry(run.key.clone()).or_insert(ImageGroup { group: Group::default(), first });
            e.first = e.first.min(first);
            e.group.anchors += (run.end - run.start) as u64;
            e.group.ignored += ignored(run.start..run.end);
        }
        if let Some(labels) = labels {
            let h = &mut self.health;
            h.background_labels += labels.iter().map(|&l| u64::from(l == -1)).sum::<u64>();
            let top = labels.iter().copied().max().unwrap_or(-1);
            if top >= 0 && h.label_counts.len() <= top as usize {
                h.label_counts.resize(top as usize + 1, 0);
            }
            // Dense dumps are mostly background (-1): groups without a label >= 0 are skipped
            // on a maximum the compiler vectorises.
            for group in labels.chunks(32) {
                if group.iter().copied().fold(-1, i32::max) >= 0 {
                    for &l in group {
                        if let Some(n) = usize::try_from(l).ok().and_then(|l| h.label_counts.get_mut(l)) {
                            *n += 1;
                        }
                    }
                }
            }
        }
    }

    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        let (gamma, alpha) = (self.gamma, self.alpha);
        // The focal losses: the chunk's precomputed ones when they use this analysis's gamma
        // and alpha, chosen once per chunk (one copy of the loops each).
        let pre = chunk.terms.focal_for(Focus { gamma, alpha });
        if let Some(width) = chunk.dense_width() {
            return match pre {
                Some(pre) => self.observe_dense(chunk, width, pre),
                None => {
                    let focal: Vec<f64> = chunk.decisions.iter().map(|d| d.focal(gamma, alpha)).collect();
                    self.observe_dense(chunk, width, &focal)
                }
            };
        }
        match pre {
            Some(pre) => self.observe_with(chunk, |i, _| pre[i]),
            None => self.observe_with(chunk, |_, d| d.focal(gamma, alpha)),
        }
    }
    fn merge(&mut self, o: Self) {
        for (k, g) in o.level {
            self.level.entry(k).or_default().merge(&g);
        }
        if self.class.len() < o.class.len() {
            self.class.resize(o.class.len(), Group::default());
        }
        for (a, b) in self.class.iter_mut().zip(&o.class) {
            a.merge(b);
        }
        if self.class_grad.len() < o.class_grad.len() {
            self.class_grad.resize(o.class_grad.len(), [ExactSum::ZERO; 2]);
        }
        for (a, b) in self.class_grad.iter_mut().zip(&o.class_grad) {
            a[0] += b[0];
            a[1] += b[1];
        }
        for (l, v) in o.class_level {
            let dst = self.class_level.entry(l).or_default();
            if dst.len() < v.len() {
                dst.resize(v.len(), Group::default());
            }
            for (a, b) in dst.iter_mut().zip(&v) {
                a.merge(b);
            }
        }
        for (a, b) in self.iou.iter_mut().zip(&o.iou) {
            a.merge(b);
        }
        self.has_iou |= o.has_iou;
        for (k, g) in o.images {
            match self.images.get_mut(&k) {
                Some(e) => {
                    e.group.merge(&g.group);
                    e.first = e.first.min(g.first);
                }
                None => {
                    self.images.insert(k, g);
                }
            }
        }
        for s in 0..2 {
            for (a, b) in self.density[s].iter_mut().zip(&o.density[s]) {
                *a += b;
            }
        }
        let (h, oh) = (&mut self.health, &o.health);
        for side in 0..2 {
            h.confidently_wrong[side] += oh.confidently_wrong[side];
            h.confidently_right[side] += oh.confidently_right[side];
        }
        h.fp32_one += oh.fp32_one;
        h.fp16_underflow += oh.fp16_underflow;
        h.fp16_overflow += oh.fp16_overflow;
        h.negative_logit_sum += oh.negative_logit_sum;
        h.negatives += oh.negatives;
        h.background_labels += oh.background_labels;
        if h.label_counts.len() < oh.label_counts.len() {
            h.label_counts.resize(oh.label_counts.len(), 0);
        }
        for (a, b) in h.label_counts.iter_mut().zip(&oh.label_counts) {
            *a += b;
        }
    }
}

impl BreakdownAcc {
    /// [`Accumulator::observe`] with the unweighted focal loss of decision `i` of the chunk
    /// given by `focal_of`. Two passes over the chunk, each with few live values (one pass
    /// kept the counters in memory): the sums, then the gradient density and health counts.
    #[inline(always)]
    fn observe_with(&mut self, chunk: &DecisionChunk<'_>, focal_of: impl Fn(usize, &Decision) -> f64) {
        self.observe_sums(chunk, &focal_of);
        self.observe_health(chunk, &focal_of);
    }

    /// [`BreakdownAcc::observe`] for a dense sigmoid chunk of rows of `width` decisions (classes
    /// 0..width, weight 1, one anchor: see [`DecisionChunk::dense_width`]) with these focal
    /// losses; the walk compiled for AVX2 where the processor has it.
    fn observe_dense(&mut self, chunk: &DecisionChunk<'_>, width: usize, focal: &[f64]) {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        self.observe_dense_with(chunk, width, focal, avx2);
    }

    /// [`BreakdownAcc::observe_dense`], with the AVX2 copy of the walk when `avx2` (the
    /// processor must have it): the same values added in the same order as
    /// [`BreakdownAcc::observe_sums`] and [`BreakdownAcc::observe_health`] add them, so the same
    /// bits (no fused multiply-adds in either copy). The level slots are found first, once per
    /// level change (anchors come level by level), so that the walk of each image run
    /// ([`DenseWalk::run`]) calls nothing.
    fn observe_dense_with(&mut self, chunk: &DecisionChunk<'_>, width: usize, focal: &[f64], avx2: bool) {
        let batch = chunk.batch;
        let (decisions, meta, grads) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let n = decisions.len().min(meta.len()).min(grads.len()).min(focal.len());
        let level_col = batch.level.as_deref();
        // Level slots in order of appearance, and each row's slot.
        let mut levels: Vec<i64> = Vec::new();
        let mut row_slots: Vec<u32> = Vec::with_capacity(n / width);
        let mut level_at = None;
        for m in meta[..n].iter().step_by(width) {
            let l = level_col.map_or(0, |lv| lv[m.row as usize]);
            if level_at != Some(l) {
                if !levels.contains(&l) {
                    levels.push(l);
                }
                level_at = Some(l);
            }
            let slot = levels.iter().position(|&k| k == l).unwrap_or(0);
            row_slots.push(slot as u32);
        }
        let mut w = DenseWalk {
            width,
            cells: vec![ClassPartial::default(); levels.len() * width],
            ious: [BucketSums::default(); IOU_BANDS],
            density: [[[0u32; DENSITY_BINS]; 2]; DENSITY_LANES],
            fp16_underflow: 0,
            rare_rows: vec![0; n / width + 1],
            n_rare: 0,
            row_density: vec![0; width],
        };
        for run in chunk.runs {
            let rows = run.start.min(n)..run.end.min(n);
            let (image, logit_sum) = w.run(chunk, rows, &row_slots, focal, avx2);
            let mut sums = Group::default();
            sums.add_partial(&image.partial());
            if let Some(e) = self.images.get_mut(&batch.images[run.image].key) {
                e.group.merge_decisions(&sums);
            }
            self.health.negative_logit_sum += logit_sum;
        }
        if batch.iou.is_some() {
            for (g, p) in self.iou.iter_mut().zip(&w.ious) {
                let p = p.partial();
                if p.decisions > 0 {
                    g.add_partial(&p);
                }
            }
        }
        self.fold_classes(&levels, &w.cells, width, level_col.is_some());
        // Every negative (the cells' counts: exact), less those whose logit is not finite.
        let negatives: u64 = w.cells.iter().map(|p| p.0[0][0] as u64 + p.0[1][0] as u64).sum();
        let mut rare = RareCounts { negatives, ..RareCounts::default() };
        for &start in &w.rare_rows[..w.n_rare] {
            let start = start as usize;
            for (d, m) in decisions.slice(start..start + width).iter().zip(&meta[start..start + width]) {
                let positive = m.bucket.is_positive();
                let logit = if positive { -d.ce - d.ln_q } else { d.ln_q + d.ce };
                let ordinary = (d.p_t >= 1e-7) & (d.q >= 1e-7) & (d.ce <= 65504.0) & (logit.abs() <= 65504.0);
                if !ordinary {
                    rare.count(&d, positive, logit);
                }
                rare.negatives -= u64::from(!positive && !logit.is_finite());
            }
        }
        self.add_health(&w.density, w.fp16_underflow, &rare);
    }

    /// The group sums: f64 subtotals per chunk (a whole summation block: the same rows in the
    /// same order, whatever the batching), folded exactly once per chunk: per level and class
    /// (one level, 0, without a level column) the class sums, their gradient balance, the class
    /// x level cells and the level sums; per IoU band and bucket the band sums; per image run
    /// the image's sums. Every f64 subtotal adds the same values in the same order as one
    /// decision at a time would. A row's decisions are contiguous (one anchor: its level and
    /// band are looked up once).
    #[inline(always)]
    fn observe_sums(&mut self, chunk: &DecisionChunk<'_>, focal_of: &impl Fn(usize, &Decision) -> f64) {
        let batch = chunk.batch;
        let (decisions, meta, grads) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let n = decisions.len().min(meta.len()).min(grads.len());
        let level_col = batch.level.as_deref();
        let iou_col = batch.iou.as_deref();
        let weights = batch.weight.as_deref();
        // Classes per level slot: every class index of the chunk fits.
        let width = meta.iter().map(|m| m.class as usize + 1).max().unwrap_or(0);
        // Level slots in order of appearance, and their cells (slot k: `k * width ..`).
        let mut levels: Vec<i64> = Vec::new();
        let mut cells: Vec<ClassPartial> = Vec::new();
        // Per IoU band (a dump without IoU adds into band 0 and drops it).
        let mut ious = [BucketSums::default(); IOU_BANDS];
        for run in chunk.runs {
            // The image's subtotals per bucket within this run (one image within one block),
            // folded exactly once per run.
            let mut image = BucketSums::default();
            let mut start = run.start;
            let end = run.end.min(n);
            while start < end {
                let row = meta[start].row;
                let stop =
                    meta[start + 1..end].iter().position(|m| m.row != row).map_or(end, |k| start + 1 + k);
                let r = row as usize;
                let l = level_col.map_or(0, |lv| lv[r]);
                let slot = match levels.iter().position(|&k| k == l) {
                    Some(s) => s,
                    None => {
                        levels.push(l);
                        cells.resize(cells.len() + width, ClassPartial::default());
                        levels.len() - 1
                    }
                };
                let row_cells = &mut cells[slot * width..(slot + 1) * width];
                let band_sums = &mut ious[iou_col.map_or(0, |v| band(v[r]))];
                for i in start..stop {
                    let (d, m) = (&decisions.get(i), &meta[i]);
                    let b = m.bucket as usize;
                    let w = m.weight(weights);
                    let ce = d.ce * w;
                    let focal = focal_of(i, d) * w;
                    // One 4-wide add into the decision's bucket (see `ClassPartial`).
                    let t = &mut row_cells[m.class as usize].0[b];
                    t[0] += 1.0;
                    t[1] += ce;
                    t[2] += focal;
                    t[3] += grads[i] * w;
                    image.add(b, ce, focal);
                    band_sums.add(b, ce, focal);
                }
                start = stop;
            }
            let mut sums = Group::default();
            sums.add_partial(&image.partial());
            if let Some(e) = self.images.get_mut(&batch.images[run.image].key) {
                e.group.merge_decisions(&sums);
            }
        }
        if iou_col.is_some() {
            for (g, p) in self.iou.iter_mut().zip(&ious) {
                let p = p.partial();
                if p.decisions > 0 {
                    g.add_partial(&p);
                }
            }
        }
        self.fold_classes(&levels, &cells, width, level_col.is_some());
    }

    /// The gradient density of |p - y| and the health counts, in local counters, and the
    /// negative logits summed per image run (in decision order, as the runs' exact adds need).
    #[inline(always)]
    fn observe_health(&mut self, chunk: &DecisionChunk<'_>, focal_of: &impl Fn(usize, &Decision) -> f64) {
        let (decisions, meta, grads) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let n = decisions.len().min(meta.len()).min(grads.len());
        let weights = chunk.batch.weight.as_deref();
        // In lanes (decision i in lane i % DENSITY_LANES): most decisions fall in one bin, and
        // a single counter would chain every increment through memory.
        let mut density = [[[0u32; DENSITY_BINS]; 2]; DENSITY_LANES];
        let mut fp16_underflow = 0u64;
        let mut rare = RareCounts::default();
        for run in chunk.runs {
            let mut logit_sum = LogitLanes::default();
            for i in run.start..run.end.min(n) {
                let (d, m) = (&decisions.get(i), &meta[i]);
                let positive = m.bucket.is_positive();
                density[i % DENSITY_LANES][usize::from(positive)]
                    [super::ghm::bin_of(grads[i], DENSITY_BINS)] += 1;
                let focal = focal_of(i, d) * m.weight(weights);
                fp16_underflow += u64::from((focal > 0.0) & (focal < 5.960_464_5e-8));
                // The decision's logit: ln p - ln(1 - p), from ln p_t = -CE and ln(1 - p_t).
                let logit = if positive { -d.ce - d.ln_q } else { d.ln_q + d.ce };
                // An ordinary decision (p_t and 1 - p_t at least 1e-7, CE and logit within
                // fp16's range: all but a few) counts in none of the rare counters.
                let ordinary = (d.p_t >= 1e-7) & (d.q >= 1e-7) & (d.ce <= 65504.0) & (logit.abs() <= 65504.0);
                if !ordinary {
                    rare.count(d, positive, logit);
                }
                if !positive && logit.is_finite() {
                    logit_sum.0[m.class as usize % 4] += logit;
                    rare.negatives += 1;
                }
            }
            self.health.negative_logit_sum += logit_sum.total();
        }
        self.add_health(&density, fp16_underflow, &rare);
    }

    /// Adds a chunk's density counts (in lanes) and health counts.
    fn add_health(
        &mut self,
        density: &[[[u32; DENSITY_BINS]; 2]; DENSITY_LANES],
        fp16_underflow: u64,
        rare: &RareCounts,
    ) {
        for side in 0..2 {
            for bin in 0..DENSITY_BINS {
                self.density[side][bin] += density.iter().map(|lane| u64::from(lane[side][bin])).sum::<u64>();
            }
        }
        let h = &mut self.health;
        h.confidently_wrong[0] += rare.wrong[0];
        h.confidently_wrong[1] += rare.wrong[1];
        h.confidently_right[0] += rare.right[0];
        h.confidently_right[1] += rare.right[1];
        h.fp32_one += rare.fp32_one;
        h.fp16_underflow += fp16_underflow;
        h.fp16_overflow += rare.fp16_overflow;
        h.negatives += rare.negatives;
    }
}

/// The negatives' logits of one image run, in four f64 lanes: the decisions of class c in lane
/// c mod 4, in decision order within each lane (a dense row's four consecutive classes take one
/// 4-wide add, and no add waits for the one before as a single sum's chain would make it).
/// Every walk sums them so, whatever its chunk's layout, so each gives the same bits.
#[derive(Clone, Copy, Debug, Default)]
struct LogitLanes([f64; 4]);

impl LogitLanes {
    /// The run's sum: the lanes combined in a fixed order.
    fn total(self) -> f64 {
        super::sum::lanes_total(self.0)
    }
}

/// A dense walk's counts and tests of one decision (the scalar walk's, and the AVX2 walk's for
/// the classes left over from its groups of four): its gradient-density bin, an fp16
/// underflow, whether its row may count in a rare counter, and a negative's logit (added to
/// `logit_sum`, its class's lane of [`LogitLanes`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tally(
    density: &mut [[u32; DENSITY_BINS]; 2],
    d: &Decision,
    positive: bool,
    g: f64,
    focal: f64,
    fp16_underflow: &mut u64,
    row_rare: &mut bool,
    logit_sum: &mut f64,
) {
    density[usize::from(positive)][dense_bin(g)] += 1;
    // 0 < focal < fp16's smallest subnormal: as unsigned bits, 0 wraps above, and negatives
    // and NaNs lie above.
    *fp16_underflow += u64::from(focal.to_bits().wrapping_sub(1) < FP16_TINY_BITS - 1);
    // The logit of a negative decision; minus that of a positive one (the same magnitude:
    // rounding is symmetric). Finite when its magnitude is below infinity.
    let logit = d.ln_q + d.ce;
    // min and max that yield their second operand when either is NaN: a NaN q or logit fails
    // the test; a NaN p_t or CE counts in no counter.
    let lo = if d.p_t < d.q { d.p_t } else { d.q };
    let (ce, mag) = (d.ce, logit.abs());
    let hi = if ce > mag { ce } else { mag };
    *row_rare |= !((lo >= 1e-7) & (hi <= 65504.0));
    // Adding -0.0 leaves any sum as it is: no branch. (The negatives with a finite logit are
    // counted after the walk: every negative, less those with another logit, all in rows noted
    // as rare.)
    *logit_sum += if !positive & (mag < f64::INFINITY) { logit } else { -0.0 };
}

/// What the walk of a dense sigmoid chunk ([`BreakdownAcc::observe_dense_with`]) keeps across its
/// image runs.
struct DenseWalk {
    /// Decisions per row.
    width: usize,
    /// Per level slot, per class: the cells (slot k: `k * width ..`).
    cells: Vec<ClassPartial>,
    /// Per IoU band (a dump without IoU adds into band 0 and drops it).
    ious: [BucketSums; IOU_BANDS],
    /// Gradient density, in lanes (the decision of class c in lane c % DENSITY_LANES).
    density: [[[u32; DENSITY_BINS]; 2]; DENSITY_LANES],
    fp16_underflow: u64,
    /// The first decision of each row that may count in a rare counter (`..n_rare`); one
    /// more slot than rows, written whether or not the row is noted.
    rare_rows: Vec<u32>,
    n_rare: usize,
    /// The AVX2 walk's row scratch (`width`): per decision, its flat density index.
    row_density: Vec<i32>,
}

impl DenseWalk {
    /// Walks the rows of one image run (decisions `range` of the chunk, whole rows; `row_slots`
    /// holds each row's level slot): adds to the cells, bands, density and counters, and
    /// returns the run's image subtotals and its negative logits' sum. Nothing in it is a
    /// call, so the easy negatives' image and band subtotals (nearly every decision's) and the
    /// logit sum stay in registers instead of chaining their adds through memory. The rare
    /// counters are left to the caller: a row with a decision that may count in one (a test
    /// that lets through every decision that counts) is noted in `rare_rows`. The AVX2 copy
    /// when `avx2` (the processor must have it), out of line: its registers are its own.
    fn run(
        &mut self,
        chunk: &DecisionChunk<'_>,
        range: std::ops::Range<usize>,
        row_slots: &[u32],
        focal: &[f64],
        avx2: bool,
    ) -> (BucketSums, f64) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn with_avx2<const W: usize>(
                w: &mut DenseWalk,
                chunk: &DecisionChunk<'_>,
                range: std::ops::Range<usize>,
                row_slots: &[u32],
                focal: &[f64],
            ) -> (BucketSums, f64) {
                w.run_avx2::<W>(chunk, range, row_slots, focal)
            }
            if avx2 {
                // SAFETY: the caller says the processor supports AVX2 (see `observe_dense`).
                // Common widths as constants (rows of 4 classes, VOC's 20, COCO's 80): each
                // row's groups of four unrolled, nothing left over.
                return unsafe {
                    match self.width {
                        4 => with_avx2::<4>(self, chunk, range, row_slots, focal),
                        20 => with_avx2::<20>(self, chunk, range, row_slots, focal),
                        80 => with_avx2::<80>(self, chunk, range, row_slots, focal),
                        _ => with_avx2::<0>(self, chunk, range, row_slots, focal),
                    }
                };
            }
        }
        let _ = avx2;
        self.run_body(chunk, range, row_slots, focal)
    }

    /// The body of [`DenseWalk::run`].
    #[inline(always)]
    fn run_body(
        &mut self,
        chunk: &DecisionChunk<'_>,
        range: std::ops::Range<usize>,
        row_slots: &[u32],
        focal: &[f64],
    ) -> (BucketSums, f64) {
        let width = self.width;
        let (decisions, meta, grads) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let iou_col = chunk.batch.iou.as_deref();
        let mut image = BucketSums::default();
        // The image's easy negatives' sums (nearly every decision is one).
        let mut image_en = [0.0f64; 4];
        let mut logit_sum = LogitLanes::default();
        let (mut fp16_underflow, mut n_rare) = (0u64, self.n_rare);
        // The current band and its easy negatives' sums (written back when the band changes).
        let mut band_at = 0;
        let mut band_en = self.ious[0].0[0];
        let mut start = range.start;
        let mut row = start / width;
        while start + width <= range.end {
            let r = meta[start].row as usize;
            let b = iou_col.map_or(0, |v| band(v[r]));
            if b != band_at {
                self.ious[band_at].0[0] = band_en;
                band_en = self.ious[b].0[0];
                band_at = b;
            }
            let slot = row_slots[row] as usize;
            row += 1;
            let row_cells = &mut self.cells[slot * width..(slot + 1) * width];
            let ds = decisions.slice(start..start + width);
            let ms = &meta[start..start + width];
            let gs = &grads[start..start + width];
            let fs = &focal[start..start + width];
            let mut row_rare = false;
            for (c, ((d, m), ((&g, &focal), cell))) in
                ds.iter().zip(ms).zip(gs.iter().zip(fs).zip(row_cells)).enumerate()
            {
                let d = &d;
                let bucket = m.bucket as usize;
                let v = [1.0, d.ce, focal, g];
                // One 4-wide add into the decision's bucket (see `ClassPartial`).
                let t = &mut cell.0[bucket];
                for k in 0..4 {
                    t[k] += v[k];
                }
                if bucket == 0 {
                    for k in 0..4 {
                        image_en[k] += v[k];
                        band_en[k] += v[k];
                    }
                } else {
                    image.add(bucket, d.ce, focal);
                    self.ious[band_at].add(bucket, d.ce, focal);
                }
                // (Any lanes give the same counts: the class's.)
                let density = &mut self.density[c % DENSITY_LANES];
                let lane = &mut logit_sum.0[c % 4];
                tally(density, d, bucket >= 2, g, focal, &mut fp16_underflow, &mut row_rare, lane);
            }
            self.rare_rows[n_rare] = start as u32;
            n_rare += usize::from(row_rare);
            start += width;
        }
        self.ious[band_at].0[0] = band_en;
        image.0[0] = image_en;
        self.fp16_underflow += fp16_underflow;
        self.n_rare = n_rare;
        (image, logit_sum.total())
    }

    /// [`DenseWalk::run_body`] in AVX2 registers, a row in two passes over its classes four at a
    /// time: first what does not depend on the order (the rare test, the fp16 underflows, the
    /// density bins, counted there in rows of one group, the negatives' logits into their class
    /// lanes), then the adds in class order (the cells', the image's and the band's sums), as
    /// one decision at a time makes them: the same operands, the same order, no fused
    /// multiply-adds, the same bits. The classes left over (width not a multiple of 4) one at a
    /// time. `W`, when not 0, is the width.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2<const W: usize>(
        &mut self,
        chunk: &DecisionChunk<'_>,
        range: std::ops::Range<usize>,
        row_slots: &[u32],
        focal: &[f64],
    ) -> (BucketSums, f64) {
        use std::arch::x86_64::*;
        debug_assert!(W == 0 || W == self.width);
        let width = if W > 0 { W } else { self.width };
        let (decisions, meta, grads) = (chunk.decisions, chunk.meta, &chunk.terms.ce_grad[..]);
        let iou_col = chunk.batch.iou.as_deref();
        let load = |x: &[f64; 4]| _mm256_loadu_pd(x.as_ptr());
        let store = |x: &mut [f64; 4], v: __m256d| _mm256_storeu_pd(x.as_mut_ptr(), v);
        let mut image = BucketSums::default();
        // The image's easy negatives' sums (nearly every decision is one).
        let mut image_en = _mm256_setzero_pd();
        let mut logit_lanes = _mm256_setzero_pd();
        let (mut fp16_underflow, mut n_rare) = (0u64, self.n_rare);
        // The current band and its easy negatives' sums (written back when the band changes).
        let mut band_at = 0;
        let mut band_en = load(&self.ious[0].0[0]);
        let ones = _mm256_set1_pd(1.0);
        let abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
        let (p_min, hi_max) = (_mm256_set1_pd(1e-7), _mm256_set1_pd(65504.0));
        let infinity = _mm256_set1_pd(f64::INFINITY);
        let negative_zero = _mm256_set1_pd(-0.0);
        let (bins, top) = (_mm256_set1_pd(DENSITY_BINS as f64), _mm256_set1_pd((DENSITY_BINS - 1) as f64));
        // Unsigned 64-bit comparison by signed ones of the values with their sign bit flipped.
        let sign = _mm256_set1_epi64x(i64::MIN);
        let tiny = _mm256_xor_si256(_mm256_set1_epi64x((FP16_TINY_BITS - 1) as i64), sign);
        let one = _mm256_set1_epi64x(1);
        // Rows of one group of four count their density bins in the first loop, longer rows in
        // the second (counted in the first, the counts of consecutive groups of a row waited
        // for each other; in the second, the adds hide that).
        let one_group = width / 4 == 1;
        let mut start = range.start;
        let mut row = start / width;
        while start + width <= range.end {
            let r = meta[start].row as usize;
            let b = iou_col.map_or(0, |v| band(v[r]));
            if b != band_at {
                store(&mut self.ious[band_at].0[0], band_en);
                band_en = load(&self.ious[b].0[0]);
                band_at = b;
            }
            let slot = row_slots[row] as usize;
            row += 1;
            let row_cells = &mut self.cells[slot * width..(slot + 1) * width];
            let row_at = start..start + width;
            let (ces, ln_qs) = (&decisions.ce[row_at.clone()], &decisions.ln_q[row_at.clone()]);
            let (p_ts, qs) = (&decisions.p_t[row_at.clone()], &decisions.q[row_at.clone()]);
            let ms = &meta[row_at.clone()];
            let gs = &grads[row_at.clone()];
            let fs = &focal[row_at];
            let density_at = &mut self.row_density[..width];
            let mut row_rare = false;
            // Two passes over the row's groups of four. The first computes what does not depend
            // on the order; the second makes the adds in class order. Split, the second loop's
            // running sums stay in registers (one loop doing both spilled one of them to the
            // stack, chaining its adds through memory).
            let whole = width - width % 4;
            for c in (0..whole / 4).map(|q| 4 * q) {
                let bucket: [usize; 4] = std::array::from_fn(|l| ms[c + l].bucket as usize);
                let g = _mm256_loadu_pd(gs[c..c + 4].as_ptr());
                let f = _mm256_loadu_pd(fs[c..c + 4].as_ptr());
                let ce = _mm256_loadu_pd(ces[c..c + 4].as_ptr());
                let ln_q = _mm256_loadu_pd(ln_qs[c..c + 4].as_ptr());
                let p_t = _mm256_loadu_pd(p_ts[c..c + 4].as_ptr());
                let q = _mm256_loadu_pd(qs[c..c + 4].as_ptr());
                // The scalar walk's tests, lane by lane: MINPD and MAXPD yield their second
                // operand when either is NaN, as its selects do; ordered comparisons are false
                // on NaN, as its are.
                let logit = _mm256_add_pd(ln_q, ce);
                let mag = _mm256_and_pd(logit, abs_mask);
                let lo = _mm256_min_pd(p_t, q);
                let hi = _mm256_max_pd(ce, mag);
                let ordinary = _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(lo, p_min),
                    _mm256_cmp_pd::<_CMP_LE_OQ>(hi, hi_max),
                );
                row_rare |= _mm256_movemask_pd(ordinary) != 0xf;
                // 0 < focal < fp16's smallest subnormal (see `run_body`).
                let bits = _mm256_xor_si256(_mm256_sub_epi64(_mm256_castpd_si256(f), one), sign);
                let under = _mm256_cmpgt_epi64(tiny, bits);
                fp16_underflow += u64::from(_mm256_movemask_pd(_mm256_castsi256_pd(under)).count_ones());
                // The density bins: [`super::ghm::bin_of`] (MAXPD with 0 second: NaN to 0), and
                // the positives' 100 further on (a lane's [negatives, positives] read flat).
                let scaled = _mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(g, bins), _mm256_setzero_pd()), top);
                let buckets =
                    _mm_set_epi32(bucket[3] as i32, bucket[2] as i32, bucket[1] as i32, bucket[0] as i32);
                let positive = _mm_cmpgt_epi32(buckets, _mm_set1_epi32(1));
                let at = _mm_add_epi32(
                    _mm256_cvttpd_epi32(scaled),
                    _mm_and_si128(positive, _mm_set1_epi32(DENSITY_BINS as i32)),
                );
                if one_group {
                    // Counted here, each index taken from the register (any lanes give the same
                    // counts): stored, the second loop read them back before the store could
                    // forward them, and waited.
                    let (lo, hi) = (_mm_cvtsi128_si64(at) as u64, _mm_extract_epi64::<1>(at) as u64);
                    for (l, i) in [lo, lo >> 32, hi, hi >> 32].into_iter().enumerate() {
                        self.density[l].as_flattened_mut()[i as u32 as usize] += 1;
                    }
                } else {
                    _mm_storeu_si128(density_at[c..c + 4].as_mut_ptr().cast(), at);
                }
                // The negatives' finite logits (-0.0 elsewhere): classes c..c + 4 into the lanes
                // 0-3 of the run's sums (see `LogitLanes`).
                let keep = _mm256_andnot_pd(
                    _mm256_castsi256_pd(_mm256_cvtepi32_epi64(positive)),
                    _mm256_cmp_pd::<_CMP_LT_OQ>(mag, infinity),
                );
                logit_lanes = _mm256_add_pd(logit_lanes, _mm256_blendv_pd(negative_zero, logit, keep));
            }
            for c in (0..whole / 4).map(|q| 4 * q) {
                let bucket: [usize; 4] = std::array::from_fn(|l| ms[c + l].bucket as usize);
                let g = _mm256_loadu_pd(gs[c..c + 4].as_ptr());
                let f = _mm256_loadu_pd(fs[c..c + 4].as_ptr());
                let ce = _mm256_loadu_pd(ces[c..c + 4].as_ptr());
                // Each decision's (1, CE, focal, |p - y|): a 4 x 4 transpose.
                let (t0, t1) = (_mm256_unpacklo_pd(ones, ce), _mm256_unpackhi_pd(ones, ce));
                let (t2, t3) = (_mm256_unpacklo_pd(f, g), _mm256_unpackhi_pd(f, g));
                let v = [
                    _mm256_permute2f128_pd::<0x20>(t0, t2),
                    _mm256_permute2f128_pd::<0x20>(t1, t3),
                    _mm256_permute2f128_pd::<0x31>(t0, t2),
                    _mm256_permute2f128_pd::<0x31>(t1, t3),
                ];
                for l in 0..4 {
                    let t = &mut row_cells[c + l].0[bucket[l]];
                    store(t, _mm256_add_pd(load(t), v[l]));
                    if bucket[l] == 0 {
                        image_en = _mm256_add_pd(image_en, v[l]);
                        band_en = _mm256_add_pd(band_en, v[l]);
                    } else {
                        let (ce, focal) = (ces[c + l], fs[c + l]);
                        image.add(bucket[l], ce, focal);
                        self.ious[band_at].add(bucket[l], ce, focal);
                    }
                    // (Any lanes give the same counts.)
                    if !one_group {
                        self.density[l].as_flattened_mut()[density_at[c + l] as usize] += 1;
                    }
                }
            }
            // The classes left over, one at a time; their logits into the lanes after the row's
            // groups (classes whole + k into lane k), as the scalar walk adds them.
            let mut rest = LogitLanes([-0.0; 4]);
            for c in whole..width {
                let (d, bucket, g, focal) = (&decisions.get(start + c), ms[c].bucket as usize, gs[c], fs[c]);
                let v = _mm256_set_pd(g, focal, d.ce, 1.0);
                let t = &mut row_cells[c].0[bucket];
                store(t, _mm256_add_pd(load(t), v));
                if bucket == 0 {
                    image_en = _mm256_add_pd(image_en, v);
                    band_en = _mm256_add_pd(band_en, v);
                } else {
                    image.add(bucket, d.ce, focal);
                    self.ious[band_at].add(bucket, d.ce, focal);
                }
                // The scalar walk's counts and tests.
                let density = &mut self.density[c % DENSITY_LANES];
                let lane = &mut rest.0[c % 4];
                tally(density, d, bucket >= 2, g, focal, &mut fp16_underflow, &mut row_rare, lane);
            }
            if whole < width {
                logit_lanes = _mm256_add_pd(logit_lanes, _mm256_loadu_pd(rest.0.as_ptr()));
            }
            self.rare_rows[n_rare] = start as u32;
            n_rare += usize::from(row_rare);
            start += width;
        }
        store(&mut self.ious[band_at].0[0], band_en);
        store(&mut image.0[0], image_en);
        let mut lanes = LogitLanes::default();
        _mm256_storeu_pd(lanes.0.as_mut_ptr(), logit_lanes);
        let logit_sum = lanes.total();
        self.fp16_underflow += fp16_underflow;
        self.n_rare = n_rare;
        (image, logit_sum)
    }
}

/// The bits of the health check's bound for an fp16 underflow (fp16's smallest subnormal).
const FP16_TINY_BITS: u64 = 5.960_464_5e-8f64.to_bits();

/// [`super::ghm::bin_of`]`(g, DENSITY_BINS)`: the same bin for every g (NaN and negatives in
/// bin 0, the rest truncated and capped), through a saturating conversion to u8, which takes
/// fewer instructions than one to i32.
#[inline(always)]
fn dense_bin(g: f64) -> usize {
    const { assert!(DENSITY_BINS < 256) };
    usize::from((g * DENSITY_BINS as f64) as u8).min(DENSITY_BINS - 1)
}

/// A chunk's health counts of the rare kinds (saturated p_t, fp32 ones, fp16 overflows), and its
/// negatives with a finite logit.
#[derive(Default)]
struct RareCounts {
    /// Confidently wrong: negatives, positives.
    wrong: [u64; 2],
    /// Confidently right: negatives, positives.
    right: [u64; 2],
    fp32_one: u64,
    fp16_overflow: u64,
    negatives: u64,
}

impl RareCounts {
    /// Counts a decision that is not ordinary (out of line: the loop stays small).
    #[cold]
    #[inline(never)]
    fn count(&mut self, d: &Decision, positive: bool, logit: f64) {
        let side = usize::from(positive);
        self.wrong[side] += u64::from(d.p_t < 1e-7);
        self.right[side] += u64::from(d.q < 1e-7);
        self.fp32_one += u64::from(d.q < f64::from(f32::EPSILON) / 2.0);
        self.fp16_overflow += u64::from(logit.abs() > 65504.0 || d.ce > 65504.0);
    }
}

/// A batch's focal loss (exactly summed), positives, and the sum of max(1, positives) over its
/// images.
fn batch_sums(batch: &[&ImageGroup]) -> (f64, u64, u64) {
    let mut loss = ExactSum::ZERO;
    let (mut positives, mut factor) = (0u64, 0u64);
    for g in batch {
        loss += g.group.focal;
        positives += g.group.positives;
        factor += g.group.positives.max(1);
    }
    (loss.value(), positives, factor)
}

impl BreakdownAcc {
    fn totals(&self) -> (f64, f64) {
        let (mut ce, mut focal) = (ExactSum::ZERO, ExactSum::ZERO);
        for g in self.images.values() {
            ce += g.group.ce;
            focal += g.group.focal;
        }
        (ce.value(), focal.value())
    }

    /// The breakdown section of a dump of this `shape` (anchors are a meaningful unit in dense
    /// dumps; the gradient balance is given for sigmoid decisions).
    pub fn breakdowns(&self, shape: DumpShape) -> crate::report::Breakdowns {
        use serde_json::json;
        let dense = shape.layout == crate::config::Layout::Dense;
        let (ce, focal) = self.totals();
        let by_level = self.level.iter().map(|(k, g)| g.row(json!(k), dense, ce, focal)).collect();
        let by_class = self
            .classes()
            .iter()
            .enumerate()
            .filter(|(_, g)| g.decisions > 0)
            .map(|(k, g)| {
                let mut row = g.row(json!(k), false, ce, focal);
                // Softmax decisions of a foreground class are all positives: no balance to
                // speak of (and |p - y| is not the softmax gradient of the other logits).
                if shape.activation == Activation::Sigmoid {
                    let [neg, pos] = self.class_grad.get(k).copied().unwrap_or_default();
                    let (positive, negative) = (pos.value(), neg.value());
                    row.ce_gradient = Some(ClassGradient {
                        positive,
                        negative,
                        pos_neg_ratio: (negative > 0.0).then(|| positive / negative),
                    });
                }
                row
            })
            .collect();
        let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let classes = self.class_level.values().map(Vec::len).max().unwrap_or(0);
        let mut class_by_level = Vec::new();
        for c in 0..classes {
            for (&level, v) in &self.class_level {
                let Some(g) = v.get(c).filter(|g| g.decisions > 0) else { continue };
                class_by_level.push(ClassLevelCell {
                    class: c as u64,
                    level,
                    decisions: g.decisions,
                    positives: g.positives,
                    easy_negative_share: share(g.easy_negatives as f64, g.decisions as f64),
                    easy_negative_ce_share: share(g.en_ce.value(), g.ce.value()),
                    easy_negative_focal_share: share(g.en_focal.value(), g.focal.value()),
                    focal_share: share(g.focal.value(), focal),
                });
            }
        }
        let by_iou = if self.has_iou {
            self.iou
                .iter()
                .enumerate()
                .filter(|(_, g)| g.anchors > 0 || g.decisions > 0)
                .map(|(b, g)| {
                    let key = format!(
                        "{:.1}-{:.1}",
                        b as f64 / IOU_BANDS as f64,
                        (b + 1) as f64 / IOU_BANDS as f64
                    );
                    g.row(json!(key), dense, ce, focal)
                })
                .collect()
        } else {
            Vec::new()
        };
        let rows: Vec<GroupRow> = self
            .images
            .iter()
            .map(|(k, g)| g.group.row(serde_json::to_value(k).unwrap_or_default(), dense, ce, focal))
            .collect();
        let top = |key: &dyn Fn(&GroupRow) -> f64| {
            let mut idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].decisions > 0).collect();
            // Highest first; ties keep image-id order (the map's order).
            idx.sort_by(|&a, &b| key(&rows[b]).total_cmp(&key(&rows[a])));
            idx.into_iter().take(TOP_IMAGES).map(|i| rows[i].clone()).collect()
        };
        crate::report::Breakdowns {
            by_level,
            by_class,
            by_iou,
            top_images_by_loss: top(&|r| r.focal_share),
            top_images_by_easy_negative_share: top(&|r| r.easy_negative_ce_share),
            class_by_level,
        }
    }

    /// The gradient density section.
    pub fn density(&self) -> GradientDensity {
        GradientDensity {
            bins: DENSITY_BINS,
            negatives: self.density[0].clone(),
            positives: self.density[1].clone(),
        }
    }

    /// The focal loss (this analysis's gamma and alpha) under each framework's normaliser.
    pub fn normalizers(&self, batch_size: Option<usize>) -> Vec<Normalizer> {
        let n_images = self.images.len().max(1) as f64;
        let (_, focal) = self.totals();
        let decisions: u64 = self.images.values().map(|g| g.group.decisions).sum();
        let mut per_image = ExactSum::ZERO;
        for g in self.images.values() {
            per_image += g.group.focal.value() / g.group.positives.max(1) as f64;
        }
        // Training batches: consecutive images in dump order.
        let mut order: Vec<&ImageGroup> = self.images.values().collect();
        order.sort_by_key(|g| g.first);
        let batches: Vec<&[&ImageGroup]> = match batch_size {
            Some(n) => order.chunks(n).collect(),
            None => vec![&order[..]],
        };
        // Per batch: its focal loss, positives, and mmdetection's avg_factor (the sum over its
        // images of SamplingResult.num_pos = max(1, positives)); the value is the mean over
        // batches of the batch's loss / its normaliser (the dump as one batch by default).
        let mut batch_positives = ExactSum::ZERO;
        let mut avg_factor = ExactSum::ZERO;
        for batch in &batches {
            let (loss, positives, factor) = batch_sums(batch);
            batch_positives += loss / positives.max(1) as f64;
            avg_factor += loss / factor.max(1) as f64;
        }
        let n_batches = batches.len().max(1) as f64;
        // detectron2 RetinaNet: an EMA of the batch's positives (momentum 0.9, initial 100), in
        // dump order; each image a batch unless --batch-size says otherwise.
        let ema_batches: Vec<&[&ImageGroup]> = order.chunks(batch_size.unwrap_or(1)).collect();
        let mut ema = 100.0;
        let mut detectron = ExactSum::ZERO;
        for batch in &ema_batches {
            let (loss, positives, _) = batch_sums(batch);
            ema = 0.9 * ema + 0.1 * positives.max(1) as f64;
            detectron += loss / ema;
        }
        let n_ema = ema_batches.len().max(1) as f64;
        let (batch, ema_batch) = match batch_size {
            Some(1) => ("each image a batch".to_string(), "each image a batch".to_string()),
            Some(n) => (format!("batches of {n} images"), format!("batches of {n} images")),
            None => (
                "the dump as one batch unless --batch-size".to_string(),
                "each image a batch unless --batch-size".to_string(),
            ),
        };
        vec![
            Normalizer {
                name: "per_image_positives".into(),
                used_by: "torchvision RetinaNet: mean over images of loss / max(1, positives in the image)".into(),
                value: per_image.value() / n_images,
            },
            Normalizer {
                name: "batch_positives".into(),
                used_by: format!("torchvision SSD and FCOS: loss / max(1, positives in the batch); {batch}"),
                value: batch_positives.value() / n_batches,
            },
            Normalizer {
                name: "avg_factor".into(),
                used_by: format!(
                    "mmdetection anchor heads (RetinaHead, SSDHead): loss / avg_factor, the sum over the batch's images of max(1, positives in the image); {batch}"
                ),
                value: avg_factor.value() / n_batches,
            },
            Normalizer {
                name: "valid_decisions".into(),
                used_by: "mean over valid decisions (reduction='mean')".into(),
                value: focal / decisions.max(1) as f64,
            },
            Normalizer {
                name: "ema_positives".into(),
                used_by: format!(
                    "detectron2 RetinaNet: loss / EMA of max(1, positives in the batch) (momentum 0.9, initial 100) in dump order, mean over batches; {ema_batch}"
                ),
                value: detectron.value() / n_ema,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::decisions::{for_each_chunk, Expansion, Scoring};
    use crate::config::{Layout, ScoreKind};
    use crate::input::ScoreValues;

    /// A dense sigmoid batch of `rows` anchors with C = 3 logits, levels in runs, IoU and three
    /// images; some anchors are ignored (-2) or background (-1).
    fn dense_batch(rows: usize) -> Batch {
        let mut rng = crate::rng::Rng::new(11, 0);
        let labels: Vec<i32> = (0..rows).map(|_| rng.below(6) as i32 - 2).map(|l| l.min(2)).collect();
        let scores: Vec<f32> = (0..rows * 3).map(|_| (rng.normal() * 5.0) as f32).collect();
        let mut b = crate::input::test_batch(
            (0..rows).map(|r| (r * 3 / rows) as i64),
            Targets::Labels(labels),
            ScoreValues::from_f32(scores),
            0,
        );
        b.level = Some((0..rows).map(|r| 3 + (r * 5 / rows) as i64 % 3).collect());
        b.iou = Some((0..rows).map(|_| rng.uniform() as f32).collect());
        b
    }

    /// The breakdown of `batch` with this gamma and alpha (the chunk's terms use gamma 2 and
    /// alpha 0.25: another gamma takes the path without precomputed focal losses).
    fn observed(batch: &Batch, gamma: f64) -> BreakdownAcc {
        let shape =
            DumpShape { layout: Layout::Dense, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        let exp = Expansion { shape, width: 3, background_class: 0 };
        let scoring = Scoring { tau: 0.9, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
        let mut acc = BreakdownAcc::new(gamma, Some(0.25));
        acc.observe_batch(batch);
        for_each_chunk(&exp, batch, &scoring, &mut |chunk| acc.observe(chunk));
        acc
    }

    #[test]
    fn breakdown_sums_match_a_naive_pass_over_every_decision() {
        let batch = dense_batch(3000);
        let Targets::Labels(labels) = &batch.targets else { unreachable!() };
        let scores = batch.scores.f32s().unwrap();
        let (levels, ious) = (batch.level.as_ref().unwrap(), batch.iou.as_ref().unwrap());
        for gamma in [2.0, 1.5] {
            let acc = observed(&batch, gamma);
            // Naive: every decision on its own, in f64.
            let mut cell: BTreeMap<(i64, usize), [f64; 5]> = BTreeMap::new();
            let mut band_sums = [[0.0f64; 3]; IOU_BANDS];
            let mut density = [vec![0u64; DENSITY_BINS], vec![0u64; DENSITY_BINS]];
            let (mut negatives, mut underflow, mut logits) = (0u64, 0u64, 0.0f64);
            for r in 0..batch.rows {
                if labels[r] == -2 {
                    continue;
                }
                for c in 0..3 {
                    let y = if labels[r] == c as i32 { 1.0 } else { 0.0 };
                    let d = Decision::from_logit(f64::from(scores[r * 3 + c]), y);
                    let focal = d.focal(gamma, Some(0.25));
                    let e = cell.entry((levels[r], c)).or_default();
                    for (k, v) in [1.0, y, d.ce, focal, d.ce_grad()].into_iter().enumerate() {
                        e[k] += v;
                    }
                    let b = &mut band_sums[band(ious[r])];
                    b[0] += 1.0;
                    b[1] += d.ce;
                    b[2] += focal;
                    density[y as usize][super::super::ghm::bin_of(d.ce_grad(), DENSITY_BINS)] += 1;
                    underflow += u64::from(focal > 0.0 && focal < 5.960_464_5e-8);
                    if y == 0.0 {
                        negatives += 1;
                        logits += f64::from(scores[r * 3 + c]);
                    }
                }
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-300);
            for ((level, c), want) in &cell {
                let got = &acc.class_level[level][*c];
                assert_eq!((got.decisions, got.positives), (want[0] as u64, want[1] as u64));
                assert!(close(got.ce.value(), want[2]) && close(got.focal.value(), want[3]), "{level} {c}");
            }
            for (c, g) in acc.class_grad.iter().enumerate() {
                let want: f64 = cell.iter().filter(|((_, k), _)| *k == c).map(|(_, v)| v[4]).sum();
                assert!(close(g[0].value() + g[1].value(), want), "{c}");
            }
            for (b, want) in band_sums.iter().enumerate() {
                assert_eq!(acc.iou[b].decisions, want[0] as u64);
                assert!(close(acc.iou[b].ce.value(), want[1]) && close(acc.iou[b].focal.value(), want[2]));
            }
            let image_decisions: u64 = acc.images.values().map(|g| g.group.decisions).sum();
            assert_eq!(image_decisions, cell.values().map(|v| v[0] as u64).sum::<u64>());
            assert_eq!(acc.density, density);
            assert_eq!((acc.health.negatives, acc.health.fp16_underflow), (negatives, underflow));
            assert!(close(acc.health.negative_logit_sum.value(), logits));
        }
    }

    /// A dense sigmoid batch of `rows` anchors with `c` scores each (logits, or probabilities
    /// when `probs`), images of 37 rows (several per summation block), and levels and IoU when
    /// `extras`; the scores include saturated, huge and infinite ones (rare counters, fp16 underflows).
    fn extreme_dense_batch(rows: usize, c: usize, probs: bool, extras: bool) -> Batch {
        let mut rng = crate::rng::Rng::new(5, c as u64);
        let labels: Vec<i32> = (0..rows).map(|_| rng.below(c as u64 + 3) as i32 - 2).collect();
        let scores: Vec<f64> = (0..rows * c)
            .map(|_| {
                let x = rng.normal() * 4.0;
                let x = match rng.below(40) {
                    0 => x * 2e4,
                    1 => x * 30.0,
                    2 => 0.0,
                    // The largest logits the input checks accept (non-finite scores are
                    // refused when read, so no chunk holds one).
                    3 => x.signum() * crate::input::MAX_ABS_LOGIT,
                    _ => x,
                };
                if probs {
                    match rng.below(30) {
                        0 => 0.0,
                        1 => 1.0,
                        _ => 1.0 / (1.0 + (-x).exp()),
                    }
                } else {
                    x
                }
            })
            .collect();
        let mut b = crate::input::test_batch(
            (0..rows).map(|r| (r / 37) as i64),
            Targets::Labels(labels),
            ScoreValues::F64(scores.into()),
            3,
        );
        if extras {
            b.level = Some((0..rows).map(|r| [3, 3, 4, 5, 4][r * 5 / rows]).collect());
            b.iou = Some((0..rows).map(|_| (rng.uniform() * 1.05) as f32).collect());
        }
        b
    }

    #[test]
    fn the_dense_walk_gives_the_bits_of_the_general_one() {
        for (c, probs, extras) in [
            (3, false, true),
            (2, false, true),
            (5, true, true),
            (4, false, false),
            (4, true, true),
            (7, true, false),
            (8, false, true),
            (9, true, true),
            // The widths whose AVX2 walk has its width as a constant (4 above, 20, 80).
            (20, false, true),
            (80, true, true),
        ] {
            let batch = extreme_dense_batch(if c > 16 { 1200 } else { 5000 }, c, probs, extras);
            let scores = if probs { ScoreKind::Probs } else { ScoreKind::Logits };
            let shape = DumpShape { layout: Layout::Dense, scores, activation: Activation::Sigmoid };
            let exp = Expansion { shape, width: c, background_class: 0 };
            let scoring = Scoring { tau: 0.6, focus: Focus { gamma: 2.0, alpha: Some(0.25) } };
            for gamma in [2.0, 1.5] {
                let alpha = Some(0.25);
                let mut general = BreakdownAcc::new(gamma, alpha);
                let (mut dense, mut fallback) = (general.clone(), general.clone());
                for acc in [&mut general, &mut dense, &mut fallback] {
                    acc.observe_batch(&batch);
                }
                let mut chunks = 0;
                for_each_chunk(&exp, &batch, &scoring, &mut |chunk| {
                    assert_eq!(chunk.dense_width(), Some(c));
                    let focal_of = |_: usize, d: &Decision| d.focal(gamma, alpha);
                    general.observe_sums(chunk, &focal_of);
                    general.observe_health(chunk, &focal_of);
                    dense.observe(chunk);
                    let focal: Vec<f64> = chunk.decisions.iter().map(|d| d.focal(gamma, alpha)).collect();
                    fallback.observe_dense_with(chunk, c, &focal, false);
                    chunks += 1;
                });
                assert!(chunks > 2);
                assert_eq!(dense, general, "{c} {probs} {extras} {gamma}");
                assert_eq!(fallback, general, "{c} {probs} {extras} {gamma}");
                let h = &general.health;
                assert!(h.fp16_overflow > 0 && h.fp16_underflow > 0 && h.confidently_wrong[0] > 0);
                assert!(general.images.len() > 30);
                // Negatives whose probability is exactly 0 have an infinite logit: not counted.
                let negatives: u64 =
                    general.images.values().map(|g| g.group.decisions - g.group.positives).sum();
                assert!(!probs || h.negatives < negatives);
            }
        }
    }

    #[test]
    fn only_dense_sigmoid_chunks_take_the_dense_walk() {
        // Labels 0..3 (a softmax dump has no -1 or -2).
        let mut batch = dense_batch(300);
        batch.targets = Targets::Labels((0..300).map(|r| r % 3).collect());
        for activation in [Activation::Softmax, Activation::Sigmoid] {
            let shape = DumpShape { layout: Layout::Dense, scores: ScoreKind::Logits, activation };
            let exp = Expansion { shape, width: 3, background_class: 0 };
            for_each_chunk(&exp, &batch, &Scoring { tau: 0.5, ..Scoring::default() }, &mut |chunk| {
                let want = (activation == Activation::Sigmoid).then_some(3);
                assert_eq!(chunk.dense_width(), want);
            });
        }
        let mut binary = crate::input::test_batch(
            (0..200).map(|r| r / 50),
            Targets::Binary((0..200).map(|r| f64::from(r % 2)).collect()),
            ScoreValues::from_f32((0..200).map(|r| r as f32 * 0.1 - 10.0).collect()),
            0,
        );
        binary.weight = Some(vec![2.0; 200]);
        let shape =
            DumpShape { layout: Layout::Binary, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        let exp = Expansion { shape, width: 1, background_class: 0 };
        for_each_chunk(&exp, &binary, &Scoring { tau: 0.5, ..Scoring::default() }, &mut |chunk| {
            assert_eq!(chunk.dense_width(), None);
        });
    }

    #[test]
    fn observe_batch_counts_anchors_per_level_run_with_the_ignored_ones() {
        let batch = dense_batch(500);
        let acc = observed(&batch, 2.0);
        let Targets::Labels(labels) = &batch.targets else { unreachable!() };
        let levels = batch.level.as_ref().unwrap();
        for (l, g) in &acc.level {
            let rows: Vec<usize> = (0..batch.rows).filter(|&r| levels[r] == *l).collect();
            assert_eq!(g.anchors, rows.len() as u64);
            assert_eq!(g.ignored, rows.iter().filter(|&&r| labels[r] == -2).count() as u64);
        }
        assert_eq!(acc.level.values().map(|g| g.anchors).sum::<u64>(), batch.rows as u64);
    }

    #[test]
    fn states_written_before_the_long_tail_sums_still_read() {
        let mut acc = BreakdownAcc::new(2.0, Some(0.25));
        acc.class = vec![Group { decisions: 3, ..Group::default() }];
        let mut v = serde_json::to_value(&acc).unwrap();
        let o = v.as_object_mut().unwrap();
        assert!(o.remove("class_grad").is_some() && o.remove("class_level").is_some());
        let old: BreakdownAcc = serde_json::from_value(v).unwrap();
        assert_eq!(old, acc);
    }

    #[test]
    fn health_counts_of_states_written_before_the_confidence_counters_still_read() {
        let now = HealthCounts {
            confidently_wrong: [3, 1],
            confidently_right: [40, 2],
            fp32_one: 5,
            negatives: 9,
            label_counts: vec![1, 2],
            ..HealthCounts::default()
        };
        let mut v = serde_json::to_value(&now).unwrap();
        assert_eq!(serde_json::from_value::<HealthCounts>(v.clone()).unwrap(), now);
        // The earlier layout: one `saturated` count (both sides), no per-side counters.
        let o = v.as_object_mut().unwrap();
        o.remove("confidently_wrong");
        o.remove("confidently_right");
        o.insert("saturated".into(), 46.into());
        let old: HealthCounts = serde_json::from_value(v).unwrap();
        assert_eq!(old, HealthCounts { confidently_wrong: [0; 2], confidently_right: [0; 2], ..now });
    }

    #[test]
    fn iou_band_counts_match_one_row_at_a_time() {
        let mut rng = crate::rng::Rng::new(9, 0);
        let n = 1003;
        let ious: Vec<f32> = (0..n)
            .map(|_| match rng.below(40) {
                0 => f32::NAN,
                1 => -0.5,
                2 => 0.1,
                3 => 1.0,
                4..=9 => rng.uniform() as f32,
                _ => (rng.uniform() * 0.1) as f32,
            })
            .collect();
        let labels: Vec<i32> = (0..n).map(|_| [-2, -1, -1, -1, 0, 3][rng.below(6) as usize]).collect();
        for len in [0, 5, 8, 64, 100, 1003] {
            for labels in [Some(&labels[..len]), None] {
                let (mut anchors, mut ignored) = ([0u64; IOU_BANDS], [0u64; IOU_BANDS]);
                for r in 0..len {
                    anchors[band(ious[r])] += 1;
                    ignored[band(ious[r])] += labels.map_or(0, |l| u64::from(l[r] == -2));
                }
                assert_eq!(iou_band_counts(&ious[..len], labels), (anchors, ignored), "{len}");
            }
        }
        let (anchors, ignored) = iou_band_counts(&ious, Some(&labels));
        assert!(anchors[0] > 500 && anchors[1..].iter().all(|&a| a > 0) && ignored[0] > 0);
    }
}
