//! The single parallel pass.
//!
//! Every statistic is a mergeable accumulator ([`Accumulator`]): it observes decision chunks,
//! merges with another accumulator of the same kind, and is finished into a report entry. The
//! pass reads row groups in parallel (rayon), folds each into a fresh [`Pass`], and merges the
//! results in row-group order. Because every sum is an [`sum::ExactSum`], the result does not
//! depend on the thread count, the row-group sizes or the merge order: same input, same bytes.
//!
//! Rows of one image may be spread over row groups and files: per-image sums are merged by
//! image id. Image ids must therefore identify an image across all inputs of a run.

pub mod breakdown;
pub mod dataset;
pub mod decisions;
pub mod edges;
pub mod ghm;
pub mod health;
pub mod hist;
pub mod ids;
mod ordered;
pub mod pairs;
pub mod select;
pub mod soft;
pub mod strategy;
pub mod sum;
pub mod sweep;
pub mod weighted;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{AnalysisConfig, DumpOptions, Layout, StrategyKind};
use crate::error::{Error, InputError};
use crate::input::{Batch, Dump, DumpInfo, ImageKey};
use crate::report::{DatasetSummary, Metadata, Parameters, Report, StrategyReport, SCHEMA_VERSION};
use breakdown::BreakdownAcc;
use dataset::DatasetAcc;
use decisions::{DecisionChunk, Expansion, Focus, Scoring};
use edges::Edges;
use ghm::GhmAcc;
use ids::IdsAcc;
use select::{ExportRow, MineSpec, Reappeared, SelectAcc, SelectConfig};
use soft::SoftAcc;
use strategy::Reweighter;
use sum::ExactSum;
use sweep::SweepAcc;
use weighted::WeightedAcc;

/// A statistic computed in one pass: observe batches and decision chunks, merge partial results.
///
/// `merge` must be associative and commutative up to exact equality of the finished result, so
/// that any split of the input gives the same answer as one sequential pass.
pub trait Accumulator {
    /// Sees a batch before its decision chunks (for per-row facts such as ignored anchors).
    fn observe_batch(&mut self, _batch: &Batch) {}
    /// Sees one chunk of decisions.
    fn observe(&mut self, chunk: &DecisionChunk<'_>);
    /// Absorbs another accumulator that observed a disjoint part of the input.
    fn merge(&mut self, other: Self)
    where
        Self: Sized;
}

/// Sums for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketAcc {
    /// Decisions in the bucket.
    pub count: u64,
    /// Sum of selection weights.
    pub selected: ExactSum,
    /// Sum of the strategy's loss.
    pub loss: ExactSum,
    /// Sum of the strategy's gradient norm.
    pub grad: ExactSum,
}

impl BucketAcc {
    /// Adds another bucket's sums.
    pub fn merge(&mut self, o: &BucketAcc) {
        self.count += o.count;
        self.selected += o.selected;
        self.loss += o.loss;
        self.grad += o.grad;
    }
}

/// `(count, selected, loss, grad)` of each bucket, as [`StrategyReport::from_buckets`] takes them.
pub fn bucket_sums(buckets: &[BucketAcc; 4]) -> [(u64, f64, f64, f64); 4] {
    buckets.map(|b| (b.count, b.selected.value(), b.loss.value(), b.grad.value()))
}

/// One strategy's accumulator.
// One per requested strategy and part: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StrategyAcc {
    /// A reweighting strategy (`ce`, `alpha_ce`, `focal`, `qfl`, `vfl`).
    Weighted(WeightedAcc),
    /// `ghm`.
    Ghm(GhmAcc),
    /// `ohem`, `ssd` or `sampled`: their sums live in the pass's shared [`SelectAcc`], which
    /// holds each image's candidates once for all three.
    Selected(StrategyKind),
}

impl Accumulator for StrategyAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        match self {
            StrategyAcc::Weighted(a) => a.observe(chunk),
            StrategyAcc::Ghm(a) => a.observe(chunk),
            StrategyAcc::Selected(_) => {}
        }
    }

    fn merge(&mut self, other: Self) {
        match (self, other) {
            (StrategyAcc::Weighted(a), StrategyAcc::Weighted(b)) => a.merge(b),
            (StrategyAcc::Ghm(a), StrategyAcc::Ghm(b)) => a.merge(b),
            (StrategyAcc::Selected(_), StrategyAcc::Selected(_)) => {}
            _ => unreachable!("passes of one run hold the same strategies in the same order"),
        }
    }
}

/// Everything one pass accumulates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// Dataset and per-image counts.
    pub dataset: DatasetAcc,
    /// One accumulator per requested strategy, in order.
    pub strategies: Vec<StrategyAcc>,
    /// Per-image selection (ohem, ssd, sampled, mining), when any is requested.
    pub select: Option<SelectAcc>,
    /// Breakdowns, gradient density, normalisers and health counts, when requested.
    pub breakdown: Option<BreakdownAcc>,
    /// The gamma x alpha sweep, when requested.
    pub sweep: Option<SweepAcc>,
    /// Duplicate `(image_id, anchor_id)` checks (dumps with an `anchor_id` column).
    #[serde(default)]
    pub ids: IdsAcc,
    /// CE split into the soft targets' entropy and KL (binary dumps).
    #[serde(default)]
    pub soft: SoftAcc,
    /// Summation blocks cut by batch boundaries, waiting for their other pieces (empty once
    /// the whole dump was merged: never saved).
    #[serde(skip)]
    edges: Edges,
    /// The expansion and easy threshold of the batches seen (to sum joined blocks on merge).
    #[serde(skip)]
    context: Option<(Expansion, Scoring)>,
    /// The analysis's focal parameters (for the per-chunk [`decisions::Terms`]).
    #[serde(skip)]
    focus: Focus,
}

