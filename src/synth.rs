//! Synthetic RetinaNet-like dumps, deterministic per seed.
//!
//! Each image gets a real anchor grid (FPN levels P3-P7, strides 8-128, 3 scales x 3 aspect
//! ratios per location, sized so the image has exactly `anchors_per_image` anchors), 1-7 random
//! ground-truth boxes and sometimes a crowd region. Anchors are matched as torchvision's
//! RetinaNet does (IoU >= 0.5 foreground, < 0.4 background, in between ignored, plus each box's
//! best anchor), and anchors mostly inside a crowd region are ignored, as COCO's `iscrowd`
//! boxes are. This gives roughly 1 foreground anchor per 1000 and about 1% ignored.
//!
//! Logits imitate a partly trained model: background scores centred well below the prior-bias
//! initialisation (-4.6) but rising with IoU, a small share of confusing background, and
//! foreground scores that grow with IoU. Each image is generated from its own seeded stream, so
//! the output does not depend on the thread count.
//!
//! With [`SynthConfig::training`], the dump is a training sequence instead: the same images at
//! several steps, each step's logits `prior + k (z - prior)` where `z` is the logit above,
//! `prior = -log((1 - 0.01) / 0.01)` is RetinaNet's prior-bias initialisation, and the
//! sharpness `k` grows linearly over the steps to 1 (from 0 with [`Training::prior_start`]: every
//! logit is the prior at the first step). Because the draws are the same at every step, each
//! decision's logit moves monotonically: the mean negative logit falls linearly with `k` (the
//! negatives' mean `z` lies below the prior), confident negatives grow more confident and
//! confusing ones harder, which is the drift `hardmine trend` shows.

use std::path::{Path, PathBuf};

use polars_arrow::array::{FixedSizeListArray, PrimitiveArray};
use polars_arrow::datatypes::{ArrowDataType, Field};
use polars_core::prelude::{Column, DataFrame, NamedFrom, Series};
use polars_io::parquet::write::{ParquetCompression, ParquetWriter};
use rayon::prelude::*;

use crate::config::Layout;
use crate::error::{ConfigError, Error, OutputError};
use crate::output::AtomicFile;
pub use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Number of images.
    pub images: usize,
    /// Anchors per image (exact).
    pub anchors_per_image: usize,
    /// Foreground classes C.
    pub classes: usize,
    /// Seed of the random streams.
    pub seed: u64,
    /// Dense (one row per anchor) or binary (one row per anchor-class decision; ignored anchors
    /// are left out).
    pub layout: Layout,
    /// Images per Parquet file.
    pub images_per_file: usize,
    /// Rows per Parquet row group (modest groups keep readers' memory low).
    pub rows_per_group: usize,
    /// A training sequence: the same images at several steps with sharpening logits (`None`:
    /// one dump, no `step`).
    pub training: Option<Training>,
}

/// A synthetic training sequence (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Training {
    /// Steps written (at least 2).
    pub steps: usize,
    /// Training iterations between two steps: step `i` is numbered `i * every`.
    pub every: u64,
    /// The first step is the prior-bias initialisation (sharpness 0) instead of
    /// [`Training::START_SHARPNESS`].
    pub prior_start: bool,
    /// Where the steps go: a `step` column (as the Python capture writes) or `step=N` directories.
    pub partition: StepPartition,
}

/// How a training sequence marks each row's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPartition {
    /// A `step` int64 column, one file per step and part (`part-s<step>-<part>.parquet`), as
    /// hardmine's Python `DumpWriter` writes.
    Column,
    /// Hive directories `step=<step>/part-<part>.parquet`, no column.
    Hive,
}

impl Training {
    /// The sharpness of the first step without `prior_start`.
    pub const START_SHARPNESS: f64 = 0.25;

    /// The sharpness `k` of step index `i` (0-based): linear from the start to 1.
    pub fn sharpness(&self, i: usize) -> f64 {
        let start = if self.prior_start { 0.0 } else { Self::START_SHARPNESS };
        if self.steps <= 1 {
            return 1.0;
        }
        start + (1.0 - start) * i as f64 / (self.steps - 1) as f64
    }

