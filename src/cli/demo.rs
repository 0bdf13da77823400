//! `hardmine demo`: generate a synthetic dump and analyse it, end to end.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use hardmine::analysis;
use hardmine::config::AnalysisParams;
use hardmine::input::Dump;
use hardmine::synth;

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
    let report = analysis::analyze(&dump, &config)?;
    sink.write(&report, args.output.format())?;
    match &args.out {
        Some(d) => eprintln!("next: hardmine analyze {} --format json", d.display()),
        None => eprintln!("next: hardmine generate --out dump/ && hardmine analyze dump/"),
    }
    Ok(ExitCode::SUCCESS)
}