impl Pass {
    /// Empty accumulators for `config` (and the export `mine`, if any).
    pub fn new(config: &AnalysisConfig, mine: Option<MineSpec>) -> Pass {
        let strategies = config
            .strategies()
            .iter()
            .map(|&k| match (Reweighter::of(k, config), k) {
                (Some(r), _) => StrategyAcc::Weighted(WeightedAcc::new(r)),
                (None, StrategyKind::Ghm) => StrategyAcc::Ghm(GhmAcc::new(*config.ghm())),
                (None, k) => StrategyAcc::Selected(k),
            })
            .collect();
        let select = SelectConfig::from_config(config, mine).map(SelectAcc::new);
        let breakdown = config.breakdowns().then(|| BreakdownAcc::new(config.gamma(), config.alpha()));
        let sweep = config.sweep().cloned().map(SweepAcc::new);
        Pass {
            dataset: DatasetAcc::default(),
            strategies,
            select,
            breakdown,
            sweep,
            ids: IdsAcc::default(),
            soft: SoftAcc::default(),
            edges: Edges::default(),
            context: None,
            focus: Focus { gamma: config.gamma(), alpha: config.alpha() },
        }
    }

    /// Empty accumulators for the part of the dump that starts at its beginning: the running
    /// total that the parts are merged into, in dump order (see [`SelectAcc::set_starts_dump`]).
    pub fn starting(config: &AnalysisConfig, mine: Option<MineSpec>) -> Pass {
        let mut pass = Pass::new(config, mine);
        pass.set_starts_dump();
        pass
    }

    /// Marks this (empty) pass as the one the dump's parts are merged into, in order.
    pub fn set_starts_dump(&mut self) {
        if let Some(s) = &mut self.select {
            s.set_starts_dump();
        }
    }

    /// Folds one batch into the accumulators. Images complete inside the batch are finalised.
    pub fn observe_batch(&mut self, exp: &Expansion, batch: &Batch, tau: f64) -> Result<(), Reappeared> {
        self.dataset.observe_batch(batch);
        self.ids.observe_batch(batch);
        if let Some(sel) = &mut self.select {
            sel.observe_batch(batch);
        }
        if let Some(b) = &mut self.breakdown {
            b.observe_batch(batch);
        }
        let scoring = Scoring { tau, focus: self.focus };
        self.context = Some((*exp, scoring));
        let Pass { dataset, strategies, select, breakdown, sweep, soft, .. } = self;
        decisions::for_each_chunk(exp, batch, &scoring, &mut |chunk| {
            dataset.observe(chunk);
            if let Some(sel) = select.as_mut() {
                sel.observe(chunk);
            }
            if chunk.whole {
                Self::observe_sums(strategies, breakdown, sweep, soft, chunk);
            }
        });
        for block in self.edges.cut(batch, exp.block_rows()) {
            self.observe_block(&block);
        }
        if let Some(sel) = &mut self.select {
            sel.settle_interior()?;
            sel.finalize_ready();
        }
        Ok(())
    }

    /// The accumulators that sum in f64 within a summation block: they see whole blocks only.
    fn observe_sums(
        strategies: &mut [StrategyAcc],
        breakdown: &mut Option<BreakdownAcc>,
        sweep: &mut Option<SweepAcc>,
        soft: &mut SoftAcc,
        chunk: &DecisionChunk<'_>,
    ) {
        // The strategies whose loss the chunk's terms hold are summed in one walk.
        let mut precomputed = Vec::with_capacity(strategies.len());
        for s in strategies.iter_mut() {
            match s {
                StrategyAcc::Weighted(w) => match w.precomputed(chunk.terms) {
                    Some(kind) => precomputed.push((kind, w.sums_mut())),
                    None => w.observe(chunk),
                },
                other => other.observe(chunk),
            }
        }
        strategy::sum_precomputed(chunk, &mut precomputed);
        soft.observe(chunk);
        if let Some(b) = breakdown.as_mut() {
            b.observe(chunk);
        }
        if let Some(s) = sweep.as_mut() {
            s.observe(chunk);
        }
    }

    /// Sums a summation block joined from the pieces that batch boundaries cut.
    fn observe_block(&mut self, block: &Batch) {
        let Some((exp, scoring)) = self.context else { return };
        let Pass { strategies, breakdown, sweep, soft, .. } = self;
        decisions::for_each_chunk(&exp, block, &scoring, &mut |chunk| {
            debug_assert!(chunk.whole, "a joined block is whole");
            Self::observe_sums(strategies, breakdown, sweep, soft, chunk);
        });
    }

