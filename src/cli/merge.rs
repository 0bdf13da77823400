//! `hardmine merge`: combine shard states into the report one run over all inputs would give.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use hardmine::report::Report;
use hardmine::state::{self, State};

use super::common::OutputArgs;

const EXAMPLES: &str = "\
Examples:
  hardmine analyze shards/0/ --save-state s0.state     # one task per shard, same flags
  hardmine analyze shards/1/ --save-state s1.state
  hardmine merge s0.state s1.state --format json --output analysis.json

See docs/scale-out.md for Slurm arrays, Kubernetes Jobs and Spark/Ray.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct MergeArgs {
    /// State files written by `hardmine analyze --save-state`, in dump order.
    #[arg(required = true, value_name = "STATE")]
    pub states: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl MergeArgs {
    /// The report of the merged states (read and merged in the order given).
    pub fn merged(&self) -> anyhow::Result<Report> {
        let mut states = Vec::with_capacity(self.states.len());
        for p in &self.states {
            states.push((p.clone(), State::read(p)?));
        }
        let merged = state::merge(states)?;
        merged.pass.check_dataset(merged.config.dump())?;
        Ok(merged.pass.report(&merged.dump, &merged.config, "merge"))
    }
}

pub fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let sink = args.output.open()?;
    let report = args.merged()?;
    sink.write(&report, args.output.format())?;
    Ok(ExitCode::SUCCESS)
}
