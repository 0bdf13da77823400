//! Trends over training: one analysis per group of a dump (a training step, a checkpoint, one
//! directory per run) and the figures that drift from group to group.
//!
//! Each group is its own [`Dump`] (see [`Dump::group_by`]: whole row groups, so the dump is
//! decoded once in all) and runs the ordinary pass ([`analysis::run`]) with the ordinary
//! settings; what a group keeps afterwards is its [`Summary`], a few kB whatever the dump size
//! (the dataset counts, every strategy's loss and bucket shares, the normalisers, the sweep's
//! recommendation, the mean negative logit and the health findings). State therefore grows
//! with the number of groups by one summary each; only the passes in flight hold per-image
//! sums and decoded batches, and at most `threads` of them run at a time.
//!
//! A group whose pass fails on its data (no positives, an invalid value, images all ignored)
//! keeps the message instead of a summary, and the other groups still report.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::{self, health::PRIOR_PI, Observer, Pass};
use crate::config::{Activation, AnalysisConfig, Layout, ScoreKind};
use crate::error::{Error, InputError};
use crate::input::{Dump, HiveValue};
use crate::report::{
    AlphaSource, DatasetSummary, GammaRule, HealthItem, Normalizer, Parameters, Report, StrategyReport,
    SCHEMA_VERSION,
};

/// What one analysis keeps for trends and comparisons: the figures of its [`Report`] that
/// are compared across groups, without the histograms, CDFs and breakdowns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Dataset counts.
    pub dataset: DatasetSummary,
    /// Positive decisions per image (0 without images).
    pub positives_per_image: f64,
    /// Every strategy's loss, selection and bucket shares, in the requested order.
    pub strategies: Vec<StrategyReport>,
    /// The focal loss under each framework's normaliser.
    #[serde(default)]
    pub normalizers: Vec<Normalizer>,
    /// The sweep's recommendation and per-gamma figures (when the sweep ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSummary>,
    /// The mean logit of the negative decisions (sigmoid logit dumps with negatives), to read
    /// against RetinaNet's prior [`prior_logit`].
    #[serde(default)]
    pub mean_negative_logit: Option<f64>,
    /// The health findings.
    #[serde(default)]
    pub health: Vec<HealthItem>,
}

/// The sweep, reduced to its recommendation and per-gamma rule figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// Recommended gamma.
    pub gamma: f64,
    /// Recommended alpha (the focal-loss paper's at that gamma).
    pub alpha: f64,
    /// Where the alpha comes from (`none`: nothing is recommended).
    pub alpha_source: AlphaSource,
    /// The balanced alpha at the recommended gamma (null without positives).
    pub balanced_alpha: Option<f64>,
    /// E / N at the recommended gamma.
    pub easy_negative_share_of_negatives: f64,
    /// Whether the grid reached the rule's target.
    pub target_met: bool,
    /// Per swept gamma: E / N, the balanced alpha and the paper's alpha.
    pub by_gamma: Vec<GammaRule>,
}

/// RetinaNet's prior-bias logit, -log((1 - pi) / pi) with pi = 0.01.
pub fn prior_logit() -> f64 {
    -((1.0 - PRIOR_PI) / PRIOR_PI).ln()
}

impl Summary {
    /// The summary of a finished pass and the report built from it.
    pub fn of(report: &Report, pass: &Pass) -> Summary {
        let d = &report.dataset;
        let m = &report.metadata;
        let mean_negative_logit = match &pass.breakdown {
            Some(b)
                if m.scores == ScoreKind::Logits
                    && m.activation == Activation::Sigmoid
                    && b.health.negatives > 0 =>
            {
                Some(b.health.negative_logit_sum.value() / b.health.negatives as f64)
            }
            _ => None,
        };
        Summary {
            dataset: d.clone(),
            positives_per_image: if d.images > 0 { d.positives as f64 / d.images as f64 } else { 0.0 },
            strategies: report.strategies.clone(),
            normalizers: report.normalizers.clone(),
            sweep: report.sweep.as_ref().map(|s| {
                let r = &s.recommendation;
                SweepSummary {
                    gamma: r.gamma,
                    alpha: r.alpha,
                    alpha_source: r.alpha_source,
                    balanced_alpha: r.balanced_alpha,
                    easy_negative_share_of_negatives: r.easy_negative_share_of_negatives,
                    target_met: r.target_met,
                    by_gamma: s.by_gamma.clone(),
                }
            }),
            mean_negative_logit,
            health: report.health.clone(),
        }
    }

