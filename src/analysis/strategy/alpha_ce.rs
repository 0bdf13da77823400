//! `alpha_ce`: cross-entropy weighted by alpha_t = alpha y + (1 - alpha)(1 - y), the focal-loss
//! paper's "alpha-balanced CE" (gamma 0). Loss alpha_t CE, gradient norm alpha_t |p - y|.

use serde::{Deserialize, Serialize};

use super::{params, Params, Precomputed, Reweighting};
use crate::analysis::decisions::Terms;
use crate::config::AnalysisConfig;
use crate::loss::Decision;

/// alpha-balanced cross-entropy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlphaCe {
    /// alpha (`--alpha`); `None` = no alpha weighting, which makes it `ce`.
    pub alpha: Option<f64>,
}

impl Reweighting for AlphaCe {
    fn from_config(config: &AnalysisConfig) -> AlphaCe {
        AlphaCe { alpha: config.alpha() }
    }

    fn params(&self) -> Params {
        params([("alpha", serde_json::json!(self.alpha))])
    }

    #[inline]
    fn terms(&self, d: &Decision) -> (f64, f64) {
        let a = d.alpha_t(self.alpha);
        (a * d.ce, a * d.ce_grad())
    }

    #[inline]
    fn precomputed(&self, terms: &Terms) -> Option<Precomputed> {
        (terms.focus.alpha == self.alpha).then_some(Precomputed::AlphaCe)
    }
}
