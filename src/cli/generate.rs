//! `hardmine generate`: write a synthetic RetinaNet-like dump.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use hardmine::config::Layout;
use hardmine::synth::{self, StepPartition, SynthConfig, SynthSummary, Training};

use super::common::LayoutArg;

const EXAMPLES: &str = "\
Examples:
  hardmine generate --out dump/ --images 200 --anchors-per-image 100000 --classes 80 --seed 1
  hardmine generate --out run/ --steps 5 --prior-start     # a training sequence, a step column
  hardmine generate --out run/ --steps 5 --step-partition hive   # run/step=0/, run/step=1000/, ...
  hardmine trend run/                                      # the drift over the steps";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct GenerateArgs {
    /// Directory to write part-NNNNN.parquet files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub synth: SynthArgs,
}

/// Size and shape of a synthetic dump (defaults: the library's `SynthConfig::default`).
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Number of images.
    #[arg(long, default_value_t = SynthConfig::default().images)]
    pub images: usize,
    /// Anchors per image.
    #[arg(long, default_value_t = SynthConfig::default().anchors_per_image, value_name = "N")]
    pub anchors_per_image: usize,
    /// Foreground classes.
    #[arg(long, default_value_t = SynthConfig::default().classes, value_name = "C")]
    pub classes: usize,
    /// Random seed (same seed, same dump).
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Dense (row per anchor, list of logits) or binary (row per anchor-class decision).
    #[arg(long, value_enum, default_value_t = LayoutArg::Dense)]
    pub layout: LayoutArg,
    /// Images per Parquet file.
    #[arg(long, default_value_t = SynthConfig::default().images_per_file, value_name = "N")]
    pub images_per_file: usize,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = SynthConfig::default().rows_per_group, value_name = "N")]
    pub rows_per_group: usize,
    /// Write a training sequence: the same images at K steps, the logits sharpening with the
    /// step (from a partly trained model to the final one, or from the prior with
    /// --prior-start). Default: one dump, no step.
    #[arg(long, value_name = "K", help_heading = "Training sequence")]
    pub steps: Option<usize>,
    /// Training iterations between two steps (step i is numbered i x N).
    #[arg(long, default_value_t = Training::default().every, value_name = "N", help_heading = "Training sequence")]
    pub step_every: u64,
    /// Start at RetinaNet's prior-bias initialisation (every logit -4.595, pi = 0.01).
    #[arg(long, help_heading = "Training sequence")]
    pub prior_start: bool,
    /// Mark each row's step with a `step` column (one file per step, as the Python capture
    /// writes) or with hive directories step=N/.
    #[arg(long, value_enum, default_value_t = StepPartitionArg::Column, value_name = "HOW", help_heading = "Training sequence")]
    pub step_partition: StepPartitionArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StepPartitionArg {
    /// A `step` column.
    Column,
    /// `step=N` directories.
    Hive,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            images: self.images,
            anchors_per_image: self.anchors_per_image,
            classes: self.classes,
            seed: self.seed,
            layout: match self.layout {
                LayoutArg::Dense => Layout::Dense,
                LayoutArg::Binary => Layout::Binary,
            },
            images_per_file: self.images_per_file,
            rows_per_group: self.rows_per_group,
            training: self.steps.map(|steps| Training {
                steps,
                every: self.step_every,
                prior_start: self.prior_start,
                partition: match self.step_partition {
                    StepPartitionArg::Column => StepPartition::Column,
                    StepPartitionArg::Hive => StepPartition::Hive,
                },
            }),
        }
    }
}

pub fn describe(s: &SynthSummary, cfg: &SynthConfig, dir: &std::path::Path) -> String {
    let steps = cfg.training.map_or(1, |t| t.steps);
    let anchors = (steps * cfg.images * cfg.anchors_per_image) as f64;
    let steps = match cfg.training {
        Some(t) => format!(
            " at {} steps (0 to {}, {})",
            t.steps,
            t.step(t.steps - 1),
            if t.prior_start { "from the prior" } else { "sharpening" }
        ),
        None => String::new(),
    };
    format!(
        "wrote {} file(s), {} rows to {}\n  {} images x {} anchors x {} classes{steps}, {:.3}% foreground anchors, {:.2}% ignored",
        s.files.len(),
        s.rows,
        dir.display(),
        cfg.images,
        cfg.anchors_per_image,
        cfg.classes,
        100.0 * s.positive_anchors as f64 / anchors,
        100.0 * s.ignored_anchors as f64 / anchors,
    )
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.synth.config();
    let summary = synth::generate(&args.out, &cfg)?;
    println!("{}", describe(&summary, &cfg, &args.out));
    Ok(ExitCode::SUCCESS)
}
