//! `ce`: plain cross-entropy on every decision, the baseline every other strategy is read
//! against. Loss CE, gradient norm |p - y| (torchvision's `sigmoid_focal_loss` with gamma 0 and
//! alpha < 0; for softmax dumps, the categorical CE of the labelled class).

use serde::{Deserialize, Serialize};

use super::{Params, Precomputed, Reweighting};
use crate::analysis::decisions::Terms;
use crate::config::AnalysisConfig;
use crate::loss::Decision;

/// Cross-entropy (no parameters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ce;

impl Reweighting for Ce {
    fn from_config(_: &AnalysisConfig) -> Ce {
        Ce
    }

    fn params(&self) -> Params {
        Params::new()
    }

    #[inline]
    fn terms(&self, d: &Decision) -> (f64, f64) {
        (d.ce, d.ce_grad())
    }

    #[inline]
    fn precomputed(&self, _terms: &Terms) -> Option<Precomputed> {
        Some(Precomputed::Ce)
    }
}
