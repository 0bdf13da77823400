//! Validated settings.
//!
//! Two stages, as in ripgrep's LowArgs/HiArgs and linfa's ParamGuard: [`AnalysisParams`] holds raw,
//! unchecked values with documented defaults (built by the CLI or by library users);
//! [`AnalysisParams::check`] turns them into an [`AnalysisConfig`] that every later stage can trust.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

pub use crate::vocab::{Activation, Layout, ScoreKind, StrategyKind};
// Each strategy's settings live next to the strategy (its file: the struct, its defaults and its
// check); they are re-exported here, where the settings of a whole analysis are put together.
pub use crate::analysis::ghm::GhmParams;
pub use crate::analysis::select::ohem::OhemParams;
pub use crate::analysis::select::sampled::SampledParams;
pub use crate::analysis::select::ssd::{EmptyImages, SsdParams};
pub use crate::analysis::strategy::qfl::QflParams;
pub use crate::analysis::strategy::vfl::VflParams;

/// The logical column names hardmine knows, with what each holds.
pub const LOGICAL_COLUMNS: &[(&str, &str)] = &[
    ("image_id", "image identifier (int or string), both layouts"),
    ("label", "dense: class index, -1 background, -2 ignored"),
    ("logits", "dense: list of per-class logits"),
    ("probs", "dense: list of per-class probabilities"),
    ("target", "binary: 0/1, bool or soft target in [0,1]"),
    ("logit", "binary: the decision's logit"),
    ("prob", "binary: the decision's probability"),
    ("class", "binary: class index of the decision (optional)"),
    ("weight", "binary: non-negative per-decision loss weight (optional)"),
    ("anchor_id", "anchor identifier (optional)"),
    ("level", "FPN level (optional)"),
    ("iou", "max IoU with any ground-truth box (optional)"),
    ("x1", "box left (optional)"),
    ("y1", "box top (optional)"),
    ("x2", "box right (optional)"),
    ("y2", "box bottom (optional)"),
];

/// Maps hardmine's logical column names to the names used in the files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMap {
    renames: BTreeMap<String, String>,
}

impl ColumnMap {
    /// Parses `NAME=COLUMN` pairs (the `--col` flag).
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<ColumnMap, ConfigError> {
        let mut renames = BTreeMap::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let Some((name, column)) = pair.split_once('=') else {
                return Err(ConfigError::invalid(
                    "--col",
                    pair,
                    "expected NAME=COLUMN, e.g. --col label=gt_class",
                ));
            };
            let (name, column) = (name.trim(), column.trim());
            if !LOGICAL_COLUMNS.iter().any(|(n, _)| *n == name) {
                let known: Vec<&str> = LOGICAL_COLUMNS.iter().map(|(n, _)| *n).collect();
                return Err(ConfigError::invalid(
                    "--col",
                    pair,
                    format!("unknown column name '{name}'; known names: {}", known.join(", ")),
                ));
            }
            if column.is_empty() {
                return Err(ConfigError::invalid("--col", pair, "the file column name is empty"));
            }
            if renames.insert(name.to_string(), column.to_string()).is_some() {
                return Err(ConfigError::invalid("--col", pair, format!("'{name}' is mapped twice")));
            }
        }
        Ok(ColumnMap { renames })
    }

    /// The file column that holds the logical column `name`.
    pub fn physical<'a>(&'a self, name: &'a str) -> &'a str {
        self.renames.get(name).map(String::as_str).unwrap_or(name)
    }

    /// The explicit renames, for the report's metadata.
    pub fn renames(&self) -> &BTreeMap<String, String> {
        &self.renames
    }
}

/// What to do with a row whose values are invalid (null, NaN logit, label out of range, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Stop with an error naming the file, column and row (default).
    #[default]
    Error,
    /// Drop the row and count it, by reason, in the report's `dataset.skipped`.
    Skip,
}

/// How to read a dump (unchecked).
#[derive(Clone, Debug, PartialEq)]
pub struct DumpParams {
    /// Force a layout instead of detecting it from the columns (default: detect).
    pub layout: Option<Layout>,
    /// Sigmoid (default) or softmax class scores.
    pub activation: Activation,
    /// Use logits or probabilities when a file has both (default: whichever is present; both is
    /// an error unless this is set).
    pub scores: Option<ScoreKind>,
    /// Softmax only: the index of the background class (default 0).
    pub background_class: i64,
    /// `NAME=COLUMN` renames (the `--col` flag).
    pub columns: Vec<String>,
    /// Rows with invalid values: stop (default) or skip and count them.
    pub on_invalid: OnInvalid,
    /// Analyse a dump without a single positive decision instead of stopping (`--allow-no-positives`).
    pub allow_no_positives: bool,
    /// Count images whose anchors are all ignored (zero loss) instead of stopping
    /// (`--keep-ignored-images`).
    pub keep_ignored_images: bool,
}

