//! `qfl`: quality focal loss (Generalized Focal Loss, Li et al. 2020), as mmdetection's
//! `quality_focal_loss` computes it (mmdet/models/losses/gfocal_loss.py): every decision,
//! positive or negative, costs
//!
//! QFL = |y - p|^beta BCE(p, y),  p = sigmoid(x),
//!
//! with y the soft (IoU-quality) target, 0 for negatives; mmdetection's default beta is 2. The
//! modulating factor |y - p|^beta is not detached there, so the gradient norm is
//!
//! |dQFL/dx| = |u|^(beta - 1) (u^2 + beta p (1 - p) BCE),  u = p - y
//!
//! (at u = 0 it is 0 for beta > 0, the minimum of the loss). With hard targets (y = 0 or 1)
//! |y - p| = 1 - p_t: QFL is the focal loss with gamma = beta and no alpha, bit for bit. A
//! sigmoid loss: refused for softmax dumps.

use serde::{Deserialize, Serialize};

use super::{params, Params, Reweighting};
use crate::config::{check_exponent, AnalysisConfig};
use crate::error::ConfigError;
use crate::loss::{power, sigmoid_variance, Decision};

/// Quality focal loss settings (strategy `qfl`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QflParams {
    /// Exponent beta of the modulating factor |y - p|^beta (`--qfl-beta`, default 2, as
    /// mmdetection's `QualityFocalLoss` and the GFL paper).
    pub beta: f64,
}

impl Default for QflParams {
    fn default() -> Self {
        QflParams { beta: 2.0 }
    }
}

impl QflParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_exponent("--qfl-beta", self.beta, "the GFL paper and mmdetection use 2")
    }
}

/// Quality focal loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Qfl {
    /// beta (`--qfl-beta`).
    pub params: QflParams,
}

impl Reweighting for Qfl {
    fn from_config(config: &AnalysisConfig) -> Qfl {
        Qfl { params: *config.qfl() }
    }

    fn params(&self) -> Params {
        params([("beta", serde_json::json!(self.params.beta))])
    }

    #[inline]
    fn terms(&self, d: &Decision) -> (f64, f64) {
        let beta = self.params.beta;
        if d.y == 0.0 || d.y == 1.0 {
            // |y - p| = 1 - p_t: the focal loss's terms without alpha.
            return (d.focal(beta, None), d.focal_grad(beta, None));
        }
        let u = d.a.abs();
        let m = power(beta, u);
        let grad = if beta == 0.0 {
            u
        } else if u == 0.0 {
            0.0
        } else {
            // |u|^(beta - 1) as m / u: also right for beta < 1.
            m / u * (u * u + beta * sigmoid_variance(d) * d.ce)
        };
        (m * d.ce, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: f64, y: f64, beta: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        let bce = -(y * p.ln() + (1.0 - y) * (1.0 - p).ln());
        (y - p).abs().powf(beta) * bce
    }

    fn qfl(beta: f64) -> Qfl {
        Qfl { params: QflParams { beta } }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn hand_worked_values_of_the_mmdetection_formula() {
        // x = 0.5, y = 0.7: p = 0.622459, |y - p|^2 = 0.0060125, BCE = 0.624073 -> 0.0037523.
        let (loss, grad) = qfl(2.0).terms(&Decision::from_logit(0.5, 0.7));
        assert!(close(loss, 0.003752297389863609, 1e-12), "{loss}");
        assert!(close(grad, 0.02321050980363601, 1e-6), "{grad}");
        // A negative: x = -1, y = 0: p^2 BCE(x, 0) = 0.268941^2 * 0.313262.
        let (loss, grad) = qfl(2.0).terms(&Decision::from_logit(-1.0, 0.0));
        assert!(close(loss, 0.022658057508467326, 1e-12), "{loss}");
        assert!(close(grad, 0.05258112997438835, 1e-6), "{grad}");
    }

    #[test]
    fn loss_and_gradient_match_the_naive_formula_and_a_central_difference() {
        for &(x, y) in
            &[(-3.0, 0.0), (1.2, 0.0), (-0.4, 1.0), (2.5, 1.0), (0.8, 0.3), (-1.5, 0.7), (0.2, 0.55)]
        {
            for &beta in &[0.0, 0.5, 1.0, 1.5, 2.0, 2.7] {
                let (loss, grad) = qfl(beta).terms(&Decision::from_logit(x, y));
                assert!(close(loss, naive(x, y, beta), 1e-12), "x={x} y={y} beta={beta}");
                let h = 1e-6;
                let numeric = (naive(x + h, y, beta) - naive(x - h, y, beta)) / (2.0 * h);
                // Relative too: near p = y with beta < 1 the slope is steep (6.6 at x = 0.2,
                // y = 0.55, beta = 0.5) and the central difference loses digits.
                let tol = 1e-7 + 1e-6 * numeric.abs();
                assert!((numeric.abs() - grad).abs() < tol, "x={x} y={y} beta={beta}: {numeric} vs {grad}");
            }
        }
    }

    #[test]
    fn hard_targets_give_the_focal_loss_without_alpha_bit_for_bit() {
        for &x in &[-30.0, -2.0, 0.0, 0.7, 9.0] {
            for &y in &[0.0, 1.0] {
                let d = Decision::from_logit(x, y);
                assert_eq!(qfl(2.0).terms(&d), (d.focal(2.0, None), d.focal_grad(2.0, None)));
            }
        }
    }

    #[test]
    fn a_prediction_equal_to_its_soft_target_costs_nothing_and_stays_finite_at_extremes() {
        let y = 0.25f64;
        let x = (y / (1.0 - y)).ln();
        let (loss, grad) = qfl(2.0).terms(&Decision::from_logit(x, y));
        assert!(loss < 1e-30 && grad < 1e-15, "{loss} {grad}");
        for &x in &[-1e4, -100.0, 100.0, 1e4] {
            for &y in &[0.3, 0.9] {
                let (loss, grad) = qfl(2.0).terms(&Decision::from_logit(x, y));
                assert!(loss.is_finite() && grad.is_finite(), "x={x} y={y}");
            }
        }
    }
}
