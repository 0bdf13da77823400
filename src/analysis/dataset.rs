//! Dataset counts: anchors, decisions, positives, negatives, ignored anchors, per image.
//!
//! Every image seen is recorded, including images whose anchors are all ignored: they count in
//! the mean over images of the normalised loss, as in torchvision's RetinaNet head.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decisions::{DecisionChunk, Meta};
use super::Accumulator;
use crate::input::{Batch, ImageKey, Targets};

/// Counts for one image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCounts {
    /// Rows of the image (anchors in a dense dump, decisions in a binary one).
    pub rows: u64,
    /// Ignored anchors (label -2).
    pub ignored: u64,
    /// Valid decisions.
    pub decisions: u64,
    /// Positive decisions (= positive anchors in dense dumps): the per-image normaliser.
    pub positives: u64,
}

impl ImageCounts {
    fn merge(&mut self, o: &ImageCounts) {
        self.rows += o.rows;
        self.ignored += o.ignored;
        self.decisions += o.decisions;
        self.positives += o.positives;
    }
}

/// Mergeable dataset counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetAcc {
    /// Counts per image, keyed by image id.
    #[serde(with = "crate::analysis::pairs")]
    pub images: BTreeMap<ImageKey, ImageCounts>,
    /// Rows skipped by the `--on-invalid skip` policy, by reason.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
}

impl Accumulator for DatasetAcc {
    fn observe_batch(&mut self, batch: &Batch) {
        for (reason, n) in &batch.skipped {
            *self.skipped.entry(reason.clone()).or_default() += n;
        }
        for run in &batch.images {
            let ignored = match &batch.targets {
                Targets::Labels(l) => l[run.start..run.end].iter().filter(|&&l| l == -2).count() as u64,
                Targets::Binary(_) => 0,
            };
            let e = self.images.entry(run.key.clone()).or_default();
            e.rows += (run.end - run.start) as u64;
            e.ignored += ignored;
        }
    }

    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        for run in chunk.runs {
            let positives = positives(&chunk.meta[run.start..run.end]);
            let key = &chunk.batch.images[run.image].key;
            // The entry exists: observe_batch saw every run of the batch first.
            let e = self.images.entry(key.clone()).or_default();
            e.decisions += (run.end - run.start) as u64;
            e.positives += positives;
        }
    }

    fn merge(&mut self, other: Self) {
        for (k, v) in other.images {
            self.images.entry(k).or_default().merge(&v);
        }
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
    }
}

/// The positive decisions of `meta`: buckets 2 and 3 ([`super::decisions::Bucket::is_positive`]), so `bucket / 2`
/// summed, four at a time in independent sums (no compare and branch per decision).
fn positives(meta: &[Meta]) -> u64 {
    let mut sums = [0u64; 4];
    let mut quads = meta.chunks_exact(4);
    for q in &mut quads {
        for l in 0..4 {
            sums[l] += u64::from(q[l].bucket as u8 >> 1);
        }
    }
    let tail: u64 = quads.remainder().iter().map(|m| u64::from(m.bucket as u8 >> 1)).sum();
    sums.iter().sum::<u64>() + tail
}

impl DatasetAcc {
    /// Totals over all images.
    pub fn totals(&self) -> ImageCounts {
        let mut t = ImageCounts::default();
        for c in self.images.values() {
            t.merge(c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::decisions::Bucket;

    #[test]
    fn positives_counts_the_positive_buckets_at_every_length() {
        let mut rng = crate::rng::Rng::new(5, 0);
        let meta: Vec<Meta> =
            (0..203).map(|row| Meta { row, class: 0, bucket: Bucket::ALL[rng.below(4) as usize] }).collect();
        for n in 0..meta.len() {
            let m = &meta[..n];
            assert_eq!(positives(m), m.iter().filter(|m| m.bucket.is_positive()).count() as u64, "{n}");
        }
        assert!(positives(&meta) > 0);
    }
}