    /// The step number of step index `i`.
    pub fn step(&self, i: usize) -> u64 {
        i as u64 * self.every
    }
}

impl Default for Training {
    fn default() -> Self {
        Training { steps: 5, every: 1000, prior_start: false, partition: StepPartition::Column }
    }
}

/// RetinaNet's prior-bias logit, -log((1 - 0.01) / 0.01): where a training sequence starts.
pub const PRIOR_LOGIT: f64 = -4.59511985013459;

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            images: 32,
            anchors_per_image: 50_000,
            classes: 20,
            seed: 0,
            layout: Layout::Dense,
            images_per_file: 50,
            rows_per_group: 65_536,
            training: None,
        }
    }
}

impl SynthConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            ("--images", self.images),
            ("--anchors-per-image", self.anchors_per_image),
            ("--classes", self.classes),
            ("--images-per-file", self.images_per_file),
            ("--rows-per-group", self.rows_per_group),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(ConfigError::invalid(flag, v, "must be at least 1"));
            }
        }
        if self.classes > 10_000 {
            return Err(ConfigError::invalid("--classes", self.classes, "at most 10000"));
        }
        if let Some(t) = &self.training {
            if t.steps < 2 || t.steps > 10_000 {
                return Err(ConfigError::invalid(
                    "--steps",
                    t.steps,
                    "a training sequence has 2 to 10000 steps",
                ));
            }
            if t.every == 0 || t.every.checked_mul(t.steps as u64).is_none_or(|n| n >= 1 << 31) {
                return Err(ConfigError::invalid(
                    "--step-every",
                    t.every,
                    "at least 1, and steps x every below 2^31 (image ids pack the step as the Python capture does)",
                ));
            }
        }
        if self.anchors_per_image > 10_000_000 {
            return Err(ConfigError::invalid(
                "--anchors-per-image",
                self.anchors_per_image,
                "at most 10,000,000",
            ));
        }
        Ok(())
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// Rows written.
    pub rows: u64,
    /// Foreground anchors.
    pub positive_anchors: u64,
    /// Ignored anchors.
    pub ignored_anchors: u64,
}

/// Writes a synthetic dump into `dir` (created if missing) as `part-NNNNN.parquet` files, or a
/// training sequence (see [`SynthConfig::training`]) with one set of files per step.
pub fn generate(dir: &Path, cfg: &SynthConfig) -> Result<SynthSummary, Error> {
    cfg.check()?;
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Io { path: dir.to_path_buf(), source })?;
    let grid = AnchorGrid::new(cfg.anchors_per_image);
    let class_bias: Vec<f32> = {
        let mut rng = Rng::new(cfg.seed, u64::MAX);
        (0..cfg.classes).map(|_| 0.4 * rng.normal() as f32).collect()
    };
    let mut summary = SynthSummary { files: Vec::new(), rows: 0, positive_anchors: 0, ignored_anchors: 0 };
    match cfg.training {
        None => write_step(
            cfg,
            &grid,
            &class_bias,
            None,
            &|f| dir.join(format!("part-{f:05}.parquet")),
            &mut summary,
        )?,
        Some(t) => {
            for i in 0..t.steps {
                let step = t.step(i);
                let at =
                    AtStep { step, sharpness: t.sharpness(i), column: t.partition == StepPartition::Column };
                let name = |f: usize| match t.partition {
                    StepPartition::Column => dir.join(format!("part-s{step:010}-{f:05}.parquet")),
                    StepPartition::Hive => {
                        dir.join(format!("step={step}")).join(format!("part-{f:05}.parquet"))
                    }
                };
                if t.partition == StepPartition::Hive {
                    let d = dir.join(format!("step={step}"));
                    std::fs::create_dir_all(&d)
                        .map_err(|source| OutputError::Io { path: d.clone(), source })?;
                }
                write_step(cfg, &grid, &class_bias, Some(at), &name, &mut summary)?;
            }
        }
    }
    Ok(summary)
}

