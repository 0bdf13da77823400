//! `hardmine analyze`: compare strategies bucket by bucket on a dump.

use std::process::ExitCode;

use clap::Args;

use hardmine::analysis;
use hardmine::config::{parse_strategies, AnalysisParams};
use hardmine::input::Dump;

use super::common::{DumpArgs, OutputArgs};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Parquet files, directories (searched recursively, hive partitions too) or quoted globs.
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// Strategies to compare, comma-separated: ce, alpha_ce, focal.
    #[arg(long, default_value = "ce,alpha_ce,focal", value_name = "LIST")]
    pub strategies: String,
    /// Focal-loss focusing parameter gamma (0 = CE).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Class-balance weight alpha in [0,1]; negative (e.g. -1) disables alpha weighting.
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub alpha: f64,
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

impl AnalyzeArgs {
    pub fn params(&self) -> anyhow::Result<AnalysisParams> {
        Ok(AnalysisParams {
            dump: self.dump.params(),
            strategies: parse_strategies(&self.strategies)?,
            gamma: self.gamma,
            alpha: self.alpha,
            easy_threshold: self.easy_threshold,
            threads: self.threads,
        })
    }
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let config = args.params()?.check()?;
    let sink = args.output.open()?;
    let dump = Dump::open(&args.inputs, config.dump())?;
    let report = analysis::analyze(&dump, &config)?;
    sink.write(&report, args.output.format())?;
    Ok(ExitCode::SUCCESS)
}
