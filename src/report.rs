//! The serialisable report: the only thing renderers see.
//!
//! Keys are stable and documented in docs/json-schema.md; `schema_version` changes whenever a key
//! is renamed or removed. Every number is finite. Nothing volatile (times, thread counts, absolute
//! temp paths the user did not type) goes in, so the same input gives byte-identical JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, Layout, ScoreKind};

/// Version of the JSON layout below.
pub const SCHEMA_VERSION: u32 = 1;

/// A complete analysis result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Version of this layout ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// What produced the report, from which inputs, with which parameters.
    pub metadata: Metadata,
    /// Counts over the whole dump.
    pub dataset: DatasetSummary,
    /// One entry per strategy, in the requested order.
    pub strategies: Vec<StrategyReport>,
    /// How much the selections of ohem, ssd and sampled overlap (when at least two ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlaps: Option<Overlaps>,
}

/// Overlaps between selection strategies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overlaps {
    /// Jaccard index of each pair of selections, decision-weighted (the sampler's expected
    /// selection enters with its inclusion probabilities: sum min / sum max).
    pub jaccard: Vec<Jaccard>,
    /// Share of the focal loss carried by the decisions OHEM selects (when ohem ran).
    pub focal_share_in_ohem: Option<f64>,
}

/// The Jaccard index of two selections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Jaccard {
    /// First strategy.
    pub a: String,
    /// Second strategy.
    pub b: String,
    /// |A ∩ B| / |A ∪ B|, in decisions.
    pub jaccard: f64,
}

/// Provenance of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Always "hardmine".
    pub tool: String,
    /// hardmine's version.
    pub version: String,
    /// The subcommand that produced the report.
    pub command: String,
    /// The Parquet files read, in reading order.
    pub inputs: Vec<String>,
    /// Dense or binary.
    pub layout: Layout,
    /// Logits or probabilities.
    pub scores: ScoreKind,
    /// Sigmoid or softmax.
    pub activation: Activation,
    /// Classes per anchor (C for sigmoid, K for softmax, 1 for binary dumps).
    pub classes: usize,
    /// Column renames given with `--col` (logical name → file column).
    pub columns: BTreeMap<String, String>,
    /// Analysis parameters.
    pub parameters: Parameters,
}

/// The analysis parameters recorded in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Requested strategies, in order.
    pub strategies: Vec<String>,
    /// Focal-loss gamma.
    pub gamma: f64,
    /// Alpha, or null when alpha weighting is disabled.
    pub alpha: Option<f64>,
    /// The p_t threshold of the easy buckets.
    pub easy_threshold: f64,
    /// Softmax background class (null for sigmoid dumps).
    pub background_class: Option<u32>,
}

/// Counts over the whole dump.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Parquet files read.
    pub files: usize,
    /// Distinct image ids.
    pub images: u64,
    /// Anchors (rows of a dense dump; null for binary dumps, which have no anchor unit).
    pub anchors: Option<u64>,
    /// Valid decisions (anchor-class pairs for sigmoid, anchors for softmax, rows for binary).
    pub decisions: u64,
    /// Positive decisions.
    pub positives: u64,
    /// Negative decisions.
    pub negatives: u64,
    /// Ignored anchors (label -2), which give no decisions.
    pub ignored: u64,
}

/// One strategy's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyReport {
    /// Strategy name (`ce`, `alpha_ce`, `focal`, ...).
    pub name: String,
    /// Its parameters (e.g. gamma, alpha); null alpha = no alpha weighting.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Decisions selected, weighted by their selection weight.
    pub selected: f64,
    /// Loss totals.
    pub loss: LossTotals,
    /// The four easy/hard x positive/negative buckets.
    pub buckets: Buckets,
    /// Strategy-specific figures (e.g. torchvision's SSD normaliser, the sampler's spread).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Total and normalised loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossTotals {
    /// Sum of the strategy's loss over all selected decisions.
    pub total: f64,
    /// Mean over images of (image loss) / max(1, positives in the image): torchvision
    /// RetinaNet's normalisation.
    pub normalized: f64,
}

/// The four buckets, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// Negatives with p_t >= tau.
    pub easy_negative: BucketReport,
    /// Negatives with p_t < tau.
    pub hard_negative: BucketReport,
    /// Positives with p_t >= tau.
    pub easy_positive: BucketReport,
    /// Positives with p_t < tau.
    pub hard_positive: BucketReport,
}

impl Buckets {
    /// The buckets with their names, in report order.
    pub fn iter(&self) -> [(&'static str, &BucketReport); 4] {
        [
            ("easy_negative", &self.easy_negative),
            ("hard_negative", &self.hard_negative),
            ("easy_positive", &self.easy_positive),
            ("hard_positive", &self.hard_positive),
        ]
    }
}

/// One bucket of one strategy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketReport {
    /// Decisions in the bucket (whether selected or not).
    pub count: u64,
    /// Selected decisions, weighted by selection weight.
    pub selected: f64,
    /// Sum of the strategy's loss in the bucket.
    pub loss: f64,
    /// Share of the strategy's total loss (0 when the total is 0).
    pub loss_share: f64,
    /// Share of the strategy's total gradient norm (0 when the total is 0).
    pub grad_share: f64,
}

impl StrategyReport {
    /// Builds an entry from per-bucket `(count, selected, loss, grad)` sums (in the order
    /// easy_negative, hard_negative, easy_positive, hard_positive) and the normalised loss.
    pub fn from_buckets(
        name: &str,
        params: BTreeMap<String, serde_json::Value>,
        sums: [(u64, f64, f64, f64); 4],
        normalized: f64,
    ) -> StrategyReport {
        let total_loss: f64 = sums.iter().map(|s| s.2).sum();
        let total_grad: f64 = sums.iter().map(|s| s.3).sum();
        let share = |x: f64, t: f64| if t > 0.0 { x / t } else { 0.0 };
        let bucket = |i: usize| BucketReport {
            count: sums[i].0,
            selected: sums[i].1,
            loss: sums[i].2,
            loss_share: share(sums[i].2, total_loss),
            grad_share: share(sums[i].3, total_grad),
        };
        StrategyReport {
            name: name.to_string(),
            params,
            selected: sums.iter().map(|s| s.1).sum(),
            loss: LossTotals { total: total_loss, normalized },
            buckets: Buckets {
                easy_negative: bucket(0),
                hard_negative: bucket(1),
                easy_positive: bucket(2),
                hard_positive: bucket(3),
            },
            extra: BTreeMap::new(),
        }
    }
}

impl Report {
    /// The strategy entry called `name`, if present.
    pub fn strategy(&self, name: &str) -> Option<&StrategyReport> {
        self.strategies.iter().find(|s| s.name == name)
    }
}
