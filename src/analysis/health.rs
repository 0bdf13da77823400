//! Health checks: things about a dump that make its numbers (or the training that produced it)
//! suspect, each with the evidence and a fix.

use super::breakdown::HealthCounts;
use crate::config::{Activation, Layout, ScoreKind};
use crate::input::DumpShape;
use crate::report::HealthItem;

/// RetinaNet's prior: the classification bias starts at -log((1 - pi) / pi) with pi = 0.01.
pub const PRIOR_PI: f64 = 0.01;

/// What the checks need to know besides the counts.
pub struct HealthContext<'a> {
    /// Layout, scores and activation.
    pub shape: DumpShape,
    /// Classes per anchor.
    pub width: usize,
    /// Softmax background class.
    pub background_class: u32,
    /// Valid decisions.
    pub decisions: u64,
    /// Positive decisions.
    pub positives: u64,
    /// Every gamma in use (the analysis's and the sweep's).
    pub gammas: &'a [f64],
}

fn item(code: &str, level: &str, message: String, fix: Option<&str>) -> HealthItem {
    HealthItem { code: code.into(), level: level.into(), message, fix: fix.map(str::to_string) }
}

fn pct(n: u64, d: u64) -> String {
    format!("{:.3}%", 100.0 * n as f64 / d.max(1) as f64)
}