    /// Absorbs the pass over the next part of the input (parts must come in dump order for the
    /// per-image selection; everything else merges in any order).
    pub fn merge(&mut self, other: Pass) -> Result<(), Reappeared> {
        if self.context.is_none() {
            self.context = other.context;
        }
        let blocks = self.edges.merge(other.edges);
        self.dataset.merge(other.dataset);
        self.ids.merge(other.ids);
        self.soft.merge(other.soft);
        for (a, b) in self.strategies.iter_mut().zip(other.strategies) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.breakdown, other.breakdown) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.sweep, other.sweep) {
            a.merge(b);
        }
        let selected = match (&mut self.select, other.select) {
            (Some(a), Some(b)) => a.merge(b),
            _ => Ok(()),
        };
        // After the accumulators merged: the joined blocks' images are known to both sides.
        for block in blocks {
            self.observe_block(&block);
        }
        selected
    }

    /// Refuses dumps whose counts make the analysis meaningless, unless the options allow them:
    /// images whose anchors are all ignored, and dumps without a single positive. Both usually
    /// mean a wrong label mapping in the dumping code.
    pub fn check_dataset(&self, options: &DumpOptions) -> Result<(), InputError> {
        if let Some((image, span)) = self.ids.overfull() {
            return Err(InputError::Overfull {
                image: image.to_string(),
                rows: span.rows,
                ids: span.capacity() as u64,
            });
        }
        if !options.keep_ignored_images() {
            let mut all_ignored =
                self.dataset.images.iter().filter(|(_, c)| c.rows > 0 && c.ignored == c.rows);
            if let Some((key, c)) = all_ignored.next() {
                let more = all_ignored.count();
                return Err(InputError::IgnoredImage {
                    image: key.to_string(),
                    anchors: c.rows,
                    more: if more > 0 { format!(", and so do {more} more images") } else { String::new() },
                });
            }
        }
        let totals = self.dataset.totals();
        if totals.positives == 0 && !options.allow_no_positives() {
            return Err(InputError::NoPositives { decisions: totals.decisions });
        }
        Ok(())
    }

    /// Dataset counts for the report.
    pub fn dataset_summary(&self, layout: Layout, files: usize) -> DatasetSummary {
        let totals = self.dataset.totals();
        DatasetSummary {
            files,
            images: self.dataset.images.len() as u64,
            anchors: (layout == Layout::Dense).then_some(totals.rows),
            decisions: totals.decisions,
            positives: totals.positives,
            negatives: totals.decisions - totals.positives,
            ignored: totals.ignored,
            skipped: self.dataset.skipped.clone(),
        }
    }

    /// The strategies' report entries, in order. Call after the selection is finished
    /// ([`SelectAcc::finish_all`]).
    pub fn strategy_reports(&self) -> Vec<StrategyReport> {
        let images = &self.dataset.images;
        let positives = self.dataset.totals().positives;
        self.strategies
            .iter()
            .map(|s| match s {
                StrategyAcc::Weighted(a) => a.finish(images),
                StrategyAcc::Ghm(a) => a.finish(images),
                StrategyAcc::Selected(k) => {
                    let sel =
                        self.select.as_ref().expect("selection strategies create the selection accumulator");
                    sel.report(*k, images.len() as u64, positives)
                }
            })
            .collect()
    }

    /// Builds the report. Call after [`Pass::finish_selection`].
    pub fn finish(&self, dump: &Dump, config: &AnalysisConfig, command: &str) -> Report {
        self.report(&dump.info(), config, command)
    }

    /// Builds the report from the dump's recorded facts (e.g. of merged shards).
    pub fn report(&self, dump: &DumpInfo, config: &AnalysisConfig, command: &str) -> Report {
        let shape = dump.shape;
        let dataset = self.dataset_summary(shape.layout, dump.inputs.len());
        let strategies = self.strategy_reports();
        Report {
            schema_version: SCHEMA_VERSION,
            metadata: Metadata {
                tool: "hardmine".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                command: command.into(),
                inputs: dump.inputs.clone(),
                layout: shape.layout,
                scores: shape.scores,
                activation: shape.activation,
                classes: dump.width,
                columns: config.dump().columns().renames().clone(),
                invocation: None,
                parameters: Parameters::of(config, shape.activation, dump.background_class),
            },
            strategies,
            overlaps: self.select.as_ref().and_then(SelectAcc::overlaps),
            sweep: self.sweep.as_ref().map(|s| s.finish(&self.dataset.images)),
            gradient_density: self.breakdown.as_ref().map(BreakdownAcc::density),
            breakdowns: self.breakdown.as_ref().map(|b| b.breakdowns(shape)),
            normalizers: self
                .breakdown
                .as_ref()
                .map(|b| b.normalizers(config.batch_size()))
                .unwrap_or_default(),
            soft_targets: self.soft.finish(),
            health: match &self.breakdown {
                Some(b) => {
                    let mut gammas = vec![config.gamma()];
                    if let Some(g) = config.sweep() {
                        gammas.extend(&g.gammas);
                    }
                    let cx = health::HealthContext {
                        shape,
                        width: dump.width,
                        background_class: dump.background_class,
                        decisions: dataset.decisions,
                        positives: dataset.positives,
                        gammas: &gammas,
                    };
                    health::checks(&b.health, &cx)
                }
                None => Vec::new(),
            },
            dataset,
        }
    }

    /// Shifts the file indices this pass recorded by `n` (its files come after `n` others).
    pub fn offset_files(&mut self, n: u32) {
        if let Some(b) = &mut self.breakdown {
            for g in b.images.values_mut() {
                g.first.0 += n;
            }
        }
    }

    /// Finalises the images still open at the end of the input (and sums any summation block
    /// still waiting for a piece, which only a partial input leaves).
    pub fn finish_selection(&mut self) -> Result<(), Reappeared> {
        for block in self.edges.drain() {
            self.observe_block(&block);
        }
        match &mut self.select {
            Some(s) => s.finish_all(),
            None => Ok(()),
        }
    }
}

