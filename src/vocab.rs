//! The shared vocabulary: what a dump is (layout, score kind, activation) and the strategies
//! hardmine compares. Every module speaks it; [`crate::config`] re-exports it next to the
//! settings that use it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How class scores turn into probabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// One independent sigmoid per class (RetinaNet, FCOS): C binary decisions per anchor.
    #[default]
    Sigmoid,
    /// One softmax over K classes including background (SSD, Faster R-CNN box head): one
    /// decision per anchor.
    Softmax,
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Softmax => "softmax",
        })
    }
}

/// The physical layout of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One row per anchor with a list of per-class scores.
    Dense,
    /// One row per binary decision with a scalar score and target.
    Binary,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Dense => "dense",
            Layout::Binary => "binary",
        })
    }
}

/// Whether the dump stores logits or probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Raw logits (preferred: every loss is computed stably from them).
    Logits,
    /// Probabilities in [0, 1]; logs are clamped at -100 like `torch.nn.BCELoss`.
    Probs,
}

impl fmt::Display for ScoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoreKind::Logits => "logits",
            ScoreKind::Probs => "probs",
        })
    }
}

/// A loss or selection strategy compared by `hardmine analyze`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Plain cross-entropy on every decision.
    Ce,
    /// Cross-entropy weighted by alpha_t.
    AlphaCe,
    /// Focal loss alpha_t (1 - p_t)^gamma CE.
    Focal,
    /// Online hard example mining: the top-k candidates of each image by CE.
    Ohem,
    /// SSD hard negative mining: all positives and the hardest `ratio x positives` negatives.
    Ssd,
    /// Fixed-size positive/negative sampling per image (RPN, Fast R-CNN).
    Sampled,
    /// Gradient harmonizing mechanism, GHM-C.
    Ghm,
}

impl StrategyKind {
    /// Every strategy, in report order.
    pub const ALL: [StrategyKind; 7] = [
        StrategyKind::Ce,
        StrategyKind::AlphaCe,
        StrategyKind::Focal,
        StrategyKind::Ohem,
        StrategyKind::Ssd,
        StrategyKind::Sampled,
        StrategyKind::Ghm,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Ce => "ce",
            StrategyKind::AlphaCe => "alpha_ce",
            StrategyKind::Focal => "focal",
            StrategyKind::Ohem => "ohem",
            StrategyKind::Ssd => "ssd",
            StrategyKind::Sampled => "sampled",
            StrategyKind::Ghm => "ghm",
        }
    }

    /// Parses a name as printed by [`StrategyKind::name`].
    pub fn from_name(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the strategy selects candidates per image (and so needs each image's rows
    /// together in the dump).
    pub fn selects_per_image(self) -> bool {
        matches!(self, StrategyKind::Ohem | StrategyKind::Ssd | StrategyKind::Sampled)
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