impl Default for DumpParams {
    fn default() -> Self {
        DumpParams {
            layout: None,
            activation: Activation::Sigmoid,
            scores: None,
            background_class: 0,
            columns: Vec::new(),
            on_invalid: OnInvalid::Error,
            allow_no_positives: false,
            keep_ignored_images: false,
        }
    }
}

/// Optional columns to read besides the ones every analysis needs (`anchor_id` is always read
/// where present, for the duplicate check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// Read `x1, y1, x2, y2` (required: opening a dump without them fails).
    pub boxes: bool,
    /// Read `level` and `iou` where present (for breakdowns and exports).
    pub groups: bool,
    /// Read `box_loss` where present (OHEM ranks by classification + box loss).
    #[serde(default)]
    pub box_loss: bool,
    /// Read `level` (required: opening a dump without it fails; `--ghm-per-level`).
    #[serde(default)]
    pub level: bool,
}

/// How to read a dump (validated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DumpOptions {
    layout: Option<Layout>,
    activation: Activation,
    scores: Option<ScoreKind>,
    background_class: u32,
    columns: ColumnMap,
    extras: Extras,
    #[serde(default)]
    on_invalid: OnInvalid,
    #[serde(default)]
    allow_no_positives: bool,
    #[serde(default)]
    keep_ignored_images: bool,
}

impl DumpParams {
    /// Validates the reading options.
    pub fn check(self) -> Result<DumpOptions, ConfigError> {
        let columns = ColumnMap::parse(&self.columns)?;
        if self.background_class < 0 || self.background_class > i64::from(u16::MAX) {
            return Err(ConfigError::invalid(
                "--background-class",
                self.background_class,
                "must be a class index in 0..K (the softmax width)",
            ));
        }
        if self.layout == Some(Layout::Binary) && self.activation == Activation::Softmax {
            return Err(ConfigError::invalid(
                "--activation",
                "softmax",
                "a binary dump holds one sigmoid decision per row; softmax needs the dense layout (one row per anchor with all K scores)",
            ));
        }
        Ok(DumpOptions {
            layout: self.layout,
            activation: self.activation,
            scores: self.scores,
            background_class: self.background_class as u32,
            columns,
            extras: Extras::default(),
            on_invalid: self.on_invalid,
            allow_no_positives: self.allow_no_positives,
            keep_ignored_images: self.keep_ignored_images,
        })
    }
}

impl DumpOptions {
    /// The forced layout, if any.
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }
    /// Sigmoid or softmax.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The forced score kind, if any.
    pub fn scores(&self) -> Option<ScoreKind> {
        self.scores
    }
    /// The softmax background class.
    pub fn background_class(&self) -> u32 {
        self.background_class
    }
    /// The column renames.
    pub fn columns(&self) -> &ColumnMap {
        &self.columns
    }
    /// The policy for rows with invalid values.
    pub fn on_invalid(&self) -> OnInvalid {
        self.on_invalid
    }
    /// Whether a dump without positives is analysed rather than refused.
    pub fn allow_no_positives(&self) -> bool {
        self.allow_no_positives
    }
    /// Whether images whose anchors are all ignored are counted rather than refused.
    pub fn keep_ignored_images(&self) -> bool {
        self.keep_ignored_images
    }
    /// The optional columns to read.
    pub fn extras(&self) -> Extras {
        self.extras
    }
    /// The same options, also reading `level` and `iou` (for exports).
    pub fn for_export(&self) -> DumpOptions {
        DumpOptions { extras: Extras { groups: true, ..self.extras }, ..self.clone() }
    }
}

/// The gamma x alpha sweep (unchecked).
#[derive(Clone, Debug, PartialEq)]
pub struct SweepParams {
    /// Gammas to sweep (`--gammas`, default 0, 0.5, 1, 2, 5).
    pub gammas: Vec<f64>,
    /// Alphas to sweep; negative = no alpha weighting (`--alphas`, default 0.25, 0.5, 0.75, -1).
    pub alphas: Vec<f64>,
    /// The recommendation picks the smallest gamma whose easy negatives carry less than this
    /// share of the loss at the balanced alpha, that is less than twice this share of the
    /// negatives' own focal loss (`--target-easy-share`, in (0, 0.5], default 0.1).
    pub target_easy_share: f64,
}