/// Hooks into a running pass: progress reporting and cancellation.
pub trait Observer: Sync {
    /// Called after each row group with the rows it held.
    fn rows_done(&self, _rows: usize) {}
    /// Polled between row groups; returning true stops the pass with [`InputError::Interrupted`].
    fn cancelled(&self) -> bool {
        false
    }
    /// The pass starts over (e.g. in partitioned mode for a dump whose images are not
    /// contiguous); `why` says so in a sentence.
    fn restarted(&self, _why: &str) {}
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// A flag that an interrupt handler can set.
impl Observer for AtomicBool {
    fn cancelled(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}

/// Runs the pass over the whole dump and builds the report.
pub fn analyze(dump: &Dump, config: &AnalysisConfig) -> Result<Report, Error> {
    let pass = run(dump, config, &Quiet, None)?;
    Ok(pass.finish(dump, config, "analyze"))
}

/// Receives exported hard examples as images are finalised, in dump order.
pub type ExportSink<'a> = &'a mut (dyn FnMut(Vec<ExportRow>) -> Result<(), Error> + Send);

/// How the per-image strategies find complete images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each image's rows are contiguous: finalise images as the dump moves past them.
    Stream,
    /// Images may be anywhere: spill candidates to partitions by image and finalise at the end.
    Partitioned,
}

/// Runs the pass and returns the merged, finished accumulators. With `mine`, the selected hard
/// examples go to the sink as the pass proceeds.
///
/// The per-image strategies first assume contiguous images; if an image turns up again after
/// other images, the pass starts over in [`Mode::Partitioned`] (telling the observer), unless
/// hard examples were already handed to the sink: then the [`InputError::Unsorted`] error is
/// returned and the caller re-runs with [`run_mode`] and a fresh sink.
pub fn run(
    dump: &Dump,
    config: &AnalysisConfig,
    observer: &dyn Observer,
    mut mine: Option<(MineSpec, ExportSink<'_>)>,
) -> Result<Pass, Error> {
    let exported = std::cell::Cell::new(false);
    restarting(
        observer,
        "the per-image strategies re-read",
        || !exported.get(),
        |mode| {
            let mut e = exported.get();
            let r = run_mode(
                dump,
                config,
                observer,
                mine.as_mut().map(|(s, k)| (*s, &mut **k as ExportSink<'_>)),
                mode,
                &mut e,
            );
            exported.set(e);
            r
        },
    )
}

/// The restart policy of every pass, in one place: `attempt` runs in [`Mode::Stream`] first;
/// if an image turns up again after other images (the images are not contiguous) and
/// `can_restart` says nothing irrevocable happened yet, the observer is told why and `attempt`
/// runs again in [`Mode::Partitioned`]. `doing` completes the note ("so {doing} the dump in
/// partitions").
pub fn restarting<T>(
    observer: &dyn Observer,
    doing: &str,
    can_restart: impl Fn() -> bool,
    mut attempt: impl FnMut(Mode) -> Result<T, Error>,
) -> Result<T, Error> {
    match attempt(Mode::Stream) {
        Err(Error::Input(InputError::Unsorted { image, path, row })) if can_restart() => {
            observer.restarted(&format!(
                "image '{image}' appears again in {} from row {row}: the images are not contiguous, so {doing} the dump in partitions",
                path.display()
            ));
            attempt(Mode::Partitioned)
        }
        other => other,
    }
}

/// The error for a repeated `(image_id, anchor_id)`, with file paths.
fn duplicate_error(dump: &Dump, d: &ids::Duplicate) -> Error {
    let path = |f: u32| dump.files().get(f as usize).map(|f| f.input.path.clone()).unwrap_or_default();
    InputError::Duplicate {
        image: d.image.to_string(),
        anchor: match d.class {
            Some(c) => format!("anchor_id {} and class {c}", d.anchor_id),
            None => format!("anchor_id {}", d.anchor_id),
        },
        first: path(d.first.0),
        first_row: d.first.1,
        second: path(d.second.0),
        second_row: d.second.1,
    }
    .into()
}

/// Runs the pass in the given mode; `exported` is set once rows went to the sink.
pub fn run_mode(
    dump: &Dump,
    config: &AnalysisConfig,
    observer: &dyn Observer,
    mine: Option<(MineSpec, ExportSink<'_>)>,
    mode: Mode,
    exported: &mut bool,
) -> Result<Pass, Error> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(config.threads().unwrap_or(0)).build();
    match pool {
        Ok(pool) => pool.install(|| run_in_pool(dump, config, observer, mine, mode, exported)),
        // Building a pool only fails when threads cannot be spawned; the global pool may still work.
        Err(_) => run_in_pool(dump, config, observer, mine, mode, exported),
    }
}

/// Batches of one row group read ahead of the one being folded into the row group's pass, for
/// threads with no row group left to start to observe (see `ordered::pipeline`): each holds a
/// batch (a few MB at most, `input::MAX_BATCH_ROWS`) until observed, then its pass until folded.
/// (On M2, 2 threads: one ahead 0.97 s, two 0.84 s, four 0.85 s.)
const BATCHES_AHEAD: usize = 2;

fn run_in_pool(
    dump: &Dump,
    config: &AnalysisConfig,
    observer: &dyn Observer,
    mut mine: Option<(MineSpec, ExportSink<'_>)>,
    mode: Mode,
    exported: &mut bool,
) -> Result<Pass, Error> {
    let tau = config.easy_threshold();
    let exp = Expansion::of(dump);
    let spec = mine.as_ref().map(|(s, _)| *s);
    let unsorted = |r: Reappeared| -> Error {
        let path = dump.files().get(r.file).map(|f| f.input.path.clone()).unwrap_or_default();
        InputError::Unsorted { image: r.image, path, row: r.row }.into()
    };
    let new_pass = || {
        let mut p = Pass::new(config, spec);
        if mode == Mode::Partitioned {
            if let Some(s) = &mut p.select {
                s.set_partitioned();
            }
        }
        p
    };
    let spill_error = |e: std::io::Error| -> Error {
        crate::error::OutputError::Io { path: std::env::temp_dir(), source: e }.into()
    };
    let mut spill = match (mode, config.strategies().iter().any(|s| s.selects_per_image()) || spec.is_some())
    {
        (Mode::Partitioned, true) => {
            Some(select::spill::Spill::new(select::spill::partitions_for(dump.rows())).map_err(spill_error)?)
        }
        _ => None,
    };
    let mut total = new_pass();
    total.set_starts_dump();
    let mut drain = |pass: &mut Pass, exported: &mut bool| -> Result<(), Error> {
        if let (Some((_, sink)), Some(sel)) = (mine.as_mut(), pass.select.as_mut()) {
            let rows = sel.drain_export();
            if !rows.is_empty() {
                *exported = true;
                sink(rows)?;
            }
        }
        Ok(())
    };
    type Opened = Vec<(ImageKey, Vec<select::Candidate>)>;
    let spilling = spill.is_some();
    // Threads with no row group left to start: they take batches of the others' (`pipeline`).
    let idle = ordered::Idle::default();
    // One row group: read in batches, folded into one pass.
    let process = |unit: crate::input::Unit| -> Result<(Pass, Opened), Error> {
        if observer.cancelled() {
            return Err(InputError::Interrupted.into());
        }
        // A row group arrives in batches (bounded memory whatever its size). Each batch is
        // folded into a fresh pass merged into the unit's, in order: exactly what a file whose
        // row groups were those batches gives (merges are associative in dump order), so
        // results do not depend on the batch size.
        // Partitioned mode: every batch's open images go to the spill (via `opened`) before the
        // merge, so that merging settles nothing, as between units.
        // The batches are read here, in order, and observed here, or on a thread that has no
        // row group left to start (see `ordered::pipeline`): a huge row group, or the last of
        // a dump, takes every thread.
        let mut unit_pass: Option<Pass> = None;
        let mut opened: Opened = Vec::new();
        let observe = |batch: crate::input::Batch| -> Result<(Pass, Opened), Error> {
            let mut pass = new_pass();
            pass.observe_batch(&exp, &batch, tau).map_err(unsorted)?;
            let open = match pass.select.as_mut() {
                Some(sel) if spilling => sel.take_open(),
                _ => Vec::new(),
            };
            Ok((pass, open))
        };
        let fold = |observed: Result<(Pass, Opened), Error>| -> Result<(), Error> {
            let (pass, open) = observed?;
            opened.extend(open);
            match unit_pass.as_mut() {
                None => unit_pass = Some(pass),
                Some(u) => {
                    u.merge(pass).map_err(unsorted)?;
                    // Images complete inside the group need not wait for its end.
                    if let Some(sel) = &mut u.select {
                        sel.finalize_ready();
                    }
                }
            }
            Ok(())
        };
        ordered::pipeline(BATCHES_AHEAD, &idle, |push| dump.read_unit(unit, push), observe, fold)?;
        observer.rows_done(unit.rows);
        Ok((unit_pass.unwrap_or_else(new_pass), opened))
    };
    // The parts of one window, merged into the total in dump order.
    let mut merge = |parts: Vec<Result<(Pass, Opened), Error>>,
                     total: &mut Pass,
                     spill: &mut Option<select::spill::Spill>,
                     exported: &mut bool|
     -> Result<(), Error> {
        for part in parts {
            let (mut part, opened) = part?;
            if let Some(spill) = spill.as_mut() {
                let still_open = part.select.as_mut().map(|s| s.take_open()).unwrap_or_default();
                for (key, cands) in opened.iter().chain(&still_open) {
                    spill.write(key, cands).map_err(spill_error)?;
                }
            }
            total.merge(part).map_err(unsorted)?;
            if let Some(d) = total.ids.duplicate() {
                return Err(duplicate_error(dump, d));
            }
        }
        if let Some(sel) = &mut total.select {
            sel.finalize_ready();
        }
        drain(total, exported)
    };
    // Row groups are read on every thread and merged into the total in dump order, each as
    // soon as the one before it was (see `ordered`): a deterministic merge sequence, and
    // bounded memory (a thread starts a row group only fewer than four per thread past the
    // last one merged).
    let ahead = 4 * rayon::current_num_threads().max(1);
    ordered::ordered(
        dump.units(),
        ahead,
        &idle,
        |&unit| process(unit),
        |parts| merge(parts, &mut total, &mut spill, exported),
    )?;
    if let (Some(mut spill), Some(sel)) = (spill, total.select.as_mut()) {
        spill.finish().map_err(spill_error)?;
        for i in 0..spill.len() {
            if observer.cancelled() {
                return Err(InputError::Interrupted.into());
            }
            sel.finalize_groups(spill.read(i).map_err(spill_error)?);
        }
    }
    total.finish_selection().map_err(unsorted)?;
    total.check_dataset(config.dump())?;
    drain(&mut total, exported)?;
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one range = one batch
mod tests {
    use super::*;
    use crate::config::{Activation, AnalysisParams, ScoreKind, StrategyKind};
    use crate::input::{DumpShape, ScoreValues, Targets};
    use crate::rng::Rng;

    const C: usize = 3;

    /// Rows of a dense sigmoid dump: (image, label, logits).
    fn rows(seed: u64, n: usize) -> Vec<Row> {
        let mut rng = Rng::new(seed, 0);
        let mut image = 0;
        (0..n)
            .map(|_| {
                if rng.uniform() < 0.02 {
                    image += 1;
                }
                let label = [-2, -1, -1, -1, -1, -1, 0, 1, 2][rng.below(9) as usize];
                let logits = [0; C].map(|_| (rng.normal() * 4.0) as f32);
                (image, label, logits)
            })
            .collect()
    }

    type Row = (i64, i32, [f32; C]);

    /// A batch of `rows`, the first of which is row `first_row` of a file of `file_rows` rows.
    fn batch(rows: &[Row], first_row: u64, file_rows: usize) -> Batch {
        let mut b = crate::input::test_batch(
            rows.iter().map(|r| r.0),
            Targets::Labels(rows.iter().map(|r| r.1).collect()),
            ScoreValues::from_f32(rows.iter().flat_map(|r| r.2).collect()),
            first_row,
        );
        b.file_rows = file_rows as u64;
        b.level = Some(levels(first_row as usize..first_row as usize + rows.len()));
        b
    }

    /// FPN levels 3-5 of file rows `r` (a function of the row, so any batching sees the same).
    fn levels(r: std::ops::Range<usize>) -> Vec<i64> {
        r.map(|i| 3 + (i * 7 % 11 % 3) as i64).collect()
    }

    /// Dense sigmoid logits with C classes.
    fn expansion() -> Expansion {
        let shape =
            DumpShape { layout: Layout::Dense, scores: ScoreKind::Logits, activation: Activation::Sigmoid };
        Expansion { shape, width: C, background_class: 0 }
    }

    /// A pass over `ranges` of `data`, each range a batch, merged in the order given.
    fn pass_over(data: &[Row], ranges: &[std::ops::Range<usize>], config: &AnalysisConfig) -> Pass {
        let exp = expansion();
        let mut total = Pass::starting(config, None);
        for r in ranges {
            let mut pass = Pass::new(config, None);
            pass.observe_batch(
                &exp,
                &batch(&data[r.clone()], r.start as u64, data.len()),
                config.easy_threshold(),
            )
            .unwrap();
            total.merge(pass).unwrap();
        }
        total.finish_selection().unwrap();
        total
    }

    /// Random consecutive ranges covering `0..n` (images span them).
    fn cut(rng: &mut Rng, n: usize) -> Vec<std::ops::Range<usize>> {
        let mut cuts: Vec<usize> = (0..rng.below(12) + 1).map(|_| rng.below(n as u64) as usize).collect();
        cuts.extend([0, n]);
        cuts.sort_unstable();
        cuts.windows(2).map(|w| w[0]..w[1]).collect()
    }

    #[test]
    fn any_split_and_merge_order_gives_exactly_the_sequential_result() {
        // Reweighting strategies merge in any order.
        let strategies =
            vec![StrategyKind::Ce, StrategyKind::AlphaCe, StrategyKind::Focal, StrategyKind::Ghm];
        let config = AnalysisParams { strategies, ..Default::default() }.check().unwrap();
        let data = rows(42, 5000);
        let whole = pass_over(&data, &[0..data.len()], &config);
        let mut rng = Rng::new(7, 7);
        for _ in 0..10 {
            // Random cut points (images span batches), then merge in a random order.
            let mut parts = cut(&mut rng, data.len());
            for i in (1..parts.len()).rev() {
                parts.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let split = pass_over(&data, &parts, &config);
            assert_eq!(split, whole);
            assert_eq!(split.strategy_reports(), whole.strategy_reports());
        }
        // Rows of one image in two places (unsorted input) still merge by image id.
        let reordered = pass_over(&data, &[1234..data.len(), 0..1234], &config);
        assert_eq!(reordered.strategy_reports(), whole.strategy_reports());
    }

    #[test]
    fn per_image_selection_gives_the_same_result_for_any_split_in_dump_order() {
        let config = AnalysisParams::default().check().unwrap();
        let data = rows(43, 5000);
        let whole = pass_over(&data, &[0..data.len()], &config);
        let mut rng = Rng::new(8, 8);
        for _ in 0..10 {
            let split = pass_over(&data, &cut(&mut rng, data.len()), &config);
            assert_eq!(split.strategy_reports(), whole.strategy_reports());
            assert_eq!(split.breakdown, whole.breakdown);
        }
    }

    #[test]
    fn an_image_split_around_another_is_reported_for_selection() {
        let config = AnalysisParams::default().check().unwrap();
        let exp = expansion();
        let observed = |rows: &[Row], first_row: u64| {
            let mut pass = Pass::new(&config, None);
            pass.observe_batch(&exp, &batch(rows, first_row, 3), 0.9).unwrap();
            pass
        };
        // Inside one row group the rows of image 0 are gathered: no error.
        let mut one = observed(&[(0, -1, [0.0; C]), (1, -1, [0.0; C]), (0, 0, [1.0; C])], 0);
        one.finish_selection().unwrap();
        // Across row groups, image 0 is complete once image 1 follows it: seeing it again is an error.
        let mut total = Pass::starting(&config, None);
        total.merge(observed(&[(0, -1, [0.0; C]), (1, -1, [0.0; C])], 0)).unwrap();
        let err = total.merge(observed(&[(0, 0, [1.0; C])], 2)).unwrap_err();
        assert_eq!(err.image, "0");
    }

    #[test]
    fn ignored_anchors_add_no_decisions_but_their_images_count() {
        let config = AnalysisParams::default().check().unwrap();
        let data = vec![(0, -2, [1.0; C]), (0, -2, [2.0; C]), (1, 0, [0.0; C])];
        let pass = pass_over(&data, &[0..3], &config);
        let s = pass.dataset_summary(Layout::Dense, 1);
        assert_eq!((s.images, s.anchors, s.decisions, s.ignored, s.positives), (2, Some(3), 3, 2, 1));
        // Image 1: CE = 3 ln 2 over 1 positive; image 0 adds 0; mean over 2 images.
        let ce = &pass.strategy_reports()[0];
        assert!((ce.loss.normalized - 3.0 * std::f64::consts::LN_2 / 2.0).abs() < 1e-15);
    }

    mod properties {
        use super::*;
        use crate::config::SweepParams;
        use crate::loss::Decision;
        use proptest::prelude::*;

        /// `strategies`, the sweep and the breakdowns.
        fn with_sweep(strategies: Vec<StrategyKind>) -> AnalysisConfig {
            let sweep = Some(SweepParams::default());
            AnalysisParams { strategies, sweep, breakdowns: true, ..Default::default() }.check().unwrap()
        }

        /// Every strategy, the sweep and the breakdowns.
        fn everything() -> AnalysisConfig {
            with_sweep(StrategyKind::ALL.to_vec())
        }

        /// The strategies whose sums merge in any order (no per-image selection).
        fn reweighting() -> AnalysisConfig {
            with_sweep(vec![StrategyKind::Ce, StrategyKind::AlphaCe, StrategyKind::Focal, StrategyKind::Ghm])
        }

        /// Sorted cut points in 0..=n, as consecutive ranges covering 0..n.
        fn ranges(mut cuts: Vec<usize>, n: usize) -> Vec<std::ops::Range<usize>> {
            cuts.iter_mut().for_each(|c| *c %= n + 1);
            cuts.extend([0, n]);
            cuts.sort_unstable();
            cuts.windows(2).map(|w| w[0]..w[1]).collect()
        }

        /// The pass over one range.
        fn part(data: &[Row], r: std::ops::Range<usize>, config: &AnalysisConfig) -> Pass {
            let mut pass = if r.start == 0 { Pass::starting(config, None) } else { Pass::new(config, None) };
            pass.observe_batch(
                &expansion(),
                &batch(&data[r.clone()], r.start as u64, data.len()),
                config.easy_threshold(),
            )
            .unwrap();
            pass
        }

        fn merged(mut a: Pass, b: Pass) -> Pass {
            a.merge(b).unwrap();
            a
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn any_batching_gives_the_same_result(
                seed in 0..1000u64, n in 1..600usize, cuts in prop::collection::vec(any::<usize>(), 0..10),
            ) {
                let config = everything();
                let data = rows(seed, n);
                let whole = pass_over(&data, &[0..n], &config);
                let split = pass_over(&data, &ranges(cuts, n), &config);
                prop_assert_eq!(&split, &whole);
                let (a, b) = (split.report(&info(), &config, "t"), whole.report(&info(), &config, "t"));
                prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
            }

            #[test]
            fn merge_is_associative_in_dump_order_and_commutative_for_reweighting(
                seed in 0..1000u64, n in 3..400usize, i in any::<usize>(), j in any::<usize>(),
            ) {
                let data = rows(seed, n);
                let (i, j) = { let (a, b) = (1 + i % (n - 2), 1 + j % (n - 2)); (a.min(b), a.max(b) + 1) };
                // Every strategy: parts in dump order, grouped either way.
                let config = everything();
                let p = |r: std::ops::Range<usize>| part(&data, r, &config);
                let mut left = merged(merged(p(0..i), p(i..j)), p(j..n));
                let mut right = merged(p(0..i), merged(p(i..j), p(j..n)));
                left.finish_selection().unwrap();
                right.finish_selection().unwrap();
                prop_assert_eq!(&left, &right);
                // Reweighting strategies: any order.
                let config = reweighting();
                let p = |r: std::ops::Range<usize>| part(&data, r, &config);
                let ab = merged(p(0..i), p(i..n));
                let ba = merged(p(i..n), p(0..i));
                prop_assert_eq!(ab.strategy_reports(), ba.strategy_reports());
                prop_assert_eq!(&ab.dataset, &ba.dataset);
                prop_assert_eq!(&ab.sweep, &ba.sweep);
                prop_assert_eq!(&ab.breakdown, &ba.breakdown);
            }

            #[test]
            fn every_sweep_cell_is_the_focal_loss_summed_directly(seed in 0..1000u64, n in 1..400usize) {
                // The sweep derives every alpha from two alpha-free sums; check each cell against
                // alpha_t (1 - p_t)^gamma CE summed decision by decision in f64.
                let alphas = vec![0.0, 0.1, 0.25, 0.5, 0.99, 1.0, -1.0];
                let gammas = vec![0.0, 0.5, 1.0, 2.0, 3.7];
                let params = SweepParams { gammas: gammas.clone(), alphas: alphas.clone(), ..Default::default() };
                let config = AnalysisParams { sweep: Some(params), ..Default::default() }.check().unwrap();
                let data = rows(seed, n);
                let pass = pass_over(&data, &[0..n], &config);
                let sweep = pass.report(&info(), &config, "t").sweep.unwrap();
                let mut k = 0;
                for &g in &gammas {
                    for &a in &alphas {
                        let alpha = (a >= 0.0).then_some(a);
                        let mut want = 0.0;
                        for &(_, label, logits) in &data {
                            if label == -2 {
                                continue;
                            }
                            for (c, &x) in logits.iter().enumerate() {
                                let y = if label == c as i32 { 1.0 } else { 0.0 };
                                want += Decision::from_logit(f64::from(x), y).focal(g, alpha);
                            }
                        }
                        let cell = &sweep.grid[k];
                        k += 1;
                        prop_assert_eq!((cell.gamma, cell.alpha), (g, alpha));
                        let got = cell.loss.total;
                        // Relative 1e-12, plus the exact sums' documented resolution: each summation
                        // block's subtotal per bucket is truncated to a multiple of 2^-63 (at most
                        // n blocks x 4 buckets), which dominates for tiny totals (a single row).
                        let quantum = 4.0 * n as f64 * 2f64.powi(-63);
                        prop_assert!((got - want).abs() <= 1e-12 * want.abs() + quantum, "g={g} a={a}: {got} vs {want}");
                    }
                }
            }
        }

        /// The dump shapes the pass handles, beyond dense sigmoid logits.
        #[derive(Clone, Copy, Debug)]
        enum Shape {
            SigmoidProbs,
            SoftmaxLogits,
            SoftmaxProbs,
            /// Binary logits with hard and soft targets, weights and classes.
            Binary,
        }

        const SHAPES: [Shape; 4] =
            [Shape::SigmoidProbs, Shape::SoftmaxLogits, Shape::SoftmaxProbs, Shape::Binary];

        /// A dump of `shape`: every column by row, boxes on every row (OHEM's NMS reads them).
        struct Dump {
            exp: Expansion,
            images: Vec<i64>,
            labels: Vec<i32>,
            targets: Vec<f64>,
            scores: Vec<f64>,
            weight: Vec<f64>,
            class: Vec<i32>,
            boxes: Vec<[f32; 4]>,
        }

        fn dump(shape: Shape, seed: u64, n: usize) -> Dump {
            let mut rng = crate::rng::Rng::new(seed, 1);
            let (layout, scores, activation) = match shape {
                Shape::SigmoidProbs => (Layout::Dense, ScoreKind::Probs, Activation::Sigmoid),
                Shape::SoftmaxLogits => (Layout::Dense, ScoreKind::Logits, Activation::Softmax),
                Shape::SoftmaxProbs => (Layout::Dense, ScoreKind::Probs, Activation::Softmax),
                Shape::Binary => (Layout::Binary, ScoreKind::Logits, Activation::Sigmoid),
            };
            let width = if layout == Layout::Binary { 1 } else { C };
            let exp =
                Expansion { shape: DumpShape { layout, scores, activation }, width, background_class: 0 };
            let mut d = Dump {
                exp,
                images: Vec::new(),
                labels: Vec::new(),
                targets: Vec::new(),
                scores: Vec::new(),
                weight: Vec::new(),
                class: Vec::new(),
                boxes: Vec::new(),
            };
            let mut image = 0;
            for _ in 0..n {
                if rng.uniform() < 0.02 {
                    image += 1;
                }
                d.images.push(image);
                let logits: Vec<f64> = (0..width).map(|_| rng.normal() * 4.0).collect();
                match shape {
                    Shape::SigmoidProbs => {
                        d.labels.push([-2, -1, -1, -1, -1, 0, 1, 2][rng.below(8) as usize]);
                        d.scores.extend(logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())));
                    }
                    Shape::SoftmaxLogits | Shape::SoftmaxProbs => {
                        // Class 0 is the background.
                        d.labels.push([-2, 0, 0, 0, 0, 1, 2][rng.below(7) as usize]);
                        if matches!(shape, Shape::SoftmaxLogits) {
                            d.scores.extend(&logits);
                        } else {
                            let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            let e: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
                            let sum: f64 = e.iter().sum();
                            d.scores.extend(e.iter().map(|v| v / sum));
                        }
                    }
                    Shape::Binary => {
                        d.targets.push(match rng.below(10) {
                            0 => 1.0,
                            1 => rng.uniform(), // a soft (IoU-quality) target
                            _ => 0.0,
                        });
                        d.scores.push(logits[0]);
                        d.weight.push(2.0 * rng.uniform());
                        d.class.push(rng.below(4) as i32);
                    }
                }
                let (x, y) = ((rng.uniform() * 100.0) as f32, (rng.uniform() * 100.0) as f32);
                let (w, h) = ((5.0 + rng.uniform() * 20.0) as f32, (5.0 + rng.uniform() * 20.0) as f32);
                d.boxes.push([x, y, x + w, y + h]);
            }
            d
        }

        impl Dump {
            fn len(&self) -> usize {
                self.images.len()
            }

            /// Rows `r` as a batch of a file of `len()` rows.
            fn batch(&self, r: std::ops::Range<usize>) -> Batch {
                let w = self.exp.width;
                let binary = self.exp.shape.layout == Layout::Binary;
                let targets = if binary {
                    Targets::Binary(self.targets[r.clone()].to_vec())
                } else {
                    Targets::Labels(self.labels[r.clone()].to_vec())
                };
                let scores = ScoreValues::from_f64(self.scores[r.start * w..r.end * w].to_vec());
                let mut b = crate::input::test_batch(
                    self.images[r.clone()].iter().copied(),
                    targets,
                    scores,
                    r.start as u64,
                );
                b.file_rows = self.len() as u64;
                if binary {
                    b.weight = Some(self.weight[r.clone()].to_vec());
                    b.class = Some(self.class[r.clone()].to_vec());
                }
                b.level = Some(levels(r.clone()));
                b.boxes = Some(self.boxes[r].to_vec());
                b
            }

            /// The pass over `ranges`, each a batch, merged in order.
            fn pass(&self, ranges: &[std::ops::Range<usize>], config: &AnalysisConfig) -> Pass {
                let mut total = Pass::starting(config, None);
                for r in ranges {
                    let mut p = Pass::new(config, None);
                    p.observe_batch(&self.exp, &self.batch(r.clone()), config.easy_threshold()).unwrap();
                    total.merge(p).unwrap();
                }
                total.finish_selection().unwrap();
                total
            }

            fn info(&self) -> DumpInfo {
                DumpInfo {
                    inputs: vec!["d.parquet".into()],
                    shape: self.exp.shape,
                    width: self.exp.width,
                    background_class: 0,
                }
            }
        }

        /// Every strategy (OHEM with NMS over the boxes), the sweep and the breakdowns.
        fn everything_with_nms() -> AnalysisConfig {
            let mut p = AnalysisParams {
                strategies: StrategyKind::ALL.to_vec(),
                sweep: Some(SweepParams::default()),
                breakdowns: true,
                ..Default::default()
            };
            p.ohem.k = 16;
            p.ohem.nms = Some(0.5);
            p.check().unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn any_batching_gives_the_same_result_for_every_dump_shape(
                shape in 0..SHAPES.len(), seed in 0..1000u64, n in 1..500usize,
                cuts in prop::collection::vec(any::<usize>(), 0..10),
            ) {
                let d = dump(SHAPES[shape], seed, n);
                let config = everything_with_nms();
                let whole = d.pass(&[0..n], &config);
                let split = d.pass(&ranges(cuts, n), &config);
                prop_assert_eq!(&split, &whole);
                let (a, b) = (split.report(&d.info(), &config, "t"), whole.report(&d.info(), &config, "t"));
                prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
                // Every total is finite.
                for s in &a.strategies {
                    prop_assert!(s.loss.total.is_finite() && s.loss.normalized.is_finite(), "{}: {:?}", s.name, s.loss);
                }
            }
        }

        fn info() -> DumpInfo {
            let exp = expansion();
            DumpInfo {
                inputs: vec!["d.parquet".into()],
                shape: exp.shape,
                width: exp.width,
                background_class: 0,
            }
        }
    }
}