    /// The strategy called `name`.
    pub fn strategy(&self, name: &str) -> Option<&StrategyReport> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// Every figure of the summary as `(name, value)`, in a fixed order; names are the dotted
    /// paths of the same figures in `hardmine analyze`'s JSON where it has them
    /// (`strategies.focal.buckets.easy_negative.loss_share` is the `loss_share` of the entry
    /// named `focal`), counts as exact floats.
    pub fn figures(&self) -> Vec<(String, f64)> {
        let d = &self.dataset;
        let mut out: Vec<(String, f64)> =
            vec![("dataset.files".into(), d.files as f64), ("dataset.images".into(), d.images as f64)];
        if let Some(a) = d.anchors {
            out.push(("dataset.anchors".into(), a as f64));
        }
        for (k, v) in [
            ("decisions", d.decisions),
            ("positives", d.positives),
            ("negatives", d.negatives),
            ("ignored", d.ignored),
        ] {
            out.push((format!("dataset.{k}"), v as f64));
        }
        for (reason, n) in &d.skipped {
            out.push((format!("dataset.skipped.{reason}"), *n as f64));
        }
        out.push(("positives_per_image".into(), self.positives_per_image));
        for s in &self.strategies {
            let p = format!("strategies.{}", s.name);
            out.push((format!("{p}.selected"), s.selected));
            out.push((format!("{p}.loss.total"), s.loss.total));
            out.push((format!("{p}.loss.normalized"), s.loss.normalized));
            for (b, r) in s.buckets.iter() {
                out.push((format!("{p}.buckets.{b}.count"), r.count as f64));
                out.push((format!("{p}.buckets.{b}.selected"), r.selected));
                out.push((format!("{p}.buckets.{b}.loss"), r.loss));
                out.push((format!("{p}.buckets.{b}.loss_share"), r.loss_share));
                out.push((format!("{p}.buckets.{b}.grad_share"), r.grad_share));
            }
        }
        for n in &self.normalizers {
            out.push((format!("normalizers.{}", n.name), n.value));
        }
        if let Some(s) = &self.sweep {
            if s.alpha_source != AlphaSource::None {
                out.push(("sweep.recommendation.gamma".into(), s.gamma));
                out.push(("sweep.recommendation.alpha".into(), s.alpha));
            }
            if let Some(b) = s.balanced_alpha {
                out.push(("sweep.recommendation.balanced_alpha".into(), b));
            }
            for g in &s.by_gamma {
                let p = format!("sweep.by_gamma.{}", g.gamma);
                out.push((
                    format!("{p}.easy_negative_share_of_negatives"),
                    g.easy_negative_share_of_negatives,
                ));
                out.push((format!("{p}.balanced_alpha"), g.balanced_alpha));
            }
        }
        if let Some(m) = self.mean_negative_logit {
            out.push(("mean_negative_logit".into(), m));
        }
        out
    }
}

/// Runs one pass per group with `config` and summarises each; a group whose data the pass
/// refuses keeps the error's message. With at least as many groups as threads, the groups
/// run side by side, one thread each (so a dump of many small steps keeps every core busy and
/// at most `threads` passes are in flight); otherwise one after another on every thread.
/// The results do not depend on the thread count. Ctrl-C (the observer) stops them all.
pub fn analyze_groups(
    groups: &[&Dump],
    config: &AnalysisConfig,
    observer: &dyn Observer,
) -> Result<Vec<Result<Summary, String>>, Error> {
    let one = |dump: &Dump, config: &AnalysisConfig| -> Result<Result<Summary, String>, Error> {
        match analysis::run(dump, config, observer, None) {
            Ok(pass) => {
                let report = pass.finish(dump, config, "trend");
                Ok(Ok(Summary::of(&report, &pass)))
            }
            Err(Error::Input(InputError::Interrupted)) => Err(InputError::Interrupted.into()),
            Err(e) => Ok(Err(e.to_string())),
        }
    };
    let threads = config.threads().unwrap_or_else(rayon::current_num_threads).max(1);
    if threads > 1 && groups.len() >= threads {
        let single = config.with_threads(Some(1));
        let side_by_side = || groups.par_iter().map(|d| one(d, &single)).collect::<Result<Vec<_>, _>>();
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(side_by_side),
            Err(_) => side_by_side(),
        }
    } else {
        groups.iter().map(|d| one(d, config)).collect()
    }
}

