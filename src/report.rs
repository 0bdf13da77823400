//! The serialisable report: the only thing renderers see.
//!
//! Keys are stable and documented in docs/json-schema.md; `schema_version` changes whenever a key
//! is renamed or removed. Every number is finite. Nothing volatile (times, thread counts, absolute
//! temp paths the user did not type) goes in, so the same input gives byte-identical JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Activation, Layout, OnInvalid, ScoreKind};

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
    /// The gamma x alpha sweep, loss CDFs and recommendation (`hardmine sweep`, `report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepReport>,
    /// Histograms of the gradient norm |p - y| (GHM's Fig. 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_density: Option<GradientDensity>,
    /// Imbalance per FPN level, class, IoU band and image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdowns: Option<Breakdowns>,
    /// The focal loss under each framework's normaliser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalizers: Vec<Normalizer>,
    /// CE split into the soft targets' own entropy and the excess KL divergence (dumps with soft
    /// targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_targets: Option<SoftTargets>,
    /// Warnings and facts about the dump, each with a fix where one applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthItem>,
}

/// CE = H(y) + KL(y || p), summed per bucket (weighted like every loss).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftTargets {
    /// All decisions.
    pub total: SoftTargetBucket,
    /// Per bucket, keyed by [`BUCKET_NAMES`].
    pub buckets: BTreeMap<String, SoftTargetBucket>,
}

/// One bucket's split of CE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftTargetBucket {
    /// Decisions whose target is strictly between 0 and 1.
    pub soft_decisions: u64,
    /// Cross-entropy.
    pub ce: f64,
    /// The targets' binary entropy H(y): the part of CE no model can remove.
    pub entropy: f64,
    /// KL(y || p) = CE - H(y): the excess a model can still remove.
    pub kl: f64,
    /// entropy / ce (0 when ce is 0).
    pub entropy_share: f64,
}

/// Names of the buckets, in report order.
pub const BUCKET_NAMES: [&str; 4] = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];

/// The sweep section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// One cell per (gamma, alpha), gammas outer, in the order given.
    pub grid: Vec<SweepCell>,
    /// Per gamma, the alpha that gives positives and negatives equal loss (a diagnostic: the
    /// recommendation takes the paper's alpha, not this one).
    pub balanced_alpha: Vec<BalancedAlpha>,
    /// Per gamma, in the order given: the quantity the recommendation's rule compares, the
    /// balanced alpha and the paper's alpha.
    #[serde(default)]
    pub by_gamma: Vec<GammaRule>,
    /// The recommended (gamma, alpha), the rule and the numbers behind it.
    pub recommendation: Recommendation,
    /// The focal-loss paper's default (gamma 2, alpha 0.25).
    pub paper_default: BalancedAlpha,
    /// The paper's Table 1b, for reference.
    pub table_1b: Vec<Table1bRow>,
    /// Sample fractions (easiest first) at which the CDFs are given.
    pub cdf_x: Vec<f64>,
    /// Cumulative loss curves per gamma (the paper's Fig. 4).
    pub cdf: Vec<Cdf>,
    /// CDF values read off log bins are within this factor of the crossing bin's loss share.
    pub cdf_share_error_factor: f64,
}

/// One (gamma, alpha) cell of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepCell {
    /// gamma.
    pub gamma: f64,
    /// alpha, or null for no alpha weighting.
    pub alpha: Option<f64>,
    /// Total and normalised focal loss.
    pub loss: LossTotals,
    /// Loss share of each bucket.
    pub buckets: BucketShares,
    /// Positive loss / negative loss.
    pub pos_neg_ratio: f64,
    /// Share of the total loss carried by the hardest 1% of negatives.
    pub top1_share: f64,
    /// Share of the total loss carried by the hardest 10% of negatives.
    pub top10_share: f64,
    /// (sum w)^2 / sum w^2 of the per-decision losses.
    pub effective_n: f64,
}

/// A loss share.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// Share of the total loss.
    pub loss_share: f64,
}

/// Loss shares of the four buckets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketShares {
    /// Negatives with p_t >= tau.
    pub easy_negative: Share,
    /// Negatives with p_t < tau.
    pub hard_negative: Share,
    /// Positives with p_t >= tau.
    pub easy_positive: Share,
    /// Positives with p_t < tau.
    pub hard_positive: Share,
}

