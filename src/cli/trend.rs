//! `hardmine trend`: one analysis per training step (or checkpoint, or argument), side by side.

use std::process::ExitCode;

use clap::Args;

use hardmine::input::{Dump, Grouping};
use hardmine::render::charts::runs::trend_charts;
use hardmine::trend::{self, GroupBy, TrendReport};

use super::common::{invocation, Progress, RunsOutputArgs, SweptArgs};

const EXAMPLES: &str = "\
Examples:
  hardmine trend runs/retinanet/                  # one group per value of the 'step' column or step=N directory
  hardmine trend dumps/ --by epoch                # another column or hive key
  hardmine trend ckpt-1k/ ckpt-5k/ ckpt-20k/ --by path   # one group per argument
  hardmine trend runs/ --output trend.html        # line charts over the steps (or .md, .json)
  hardmine trend runs/ --format json --strategies ce,focal,ohem --gammas 0,1,2,3

Groups are whole row groups: each must hold one value of the key (the Python capture writes one
file per step). Files without the key are left out and named; a group that cannot be analysed
(no positives, invalid values) says why, and the other groups still report.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TrendArgs {
    /// Parquet files, directories (searched recursively, hive partitions too) or quoted globs.
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// Group by this column or hive partition key (integers or strings), or `path`: one group
    /// per DUMP argument, labelled by its path.
    #[arg(long, default_value = "step", value_name = "KEY")]
    pub by: String,
    #[command(flatten)]
    pub analysis: SweptArgs,
    #[command(flatten)]
    pub output: RunsOutputArgs,
}

pub fn run(args: TrendArgs) -> anyhow::Result<ExitCode> {
    let config = args.analysis.config()?;
    let sink = args.output.open()?;
    let by = if args.by == "path" { GroupBy::Path } else { GroupBy::Key(args.by.clone()) };
    // Every dump is opened (and, by key, grouped) before the first pass: bad inputs fail fast.
    let (values, dumps, left_out) = match &by {
        GroupBy::Path => {
            let mut dumps = Vec::new();
            for input in &args.inputs {
                dumps.push(Dump::open(std::slice::from_ref(input), config.dump())?);
            }
            (args.inputs.iter().map(|i| trend::path_value(i)).collect::<Vec<_>>(), dumps, Vec::new())
        }
        GroupBy::Key(key) => {
            let Grouping { groups, left_out } = Dump::open(&args.inputs, config.dump())?.group_by(key)?;
            let (values, dumps) = groups.into_iter().map(|g| (trend::value_json(&g.value), g.dump)).unzip();
            (values, dumps, left_out)
        }
    };
    let rows: u64 = dumps.iter().map(Dump::rows).sum();
    let progress = Progress::new(rows, args.analysis.run.quiet);
    let refs: Vec<&Dump> = dumps.iter().collect();
    let results = trend::analyze_groups(&refs, &config, &progress);
    progress.finish();
    let results = results?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed == results.len() && !results.is_empty() {
        let why: Vec<String> = values
            .iter()
            .zip(&results)
            .filter_map(|(v, r)| {
                r.as_ref().err().map(|e| format!("  {} {}: {}", by.name(), v, e.replace('\n', "\n    ")))
            })
            .take(3)
            .collect();
        anyhow::bail!("none of the {} group(s) could be analysed:\n{}", results.len(), why.join("\n"));
    }
    let groups = values.into_iter().zip(&dumps).zip(results).map(|((v, d), r)| (v, d, r)).collect();
    let mut report = TrendReport::new(&by, &args.inputs, groups, left_out, &config);
    if matches!(args.output.format(), hardmine::render::Format::Html | hardmine::render::Format::Markdown) {
        report.metadata.invocation = Some(invocation());
    }
    args.output.write(sink, &report, trend_charts)?;
    if !args.analysis.run.quiet && failed > 0 {
        eprintln!(
            "note: {failed} of {} group(s) could not be analysed; the report says why",
            report.groups.len()
        );
    }
    if let (Some(out), false) = (&args.output.output, args.analysis.run.quiet) {
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.1} kB)", out.display(), size as f64 / 1000.0);
    }
    Ok(ExitCode::SUCCESS)
}
