//! Flags shared by several subcommands, and their conversion into library settings.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use hardmine::config::{Activation, DumpParams, Layout, ScoreKind};
use hardmine::output::AtomicFile;
use hardmine::render::{self, Format};
use hardmine::report::Report;

/// How to read the dump.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Force the layout instead of detecting it from the columns.
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Class scores are independent sigmoids (RetinaNet, FCOS) or one softmax (SSD, Faster R-CNN).
    #[arg(long, value_enum, default_value_t = ActivationArg::Sigmoid)]
    pub activation: ActivationArg,
    /// Softmax only: index of the background class.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub background_class: i64,
    /// Use logits or probabilities when the dump has both.
    #[arg(long, value_enum)]
    pub scores: Option<ScoresArg>,
    /// Map a logical column to the file's column, e.g. --col label=gt_class (repeatable).
    #[arg(long = "col", value_name = "NAME=COLUMN")]
    pub columns: Vec<String>,
}

impl DumpArgs {
    pub fn params(&self) -> DumpParams {
        DumpParams {
            layout: self.layout.map(|l| match l {
                LayoutArg::Dense => Layout::Dense,
                LayoutArg::Binary => Layout::Binary,
            }),
            activation: match self.activation {
                ActivationArg::Sigmoid => Activation::Sigmoid,
                ActivationArg::Softmax => Activation::Softmax,
            },
            scores: self.scores.map(|s| match s {
                ScoresArg::Logits => ScoreKind::Logits,
                ScoresArg::Probs => ScoreKind::Probs,
            }),
            background_class: self.background_class,
            columns: self.columns.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayoutArg {
    Dense,
    Binary,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActivationArg {
    Sigmoid,
    Softmax,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScoresArg {
    Logits,
    Probs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
}

/// Where and how to write the report.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write the report to FILE (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// An opened destination: created before the long pass so a bad path fails fast.
pub enum Sink {
    Stdout,
    File(AtomicFile),
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        match self.format {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
        }
    }

    pub fn open(&self) -> anyhow::Result<Sink> {
        Ok(match &self.output {
            Some(p) => Sink::File(AtomicFile::create(p)?),
            None => Sink::Stdout,
        })
    }
}

impl Sink {
    /// Renders the report and commits the file.
    pub fn write(self, report: &Report, format: Format) -> anyhow::Result<()> {
        match self {
            Sink::Stdout => {
                let stdout = std::io::stdout();
                let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                let mut lock = stdout.lock();
                render::renderer(format, color)
                    .render(report, &mut lock)
                    .context("cannot write to stdout")?;
                lock.flush().context("cannot write to stdout")?;
            }
            Sink::File(mut f) => {
                let dest = f.dest().display().to_string();
                render::renderer(format, false)
                    .render(report, &mut f)
                    .with_context(|| format!("cannot write {dest}"))?;
                f.commit()?;
            }
        }
        Ok(())
    }
}