impl Default for SweepParams {
    fn default() -> Self {
        SweepParams {
            gammas: vec![0.0, 0.5, 1.0, 2.0, 5.0],
            alphas: vec![0.25, 0.5, 0.75, -1.0],
            target_easy_share: 0.1,
        }
    }
}

/// The validated sweep grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepGrid {
    /// Gammas, in the order given.
    pub gammas: Vec<f64>,
    /// Alphas (`None` = no alpha weighting), in the order given.
    pub alphas: Vec<Option<f64>>,
    /// Target easy-negative share of the recommendation rule, at the balanced alpha (the rule
    /// compares E / N with twice this), in (0, 0.5].
    pub target_easy_share: f64,
}

impl SweepParams {
    /// Validates the grid.
    pub fn check(&self) -> Result<SweepGrid, ConfigError> {
        if self.gammas.is_empty() || self.gammas.len() > 64 {
            return Err(ConfigError::invalid(
                "--gammas",
                self.gammas.len(),
                "give 1 to 64 gammas, e.g. --gammas 0,0.5,1,2,5",
            ));
        }
        for (i, &g) in self.gammas.iter().enumerate() {
            if !(g.is_finite() && (0.0..=MAX_GAMMA).contains(&g)) {
                return Err(ConfigError::invalid(
                    "--gammas",
                    g,
                    format!("every gamma must be in [0, {MAX_GAMMA}]"),
                ));
            }
            if self.gammas[..i].contains(&g) {
                return Err(ConfigError::invalid("--gammas", g, "listed twice"));
            }
        }
        if self.alphas.is_empty() || self.alphas.len() > 1024 {
            return Err(ConfigError::invalid("--alphas", self.alphas.len(), "give 1 to 1024 alphas"));
        }
        let mut alphas = Vec::new();
        for &a in &self.alphas {
            let a = check_alpha("--alphas", a)?;
            if alphas.contains(&a) {
                return Err(ConfigError::invalid(
                    "--alphas",
                    a.map_or(-1.0, |x| x),
                    "listed twice (every negative value means 'no alpha')",
                ));
            }
            alphas.push(a);
        }
        // At the balanced alpha the easy-negative share is E / 2N <= 1/2: a larger target is
        // met by every gamma.
        if !(self.target_easy_share > 0.0 && self.target_easy_share <= 0.5) {
            return Err(ConfigError::invalid(
                "--target-easy-share",
                self.target_easy_share,
                "must be above 0 and at most 0.5 (default 0.1): at the balanced alpha easy negatives carry at most half the loss, so a larger target is met by every gamma",
            ));
        }
        Ok(SweepGrid { gammas: self.gammas.clone(), alphas, target_easy_share: self.target_easy_share })
    }
}

/// Parses a comma-separated list of numbers (`--gammas 0,0.5,1`).
pub fn parse_numbers(flag: &'static str, list: &str) -> Result<Vec<f64>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| ConfigError::invalid(flag, s, "expected a comma-separated list of numbers"))
        })
        .collect()
}

/// Everything `analyze` needs (unchecked). `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisParams {
    /// How to read the dump.
    pub dump: DumpParams,
    /// Strategies to compare, in report order (default: [`StrategyKind::defaults`], every strategy
    /// but the optional soft-target losses qfl and vfl).
    pub strategies: Vec<StrategyKind>,
    /// Focusing parameter gamma of the focal loss (default 2, the focal-loss paper's choice).
    pub gamma: f64,
    /// Class-balance weight alpha in [0, 1]; any negative value disables alpha weighting
    /// (torchvision's convention). Default 0.25.
    pub alpha: f64,
    /// A decision is easy when p_t >= this threshold (default 0.9).
    pub easy_threshold: f64,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// OHEM settings.
    pub ohem: OhemParams,
    /// SSD mining settings.
    pub ssd: SsdParams,
    /// Sampling settings.
    pub sampled: SampledParams,
    /// GHM-C settings.
    pub ghm: GhmParams,
    /// Quality focal loss settings.
    pub qfl: QflParams,
    /// Varifocal loss settings.
    pub vfl: VflParams,
    /// Images per training batch for the batch-level normalisers (`batch_positives`,
    /// `avg_factor`, `ema_positives`): batches of this many consecutive images in dump order.
    /// `None` (the default) treats the whole dump as one batch for `batch_positives` and
    /// `avg_factor`, and each image as a batch for `ema_positives`.
    pub batch_size: Option<usize>,
    /// The gamma x alpha sweep, loss CDFs and gradient density (`None` = not computed).
    pub sweep: Option<SweepParams>,
    /// Breakdowns per level, class, IoU band and image, the normalisers and the health checks
    /// (default on).
    pub breakdowns: bool,
}