/// A (gamma, alpha) pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalancedAlpha {
    /// gamma.
    pub gamma: f64,
    /// alpha.
    pub alpha: f64,
}

/// One gamma of the sweep, as the recommendation's rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaRule {
    /// gamma.
    pub gamma: f64,
    /// E / N: the easy negatives' share of the negatives' own focal loss (0 without negative
    /// loss). At the balanced alpha the easy-negative share of the whole loss is E / 2N.
    pub easy_negative_share_of_negatives: f64,
    /// The alpha that gives positives and negatives equal loss (as in `balanced_alpha`).
    pub balanced_alpha: f64,
    /// The focal-loss paper's best alpha at this gamma (Table 1b, linear in gamma between its
    /// rows, held at the last row's beyond it).
    pub paper_alpha: f64,
}

/// Where the recommended alpha comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlphaSource {
    /// The gamma is a row of the paper's Table 1b: that row's alpha.
    #[serde(rename = "table_1b")]
    Table1b,
    /// The gamma lies between two rows: their alphas, linear in gamma.
    #[serde(rename = "table_1b_interpolated")]
    Table1bInterpolated,
    /// The gamma lies beyond the table's last row (gamma 5): that row's alpha, held constant.
    #[serde(rename = "table_1b_clamped")]
    Table1bClamped,
    /// Nothing is recommended (a dump without positives): the alpha is a placeholder.
    #[serde(rename = "none")]
    None,
}

/// The recommendation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Recommended gamma.
    pub gamma: f64,
    /// Recommended alpha: the focal-loss paper's best alpha at that gamma (see `alpha_source`).
    pub alpha: f64,
    /// Where `alpha` comes from.
    #[serde(default = "AlphaSource::none")]
    pub alpha_source: AlphaSource,
    /// The balanced alpha at the recommended gamma, a diagnostic (null without positives).
    #[serde(default)]
    pub balanced_alpha: Option<f64>,
    /// E / N at the recommended gamma: the easy negatives' share of the negatives' own focal
    /// loss, which the rule compares with twice the target.
    #[serde(default)]
    pub easy_negative_share_of_negatives: f64,
    /// The rule, in words.
    pub rule: String,
    /// Whether the grid reached the rule's target (always false without positives).
    pub target_met: bool,
    /// The numbers behind it.
    pub reasons: Vec<String>,
}

impl AlphaSource {
    fn none() -> AlphaSource {
        AlphaSource::None
    }
}

/// A row of the focal-loss paper's Table 1b.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table1bRow {
    /// gamma.
    pub gamma: f64,
    /// Its best alpha.
    pub alpha: f64,
    /// COCO AP.
    pub ap: f64,
    /// AP at IoU 0.5.
    pub ap50: f64,
    /// AP at IoU 0.75.
    pub ap75: f64,
}

/// Loss CDFs of one gamma.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cdf {
    /// gamma.
    pub gamma: f64,
    /// Negatives.
    pub negatives: CdfSide,
    /// Positives.
    pub positives: CdfSide,
}

/// The CDF of one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdfSide {
    /// Share of the loss carried by the easiest `cdf_x` fraction of the samples.
    pub y: Vec<f64>,
    /// Fraction of the samples, hardest first, carrying half the loss.
    pub hardest_fraction_for_50: f64,
    /// Fraction carrying 90% of the loss.
    pub hardest_fraction_for_90: f64,
    /// Bound on the error of the two fractions (one bin's share of the samples).
    pub fraction_error_bound: f64,
}

/// Histograms of the gradient norm g = |p - y|.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientDensity {
    /// Equal bins over [0, 1].
    pub bins: usize,
    /// Counts of positives per bin.
    pub positives: Vec<u64>,
    /// Counts of negatives per bin.
    pub negatives: Vec<u64>,
}

