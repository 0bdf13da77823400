//! Two runs side by side: every figure of two [`Summary`]s with its difference (B - A), the
//! buckets whose loss share moved most, and the health findings each side has.
//!
//! A side is a dump (analysed with the command's settings) or a saved state (`analyze
//! --save-state`, reported with the settings it was saved with); [`compare`] only reads the two
//! summaries, so it does not care which.

use serde::{Deserialize, Serialize};

use crate::config::{Activation, Layout, ScoreKind};
use crate::report::{Parameters, SCHEMA_VERSION};
use crate::trend::Summary;

/// How many bucket shares [`CompareReport::moved_most`] lists at most.
pub const MOVED_MOST: usize = 8;

/// The comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Version of the JSON layout ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// What produced it.
    pub metadata: CompareMetadata,
    /// The first run.
    pub a: Side,
    /// The second run.
    pub b: Side,
    /// Every figure of either side (A's order, then those only B has), with B - A.
    pub figures: Vec<Figure>,
    /// The strategy buckets whose loss share changed most (largest |B - A| first; unchanged
    /// ones left out).
    pub moved_most: Vec<MovedBucket>,
    /// Health findings by code: on both sides, only on A, only on B.
    pub health: HealthDiff,
}

/// Provenance of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareMetadata {
    /// Always "hardmine".
    pub tool: String,
    /// hardmine's version.
    pub version: String,
    /// The subcommand ("compare").
    pub command: String,
    /// The command line (HTML and Markdown only, as for reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
}

/// Whether a side was read from a dump or a saved state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideKind {
    /// Parquet files, analysed by this run.
    Dump,
    /// A state file written by `analyze --save-state`.
    State,
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// The argument as given.
    pub label: String,
    /// Dump or state.
    pub kind: SideKind,
    /// The Parquet files behind it.
    pub inputs: Vec<String>,
    /// Dense or binary.
    pub layout: Layout,
    /// Logits or probabilities.
    pub scores: ScoreKind,
    /// Sigmoid or softmax.
    pub activation: Activation,
    /// Classes per anchor.
    pub classes: usize,
    /// The analysis parameters.
    pub parameters: Parameters,
    /// Its figures.
    pub report: Summary,
}

/// One figure on both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The figure's dotted name (see [`Summary::figures`]).
    pub name: String,
    /// Its value on A (null when A has no such figure).
    pub a: Option<f64>,
    /// Its value on B.
    pub b: Option<f64>,
    /// B - A (null unless both have it).
    pub difference: Option<f64>,
}

/// A bucket's loss share on both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovedBucket {
    /// The strategy.
    pub strategy: String,
    /// The bucket (`easy_negative`, ...).
    pub bucket: String,
    /// Its share of the strategy's loss on A.
    pub a: f64,
    /// On B.
    pub b: f64,
    /// B - A.
    pub difference: f64,
}

/// Health codes on each side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthDiff {
    /// Codes both sides report.
    pub both: Vec<String>,
    /// Codes only A reports.
    pub only_a: Vec<String>,
    /// Codes only B reports.
    pub only_b: Vec<String>,
}

/// Pairs the figures of two summaries: A's in order, then those only B has.
pub fn figures(a: &Summary, b: &Summary) -> Vec<Figure> {
    let fa = a.figures();
    let fb = b.figures();
    let mut out: Vec<Figure> = fa
        .iter()
        .map(|(name, x)| {
            let y = fb.iter().find(|(n, _)| n == name).map(|(_, y)| *y);
            Figure { name: name.clone(), a: Some(*x), b: y, difference: y.map(|y| y - x) }
        })
        .collect();
    for (name, y) in &fb {
        if !fa.iter().any(|(n, _)| n == name) {
            out.push(Figure { name: name.clone(), a: None, b: Some(*y), difference: None });
        }
    }
    out
}

/// The buckets whose loss share moved most between the strategies both sides ran.
pub fn moved_most(a: &Summary, b: &Summary, limit: usize) -> Vec<MovedBucket> {
    let mut moved: Vec<MovedBucket> = Vec::new();
    for sa in &a.strategies {
        let Some(sb) = b.strategy(&sa.name) else { continue };
        for ((bucket, x), (_, y)) in sa.buckets.iter().into_iter().zip(sb.buckets.iter()) {
            let difference = y.loss_share - x.loss_share;
            if difference != 0.0 {
                moved.push(MovedBucket {
                    strategy: sa.name.clone(),
                    bucket: bucket.to_string(),
                    a: x.loss_share,
                    b: y.loss_share,
                    difference,
                });
            }
        }
    }
    // Largest change first; ties keep report order (a stable sort).
    moved.sort_by(|p, q| q.difference.abs().total_cmp(&p.difference.abs()));
    moved.truncate(limit);
    moved
}

/// The health codes of each side, split into shared and one-sided (each in report order).
pub fn health(a: &Summary, b: &Summary) -> HealthDiff {
    let codes = |s: &Summary| s.health.iter().map(|h| h.code.clone()).collect::<Vec<_>>();
    let (ca, cb) = (codes(a), codes(b));
    HealthDiff {
        both: ca.iter().filter(|c| cb.contains(c)).cloned().collect(),
        only_a: ca.iter().filter(|c| !cb.contains(c)).cloned().collect(),
        only_b: cb.iter().filter(|c| !ca.contains(c)).cloned().collect(),
    }
}

/// Compares two sides.
pub fn compare(a: Side, b: Side) -> CompareReport {
    CompareReport {
        schema_version: SCHEMA_VERSION,
        metadata: CompareMetadata {
            tool: "hardmine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            command: "compare".into(),
            invocation: None,
        },
        figures: figures(&a.report, &b.report),
        moved_most: moved_most(&a.report, &b.report, MOVED_MOST),
        health: health(&a.report, &b.report),
        a,
        b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::sample_report;

    fn summary(focal_en: f64) -> Summary {
        let mut r = sample_report();
        r.strategies[2].buckets.easy_negative.loss_share = focal_en;
        Summary {
            dataset: r.dataset.clone(),
            positives_per_image: 2.5,
            strategies: r.strategies,
            normalizers: Vec::new(),
            sweep: None,
            mean_negative_logit: Some(-5.0),
            health: Vec::new(),
        }
    }

    #[test]
    fn a_summary_compared_with_itself_differs_by_zero_everywhere() {
        let s = summary(0.1);
        let f = figures(&s, &s);
        assert_eq!(f.len(), s.figures().len());
        assert!(f.iter().all(|f| f.difference == Some(0.0)));
        assert!(moved_most(&s, &s, 8).is_empty());
    }

    #[test]
    fn differences_are_b_minus_a_and_the_largest_move_comes_first() {
        let (a, mut b) = (summary(0.1), summary(0.4));
        b.strategies.pop();
        b.mean_negative_logit = None;
        let f = figures(&a, &summary(0.4));
        let en = f.iter().find(|f| f.name == "strategies.focal.buckets.easy_negative.loss_share").unwrap();
        assert_eq!((en.a, en.b, en.difference), (Some(0.1), Some(0.4), Some(0.4 - 0.1)));
        let moved = moved_most(&a, &summary(0.4), 8);
        assert_eq!((moved[0].strategy.as_str(), moved[0].bucket.as_str()), ("focal", "easy_negative"));
        // A figure only one side has: no difference.
        let f = figures(&a, &b);
        let only_a = f.iter().find(|f| f.name == "mean_negative_logit").unwrap();
        assert_eq!((only_a.b, only_a.difference), (None, None));
        assert!(f.iter().any(|f| f.name.starts_with("strategies.focal.") && f.b.is_none()));
    }
}