/// One step of a training sequence.
#[derive(Clone, Copy)]
struct AtStep {
    step: u64,
    sharpness: f64,
    /// Write a `step` column.
    column: bool,
}

impl AtStep {
    /// The image's logits at this step, its id packed with the step (`step << 32 | index`, as
    /// the Python capture packs rank 0's ids) and the step column.
    fn apply(&self, rows: &mut Rows) {
        let k = self.sharpness;
        for x in rows.logits.iter_mut() {
            *x = (PRIOR_LOGIT + k * (f64::from(*x) - PRIOR_LOGIT)) as f32;
        }
        for id in rows.image_id.iter_mut() {
            *id |= (self.step as i64) << 32;
        }
        if self.column {
            rows.step = Some(self.step as i64);
        }
    }
}

/// Writes every image once (at `at`, if a step of a training sequence) into the files `name`
/// gives for each file index.
fn write_step(
    cfg: &SynthConfig,
    grid: &AnchorGrid,
    class_bias: &[f32],
    at: Option<AtStep>,
    name: &dyn Fn(usize) -> PathBuf,
    summary: &mut SynthSummary,
) -> Result<(), Error> {
    let n_files = cfg.images.div_ceil(cfg.images_per_file);
    for f in 0..n_files {
        let path = name(f);
        let first = f * cfg.images_per_file;
        let last = (first + cfg.images_per_file).min(cfg.images);
        let mut out = AtomicFile::create(&path)?;
        let perr = |e: polars_core::error::PolarsError| OutputError::Parquet {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut pending = Rows::new(cfg);
        pending.step = at.filter(|a| a.column).map(|a| a.step as i64);
        let schema =
            Rows { step: pending.step, ..Rows::new(cfg) }.into_frame(cfg).map_err(perr)?.schema().clone();
        let mut writer = ParquetWriter::new(out.file_mut()?)
            .with_compression(ParquetCompression::Snappy)
            .batched(&schema)
            .map_err(perr)?;
        // Generate a few images at a time in parallel; write full row groups as they fill.
        let step = 2 * rayon::current_num_threads().max(1);
        for start in (first..last).step_by(step) {
            let end = (start + step).min(last);
            let images: Vec<Rows> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let mut rows = synth_image(cfg, grid, class_bias, i);
                    if let Some(at) = at {
                        at.apply(&mut rows);
                    }
                    rows
                })
                .collect();
            for img in images {
                summary.positive_anchors += img.positives;
                summary.ignored_anchors += img.ignored;
                pending.append(img);
                while pending.len() >= cfg.rows_per_group {
                    let head = pending.take_front(cfg.rows_per_group);
                    summary.rows += head.len() as u64;
                    writer.write_batch(&head.into_frame(cfg).map_err(perr)?).map_err(perr)?;
                }
            }
        }
        if pending.len() > 0 {
            summary.rows += pending.len() as u64;
            writer.write_batch(&pending.into_frame(cfg).map_err(perr)?).map_err(perr)?;
        }
        writer.finish().map_err(perr)?;
        drop(writer);
        out.commit()?;
        summary.files.push(path);
    }
    Ok(())
}

/// Column buffers for a run of rows.
#[derive(Default)]
struct Rows {
    layout: Option<Layout>,
    image_id: Vec<i64>,
    anchor_id: Vec<i32>,
    level: Vec<i32>,
    label: Vec<i32>,
    iou: Vec<f32>,
    boxes: [Vec<f32>; 4],
    /// Dense: `rows * C` logits; binary: one per row.
    logits: Vec<f32>,
    /// Binary only.
    class: Vec<i32>,
    target: Vec<f32>,
    /// The training step of every row (a training sequence with a `step` column).
    step: Option<i64>,
    positives: u64,
    ignored: u64,
}

impl Rows {
    fn new(cfg: &SynthConfig) -> Rows {
        Rows { layout: Some(cfg.layout), ..Default::default() }
    }

    fn len(&self) -> usize {
        self.image_id.len()
    }

    fn width(&self) -> usize {
        if self.image_id.is_empty() {
            0
        } else {
            self.logits.len() / self.image_id.len()
        }
    }

