//! `hardmine demo`: generate a synthetic dump and analyse it, end to end.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use hardmine::analysis;
use hardmine::config::AnalysisParams;
use hardmine::input::Dump;
use hardmine::synth;
use hardmine::trend::{self, GroupBy, TrendReport};

use super::common::OutputArgs;
use super::generate::{describe, SynthArgs};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the generated dump in DIR (default: a temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub synth: SynthArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let config = AnalysisParams::default().check()?;
    let sink = args.output.open()?;
    let tmp;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let cfg = args.synth.config();
    let summary = synth::generate(&dir, &cfg)?;
    eprintln!("{}", describe(&summary, &cfg, &dir));
    let dump = Dump::open(&[dir.display().to_string()], config.dump())?;
    if cfg.training.is_some() {
        // A training sequence: one analysis per step, with the sweep (what `trend` shows).
        let config = AnalysisParams { sweep: Some(Default::default()), ..Default::default() }.check()?;
        let groups = dump.group_by("step")?;
        let dumps: Vec<&Dump> = groups.groups.iter().map(|g| &g.dump).collect();
        let results = trend::analyze_groups(&dumps, &config, &analysis::Quiet)?;
        let groups = groups
            .groups
            .iter()
            .zip(results)
            .map(|(g, r)| (trend::value_json(&g.value), &g.dump, r))
            .collect();
        let report = TrendReport::new(
            &GroupBy::Key("step".into()),
            &[dir.display().to_string()],
            groups,
            Vec::new(),
            &config,
        );
        sink.write_as(&report, args.output.format(), "charts")?;
        eprintln!("next: hardmine trend DIR --output trend.html (with --out DIR to keep the dump)");
        return Ok(ExitCode::SUCCESS);
    }
    let report = analysis::analyze(&dump, &config)?;
    sink.write(&report, args.output.format())?;
    match &args.out {
        Some(d) => eprintln!("next: hardmine analyze {} --format json", d.display()),
        None => eprintln!("next: hardmine generate --out dump/ && hardmine analyze dump/"),
    }
    Ok(ExitCode::SUCCESS)
}
