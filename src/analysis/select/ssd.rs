//! SSD hard negative mining, with torchvision `SSD.compute_loss` semantics.
//!
//! Per image: every positive, plus the `neg_pos_ratio x #positives` negatives with the highest
//! CE (capped at the number of negatives). An image without positives contributes no negatives,
//! as in torchvision and mmdetection's `SSDHead`; `EmptyImages::AllNegatives` takes all of them
//! instead, as some mmdetection-derived heads do.
//!
//! One deliberate difference: when `ratio x #positives` exceeds the negatives, torchvision's
//! rank trick (`idx.sort(1)[1] < num_negative`) also counts positives' losses a second time;
//! hardmine caps at the negatives, as mmdetection does.

use serde::{Deserialize, Serialize};

use super::{top_ce, Chosen, Image, Kept, Piles, Selector, Split};
use crate::analysis::bucket_sums;
use crate::config::AnalysisConfig;
use crate::error::ConfigError;
use crate::report::StrategyReport;

/// What SSD mining does with an image that has no positives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyImages {
    /// No negatives either (`ratio x 0`): torchvision `SSD.compute_loss` and mmdetection
    /// `SSDHead` (default).
    #[default]
    NoNegatives,
    /// Every negative of the image, as some mmdetection-derived heads do.
    AllNegatives,
}

/// SSD hard-negative-mining settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsdParams {
    /// Negatives kept per positive (`--neg-pos-ratio`, default 3).
    pub neg_pos_ratio: usize,
    /// Images without positives (`--ssd-empty-images`).
    pub empty_images: EmptyImages,
}

impl Default for SsdParams {
    fn default() -> Self {
        SsdParams { neg_pos_ratio: 3, empty_images: EmptyImages::NoNegatives }
    }
}

impl SsdParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.neg_pos_ratio > 1_000_000 {
            return Err(ConfigError::invalid("--neg-pos-ratio", self.neg_pos_ratio, "at most 1000000"));
        }
        Ok(())
    }
}

/// The SSD mining selector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ssd {
    /// Negatives per positive and the empty-image policy (`--neg-pos-ratio`, `--ssd-empty-images`).
    pub params: SsdParams,
}

impl Selector for Ssd {
    type Totals = Chosen;

    fn from_config(config: &AnalysisConfig) -> Ssd {
        Ssd { params: *config.ssd() }
    }

    fn select(&self, image: &Image<'_>, totals: &mut Chosen) -> Kept {
        totals.take(image, select(image.pile, image.split, &self.params))
    }

    fn merge(totals: &mut Chosen, other: &Chosen) {
        totals.merge(other);
    }

    fn report(&self, totals: &Chosen, images: u64, positives: u64) -> StrategyReport {
        use serde_json::json;
        let p = &self.params;
        let params = crate::analysis::strategy::params([
            ("neg_pos_ratio", json!(p.neg_pos_ratio)),
            ("empty_images", json!(p.empty_images)),
        ]);
        let mut r =
            StrategyReport::from_buckets("ssd", params, bucket_sums(&totals.buckets), totals.mean(images));
        // torchvision SSD.compute_loss: selected CE / max(1, positives in the batch).
        let norm = r.loss.total / positives.max(1) as f64;
        r.extra.insert("torchvision_normalized".into(), json!(norm));
        r
    }
}

/// Indices of the selected candidates (of the image `piles`, split by `split`): positives in
/// dump order, then the mined negatives, hardest first.
pub fn select(piles: &Piles, split: &Split, p: &SsdParams) -> Vec<usize> {
    let pos = &split.pos;
    let m = if pos.is_empty() {
        match p.empty_images {
            EmptyImages::NoNegatives => 0,
            EmptyImages::AllNegatives => split.n_neg,
        }
    } else {
        pos.len().saturating_mul(p.neg_pos_ratio)
    };
    let neg = top_ce(piles, Some(false), m.min(piles.len()));
    [pos.as_slice(), &neg].concat()
}
