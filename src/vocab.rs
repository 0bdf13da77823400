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

/// The list of strategies, one line each: the only list (see docs/architecture.md, "How to add a
/// strategy"). Each line reads
/// `Variant "name" default|optional any|sigmoid family`, where `family` is `reweight(Type)` (a
/// per-decision loss in `analysis::strategy`, `Type` relative to that module), `select(Type)` (a
/// per-image selector in `analysis::select`, likewise) or `density` (GHM). `optional` strategies run only
/// when named in `--strategies`; `sigmoid` ones refuse softmax dumps. The order is the report
/// order of the default set.
///
/// The list is expanded three times: here into [`StrategyKind`], in `analysis::strategy` into the
/// dispatch over the reweighting strategies and in `analysis::select` into the dispatch over the
/// selectors (`strategy_list!(then)` calls `then! { ...lines }`).
macro_rules! strategy_list {
    ($then:ident) => {
        $then! {
            /// Plain cross-entropy on every decision.
            Ce "ce" default any reweight(ce::Ce),
            /// Cross-entropy weighted by alpha_t.
            AlphaCe "alpha_ce" default any reweight(alpha_ce::AlphaCe),
            /// Focal loss alpha_t (1 - p_t)^gamma CE.
            Focal "focal" default any reweight(focal::Focal),
            /// Online hard example mining: the top-k candidates of each image by CE.
            Ohem "ohem" default any select(ohem::Ohem),
            /// SSD hard negative mining: all positives and the hardest `ratio x positives` negatives.
            Ssd "ssd" default any select(ssd::Ssd),
            /// Fixed-size positive/negative sampling per image (RPN, Fast R-CNN).
            Sampled "sampled" default any select(sampled::Sampled),
            /// Gradient harmonizing mechanism, GHM-C.
            Ghm "ghm" default any density,
            /// Quality focal loss (GFL): |y - p|^beta BCE(p, y).
            Qfl "qfl" optional sigmoid reweight(qfl::Qfl),
            /// Varifocal loss (VarifocalNet): y BCE for positives, alpha p^gamma BCE for negatives.
            Vfl "vfl" optional sigmoid reweight(vfl::Vfl),
        }
    };
}
pub(crate) use strategy_list;

/// Expands the strategy list into [`StrategyKind`].
macro_rules! define_kind {
    (@default default) => { true };
    (@default optional) => { false };
    (@sigmoid sigmoid) => { true };
    (@sigmoid any) => { false };
    (@select select) => { true };
    (@select $other:ident) => { false };
    ($($(#[$doc:meta])* $variant:ident $name:literal $default:ident $act:ident $family:ident $(($($ty:tt)*))?,)*) => {
        /// A loss or selection strategy compared by `hardmine analyze`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum StrategyKind {
            $($(#[$doc])* $variant,)*
        }

        impl StrategyKind {
            /// Every strategy, in list order.
            pub const ALL: &'static [StrategyKind] = &[$(StrategyKind::$variant),*];

            /// The name used on the command line and in reports.
            pub fn name(self) -> &'static str {
                match self {
                    $(StrategyKind::$variant => $name,)*
                }
            }

            /// Whether the strategy runs when `--strategies` is not given.
            pub fn on_by_default(self) -> bool {
                match self {
                    $(StrategyKind::$variant => define_kind!(@default $default),)*
                }
            }

            /// Whether the strategy is a sigmoid loss (refused for softmax dumps).
            pub fn sigmoid_only(self) -> bool {
                match self {
                    $(StrategyKind::$variant => define_kind!(@sigmoid $act),)*
                }
            }

            /// Whether the strategy selects candidates per image (and so needs each image's rows
            /// together in the dump).
            pub fn selects_per_image(self) -> bool {
                match self {
                    $(StrategyKind::$variant => define_kind!(@select $family),)*
                }
            }
        }
    };
}

strategy_list!(define_kind);

impl StrategyKind {
    /// The strategies that run when `--strategies` is not given, in report order.
    pub fn defaults() -> Vec<StrategyKind> {
        StrategyKind::ALL.iter().copied().filter(|k| k.on_by_default()).collect()
    }

    /// Parses a name as printed by [`StrategyKind::name`].
    pub fn from_name(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