    fn append(&mut self, mut o: Rows) {
        self.image_id.append(&mut o.image_id);
        self.anchor_id.append(&mut o.anchor_id);
        self.level.append(&mut o.level);
        self.label.append(&mut o.label);
        self.iou.append(&mut o.iou);
        for (a, b) in self.boxes.iter_mut().zip(o.boxes.iter_mut()) {
            a.append(b);
        }
        self.logits.append(&mut o.logits);
        self.class.append(&mut o.class);
        self.target.append(&mut o.target);
    }

    fn take_front(&mut self, n: usize) -> Rows {
        let w = self.width();
        fn split<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
            let rest = v.split_off(n.min(v.len()));
            std::mem::replace(v, rest)
        }
        let mut boxes: [Vec<f32>; 4] = Default::default();
        for (dst, src) in boxes.iter_mut().zip(self.boxes.iter_mut()) {
            *dst = split(src, n);
        }
        Rows {
            layout: self.layout,
            image_id: split(&mut self.image_id, n),
            anchor_id: split(&mut self.anchor_id, n),
            level: split(&mut self.level, n),
            label: split(&mut self.label, n),
            iou: split(&mut self.iou, n),
            boxes,
            logits: split(&mut self.logits, n * w),
            class: split(&mut self.class, n),
            target: split(&mut self.target, n),
            step: self.step,
            positives: 0,
            ignored: 0,
        }
    }

    fn into_frame(self, cfg: &SynthConfig) -> polars_core::error::PolarsResult<DataFrame> {
        let n = self.len();
        let mut cols: Vec<Column> = vec![
            Series::new("image_id".into(), self.image_id).into(),
            Series::new("anchor_id".into(), self.anchor_id).into(),
            Series::new("level".into(), self.level).into(),
        ];
        match self.layout.unwrap_or(Layout::Dense) {
            Layout::Dense => {
                cols.push(Series::new("label".into(), self.label).into());
                let values = PrimitiveArray::<f32>::from_vec(self.logits);
                let dtype = ArrowDataType::FixedSizeList(
                    Box::new(Field::new("item".into(), ArrowDataType::Float32, true)),
                    cfg.classes,
                );
                let arr = FixedSizeListArray::new(dtype, n, values.boxed(), None);
                cols.push(Series::from_arrow("logits".into(), arr.boxed())?.into());
            }
            Layout::Binary => {
                cols.push(Series::new("class".into(), self.class).into());
                cols.push(Series::new("target".into(), self.target).into());
                cols.push(Series::new("logit".into(), self.logits).into());
            }
        }
        cols.push(Series::new("iou".into(), self.iou).into());
        for (name, v) in ["x1", "y1", "x2", "y2"].into_iter().zip(self.boxes) {
            cols.push(Series::new(name.into(), v).into());
        }
        if let Some(step) = self.step {
            cols.push(Series::new("step".into(), vec![step; n]).into());
        }
        DataFrame::new(n, cols)
    }
}

/// The anchors of one image: level, box, shared by every image of a dump.
struct AnchorGrid {
    level: Vec<i32>,
    boxes: Vec<[f32; 4]>,
    size: f32,
}

