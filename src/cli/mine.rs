//! `hardmine mine`: export the hard examples a strategy selects to Parquet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use hardmine::analysis::select::{MineSpec, MineStrategy};
use hardmine::config::{AnalysisConfig, AnalysisParams, StrategyKind};
use hardmine::input::Dump;
use hardmine::mine;

use super::common::{DumpArgs, Progress, RunArgs, StrategyArgs};

const EXAMPLES: &str = "\
Examples:
  hardmine mine dump/ --strategy ohem --ohem-k 64 --out hard.parquet
  hardmine mine dump/ --strategy ssd --neg-pos-ratio 3 --out mined.parquet
  hardmine mine dump/ --strategy sampled --preset rpn --seed 7 --out sampled.parquet
  hardmine mine dump/ --strategy focal --top 20 --gamma 2 --alpha 0.25 --out focal.parquet

Read it back with polars.read_parquet('hard.parquet') or pyarrow.parquet.read_table(...).";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct MineArgs {
    /// Parquet files, directories or quoted globs (rows of each image together).
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// Whose selection to export.
    #[arg(long, value_enum)]
    pub strategy: MineStrategyArg,
    /// At most N rows per image, hardest first [default: all selected; 128 for focal].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// The Parquet file to write (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub strategy_args: StrategyArgs,
    #[command(flatten)]
    pub dump: DumpArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MineStrategyArg {
    /// The OHEM top-k of each image.
    Ohem,
    /// SSD's positives and mined negatives.
    Ssd,
    /// One seeded draw of the positive/negative sampler.
    Sampled,
    /// The candidates with the highest focal loss.
    Focal,
}

impl MineArgs {
    /// The checked analysis settings and what to export.
    pub fn config(&self) -> anyhow::Result<(AnalysisConfig, MineSpec)> {
        let (strategy, kind) = match self.strategy {
            MineStrategyArg::Ohem => (MineStrategy::Ohem, StrategyKind::Ohem),
            MineStrategyArg::Ssd => (MineStrategy::Ssd, StrategyKind::Ssd),
            MineStrategyArg::Sampled => (MineStrategy::Sampled, StrategyKind::Sampled),
            MineStrategyArg::Focal => (MineStrategy::Focal, StrategyKind::Focal),
        };
        if self.top == Some(0) {
            anyhow::bail!("invalid value 0 for --top: export at least 1 row per image");
        }
        let mut params = AnalysisParams {
            dump: self.dump.params(),
            strategies: vec![kind],
            threads: self.run.threads,
            ..Default::default()
        };
        self.strategy_args.apply(&mut params);
        // The export uses one draw of its own; the spread statistics are not needed here.
        params.sampled.draws = 0;
        let config = params.check()?;
        let top = self.top.or((kind == StrategyKind::Focal).then_some(128));
        Ok((config, MineSpec { strategy, top }))
    }
}

pub fn run(args: MineArgs) -> anyhow::Result<ExitCode> {
    let (config, spec) = args.config()?;
    let dump = Dump::open(&args.inputs, &config.dump().for_export())?;
    let progress = Progress::new(dump.rows(), args.run.quiet);
    let summary = mine::mine(&dump, &config, spec, &args.out, &progress);
    progress.finish();
    let summary = summary?;
    if !args.run.quiet {
        eprintln!(
            "mined {} rows ({}) from {} images into {}",
            summary.rows,
            spec.strategy.name(),
            summary.images,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