impl Default for AnalysisParams {
    fn default() -> Self {
        AnalysisParams {
            dump: DumpParams::default(),
            strategies: StrategyKind::defaults(),
            gamma: 2.0,
            alpha: 0.25,
            easy_threshold: 0.9,
            threads: None,
            ohem: OhemParams::default(),
            ssd: SsdParams::default(),
            sampled: SampledParams::default(),
            ghm: GhmParams::default(),
            qfl: QflParams::default(),
            vfl: VflParams::default(),
            batch_size: None,
            sweep: None,
            breakdowns: true,
        }
    }
}

/// The largest accepted gamma: beyond it (1 - p_t)^gamma vanishes for every decision that is not
/// almost perfectly wrong, which is never what a user meant.
pub const MAX_GAMMA: f64 = 20.0;

/// Validated analysis settings. Serialisable (for state files); the thread count is not part of
/// the serialised form, since it never changes a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    dump: DumpOptions,
    strategies: Vec<StrategyKind>,
    gamma: f64,
    alpha: Option<f64>,
    easy_threshold: f64,
    #[serde(skip)]
    threads: Option<usize>,
    ohem: OhemParams,
    ssd: SsdParams,
    sampled: SampledParams,
    ghm: GhmParams,
    #[serde(default)]
    qfl: QflParams,
    #[serde(default)]
    vfl: VflParams,
    #[serde(default)]
    batch_size: Option<usize>,
    sweep: Option<SweepGrid>,
    breakdowns: bool,
}

impl AnalysisParams {
    /// Checks every value once; later stages never see an unchecked setting.
    pub fn check(self) -> Result<AnalysisConfig, ConfigError> {
        let mut dump = self.dump.check()?;
        dump.extras.boxes = self.strategies.contains(&StrategyKind::Ohem) && self.ohem.nms.is_some();
        dump.extras.groups = self.breakdowns;
        dump.extras.box_loss = self.strategies.contains(&StrategyKind::Ohem);
        dump.extras.level = self.strategies.contains(&StrategyKind::Ghm) && self.ghm.per_level;
        if !(self.gamma.is_finite() && (0.0..=MAX_GAMMA).contains(&self.gamma)) {
            return Err(ConfigError::invalid(
                "--gamma",
                self.gamma,
                format!("gamma must be in [0, {MAX_GAMMA}] (0 = cross-entropy, 2 = the focal-loss paper)"),
            ));
        }
        let alpha = check_alpha("--alpha", self.alpha)?;
        if !(self.easy_threshold > 0.0 && self.easy_threshold < 1.0) {
            return Err(ConfigError::invalid(
                "--easy-threshold",
                self.easy_threshold,
                "the easy threshold on p_t must be strictly between 0 and 1 (default 0.9)",
            ));
        }
        if self.strategies.is_empty() {
            return Err(ConfigError::invalid("--strategies", "", "name at least one strategy"));
        }
        let mut seen = Vec::new();
        for s in &self.strategies {
            if seen.contains(s) {
                return Err(ConfigError::invalid("--strategies", s, "listed twice"));
            }
            seen.push(*s);
            if s.sigmoid_only() && dump.activation() == Activation::Softmax {
                return Err(ConfigError::invalid(
                    "--strategies",
                    s,
                    "a sigmoid loss (mmdetection implements it for use_sigmoid=True only); this analysis reads --activation softmax: drop it from --strategies",
                ));
            }
        }
        if self.threads == Some(0) {
            return Err(ConfigError::invalid("--threads", 0, "use at least 1 thread"));
        }
        self.ohem.check()?;
        self.ssd.check()?;
        self.sampled.check()?;
        self.ghm.check()?;
        self.qfl.check()?;
        self.vfl.check()?;
        if self.batch_size == Some(0) {
            return Err(ConfigError::invalid(
                "--batch-size",
                0,
                "a training batch holds at least 1 image (leave it out to treat the dump as one batch)",
            ));
        }
        Ok(AnalysisConfig {
            dump,
            strategies: self.strategies,
            gamma: self.gamma,
            alpha,
            easy_threshold: self.easy_threshold,
            threads: self.threads,
            ohem: self.ohem,
            ssd: self.ssd,
            sampled: self.sampled,
            ghm: self.ghm,
            qfl: self.qfl,
            vfl: self.vfl,
            batch_size: self.batch_size,
            sweep: self.sweep.as_ref().map(SweepParams::check).transpose()?,
            breakdowns: self.breakdowns,
        })
    }
}