/// The breakdowns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Breakdowns {
    /// Per FPN level (empty without a `level` column).
    pub by_level: Vec<GroupRow>,
    /// Per class.
    pub by_class: Vec<GroupRow>,
    /// Per IoU band of width 0.1 (empty without an `iou` column).
    pub by_iou: Vec<GroupRow>,
    /// Images with the highest focal loss.
    pub top_images_by_loss: Vec<GroupRow>,
    /// Images where easy negatives carry the largest share of the CE loss.
    pub top_images_by_easy_negative_share: Vec<GroupRow>,
    /// One cell per class and FPN level with decisions, classes outer, levels inner (empty
    /// without a `level` column; reports written before this key read as empty).
    #[serde(default)]
    pub class_by_level: Vec<ClassLevelCell>,
}

/// The decisions of one class at one FPN level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassLevelCell {
    /// The class index.
    pub class: u64,
    /// The FPN level.
    pub level: i64,
    /// Decisions.
    pub decisions: u64,
    /// Positive decisions.
    pub positives: u64,
    /// Easy negatives / decisions.
    pub easy_negative_share: f64,
    /// Share of the cell's CE loss carried by its easy negatives (0 without CE loss).
    pub easy_negative_ce_share: f64,
    /// Share of the cell's focal loss carried by its easy negatives (0 without focal loss).
    pub easy_negative_focal_share: f64,
    /// The cell's share of the dump's focal loss.
    pub focal_share: f64,
}

/// A class's gradient balance, EQLv2's statistic: the BCE gradient norm |p - y| (with respect
/// to the logit, weighted) summed over the class's positive and over its negative decisions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassGradient {
    /// Sum of |p - y| over the positive decisions (target > 0).
    pub positive: f64,
    /// Sum of |p - y| over the negative decisions.
    pub negative: f64,
    /// positive / negative (null when the negative sum is 0): small for a class whose
    /// positives are drowned by the gradient of its negatives.
    pub pos_neg_ratio: Option<f64>,
}

/// Imbalance statistics of one group of decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    /// The group: a level, class, IoU band ("0.4-0.5") or image id.
    pub key: serde_json::Value,
    /// Anchors (rows of a dense dump; null for classes and binary dumps).
    pub anchors: Option<u64>,
    /// Ignored anchors (null where anchors are).
    pub ignored: Option<u64>,
    /// Decisions.
    pub decisions: u64,
    /// Positive decisions.
    pub positives: u64,
    /// Negative decisions.
    pub negatives: u64,
    /// negatives / positives (null without positives).
    pub neg_pos_ratio: Option<f64>,
    /// Share of the dump's CE loss.
    pub ce_share: f64,
    /// Share of the dump's focal loss.
    pub focal_share: f64,
    /// Easy negatives / decisions.
    pub easy_negative_share: f64,
    /// Share of the group's CE loss carried by its easy negatives.
    pub easy_negative_ce_share: f64,
    /// Share of the group's focal loss carried by its easy negatives.
    pub easy_negative_focal_share: f64,
    /// The class's gradient balance (class rows of sigmoid and binary dumps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_gradient: Option<ClassGradient>,
}

/// The focal loss under one normaliser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Short name.
    pub name: String,
    /// Who normalises this way.
    pub used_by: String,
    /// The normalised focal loss.
    pub value: f64,
}

/// One health finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthItem {
    /// Stable identifier (e.g. `prior_bias`).
    pub code: String,
    /// `warning` or `info`.
    pub level: String,
    /// What was found, with the numbers.
    pub message: String,
    /// How to fix it, where that applies.
    pub fix: Option<String>,
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
    /// The command line that produced the report (HTML and Markdown reports only: it would
    /// make JSON differ between, say, `--threads 1` and `--threads 2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
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
    /// The policy for rows with invalid values (`error` or `skip`).
    #[serde(default)]
    pub on_invalid: OnInvalid,
}

impl Parameters {
    /// The parameters of `config` as a report records them (the background class for softmax
    /// dumps only).
    pub fn of(
        config: &crate::config::AnalysisConfig,
        activation: Activation,
        background_class: u32,
    ) -> Parameters {
        Parameters {
            strategies: config.strategies().iter().map(|s| s.name().to_string()).collect(),
            gamma: config.gamma(),
            alpha: config.alpha(),
            easy_threshold: config.easy_threshold(),
            background_class: (activation == Activation::Softmax).then_some(background_class),
            on_invalid: config.dump().on_invalid(),
        }
    }
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
    /// Rows dropped by `--on-invalid skip`, by reason (absent when none were).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
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