/// How the trend's groups were formed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// By a column or hive partition key.
    Key(String),
    /// One group per input argument.
    Path,
}

impl GroupBy {
    /// The key's name, or `path`.
    pub fn name(&self) -> &str {
        match self {
            GroupBy::Key(k) => k,
            GroupBy::Path => "path",
        }
    }
}

/// A trend: one summary per group, in group order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendReport {
    /// Version of the JSON layout ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// What produced it.
    pub metadata: TrendMetadata,
    /// The groups, by ascending value (or in argument order with `--by path`).
    pub groups: Vec<TrendGroup>,
    /// Rows left out of every group, each a sentence saying which and why.
    #[serde(default)]
    pub left_out: Vec<String>,
}

/// Provenance of a trend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendMetadata {
    /// Always "hardmine".
    pub tool: String,
    /// hardmine's version.
    pub version: String,
    /// The subcommand ("trend").
    pub command: String,
    /// The group key: a column or hive key name, or `path`.
    pub by: String,
    /// The inputs as given.
    pub inputs: Vec<String>,
    /// Dense or binary.
    pub layout: Layout,
    /// Logits or probabilities.
    pub scores: ScoreKind,
    /// Sigmoid or softmax.
    pub activation: Activation,
    /// Classes per anchor.
    pub classes: usize,
    /// The analysis parameters, the same for every group.
    pub parameters: Parameters,
    /// RetinaNet's prior-bias logit, which `mean_negative_logit` is read against.
    pub prior_logit: f64,
    /// The command line (HTML and Markdown only, as for reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
}

/// One group of a trend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendGroup {
    /// The group key (as in `metadata.by`).
    pub key: String,
    /// Its value here: an integer or a string (the path with `--by path`).
    pub value: serde_json::Value,
    /// The Parquet files of the group.
    pub files: usize,
    /// The group's summary (null when its analysis failed).
    pub report: Option<Summary>,
    /// Why the group has no summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TrendGroup {
    /// The value as text (integers as written, strings verbatim), as every group key is shown.
    pub fn label(&self) -> String {
        crate::render::content::key_text(&self.value)
    }
}

/// A group's value as JSON.
pub fn value_json(v: &HiveValue) -> serde_json::Value {
    match v {
        HiveValue::Int(i) => serde_json::json!(i),
        HiveValue::Str(s) => serde_json::json!(s),
    }
}

impl TrendReport {
    /// Assembles a trend from the groups' values, dumps and results (in the same order) and
    /// the rows left out. `reference` is any report-building dump of the run (for the shape).
    pub fn new(
        by: &GroupBy,
        inputs: &[String],
        groups: Vec<(serde_json::Value, &Dump, Result<Summary, String>)>,
        left_out: Vec<String>,
        config: &AnalysisConfig,
    ) -> TrendReport {
        let shape = groups.first().map(|g| (g.1.shape(), g.1.width(), g.1.info().background_class));
        let (shape, width, background) = shape.unwrap_or_else(|| {
            (
                crate::input::DumpShape {
                    layout: Layout::Dense,
                    scores: ScoreKind::Logits,
                    activation: config.dump().activation(),
                },
                0,
                0,
            )
        });
        let parameters = Parameters::of(config, shape.activation, background);
        TrendReport {
            schema_version: SCHEMA_VERSION,
            metadata: TrendMetadata {
                tool: "hardmine".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                command: "trend".into(),
                by: by.name().to_string(),
                inputs: inputs.to_vec(),
                layout: shape.layout,
                scores: shape.scores,
                activation: shape.activation,
                classes: width,
                parameters,
                prior_logit: prior_logit(),
                invocation: None,
            },
            groups: groups
                .into_iter()
                .map(|(value, dump, r)| {
                    let (report, error) = match r {
                        Ok(s) => (Some(s), None),
                        Err(e) => (None, Some(e)),
                    };
                    TrendGroup { key: by.name().to_string(), value, files: dump.files().len(), report, error }
                })
                .collect(),
            left_out,
        }
    }

    /// The groups that have a summary, with it.
    pub fn reported(&self) -> impl Iterator<Item = (&TrendGroup, &Summary)> {
        self.groups.iter().filter_map(|g| g.report.as_ref().map(|r| (g, r)))
    }
}

/// A path argument of `--by path` as the group's value.
pub fn path_value(arg: &str) -> serde_json::Value {
    serde_json::Value::String(PathBuf::from(arg).display().to_string())
}
