//! `hardmine analyze`: compare strategies bucket by bucket on a dump.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use hardmine::analysis;
use hardmine::config::{parse_strategies, AnalysisParams};
use hardmine::input::Dump;
use hardmine::state::State;

use super::common::{defaults, DumpArgs, OutputArgs, Progress, RunArgs, StrategyArgs};

/// Examples shown by `hardmine analyze --help`, one per strategy.
pub const EXAMPLES: &str = "\
Examples:
  hardmine analyze dump/                                      # the default strategies (all but qfl, vfl)
  hardmine analyze dump/ --strategies ce,focal --gamma 2 --alpha 0.25   # focal loss (RetinaNet)
  hardmine analyze dump/ --strategies alpha_ce --alpha 0.75   # alpha-balanced CE
  hardmine analyze dump/ --strategies ohem --ohem-k 128 --ohem-nms 0.7  # OHEM, NMS first
  hardmine analyze dump/ --strategies ohem --ohem-pos-fraction 0.25     # OHEM 1:3
  hardmine analyze dump/ --strategies ssd --neg-pos-ratio 3 --activation softmax
  hardmine analyze dump/ --strategies sampled --preset rpn    # 256 anchors @ 0.5 positive
  hardmine analyze dump/ --strategies sampled --preset rcnn --draws 1000 --seed 7
  hardmine analyze dump/ --strategies ghm --ghm-bins 30       # GHM-C (mmdetection GHMC)
  hardmine analyze dump/ --strategies ce,focal,qfl,vfl        # soft-target losses (GFL, VarifocalNet)
  hardmine analyze shard-3/ --save-state s3.state && hardmine merge s*.state   # shards";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct AnalyzeArgs {
    /// Parquet files, directories (searched recursively, hive partitions too) or quoted globs.
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// Strategies to compare, comma-separated: ce, alpha_ce, focal, ohem, ssd, sampled, ghm, and
    /// the soft-target losses qfl and vfl (sigmoid only; not in the default set).
    #[arg(long, default_value_t = defaults::strategies(), value_name = "LIST")]
    pub strategies: String,
    /// A decision is easy when p_t is at least this.
    #[arg(long, default_value_t = defaults::easy_threshold(), value_name = "TAU", allow_negative_numbers = true)]
    pub easy_threshold: f64,
    /// Also save the merged accumulator state, for `hardmine merge` (shard by image).
    #[arg(long, value_name = "FILE")]
    pub save_state: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub dump: DumpArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl AnalyzeArgs {
    pub fn params(&self) -> anyhow::Result<AnalysisParams> {
        let mut p = AnalysisParams {
            dump: self.dump.params(),
            strategies: parse_strategies(&self.strategies)?,
            easy_threshold: self.easy_threshold,
            threads: self.run.threads,
            ..AnalysisParams::default()
        };
        self.strategy.apply(&mut p);
        Ok(p)
    }
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let config = args.params()?.check()?;
    let sink = args.output.open()?;
    let dump = Dump::open(&args.inputs, config.dump())?;
    let progress = Progress::new(dump.rows(), args.run.quiet);
    let pass = analysis::run(&dump, &config, &progress, None);
    progress.finish();
    let pass = pass?;
    let report = pass.finish(&dump, &config, "analyze");
    if let Some(path) = &args.save_state {
        State::new(&config, dump.info(), pass).write(path)?;
    }
    sink.write(&report, args.output.format())?;
    Ok(ExitCode::SUCCESS)
}
