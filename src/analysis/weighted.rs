//! The accumulator of every reweighting strategy (the strategies themselves, one file each, are
//! in [`super::strategy`]): sums of a strategy's loss and gradient norm per bucket and per
//! image, and its report entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dataset::ImageCounts;
use super::decisions::{DecisionChunk, Terms};
use super::strategy::{self, Precomputed, Reweighter, Sums};
use super::sum::ExactSum;
use super::Accumulator;
use crate::input::ImageKey;
use crate::report::StrategyReport;

/// Accumulates a reweighting strategy's loss by bucket and by image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedAcc {
    strategy: Reweighter,
    sums: Sums,
}

impl WeightedAcc {
    /// An empty accumulator for `strategy`.
    pub fn new(strategy: Reweighter) -> WeightedAcc {
        WeightedAcc { strategy, sums: Sums::default() }
    }

    /// Builds the report entry. `images` holds every image of the dump (for the normaliser).
    pub fn finish(&self, images: &BTreeMap<ImageKey, ImageCounts>) -> StrategyReport {
        let mut normalized = ExactSum::ZERO;
        for (key, counts) in images {
            if let Some(s) = self.sums.per_image.get(key) {
                normalized += s.value() / counts.positives.max(1) as f64;
            }
        }
        let n_images = images.len().max(1) as f64;
        StrategyReport::from_buckets(
            self.strategy.kind().name(),
            self.strategy.params(),
            super::bucket_sums(&self.sums.buckets),
            normalized.value() / n_images,
        )
    }
}

impl WeightedAcc {
    /// Where the chunk's terms hold the strategy's loss, if they do: the pass then sums every
    /// such strategy in one walk ([`strategy::sum_precomputed`]) into [`WeightedAcc::sums_mut`].
    pub fn precomputed(&self, terms: &Terms) -> Option<Precomputed> {
        self.strategy.precomputed(terms)
    }

    /// The strategy's sums.
    pub fn sums_mut(&mut self) -> &mut Sums {
        &mut self.sums
    }
}

impl Accumulator for WeightedAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        match self.strategy.precomputed(chunk.terms) {
            Some(kind) => strategy::sum_precomputed(chunk, &mut [(kind, &mut self.sums)]),
            None => self.strategy.sum_chunk(chunk, &mut self.sums),
        }
    }

    fn merge(&mut self, other: Self) {
        self.sums.merge(other.sums);
    }
}
