//! Flags shared by several subcommands, and their conversion into library settings.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::{Args, ValueEnum};

use hardmine::analysis::Observer;
use hardmine::config::{parse_numbers, parse_strategies, AnalysisConfig, SweepParams};
use hardmine::config::{
    Activation, AnalysisParams, DumpParams, EmptyImages, GhmParams, Layout, OhemParams, OnInvalid, QflParams,
    SampledParams, ScoreKind, SsdParams, VflParams,
};
use hardmine::output::AtomicFile;
use hardmine::render::charts::Chart;
use hardmine::render::{Format, Renderable};
use hardmine::report::Report;
use indicatif::{ProgressBar, ProgressStyle};

/// The flags' defaults, taken from the library's `Default` impls so that they are defined once
/// (`hardmine --help` shows these values).
pub mod defaults {
    use hardmine::config::{AnalysisParams, DumpParams, SampledParams, SweepParams};

    fn analysis() -> AnalysisParams {
        AnalysisParams::default()
    }

    fn list(values: &[f64]) -> String {
        values.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
    }

    /// `--strategies`: the default strategies, in report order.
    pub fn strategies() -> String {
        analysis().strategies.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")
    }
    /// `--easy-threshold`.
    pub fn easy_threshold() -> f64 {
        analysis().easy_threshold
    }
    /// `--gamma`.
    pub fn gamma() -> f64 {
        analysis().gamma
    }
    /// `--alpha`.
    pub fn alpha() -> f64 {
        analysis().alpha
    }
    /// `--ohem-k`.
    pub fn ohem_k() -> usize {
        analysis().ohem.k
    }
    /// `--neg-pos-ratio`.
    pub fn neg_pos_ratio() -> usize {
        analysis().ssd.neg_pos_ratio
    }
    /// `--batch-size-per-image` and `--positive-fraction` without a preset.
    pub fn sampled() -> SampledParams {
        analysis().sampled
    }
    /// `--draws`.
    pub fn draws() -> usize {
        sampled().draws
    }
    /// `--seed`.
    pub fn seed() -> u64 {
        sampled().seed
    }
    /// `--ghm-bins`.
    pub fn ghm_bins() -> usize {
        analysis().ghm.bins
    }
    /// `--qfl-beta`.
    pub fn qfl_beta() -> f64 {
        analysis().qfl.beta
    }
    /// `--vfl-alpha`.
    pub fn vfl_alpha() -> f64 {
        analysis().vfl.alpha
    }
    /// `--vfl-gamma`.
    pub fn vfl_gamma() -> f64 {
        analysis().vfl.gamma
    }
    /// `--background-class`.
    pub fn background_class() -> i64 {
        DumpParams::default().background_class
    }
    /// `--gammas`.
    pub fn gammas() -> String {
        list(&SweepParams::default().gammas)
    }
    /// `--alphas`.
    pub fn alphas() -> String {
        list(&SweepParams::default().alphas)
    }
    /// `--target-easy-share`.
    pub fn target_easy_share() -> f64 {
        SweepParams::default().target_easy_share
    }
}

/// How to read the dump.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Force the layout instead of detecting it from the columns.
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Class scores are independent sigmoids (RetinaNet, FCOS) or one softmax (SSD, Faster R-CNN).
    #[arg(long, value_enum, default_value_t = ActivationArg::Sigmoid)]
    pub activation: ActivationArg,
    /// Softmax only: index of the background class.
    #[arg(long, default_value_t = defaults::background_class(), value_name = "K")]
    pub background_class: i64,
    /// Use logits or probabilities when the dump has both.
    #[arg(long, value_enum)]
    pub scores: Option<ScoresArg>,
    /// Map a logical column to the file's column, e.g. --col label=gt_class (repeatable).
    #[arg(long = "col", value_name = "NAME=COLUMN")]
    pub columns: Vec<String>,
    /// Rows with invalid values (nulls, NaN logits, labels out of range, ...): stop with an
    /// error, or skip them and count them in the report.
    #[arg(long, value_enum, default_value_t = OnInvalidArg::Error, value_name = "POLICY")]
    pub on_invalid: OnInvalidArg,
    /// Analyse a dump with no positive decision at all (default: stop, since a dump without
    /// positives usually means the labels were mapped wrongly when dumping).
    #[arg(long)]
    pub allow_no_positives: bool,
    /// Count images whose anchors are all ignored (label -2) as images with zero loss, as
    /// torchvision's mean over images does (default: stop, naming the image).
    #[arg(long)]
    pub keep_ignored_images: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnInvalidArg {
    /// Stop at the first invalid row, naming file, column and row.
    Error,
    /// Drop invalid rows and count them, by reason, in the report.
    Skip,
}