/// Runs every check.
pub fn checks(h: &HealthCounts, cx: &HealthContext<'_>) -> Vec<HealthItem> {
    let mut out = Vec::new();
    let n = cx.decisions;
    if n == 0 {
        return vec![item(
            "no_decisions",
            "warning",
            "the dump has no decisions: every anchor is ignored (label -2)".into(),
            Some("check the ignore code: hardmine reads -2 as ignored, -1 as background"),
        )];
    }
    if cx.positives == 0 {
        out.push(item(
            "no_positives",
            "warning",
            format!("none of the {n} decisions is positive: normalisers fall back to 1 and every positive bucket is empty"),
            Some("check the label convention (foreground classes 0..C-1) or that the dump covers images with objects"),
        ));
    }
    // Saturation loses information only where a probability was dumped within 1e-7 of 1: there
    // float32 (spacing 6e-8 below 1) no longer holds 1 - p. That is p_t near 1 for a sigmoid
    // positive or any softmax decision, and p_t near 0 for a sigmoid negative (its p is near 1);
    // probabilities near 0 keep their precision, and logits lose nothing (every loss is computed
    // from them without rounding).
    if cx.shape.scores == ScoreKind::Probs {
        let lost = match cx.shape.activation {
            Activation::Sigmoid => h.confidently_right[1] + h.confidently_wrong[0],
            Activation::Softmax => h.confidently_right[0] + h.confidently_right[1],
        };
        if lost > 0 {
            out.push(item(
                "saturated",
                if lost * 1000 > n { "warning" } else { "info" },
                format!(
                    "{lost} decisions ({}) have a dumped probability within 1e-7 of 1, where float32 (spacing 6e-8 below 1) no longer holds 1 - p: the focal factor (1 - p_t)^gamma of the right ones and the CE of the wrong ones (clamped at 100, as torch does) come out rounded",
                    pct(lost, n)
                ),
                Some("dump logits (docs/dumping.md): hardmine computes p_t, 1 - p_t and CE from logits without rounding"),
            ));
        }
    }
    // Confidently wrong decisions mean something whatever was dumped.
    let [wrong_neg, wrong_pos] = h.confidently_wrong;
    let wrong = wrong_neg + wrong_pos;
    if wrong > 0 {
        out.push(item(
            "confidently_wrong",
            if wrong * 1000 > n || wrong_pos * 100 > cx.positives { "warning" } else { "info" },
            format!(
                "{wrong} decisions ({}) are confidently wrong, p_t < 1e-7 (CE > 16.1): the model all but rules out their label; {wrong_pos} of them are positives ({} of the positives), {wrong_neg} negatives",
                pct(wrong, n),
                pct(wrong_pos, cx.positives)
            ),
            Some("many wrong positives point to a wrong label mapping in the dumping code (class offset, background index: docs/dumping.md); a few of either, to label noise (missing or wrong boxes: `hardmine mine --strategy focal` lists each image's hardest decisions); many of both, to a diverged classification head"),
        ));
    }
    let small_gammas: Vec<String> =
        cx.gammas.iter().filter(|&&g| g > 0.0 && g < 1.0).map(|g| g.to_string()).collect();
    if !small_gammas.is_empty() && h.fp32_one > 0 {
        out.push(item(
            "gamma_below_one",
            "warning",
            format!(
                "gamma {} < 1 with {} decisions ({}) whose p_t rounds to 1 in float32: d(1 - p_t)^gamma / dp_t = gamma (1 - p_t)^(gamma - 1) is unbounded there, and autograd through (1 - p_t) ** gamma gives inf * 0 = NaN gradients",
                small_gammas.join(", "),
                h.fp32_one,
                pct(h.fp32_one, n)
            ),
            Some("use gamma >= 1, compute the modulating factor from log-sigmoid, or clamp 1 - p_t away from 0"),
        ));
    }
    if h.fp16_underflow > 0 {
        out.push(item(
            "fp16_underflow",
            "info",
            format!(
                "{} decisions ({}) have a focal loss below float16's smallest subnormal (5.96e-8): under fp16 autocast their loss and gradient flush to 0",
                h.fp16_underflow,
                pct(h.fp16_underflow, n)
            ),
            Some("compute the loss in float32 (torchvision and mmdetection do unless forced to fp16)"),
        ));
    }
    if h.fp16_overflow > 0 {
        out.push(item(
            "fp16_overflow",
            "warning",
            format!("{} decisions have a logit or CE beyond float16's range (65504)", h.fp16_overflow),
            Some("such logits overflow to inf under fp16: check the head's output scale"),
        ));
    }
    if cx.shape.scores == ScoreKind::Logits && cx.shape.activation == Activation::Sigmoid && h.negatives > 0 {
        let mean = h.negative_logit_sum.value() / h.negatives as f64;
        let prior = -((1.0 - PRIOR_PI) / PRIOR_PI).ln();
        let p = 1.0 / (1.0 + (-mean).exp());
        let (level, fix) = if mean > prior + 2.0 {
            (
                "warning",
                Some("negatives score above RetinaNet's initial prior: initialise the classification bias to -log((1 - 0.01) / 0.01) = -4.595 (torchvision prior_probability=0.01, mmdetection bias_prob=0.01), or train longer"),
            )
        } else {
            ("info", None)
        };
        out.push(item(
            "prior_bias",
            level,
            format!(
                "mean logit of the {} negative decisions: {mean:.3} (p = {p:.4}); RetinaNet's prior initialisation is {prior:.3} (pi = {PRIOR_PI})",
                h.negatives
            ),
            fix,
        ));
    }
    // Label conventions (dense dumps).
    if cx.shape.layout == Layout::Dense {
        let labelled: u64 = h.label_counts.iter().sum::<u64>() + h.background_labels;
        let (top_class, top) =
            h.label_counts.iter().enumerate().max_by_key(|(_, &c)| c).map(|(i, &c)| (i, c)).unwrap_or((0, 0));
        match cx.shape.activation {
            Activation::Sigmoid if h.background_labels == 0 && labelled > 0 && top * 2 > labelled => {
                out.push(item(
                    "no_background_label",
                    "warning",
                    format!(
                        "no anchor is labelled -1 (background) and {} of the anchors carry label {top_class}: the dump may encode background as a class",
                        pct(top, labelled)
                    ),
                    Some("if that label is background, map it to -1 when dumping (mmdetection and detectron2 use C), or pass --activation softmax --background-class K for a softmax head"),
                ));
            }
            Activation::Softmax => {
                let bg = cx.background_class as usize;
                let bg_count = h.label_counts.get(bg).copied().unwrap_or(0);
                if top_class != bg && top * 2 > labelled && bg_count * 10 < top {
                    out.push(item(
                        "background_class",
                        "warning",
                        format!(
                            "class {top_class} holds {} of the anchors but the background class is {bg}: is --background-class right?",
                            pct(top, labelled)
                        ),
                        Some("pass --background-class with the index your head uses for background (torchvision 0, detectron2 K-1)"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}
