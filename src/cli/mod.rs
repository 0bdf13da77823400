//! Command-line definitions (clap) and the glue that turns flags into library calls.
//! One file per subcommand; flags shared by several live in [`common`].

mod analyze;
mod common;
mod compare;
mod demo;
mod generate;
mod merge;
mod mine;
mod report;
mod sweep;
mod trend;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hard-example mining and sampling analysis of object detectors.
///
/// hardmine reads anchor-level predictions (logits, labels, image ids) dumped to Parquet and shows
/// how much of the loss easy negatives carry under cross-entropy, alpha-balanced CE and focal loss.
#[derive(Debug, Parser)]
#[command(name = "hardmine", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare CE, alpha-CE, focal loss, OHEM, SSD mining, sampling and GHM bucket by bucket.
    Analyze(analyze::AnalyzeArgs),
    /// Write the full analysis as a self-contained HTML page (or Markdown) with charts.
    Report(report::ReportArgs),
    /// Sweep gamma x alpha: loss shares, CDFs, balanced alphas and a recommendation.
    Sweep(sweep::SweepArgs),
    /// One analysis per training step (or checkpoint), with the drift over the steps.
    Trend(trend::TrendArgs),
    /// Two runs (dumps or saved states) side by side, every figure with its difference.
    Compare(compare::CompareArgs),
    /// Merge shard states (`analyze --save-state`) into one report.
    Merge(merge::MergeArgs),
    /// Export the hard examples a strategy selects to Parquet.
    Mine(mine::MineArgs),
    /// Write a synthetic RetinaNet-like dump.
    Generate(generate::GenerateArgs),
    /// Generate a dump and analyse it, end to end.
    Demo(demo::DemoArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Report(r) => report::run(r),
        Command::Sweep(s) => sweep::run(s),
        Command::Trend(t) => trend::run(t),
        Command::Compare(c) => compare::run(c),
        Command::Merge(m) => merge::run(m),
        Command::Mine(m) => mine::run(m),
        Command::Generate(g) => generate::run(g),
        Command::Demo(d) => demo::run(d),
    }
}

/// 130 after Ctrl-C (the shell convention for SIGINT), 1 for every other error.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    let interrupted = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<hardmine::Error>(),
            Some(hardmine::Error::Input(hardmine::error::InputError::Interrupted))
        ) || matches!(
            c.downcast_ref::<hardmine::error::InputError>(),
            Some(hardmine::error::InputError::Interrupted)
        )
    });
    if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::FAILURE
    }
}

/// Whether the error is a closed stdout (e.g. `| head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use hardmine::config::{AnalysisParams, SweepParams};

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let Command::Analyze(a) = Cli::try_parse_from(["hardmine", "analyze", "d"]).unwrap().command else {
            panic!("analyze")
        };
        let got = a.params().unwrap();
        let want = AnalysisParams::default();
        assert_eq!(got.strategies, want.strategies);
        assert_eq!((got.gamma, got.alpha, got.easy_threshold), (want.gamma, want.alpha, want.easy_threshold));
        assert_eq!((got.ohem, got.ssd, got.sampled, got.ghm), (want.ohem, want.ssd, want.sampled, want.ghm));
        assert_eq!((got.qfl, got.vfl), (want.qfl, want.vfl));
        assert_eq!(got.dump.background_class, want.dump.background_class);
        let Command::Sweep(s) = Cli::try_parse_from(["hardmine", "sweep", "d"]).unwrap().command else {
            panic!("sweep")
        };
        assert_eq!(s.sweep.params().unwrap(), SweepParams::default());
        assert_eq!(s.easy_threshold, want.easy_threshold);
        let Command::Generate(g) =
            Cli::try_parse_from(["hardmine", "generate", "--out", "d"]).unwrap().command
        else {
            panic!("generate")
        };
        assert_eq!(g.synth.config(), hardmine::synth::SynthConfig::default());
    }
}
