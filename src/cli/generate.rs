//! `hardmine generate`: write a synthetic RetinaNet-like dump.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use hardmine::config::Layout;
use hardmine::synth::{self, SynthConfig, SynthSummary};

use super::common::LayoutArg;

#[derive(Debug, Args)]
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
        }
    }
}

pub fn describe(s: &SynthSummary, cfg: &SynthConfig, dir: &std::path::Path) -> String {
    let anchors = (cfg.images * cfg.anchors_per_image) as f64;
    format!(
        "wrote {} file(s), {} rows to {}\n  {} images x {} anchors x {} classes, {:.3}% foreground anchors, {:.2}% ignored",
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
