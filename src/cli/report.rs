//! `hardmine report`: the full analysis as a self-contained HTML page (or Markdown with SVGs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use hardmine::analysis;
use hardmine::config::AnalysisConfig;
use hardmine::input::Dump;
use hardmine::output::{write_atomic, AtomicFile};
use hardmine::render::{self, charts, Renderer};
use hardmine::report::Report;

use super::common::{invocation, Progress, SweptArgs};

const EXAMPLES: &str = "\
Examples:
  hardmine report dump/ --out report.html
  hardmine report dump/ --out report.md          # Markdown, charts in report_files/
  hardmine report dump/ --out r.html --gammas 0,1,2,3 --alphas 0.25,0.5 --strategies ce,focal,ohem";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ReportArgs {
    /// Parquet files, directories (searched recursively, hive partitions too) or quoted globs.
    #[arg(required = true, value_name = "DUMP")]
    pub inputs: Vec<String>,
    /// Where to write the report (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// html or markdown [default: markdown for a .md file, html otherwise].
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    #[command(flatten)]
    pub analysis: SweptArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML page.
    Html,
    /// Markdown, with the charts as SVG files beside it.
    Markdown,
}

/// `report.md` keeps its charts in `report_files/`.
pub fn assets_dir(out: &Path) -> (PathBuf, String) {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("report");
    let name = format!("{stem}_files");
    (out.with_file_name(&name), name)
}

impl ReportArgs {
    /// The format: `--format`, else from the extension of `--out` (`.md`: Markdown).
    pub fn format(&self) -> ReportFormat {
        self.format.unwrap_or(match self.out.extension().and_then(|e| e.to_str()) {
            Some("md" | "markdown") => ReportFormat::Markdown,
            _ => ReportFormat::Html,
        })
    }

    /// The checked analysis settings (every requested strategy, the sweep, the breakdowns).
    pub fn config(&self) -> anyhow::Result<AnalysisConfig> {
        self.analysis.config()
    }

    /// Renders `report` into `out` (the file of `--out`, committed by the caller): HTML, or
    /// Markdown with its charts written beside it.
    pub fn render(&self, report: &Report, out: &mut AtomicFile) -> anyhow::Result<()> {
        match self.format() {
            ReportFormat::Html => render::Html.render(report, out).context("cannot render the report")?,
            ReportFormat::Markdown => {
                let (dir, name) = assets_dir(&self.out);
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                for c in charts::charts(report).map_err(|e| anyhow::anyhow!("cannot draw the charts: {e}"))? {
                    write_atomic(&dir.join(format!("{}.svg", c.id)), c.svg.as_bytes())?;
                }
                render::Markdown { assets: name }.render(report, out).context("cannot render the report")?;
            }
        }
        Ok(())
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    // Fail fast on an unwritable destination, before the pass.
    let mut out = AtomicFile::create(&args.out)?;
    let dump = Dump::open(&args.inputs, config.dump())?;
    let progress = Progress::new(dump.rows(), args.analysis.run.quiet);
    let pass = analysis::run(&dump, &config, &progress, None);
    progress.finish();
    let mut report = pass?.finish(&dump, &config, "report");
    report.metadata.invocation = Some(invocation());
    args.render(&report, &mut out)?;
    out.commit()?;
    if !args.analysis.run.quiet {
        let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.1} kB)", args.out.display(), size as f64 / 1000.0);
    }
    Ok(ExitCode::SUCCESS)
}
