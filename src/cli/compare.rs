//! `hardmine compare`: two runs side by side, every figure with its difference.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use hardmine::analysis;
use hardmine::compare::{self, Side, SideKind};
use hardmine::config::AnalysisConfig;
use hardmine::input::Dump;
use hardmine::render::charts::runs::compare_charts;
use hardmine::report::Report;
use hardmine::state::State;
use hardmine::trend::Summary;

use super::common::{invocation, Progress, RunsOutputArgs, SweptArgs};

const EXAMPLES: &str = "\
Examples:
  hardmine compare runs/focal/step=90000/ runs/ohem/step=90000/   # two dumps, analysed alike
  hardmine compare before.state after.state        # states of `analyze --save-state`
  hardmine compare a/ b/ --output compare.html     # paired bars (or .md, .json)
  hardmine compare a/ b/ --format json             # every figure with a, b and difference (b - a)

A side is a saved state when it is a file not named *.parquet or *.pq; a state is reported with
the settings it was saved with, a dump with this command's flags.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CompareArgs {
    /// The first run (A): a Parquet file, a directory, a quoted glob, or a state file.
    #[arg(value_name = "A")]
    pub a: String,
    /// The second run (B), compared with A (differences are B - A).
    #[arg(value_name = "B")]
    pub b: String,
    #[command(flatten)]
    pub analysis: SweptArgs,
    #[command(flatten)]
    pub output: RunsOutputArgs,
}

/// A side before its analysis: an opened dump or a read state.
enum Opened {
    Dump(Dump),
    State(Box<State>),
}

fn is_state(arg: &str) -> bool {
    let p = Path::new(arg);
    p.is_file() && !matches!(p.extension().and_then(|e| e.to_str()), Some("parquet" | "pq"))
}

fn open(arg: &str, config: &AnalysisConfig) -> anyhow::Result<Opened> {
    Ok(if is_state(arg) {
        let state = State::read(Path::new(arg))?;
        state.pass.check_dataset(state.config.dump())?;
        Opened::State(Box::new(state))
    } else {
        Opened::Dump(Dump::open(&[arg.to_string()], config.dump())?)
    })
}

fn side(label: &str, kind: SideKind, report: &Report, summary: Summary) -> Side {
    let m = &report.metadata;
    Side {
        label: label.to_string(),
        kind,
        inputs: m.inputs.clone(),
        layout: m.layout,
        scores: m.scores,
        activation: m.activation,
        classes: m.classes,
        parameters: m.parameters.clone(),
        report: summary,
    }
}

pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let config = args.analysis.config()?;
    let sink = args.output.open()?;
    // Both sides are opened (footers, states) before either pass: bad inputs fail fast.
    let opened = [open(&args.a, &config)?, open(&args.b, &config)?];
    let rows: u64 = opened.iter().map(|o| if let Opened::Dump(d) = o { d.rows() } else { 0 }).sum();
    let progress = Progress::new(rows, args.analysis.run.quiet);
    let mut sides = Vec::with_capacity(2);
    for (label, o) in [&args.a, &args.b].into_iter().zip(opened) {
        let s = match o {
            Opened::Dump(dump) => {
                let pass = analysis::run(&dump, &config, &progress, None);
                let pass = match pass {
                    Ok(p) => p,
                    Err(e) => {
                        progress.finish();
                        return Err(anyhow::Error::new(e).context(format!("cannot analyse {label}")));
                    }
                };
                let report = pass.finish(&dump, &config, "compare");
                side(label, SideKind::Dump, &report, Summary::of(&report, &pass))
            }
            Opened::State(state) => {
                let report = state.pass.report(&state.dump, &state.config, "compare");
                side(label, SideKind::State, &report, Summary::of(&report, &state.pass))
            }
        };
        sides.push(s);
    }
    progress.finish();
    let b = sides.pop().expect("two sides");
    let a = sides.pop().expect("two sides");
    let mut report = compare::compare(a, b);
    if matches!(args.output.format(), hardmine::render::Format::Html | hardmine::render::Format::Markdown) {
        report.metadata.invocation = Some(invocation());
    }
    args.output.write(sink, &report, compare_charts)?;
    if let (Some(out), false) = (&args.output.output, args.analysis.run.quiet) {
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.1} kB)", out.display(), size as f64 / 1000.0);
    }
    Ok(ExitCode::SUCCESS)
}
