//! `vfl`: varifocal loss (VarifocalNet, Zhang et al. 2021), as mmdetection's `varifocal_loss`
//! computes it (mmdet/models/losses/varifocal_loss.py, `iou_weighted=True`):
//!
//! - a positive (target y > 0, the IoU-aware score) costs y BCE(p, y): weighted by its own
//!   quality, not down-weighted by how easy it is;
//! - a negative (y = 0) costs alpha p^gamma BCE(p, 0): the focal loss's modulating factor on
//!   negatives only, scaled by alpha (defaults alpha 0.75, gamma 2; this alpha is not the focal
//!   loss's alpha_t: it scales the negatives).
//!
//! The weight is not detached in mmdetection, so the negatives' gradient norm is
//! alpha p^gamma (gamma (1 - p) BCE + p), the focal loss's with alpha in place of alpha_t; a
//! positive's is y |p - y|. A sigmoid loss: refused for softmax dumps.

use serde::{Deserialize, Serialize};

use super::{params, Params, Reweighting};
use crate::config::{check_exponent, AnalysisConfig};
use crate::error::ConfigError;
use crate::loss::Decision;

/// Varifocal loss settings (strategy `vfl`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VflParams {
    /// Scale of the negatives' loss (`--vfl-alpha`, default 0.75, as mmdetection's
    /// `VarifocalLoss`); not the focal loss's alpha_t.
    pub alpha: f64,
    /// Exponent of the negatives' modulating factor p^gamma (`--vfl-gamma`, default 2).
    pub gamma: f64,
}

impl Default for VflParams {
    fn default() -> Self {
        VflParams { alpha: 0.75, gamma: 2.0 }
    }
}

impl VflParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_exponent("--vfl-gamma", self.gamma, "VarifocalNet and mmdetection use 2")?;
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(ConfigError::invalid(
                "--vfl-alpha",
                self.alpha,
                "the negatives' scale must be finite and >= 0 (VarifocalNet and mmdetection use 0.75)",
            ));
        }
        Ok(())
    }
}

/// Varifocal loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vfl {
    /// alpha and gamma (`--vfl-alpha`, `--vfl-gamma`).
    pub params: VflParams,
}

impl Reweighting for Vfl {
    fn from_config(config: &AnalysisConfig) -> Vfl {
        Vfl { params: *config.vfl() }
    }

    fn params(&self) -> Params {
        params([
            ("alpha", serde_json::json!(self.params.alpha)),
            ("gamma", serde_json::json!(self.params.gamma)),
        ])
    }

    #[inline]
    fn terms(&self, d: &Decision) -> (f64, f64) {
        let VflParams { alpha, gamma } = self.params;
        if d.y > 0.0 {
            (d.y * d.ce, d.y * d.ce_grad())
        } else {
            // y = 0: p = 1 - p_t = q, and the focal terms with alpha for alpha_t.
            let m = d.focal_factor(gamma);
            (alpha * m * d.ce, alpha * m * (d.a + gamma * d.b).abs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: f64, y: f64, alpha: f64, gamma: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        let bce = -(y * p.ln() + (1.0 - y) * (1.0 - p).ln());
        let weight = if y > 0.0 { y } else { alpha * p.powf(gamma) };
        weight * bce
    }

    fn vfl(alpha: f64, gamma: f64) -> Vfl {
        Vfl { params: VflParams { alpha, gamma } }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn hand_worked_values_of_the_mmdetection_formula() {
        // A positive with IoU target 0.7 at x = 0.5: 0.7 * BCE(0.622459, 0.7) = 0.7 * 0.624077.
        let (loss, grad) = vfl(0.75, 2.0).terms(&Decision::from_logit(0.5, 0.7));
        assert!(close(loss, 0.4368538889260747, 1e-12), "{loss}");
        assert!(close(grad, 0.054278468136770286, 1e-6), "{grad}");
        // A negative at x = -1: 0.75 * 0.268941^2 * 0.313262.
        let (loss, grad) = vfl(0.75, 2.0).terms(&Decision::from_logit(-1.0, 0.0));
        assert!(close(loss, 0.016993543131350493, 1e-12), "{loss}");
        assert!(close(grad, 0.0394358474799239, 1e-6), "{grad}");
        // A hard positive (y = 1) is plain BCE: x = 2 -> ln(1 + e^-2).
        let (loss, _) = vfl(0.75, 2.0).terms(&Decision::from_logit(2.0, 1.0));
        assert!(close(loss, 0.12692801104297263, 1e-12), "{loss}");
    }

    #[test]
    fn loss_and_gradient_match_the_naive_formula_and_a_central_difference() {
        for &(x, y) in &[(-3.0, 0.0), (1.2, 0.0), (-0.4, 1.0), (2.5, 1.0), (0.8, 0.3), (-1.5, 0.7)] {
            for &(alpha, gamma) in &[(0.75, 2.0), (0.25, 0.0), (1.0, 1.5), (0.5, 3.0)] {
                let (loss, grad) = vfl(alpha, gamma).terms(&Decision::from_logit(x, y));
                assert!(close(loss, naive(x, y, alpha, gamma), 1e-12), "x={x} y={y}");
                let h = 1e-6;
                let f = |x| naive(x, y, alpha, gamma);
                let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                assert!((numeric.abs() - grad).abs() < 1e-7, "x={x} y={y}: {numeric} vs {grad}");
            }
        }
    }
}