impl AnchorGrid {
    fn new(total: usize) -> AnchorGrid {
        // Anchor counts per level fall by 4x per level (stride doubles), 9 anchors per location.
        let weights: Vec<f64> = (0..5).map(|l| 0.25f64.powi(l)).collect();
        let wsum: f64 = weights.iter().sum();
        let mut counts: Vec<usize> =
            weights.iter().map(|w| (total as f64 * w / wsum).floor() as usize).collect();
        let assigned: usize = counts.iter().sum();
        counts[0] += total - assigned;
        let p3_side = ((counts[0] as f64 / 9.0).sqrt().ceil()).max(1.0);
        let size = (p3_side * 8.0) as f32;
        let mut level = Vec::with_capacity(total);
        let mut boxes = Vec::with_capacity(total);
        for (l, &n) in counts.iter().enumerate() {
            let stride = 8.0 * 2f32.powi(l as i32);
            let side = ((n as f64 / 9.0).sqrt().ceil()).max(1.0) as usize;
            for k in 0..n {
                let cell = k / 9;
                let (scale, ratio) = ((k % 9) / 3, (k % 9) % 3);
                let (i, j) = (cell / side, cell % side);
                // Spread each level's grid over the whole image.
                let cell_size = size / side as f32;
                let (cx, cy) = ((j as f32 + 0.5) * cell_size, (i as f32 + 0.5) * cell_size);
                let s = 4.0 * stride * 2f32.powf(scale as f32 / 3.0);
                let r = [0.5f32, 1.0, 2.0][ratio];
                let (w, h) = (s / r.sqrt(), s * r.sqrt());
                level.push(3 + l as i32);
                boxes.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]);
            }
        }
        AnchorGrid { level, boxes, size }
    }
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |x: &[f32; 4]| (x[2] - x[0]) * (x[3] - x[1]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Fraction of box `a` inside box `b`.
fn inside(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = (a[2] - a[0]) * (a[3] - a[1]);
    if area > 0.0 {
        iw * ih / area
    } else {
        0.0
    }
}

fn synth_image(cfg: &SynthConfig, grid: &AnchorGrid, class_bias: &[f32], index: usize) -> Rows {
    let mut rng = Rng::new(cfg.seed, index as u64);
    let s = grid.size;
    let n_gt = 1 + rng.below(7) as usize;
    let gts: Vec<([f32; 4], usize)> = (0..n_gt)
        .map(|_| {
            let side =
                (16f64.ln() + rng.uniform() * ((s as f64 / 2.5).max(17.0).ln() - 16f64.ln())).exp() as f32;
            let ar = (rng.uniform() * 2.0 - 1.0) as f32 * std::f32::consts::LN_2;
            let (w, h) = (side * (ar / 2.0).exp(), side * (-ar / 2.0).exp());
            let cx = rng.uniform() as f32 * s;
            let cy = rng.uniform() as f32 * s;
            ([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], rng.below(cfg.classes as u64) as usize)
        })
        .collect();
    let crowd: Option<[f32; 4]> = (rng.uniform() < 0.35).then(|| {
        let side = s * (0.08 + 0.12 * rng.uniform() as f32);
        let (cx, cy) = (rng.uniform() as f32 * s, rng.uniform() as f32 * s);
        [cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0]
    });

    let n = grid.boxes.len();
    let mut best_iou = vec![0f32; n];
    let mut best_gt = vec![0usize; n];
    let mut gt_best = vec![(0f32, usize::MAX); gts.len()];
    for (a, b) in grid.boxes.iter().enumerate() {
        for (g, (gb, _)) in gts.iter().enumerate() {
            let v = iou(b, gb);
            if v > best_iou[a] {
                best_iou[a] = v;
                best_gt[a] = g;
            }
            if v > gt_best[g].0 {
                gt_best[g] = (v, a);
            }
        }
    }
    let mut label: Vec<i32> = (0..n)
        .map(|a| {
            let v = best_iou[a];
            if v >= 0.5 {
                gts[best_gt[a]].1 as i32
            } else if v < 0.4 {
                -1
            } else {
                -2
            }
        })
        .collect();
    if let Some(c) = crowd {
        for (a, b) in grid.boxes.iter().enumerate() {
            if label[a] == -1 && inside(b, &c) > 0.5 {
                label[a] = -2;
            }
        }
    }
    // torchvision's allow_low_quality_matches: each box's best anchor is foreground.
    for (g, &(v, a)) in gt_best.iter().enumerate() {
        if v > 0.0 && a != usize::MAX {
            label[a] = gts[g].1 as i32;
        }
    }

    let c = cfg.classes;
    let mut rows = Rows { layout: Some(cfg.layout), ..Default::default() };
    for a in 0..n {
        let lab = label[a];
        let v = best_iou[a];
        let lvl = grid.level[a];
        match lab {
            -2 => rows.ignored += 1,
            l if l >= 0 => rows.positives += 1,
            _ => {}
        }
        // A few background anchors look like objects (hard negatives).
        let confusing = if rng.uniform() < 0.004 { 3.0 } else { 0.0 };
        let level_shift = -0.25 * (lvl - 3) as f64;
        let mut logits = Vec::with_capacity(c);
        for (k, &bias) in class_bias.iter().enumerate() {
            let x = if lab == k as i32 {
                -1.0 + 8.0 * (v as f64 - 0.5) + 1.5 * rng.normal()
            } else if lab >= 0 {
                -4.5 + 1.2 * rng.normal()
            } else {
                -6.0 + 7.0 * v as f64 + confusing + level_shift + 1.2 * rng.normal()
            };
            logits.push(x as f32 + bias);
        }
        let bx = grid.boxes[a];
        match cfg.layout {
            Layout::Dense => {
                push_anchor(&mut rows, index, a, lvl, lab, v, bx);
                rows.logits.extend_from_slice(&logits);
            }
            Layout::Binary => {
                if lab == -2 {
                    continue;
                }
                for (k, &x) in logits.iter().enumerate() {
                    push_anchor(&mut rows, index, a, lvl, lab, v, bx);
                    rows.class.push(k as i32);
                    rows.target.push(if lab == k as i32 { 1.0 } else { 0.0 });
                    rows.logits.push(x);
                }
            }
        }
    }
    rows
}

fn push_anchor(rows: &mut Rows, image: usize, anchor: usize, level: i32, label: i32, iou: f32, b: [f32; 4]) {
    rows.image_id.push(image as i64);
    rows.anchor_id.push(anchor as i32);
    rows.level.push(level);
    rows.label.push(label);
    rows.iou.push(iou);
    for (dst, v) in rows.boxes.iter_mut().zip(b) {
        dst.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_grid_has_exactly_the_requested_anchors_on_five_levels() {
        let g = AnchorGrid::new(100_000);
        assert_eq!(g.boxes.len(), 100_000);
        let p3 = g.level.iter().filter(|&&l| l == 3).count() as f64 / 1e5;
        assert!((0.7..0.8).contains(&p3), "{p3}");
        assert!(g.level.contains(&7));
    }

    #[test]
    fn images_have_realistic_imbalance() {
        let cfg = SynthConfig { anchors_per_image: 50_000, classes: 3, ..Default::default() };
        let grid = AnchorGrid::new(cfg.anchors_per_image);
        let bias = vec![0.0; 3];
        let (mut pos, mut ign, mut n) = (0u64, 0u64, 0u64);
        for i in 0..20 {
            let r = synth_image(&cfg, &grid, &bias, i);
            pos += r.positives;
            ign += r.ignored;
            n += r.len() as u64;
        }
        let (pos, ign) = (pos as f64 / n as f64, ign as f64 / n as f64);
        assert!((2e-4..5e-3).contains(&pos), "foreground share {pos}");
        assert!((2e-3..3e-2).contains(&ign), "ignored share {ign}");
    }
}

#[cfg(test)]
mod training_tests {
    use super::*;

    #[test]
    fn the_sharpness_rises_linearly_to_one_from_the_prior_or_the_start() {
        let t = Training { steps: 5, prior_start: true, ..Default::default() };
        assert_eq!((0..5).map(|i| t.sharpness(i)).collect::<Vec<_>>(), [0.0, 0.25, 0.5, 0.75, 1.0]);
        let t = Training { steps: 4, every: 10, ..Default::default() };
        assert_eq!(t.sharpness(0), Training::START_SHARPNESS);
        assert_eq!(t.sharpness(3), 1.0);
        assert_eq!(t.step(3), 30);
        assert!((PRIOR_LOGIT - -(99f64).ln()).abs() < 1e-14);
    }

    #[test]
    fn a_training_sequence_needs_two_steps_and_ids_that_fit() {
        let bad = |t: Training| {
            SynthConfig { training: Some(t), ..Default::default() }.check().unwrap_err().to_string()
        };
        assert!(bad(Training { steps: 1, ..Default::default() }).contains("--steps"));
        assert!(bad(Training { every: 1 << 30, ..Default::default() }).contains("--step-every"));
    }
}
