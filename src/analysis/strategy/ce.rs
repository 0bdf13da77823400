//! `ce`: plain cross-entropy on every decision, the baseline every other strategy is read
//! against. Loss CE, gradient norm |p - y| (torchvision's `sigmoid_focal_loss` with gamma 0 and
//! alpha < 0; for softmax dumps, the categorical CE of the labelled class).

use serde::{Deserialize, Serialize};

use super::{Params, Reweighting, Sums};
use crate::analysis::decisions::DecisionChunk;
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
    fn sum_chunk(&self, chunk: &DecisionChunk<'_>, sums: &mut Sums) {
        let g = &chunk.terms.ce_grad;
        sums.add(chunk, |i, d| (d.ce, g[i]));
    }
}