impl DumpArgs {
    pub fn params(&self) -> DumpParams {
        DumpParams {
            layout: self.layout.map(|l| match l {
                LayoutArg::Dense => Layout::Dense,
                LayoutArg::Binary => Layout::Binary,
            }),
            activation: match self.activation {
                ActivationArg::Sigmoid => Activation::Sigmoid,
                ActivationArg::Softmax => Activation::Softmax,
            },
            scores: self.scores.map(|s| match s {
                ScoresArg::Logits => ScoreKind::Logits,
                ScoresArg::Probs => ScoreKind::Probs,
            }),
            background_class: self.background_class,
            columns: self.columns.clone(),
            on_invalid: match self.on_invalid {
                OnInvalidArg::Error => OnInvalid::Error,
                OnInvalidArg::Skip => OnInvalid::Skip,
            },
            allow_no_positives: self.allow_no_positives,
            keep_ignored_images: self.keep_ignored_images,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayoutArg {
    Dense,
    Binary,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActivationArg {
    Sigmoid,
    Softmax,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScoresArg {
    Logits,
    Probs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
}

/// Where and how to write the report.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write the report to FILE (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// An opened destination: created before the long pass so a bad path fails fast.
pub enum Sink {
    Stdout,
    File(AtomicFile),
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        match self.format {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
        }
    }

    pub fn open(&self) -> anyhow::Result<Sink> {
        Ok(match &self.output {
            Some(p) => Sink::File(AtomicFile::create(p)?),
            None => Sink::Stdout,
        })
    }
}

impl Sink {
    /// Renders the report and commits the file.
    pub fn write(self, report: &Report, format: Format) -> anyhow::Result<()> {
        self.write_as(report, format, "charts")
    }

    /// Renders any kind of report (a Markdown file links its charts in `assets`) and commits
    /// the file.
    pub fn write_as<R: Renderable>(self, report: &R, format: Format, assets: &str) -> anyhow::Result<()> {
        match self {
            Sink::Stdout => {
                let stdout = std::io::stdout();
                let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                let mut lock = stdout.lock();
                R::renderer(format, color, assets)
                    .render(report, &mut lock)
                    .context("cannot write to stdout")?;
                lock.flush().context("cannot write to stdout")?;
            }
            Sink::File(mut f) => {
                let dest = f.dest().display().to_string();
                R::renderer(format, false, assets)
                    .render(report, &mut f)
                    .with_context(|| format!("cannot write {dest}"))?;
                f.commit()?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    Table,
    Json,
    Markdown,
    Html,
}

/// Where and how to write a report of several runs (trend, compare): any format.
#[derive(Debug, Args)]
pub struct RunsOutputArgs {
    /// Output format [default: from the extension of --output (.json, .md, .html), else table].
    #[arg(long, value_enum)]
    pub format: Option<ReportFormatArg>,
    /// Write to FILE (atomically) instead of stdout; a Markdown file gets its charts in
    /// <stem>_files/ beside it.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl RunsOutputArgs {
    pub fn format(&self) -> Format {
        let ext = self.output.as_ref().and_then(|p| p.extension()).and_then(|e| e.to_str());
        match (self.format, ext) {
            (Some(ReportFormatArg::Table), _) => Format::Table,
            (Some(ReportFormatArg::Json), _) | (None, Some("json")) => Format::Json,
            (Some(ReportFormatArg::Markdown), _) | (None, Some("md" | "markdown")) => Format::Markdown,
            (Some(ReportFormatArg::Html), _) | (None, Some("html" | "htm")) => Format::Html,
            (None, _) => Format::Table,
        }
    }

    /// Opens the destination before the long pass (a bad path fails fast).
    pub fn open(&self) -> anyhow::Result<Sink> {
        if self.format() == Format::Markdown && self.output.is_none() {
            anyhow::bail!("Markdown needs --output FILE.md: its charts are written beside it\n  fix: add --output report.md, or use --format html (one self-contained page) on stdout");
        }
        Ok(match &self.output {
            Some(p) => Sink::File(AtomicFile::create(p)?),
            None => Sink::Stdout,
        })
    }

    /// Writes the report (and a Markdown file's `charts`) and commits it.
    pub fn write<R: Renderable>(
        &self,
        sink: Sink,
        report: &R,
        charts: impl Fn(&R) -> Result<Vec<Chart>, Box<dyn std::error::Error>>,
    ) -> anyhow::Result<()> {
        let format = self.format();
        let mut assets = String::from("charts");
        if let (Format::Markdown, Some(out)) = (format, &self.output) {
            let (dir, name) = super::report::assets_dir(out);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for c in charts(report).map_err(|e| anyhow::anyhow!("cannot draw the charts: {e}"))? {
                hardmine::output::write_atomic(&dir.join(format!("{}.svg", c.id)), c.svg.as_bytes())?;
            }
            assets = name;
        }
        sink.write_as(report, format, &assets)
    }
}

/// The analysis settings of `report`, `trend` and `compare`: every requested strategy, the sweep
/// and the breakdowns.
#[derive(Debug, Args)]
pub struct SweptArgs {
    /// Strategies to compare, comma-separated.
    #[arg(long, default_value_t = defaults::strategies(), value_name = "LIST")]
    pub strategies: String,
    /// A decision is easy when p_t is at least this.
    #[arg(long, default_value_t = defaults::easy_threshold(), value_name = "TAU", allow_negative_numbers = true)]
    pub easy_threshold: f64,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub sweep: SweepGridArgs,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub dump: DumpArgs,
}

impl SweptArgs {
    /// The checked settings.
    pub fn config(&self) -> anyhow::Result<AnalysisConfig> {
        let mut params = AnalysisParams {
            dump: self.dump.params(),
            strategies: parse_strategies(&self.strategies)?,
            easy_threshold: self.easy_threshold,
            threads: self.run.threads,
            sweep: Some(self.sweep.params()?),
            ..Default::default()
        };
        self.strategy.apply(&mut params);
        Ok(params.check()?)
    }
}

/// Settings of the mining and sampling strategies (shared by `analyze` and `mine`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Strategy settings")]
pub struct StrategyArgs {
    /// Focal-loss focusing parameter gamma (0 = CE).
    #[arg(long, default_value_t = defaults::gamma(), allow_negative_numbers = true)]
    pub gamma: f64,
    /// Class-balance weight alpha in [0,1]; negative (e.g. -1) disables alpha weighting.
    #[arg(long, default_value_t = defaults::alpha(), allow_negative_numbers = true)]
    pub alpha: f64,
    /// OHEM: candidates kept per image.
    #[arg(long, default_value_t = defaults::ohem_k(), value_name = "K")]
    pub ohem_k: usize,
    /// OHEM: greedy NMS at this IoU (in loss order) before taking the top k; needs x1,y1,x2,y2.
    #[arg(long, value_name = "IOU")]
    pub ohem_nms: Option<f64>,
    /// OHEM: at most floor(F*k) positives, the rest negatives ("OHEM 1:3" is 0.25).
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub ohem_pos_fraction: Option<f64>,
    /// SSD: negatives kept per positive.
    #[arg(long, default_value_t = defaults::neg_pos_ratio(), value_name = "R")]
    pub neg_pos_ratio: usize,
    /// SSD: what an image without positives contributes.
    #[arg(long, value_enum, default_value_t = EmptyImagesArg::NoNegatives, value_name = "POLICY")]
    pub ssd_empty_images: EmptyImagesArg,
    /// Sampling: preset batch size and positive fraction (rpn = 256 @ 0.5, rcnn = 512 @ 0.25;
    /// rcnn is a what-if on anchors: Fast R-CNN samples proposals with the ground truth
    /// appended, and the paper used 64 RoIs per image).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Sampling: candidates per image [default: 256, or the preset's].
    #[arg(long, value_name = "B")]
    pub batch_size_per_image: Option<usize>,
    /// Sampling: target share of positives [default: 0.5, or the preset's].
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub positive_fraction: Option<f64>,
    /// Sampling: seeded draws for the spread of the loss shares (0 = none).
    #[arg(long, default_value_t = defaults::draws(), value_name = "N")]
    pub draws: usize,
    /// Sampling: seed of the draws.
    #[arg(long, default_value_t = defaults::seed())]
    pub seed: u64,
    /// GHM-C: gradient-norm bins over [0,1].
    #[arg(long, default_value_t = defaults::ghm_bins(), value_name = "N")]
    pub ghm_bins: usize,
    /// GHM-C: the gradient density per FPN level, as mmdetection's AnchorHead runs GHMC once per
    /// level (needs a level column).
    #[arg(long)]
    pub ghm_per_level: bool,
    /// Images per training batch (consecutive images in dump order) for the batch normalisers:
    /// batch_positives, avg_factor, ema_positives [default: the dump is one batch; each image
    /// a batch for the EMA].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// QFL: exponent beta of the modulating factor |y - p|^beta.
    #[arg(long, default_value_t = defaults::qfl_beta(), value_name = "BETA", allow_negative_numbers = true)]
    pub qfl_beta: f64,
    /// VFL: scale of the negatives' loss (not the focal loss's alpha_t).
    #[arg(long, default_value_t = defaults::vfl_alpha(), value_name = "ALPHA", allow_negative_numbers = true)]
    pub vfl_alpha: f64,
    /// VFL: exponent of the negatives' modulating factor p^gamma.
    #[arg(long, default_value_t = defaults::vfl_gamma(), value_name = "GAMMA", allow_negative_numbers = true)]
    pub vfl_gamma: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EmptyImagesArg {
    /// No negatives either (torchvision SSD, mmdetection SSDHead).
    NoNegatives,
    /// All of the image's negatives (some mmdetection-derived heads).
    AllNegatives,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetArg {
    /// Region proposal network: 256 anchors per image, half positive.
    Rpn,
    /// Fast R-CNN box head: 512 per image, a quarter positive (a what-if on anchors: the head
    /// samples proposals with the ground truth appended; the paper used 64 RoIs per image).
    Rcnn,
}

impl StrategyArgs {
    /// Fills the strategy settings of `params`.
    pub fn apply(&self, params: &mut AnalysisParams) {
        params.gamma = self.gamma;
        params.alpha = self.alpha;
        params.ohem = OhemParams { k: self.ohem_k, nms: self.ohem_nms, pos_fraction: self.ohem_pos_fraction };
        params.ssd = SsdParams {
            neg_pos_ratio: self.neg_pos_ratio,
            empty_images: match self.ssd_empty_images {
                EmptyImagesArg::NoNegatives => EmptyImages::NoNegatives,
                EmptyImagesArg::AllNegatives => EmptyImages::AllNegatives,
            },
        };
        let (b, f) = match self.preset {
            Some(PresetArg::Rpn) => (256, 0.5),
            Some(PresetArg::Rcnn) => (512, 0.25),
            None => (defaults::sampled().batch_size_per_image, defaults::sampled().positive_fraction),
        };
        params.sampled = SampledParams {
            batch_size_per_image: self.batch_size_per_image.unwrap_or(b),
            positive_fraction: self.positive_fraction.unwrap_or(f),
            draws: self.draws,
            seed: self.seed,
        };
        params.ghm = GhmParams { bins: self.ghm_bins, per_level: self.ghm_per_level };
        params.batch_size = self.batch_size;
        params.qfl = QflParams { beta: self.qfl_beta };
        params.vfl = VflParams { alpha: self.vfl_alpha, gamma: self.vfl_gamma };
    }
}

/// Flags every long-running command takes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress bar and no summary lines on stderr (errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// The sweep grid flags (shared by `sweep` and `report`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Sweep")]
pub struct SweepGridArgs {
    /// Gammas to sweep, comma-separated.
    #[arg(long, default_value_t = defaults::gammas(), value_name = "LIST", allow_hyphen_values = true)]
    pub gammas: String,
    /// Alphas to sweep, comma-separated; a negative value means no alpha weighting.
    #[arg(long, default_value_t = defaults::alphas(), value_name = "LIST", allow_hyphen_values = true)]
    pub alphas: String,
    /// Recommend the smallest gamma whose easy negatives carry less than this share of the loss
    /// at the balanced alpha, i.e. less than twice this share of the negatives' own focal loss
    /// (at most 0.5).
    #[arg(long, default_value_t = defaults::target_easy_share(), value_name = "SHARE", allow_negative_numbers = true)]
    pub target_easy_share: f64,
}

impl SweepGridArgs {
    pub fn params(&self) -> anyhow::Result<SweepParams> {
        Ok(SweepParams {
            gammas: parse_numbers("--gammas", &self.gammas)?,
            alphas: parse_numbers("--alphas", &self.alphas)?,
            target_easy_share: self.target_easy_share,
        })
    }
}

/// Progress on stderr (only on a terminal, never with `--quiet`) and Ctrl-C.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
}

/// The flag Ctrl-C sets; installed once per process.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // A second Ctrl-C ends the process at once.
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
        flag
    })
    .clone()
}

impl Progress {
    /// A progress display over `rows` rows.
    pub fn new(rows: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(rows);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bar:40} {percent:>3}% {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar, quiet, interrupted: interrupt_flag() }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn rows_done(&self, rows: usize) {
        if let Some(b) = &self.bar {
            b.inc(rows as u64);
        }
    }

    fn cancelled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    fn restarted(&self, why: &str) {
        if !self.quiet {
            match &self.bar {
                Some(b) => {
                    b.println(format!("note: {why}"));
                    b.set_position(0);
                }
                None => eprintln!("note: {why}"),
            }
        }
    }
}

/// The command line, quoted for a POSIX shell.
pub fn invocation() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "hardmine".to_string() } else { a };
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
