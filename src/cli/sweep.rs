//! `hardmine sweep`: which gamma and alpha, and the numbers that justify them.

use std::process::ExitCode;

use clap::Args;

use hardmine::analysis;
use hardmine::config::{parse_numbers, AnalysisParams, StrategyKind, SweepParams};
use hardmine::input::Dump;

use super::common::{DumpArgs, OutputArgs};

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
    /// Gammas to sweep, comma-separated.
    #[arg(long, default_value = "0,0.5,1,2,5", value_name = "LIST", allow_hyphen_values = true)]
    pub gammas: String,
    /// Alphas to sweep, comma-separated; a negative value means no alpha weighting.
    #[arg(long, default_value = "0.25,0.5,0.75,-1", value_name = "LIST", allow_hyphen_values = true)]
    pub alphas: String,
    /// Recommend the smallest gamma whose easy negatives carry less than this share of the loss.
    #[arg(long, default_value_t = 0.1, value_name = "SHARE", allow_negative_numbers = true)]
    pub target_easy_share: f64,
    /// A decision is easy when p_t is at least this.
    #[arg(long, default_value_t = 0.9, value_name = "TAU", allow_negative_numbers = true)]
    pub easy_threshold: f64,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub dump: DumpArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let params = AnalysisParams {
        dump: args.dump.params(),
        strategies: vec![StrategyKind::Ce, StrategyKind::Focal],
        easy_threshold: args.easy_threshold,
        threads: args.threads,
        sweep: Some(SweepParams {
            gammas: parse_numbers("--gammas", &args.gammas)?,
            alphas: parse_numbers("--alphas", &args.alphas)?,
            target_easy_share: args.target_easy_share,
        }),
        ..Default::default()
    };
    let config = params.check()?;
    let sink = args.output.open()?;
    let dump = Dump::open(&args.inputs, config.dump())?;
    let pass = analysis::run(&dump, &config, &analysis::Quiet, None)?;
    let report = pass.finish(&dump, &config, "sweep");
    sink.write(&report, args.output.format())?;
    Ok(ExitCode::SUCCESS)
}