/// Checks an exponent of a modulating factor: finite, in [0, MAX_GAMMA].
pub(crate) fn check_exponent(flag: &'static str, v: f64, usual: &str) -> Result<(), ConfigError> {
    if v.is_finite() && (0.0..=MAX_GAMMA).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(flag, v, format!("must be in [0, {MAX_GAMMA}] ({usual})")))
    }
}

pub(crate) fn check_fraction(flag: &'static str, f: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&f) {
        Ok(())
    } else {
        Err(ConfigError::invalid(flag, f, "must be a fraction in [0, 1]"))
    }
}

/// Validates an alpha value: in [0, 1], or negative for "no alpha weighting".
pub fn check_alpha(flag: &'static str, alpha: f64) -> Result<Option<f64>, ConfigError> {
    if alpha.is_nan() || alpha > 1.0 {
        return Err(ConfigError::invalid(
            flag,
            alpha,
            "alpha must be in [0, 1], or negative (e.g. -1) to disable alpha weighting",
        ));
    }
    Ok((alpha >= 0.0).then_some(alpha))
}

/// Parses a comma-separated strategy list such as `ce,alpha_ce,focal`.
pub fn parse_strategies(list: &str) -> Result<Vec<StrategyKind>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            StrategyKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
                ConfigError::invalid(
                    "--strategies",
                    name,
                    format!("unknown strategy; known: {}", known.join(", ")),
                )
            })
        })
        .collect()
}

