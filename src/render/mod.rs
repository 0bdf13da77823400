//! Renderers: one file per output format behind one trait.
//!
//! A renderer sees only the [`Report`] (or the [`TrendReport`] of `hardmine trend`, the
//! [`CompareReport`] of `hardmine compare`); it never recomputes statistics.

pub mod charts;
pub mod content;
mod format;
pub mod html;
mod json;
pub mod markdown;
pub mod table;
mod terminal;

use std::io::Write;

pub use format::{count, number, percent};
pub use html::Html;
pub use json::Json;
pub use markdown::Markdown;
pub use terminal::Terminal;

use crate::compare::CompareReport;
use crate::error::OutputError;
use crate::report::Report;
use crate::trend::TrendReport;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A human-readable table (the default on a terminal).
    Table,
    /// Pretty-printed JSON with stable keys (docs/json-schema.md).
    Json,
    /// A self-contained HTML page with inline SVG charts.
    Html,
    /// Markdown with the charts as SVG files in `charts/` beside it (see [`Markdown`]).
    Markdown,
}

/// Turns a report (a [`Report`] unless said otherwise) into bytes of one format.
pub trait Renderer<R: ?Sized = Report> {
    /// Writes the rendered report to `out`.
    fn render(&self, report: &R, out: &mut dyn Write) -> std::io::Result<()>;
}

/// A kind of report every format renders: [`Report`], [`TrendReport`], [`CompareReport`].
pub trait Renderable: Sized + 'static {
    /// The renderer for `format` (`color`: ANSI highlighting in the terminal table; `assets`:
    /// the directory the Markdown links its charts in).
    fn renderer(format: Format, color: bool, assets: &str) -> Box<dyn Renderer<Self>>;
}

macro_rules! renderable {
    ($($t:ty),*) => {$(
        impl Renderable for $t {
            fn renderer(format: Format, color: bool, assets: &str) -> Box<dyn Renderer<Self>> {
                match format {
                    Format::Table => Box::new(Terminal { color }),
                    Format::Json => Box::new(Json),
                    Format::Html => Box::new(Html),
                    Format::Markdown => Box::new(Markdown { assets: assets.to_string() }),
                }
            }
        }
    )*};
}

renderable!(Report, TrendReport, CompareReport);

/// The renderer for `format`. `color` enables ANSI highlighting in the terminal table.
pub fn renderer(format: Format, color: bool) -> Box<dyn Renderer> {
    Report::renderer(format, color, "charts")
}

/// Renders a report to a string (no colour).
pub fn render_to_string(report: &Report, format: Format) -> Result<String, OutputError> {
    let mut buf = Vec::new();
    renderer(format, false).render(report, &mut buf).map_err(OutputError::Stream)?;
    Ok(String::from_utf8(buf).expect("renderers write UTF-8"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use crate::config::{Activation, Layout, ScoreKind};
    use crate::report::*;

    /// A small hand-made report for renderer tests.
    pub fn sample_report() -> Report {
        let strategy = |name: &str, params: &[(&str, serde_json::Value)], en: f64| {
            let params: BTreeMap<String, serde_json::Value> =
                params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let total = 1000.0;
            StrategyReport::from_buckets(
                name,
                params,
                [
                    (990, 990.0, en * total, 0.5),
                    (5, 5.0, (1.0 - en) * total * 0.5, 0.2),
                    (1, 1.0, 0.0, 0.0),
                    (4, 4.0, (1.0 - en) * total * 0.5, 0.3),
                ],
                12.5,
            )
        };
        Report {
            schema_version: SCHEMA_VERSION,
            metadata: Metadata {
                tool: "hardmine".into(),
                version: "0.0.0".into(),
                command: "analyze".into(),
                inputs: vec!["dump/part-0.parquet".into()],
                layout: Layout::Dense,
                scores: ScoreKind::Logits,
                activation: Activation::Sigmoid,
                classes: 10,
                columns: BTreeMap::new(),
                invocation: None,
                parameters: Parameters {
                    strategies: vec!["ce".into(), "alpha_ce".into(), "focal".into()],
                    gamma: 2.0,
                    alpha: Some(0.25),
                    easy_threshold: 0.9,
                    background_class: None,
                    on_invalid: crate::config::OnInvalid::Error,
                },
            },
            dataset: DatasetSummary {
                files: 1,
                images: 2,
                anchors: Some(101),
                decisions: 1000,
                positives: 5,
                negatives: 995,
                ignored: 1,
                skipped: BTreeMap::new(),
            },
            strategies: vec![
                strategy("ce", &[], 0.77),
                strategy("alpha_ce", &[("alpha", serde_json::json!(0.25))], 0.5),
                strategy(
                    "focal",
                    &[("gamma", serde_json::json!(2.0)), ("alpha", serde_json::json!(0.25))],
                    0.026,
                ),
            ],
            overlaps: None,
            sweep: None,
            gradient_density: None,
            breakdowns: None,
            normalizers: Vec::new(),
            soft_targets: None,
            health: Vec::new(),
        }
    }

    /// A class row of 1000 decisions with `positives` and the gradient ratio `ratio` (None: no
    /// negative gradient).
    pub fn class(key: u64, positives: u64, ratio: Option<f64>) -> GroupRow {
        GroupRow {
            key: key.into(),
            anchors: None,
            ignored: None,
            decisions: 1000,
            positives,
            negatives: 1000 - positives,
            neg_pos_ratio: (positives > 0).then(|| (1000 - positives) as f64 / positives as f64),
            ce_share: 0.25,
            focal_share: 0.25,
            easy_negative_share: 0.99,
            easy_negative_ce_share: 0.8,
            easy_negative_focal_share: 0.05,
            ce_gradient: Some(ClassGradient {
                positive: ratio.map_or(3.0, |r| 10.0 * r),
                negative: if ratio.is_some() { 10.0 } else { 0.0 },
                pos_neg_ratio: ratio,
            }),
        }
    }

    /// Breakdowns with only these class rows and class x level cells.
    /// A class x level cell whose easy negatives carry `share` of its focal loss.
    pub fn cell(class: u64, level: i64, share: f64) -> ClassLevelCell {
        ClassLevelCell {
            class,
            level,
            decisions: 10,
            positives: 1,
            easy_negative_share: 0.9,
            easy_negative_ce_share: 0.5,
            easy_negative_focal_share: share,
            focal_share: 0.1,
        }
    }

    pub fn breakdowns(by_class: Vec<GroupRow>, class_by_level: Vec<ClassLevelCell>) -> Breakdowns {
        Breakdowns {
            by_level: Vec::new(),
            by_class,
            by_iou: Vec::new(),
            top_images_by_loss: Vec::new(),
            top_images_by_easy_negative_share: Vec::new(),
            class_by_level,
        }
    }

    /// A writer that accepts `left` bytes, then fails as a full disk does.
    struct FailAfter(usize);

    impl std::io::Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("no space left on device"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_renderer_passes_a_failing_writer_s_error_on() {
        let report = sample_report();
        for format in
            [super::Format::Table, super::Format::Json, super::Format::Html, super::Format::Markdown]
        {
            for left in [0, 7, 300] {
                let r = super::renderer(format, true).render(&report, &mut FailAfter(left));
                let e = r.expect_err("a failed write must not look like success");
                assert!(e.to_string().contains("no space left"), "{format:?} after {left} bytes: {e}");
            }
        }
    }
}
