//! SSD hard negative mining, with torchvision `SSD.compute_loss` semantics.
//!
//! Per image: every positive, plus the `neg_pos_ratio x #positives` negatives with the highest
//! CE (capped at the number of negatives). An image without positives contributes no negatives,
//! as in torchvision and mmdetection's `SSDHead`; `EmptyImages::AllNegatives` takes all of them
//! instead, as some mmdetection-derived heads do.
//!
//! One deliberate difference: when `ratio x #positives` exceeds the negatives, torchvision's
//! rank trick (`idx.sort(1)[1] < num_negative`) also counts positives' losses a second time;
//! hardmine caps at the negatives, as mmdetection does.

use super::{top, Candidate, Split};
use crate::config::{EmptyImages, SsdParams};

/// Indices of the selected candidates (in dump order, split by `split`): positives in dump
/// order, then the mined negatives, hardest first.
pub fn select(cands: &[&Candidate], split: &Split, p: &SsdParams) -> Vec<usize> {
    let (pos, neg) = (&split.pos, &split.neg);
    let m = if pos.is_empty() {
        match p.empty_images {
            EmptyImages::NoNegatives => 0,
            EmptyImages::AllNegatives => neg.len(),
        }
    } else {
        pos.len().saturating_mul(p.neg_pos_ratio)
    };
    let neg = top(cands, neg, m.min(cands.len()), |c| c.ce);
    [pos.as_slice(), &neg].concat()
}
