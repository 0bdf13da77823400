//! `focal`: the focal loss alpha_t (1 - p_t)^gamma CE (Lin et al. 2017) and its gradient norm
//! |dFL/dx|, as torchvision's `ops.sigmoid_focal_loss` computes it (for soft targets too:
//! 1 - p_t = p (1 - y) + (1 - p) y, which is neither QFL nor VFL); for softmax dumps, the
//! categorical focal loss of the labelled class.

use serde::{Deserialize, Serialize};

use super::{params, Params, Precomputed, Reweighting};
use crate::analysis::decisions::{Focus, Terms};
use crate::config::AnalysisConfig;
use crate::loss::Decision;

/// The focal loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Focal {
    /// gamma (`--gamma`) and alpha (`--alpha`).
    pub focus: Focus,
}

impl Reweighting for Focal {
    fn from_config(config: &AnalysisConfig) -> Focal {
        Focal { focus: Focus { gamma: config.gamma(), alpha: config.alpha() } }
    }

    fn params(&self) -> Params {
        params([
            ("alpha", serde_json::json!(self.focus.alpha)),
            ("gamma", serde_json::json!(self.focus.gamma)),
        ])
    }

    #[inline]
    fn terms(&self, d: &Decision) -> (f64, f64) {
        let Focus { gamma, alpha } = self.focus;
        (d.focal(gamma, alpha), d.focal_grad(gamma, alpha))
    }

    #[inline]
    fn precomputed(&self, terms: &Terms) -> Option<Precomputed> {
        (terms.focus == self.focus).then_some(Precomputed::Focal)
    }
}
