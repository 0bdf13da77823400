//! `hardmine sweep`: which gamma and alpha, and the numbers that justify them.

use std::process::ExitCode;

use clap::Args;

use hardmine::analysis;
use hardmine::config::{AnalysisConfig, AnalysisParams, StrategyKind};
use hardmine::input::Dump;

use super::common::{defaults, DumpArgs, OutputArgs, Progress, RunArgs, SweepGridArgs};

const EXAMPLES: &str = "\
Examples:
  hardmine sweep dump/                                   # gammas 0,0.5,1,2,5 x alphas 0.25,0.5,0.75,none
  hardmine sweep dump/ --gammas 0,1,2,3 --alphas 0.1,0.25,0.5 --target-easy-share 0.05
  hardmine sweep dump/ --format json --output sweep.json";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SweepArgs {
    /// Parquet files, directories (searched recursively, hive partitions too) or quoted globs.
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// A decision is easy when p_t is at least this.
    #[arg(long, default_value_t = defaults::easy_threshold(), value_name = "TAU", allow_negative_numbers = true)]
    pub easy_threshold: f64,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub sweep: SweepGridArgs,
    #[command(flatten)]
    pub dump: DumpArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl SweepArgs {
    /// The checked analysis settings: CE and focal loss, and the sweep grid.
    pub fn config(&self) -> anyhow::Result<AnalysisConfig> {
        let params = AnalysisParams {
            dump: self.dump.params(),
            strategies: vec![StrategyKind::Ce, StrategyKind::Focal],
            easy_threshold: self.easy_threshold,
            threads: self.run.threads,
            sweep: Some(self.sweep.params()?),
            ..Default::default()
        };
        Ok(params.check()?)
    }
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let sink = args.output.open()?;
    let dump = Dump::open(&args.inputs, config.dump())?;
    let progress = Progress::new(dump.rows(), args.run.quiet);
    let pass = analysis::run(&dump, &config, &progress, None);
    progress.finish();
    let report = pass?.finish(&dump, &config, "sweep");
    sink.write(&report, args.output.format())?;
    Ok(ExitCode::SUCCESS)
}