impl AnalysisConfig {
    /// How to read the dump.
    pub fn dump(&self) -> &DumpOptions {
        &self.dump
    }
    /// The strategies, in report order.
    pub fn strategies(&self) -> &[StrategyKind] {
        &self.strategies
    }
    /// Focal-loss gamma.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
    /// Alpha, or `None` when alpha weighting is disabled.
    pub fn alpha(&self) -> Option<f64> {
        self.alpha
    }
    /// The p_t threshold above which a decision is easy.
    pub fn easy_threshold(&self) -> f64 {
        self.easy_threshold
    }
    /// Worker threads (`None` = all cores).
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }
    /// OHEM settings.
    pub fn ohem(&self) -> &OhemParams {
        &self.ohem
    }
    /// SSD mining settings.
    pub fn ssd(&self) -> &SsdParams {
        &self.ssd
    }
    /// Sampling settings.
    pub fn sampled(&self) -> &SampledParams {
        &self.sampled
    }
    /// GHM-C settings.
    pub fn ghm(&self) -> &GhmParams {
        &self.ghm
    }
    /// Quality focal loss settings.
    pub fn qfl(&self) -> &QflParams {
        &self.qfl
    }
    /// Varifocal loss settings.
    pub fn vfl(&self) -> &VflParams {
        &self.vfl
    }
    /// Images per training batch for the batch-level normalisers (`None`: see
    /// [`AnalysisParams::batch_size`]).
    pub fn batch_size(&self) -> Option<usize> {
        self.batch_size
    }
    /// The sweep grid, if requested.
    pub fn sweep(&self) -> Option<&SweepGrid> {
        self.sweep.as_ref()
    }
    /// Whether breakdowns, normalisers and health checks are computed.
    pub fn breakdowns(&self) -> bool {
        self.breakdowns
    }
    /// The same settings with another thread count.
    pub fn with_threads(&self, threads: Option<usize>) -> AnalysisConfig {
        AnalysisConfig { threads, ..self.clone() }
    }
    /// Whether `kind` was requested.
    pub fn has(&self, kind: StrategyKind) -> bool {
        self.strategies.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_choices_and_valid() {
        let c = AnalysisParams::default().check().unwrap();
        assert_eq!(c.gamma(), 2.0);
        assert_eq!(c.alpha(), Some(0.25));
        assert_eq!(c.easy_threshold(), 0.9);
        assert_eq!(c.strategies(), StrategyKind::defaults());
    }

    #[test]
    fn negative_alpha_disables_weighting_and_alpha_above_one_is_rejected() {
        assert_eq!(check_alpha("--alpha", -1.0).unwrap(), None);
        assert_eq!(check_alpha("--alpha", 0.0).unwrap(), Some(0.0));
        let e = check_alpha("--alpha", 1.5).unwrap_err().to_string();
        assert!(e.contains("--alpha") && e.contains("1.5"), "{e}");
        assert!(check_alpha("--alpha", f64::NAN).is_err());
    }

    #[test]
    fn out_of_range_flags_name_the_flag() {
        let bad = |p: AnalysisParams, flag: &str| {
            let e = p.check().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        };
        bad(AnalysisParams { gamma: -1.0, ..Default::default() }, "--gamma");
        bad(AnalysisParams { gamma: f64::INFINITY, ..Default::default() }, "--gamma");
        bad(AnalysisParams { easy_threshold: 1.0, ..Default::default() }, "--easy-threshold");
        bad(AnalysisParams { easy_threshold: 0.0, ..Default::default() }, "--easy-threshold");
        bad(AnalysisParams { threads: Some(0), ..Default::default() }, "--threads");
        bad(AnalysisParams { strategies: vec![], ..Default::default() }, "--strategies");
        bad(
            AnalysisParams { strategies: vec![StrategyKind::Ce, StrategyKind::Ce], ..Default::default() },
            "--strategies",
        );
        bad(
            AnalysisParams { ohem: OhemParams { k: 0, ..Default::default() }, ..Default::default() },
            "--ohem-k",
        );
        bad(
            AnalysisParams {
                ohem: OhemParams { nms: Some(0.0), ..Default::default() },
                ..Default::default()
            },
            "--ohem-nms",
        );
        bad(
            AnalysisParams {
                ohem: OhemParams { pos_fraction: Some(1.5), ..Default::default() },
                ..Default::default()
            },
            "--ohem-pos-fraction",
        );
        bad(
            AnalysisParams {
                sampled: SampledParams { positive_fraction: -0.1, ..Default::default() },
                ..Default::default()
            },
            "--positive-fraction",
        );
        bad(
            AnalysisParams {
                sampled: SampledParams { batch_size_per_image: 0, ..Default::default() },
                ..Default::default()
            },
            "--batch-size-per-image",
        );
        bad(
            AnalysisParams { ghm: GhmParams { bins: 0, per_level: false }, ..Default::default() },
            "--ghm-bins",
        );
        let sweep = |gammas: Vec<f64>, alphas: Vec<f64>, t: f64| AnalysisParams {
            sweep: Some(SweepParams { gammas, alphas, target_easy_share: t }),
            ..Default::default()
        };
        bad(sweep(vec![], vec![0.25], 0.1), "--gammas");
        bad(sweep(vec![2.0, 2.0], vec![0.25], 0.1), "--gammas");
        bad(sweep(vec![-1.0], vec![0.25], 0.1), "--gammas");
        bad(sweep(vec![2.0], vec![1.5], 0.1), "--alphas");
        bad(sweep(vec![2.0], vec![-1.0, -2.0], 0.1), "--alphas");
        bad(sweep(vec![2.0], vec![0.25], 1.0), "--target-easy-share");
        bad(sweep(vec![2.0], vec![0.25], 0.51), "--target-easy-share");
        assert!(sweep(vec![2.0], vec![0.25], 0.5).check().is_ok());
        assert!(parse_numbers("--gammas", "0, 0.5,x").unwrap_err().to_string().contains("--gammas"));
    }

    #[test]
    fn column_renames_parse_and_reject_unknown_names() {
        let m = ColumnMap::parse(&["label=gt_class", "logits = cls"]).unwrap();
        assert_eq!(m.physical("label"), "gt_class");
        assert_eq!(m.physical("logits"), "cls");
        assert_eq!(m.physical("image_id"), "image_id");
        assert!(ColumnMap::parse(&["labels=x"]).unwrap_err().to_string().contains("known names"));
        assert!(ColumnMap::parse(&["label"]).is_err());
        assert!(ColumnMap::parse(&["label="]).is_err());
        assert!(ColumnMap::parse(&["label=a", "label=b"]).is_err());
    }

    #[test]
    fn strategy_lists_parse_in_order() {
        assert_eq!(parse_strategies("focal, ce").unwrap(), vec![StrategyKind::Focal, StrategyKind::Ce]);
        assert!(parse_strategies("ce,ohm").unwrap_err().to_string().contains("known: ce"));
    }
}
