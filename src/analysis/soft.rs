//! The entropy view of soft targets: CE(y, p) = H(y) + KL(y || p).
//!
//! With a soft target y in (0, 1) (an IoU-quality target), the cross-entropy cannot reach 0: its
//! minimum, at p = y, is the target's own binary entropy H(y) = -(y ln y + (1 - y) ln(1 - y)).
//! Per bucket, this accumulator splits CE into that irreducible part and the excess
//! KL(y || p) = CE - H(y), the part a model can still remove. Hard targets (0 or 1) have
//! H = 0 and KL = CE. Only binary dumps can hold soft targets; the section is reported when a
//! dump has at least one.
//!
//! Sums follow the pass's rule (f64 within a run of a summation block, one exact add per run),
//! so the numbers do not depend on threads or row groups.

use serde::{Deserialize, Serialize};

use super::decisions::DecisionChunk;
use super::sum::ExactSum;
use super::Accumulator;
use crate::input::Targets;
use crate::report::{SoftTargetBucket, SoftTargets, BUCKET_NAMES};

/// Binary entropy H(y) in nats (0 at y = 0 and y = 1).
#[inline]
pub fn entropy(y: f64) -> f64 {
    if y <= 0.0 || y >= 1.0 {
        0.0
    } else {
        -(y * y.ln() + (1.0 - y) * (1.0 - y).ln())
    }
}

/// Per bucket: decisions with a soft target, and the weighted CE, H(y) and KL of all decisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoftAcc {
    soft: [u64; 4],
    ce: [ExactSum; 4],
    entropy: [ExactSum; 4],
    kl: [ExactSum; 4],
}

impl Accumulator for SoftAcc {
    fn observe(&mut self, chunk: &DecisionChunk<'_>) {
        // Dense dumps have hard targets only.
        if !matches!(chunk.batch.targets, Targets::Binary(_)) {
            return;
        }
        for run in chunk.runs {
            let mut sums = [[0.0f64; 4]; 3];
            let decisions = chunk.decisions.slice(run.start..run.end);
            let meta = &chunk.meta[run.start..run.end];
            for (d, m) in decisions.iter().zip(meta) {
                let b = m.bucket as usize;
                let w = m.weight(chunk.batch.weight.as_deref());
                let ce = d.ce * w;
                let h = entropy(d.y) * w;
                self.soft[b] += u64::from(d.y > 0.0 && d.y < 1.0);
                sums[0][b] += ce;
                sums[1][b] += h;
                // Clamped: rounding can take CE a hair below H(y) at p = y.
                sums[2][b] += (ce - h).max(0.0);
            }
            for (b, ((ce, entropy), kl)) in
                self.ce.iter_mut().zip(&mut self.entropy).zip(&mut self.kl).enumerate()
            {
                *ce += sums[0][b];
                *entropy += sums[1][b];
                *kl += sums[2][b];
            }
        }
    }

    fn merge(&mut self, o: Self) {
        for b in 0..4 {
            self.soft[b] += o.soft[b];
            self.ce[b] += o.ce[b];
            self.entropy[b] += o.entropy[b];
            self.kl[b] += o.kl[b];
        }
    }
}

impl SoftAcc {
    /// The report section, when the dump had soft targets.
    pub fn finish(&self) -> Option<SoftTargets> {
        let soft: u64 = self.soft.iter().sum();
        if soft == 0 {
            return None;
        }
        let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let bucket = |ce: f64, entropy: f64, kl: f64, soft: u64| SoftTargetBucket {
            soft_decisions: soft,
            ce,
            entropy,
            kl,
            entropy_share: share(entropy, ce),
        };
        let mut total = [ExactSum::ZERO; 3];
        let mut buckets = std::collections::BTreeMap::new();
        for (b, name) in BUCKET_NAMES.iter().enumerate() {
            total[0] += self.ce[b];
            total[1] += self.entropy[b];
            total[2] += self.kl[b];
            buckets.insert(
                name.to_string(),
                bucket(self.ce[b].value(), self.entropy[b].value(), self.kl[b].value(), self.soft[b]),
            );
        }
        Some(SoftTargets {
            total: bucket(total[0].value(), total[1].value(), total[2].value(), soft),
            buckets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Decision;

    #[test]
    fn ce_is_the_entropy_plus_the_kl_divergence() {
        // y = 0.3, p = sigmoid(0.4): KL written out, independently of CE - H.
        let (x, y) = (0.4f64, 0.3f64);
        let p = 1.0 / (1.0 + (-x).exp());
        let kl = y * (y / p).ln() + (1.0 - y) * ((1.0 - y) / (1.0 - p)).ln();
        let d = Decision::from_logit(x, y);
        assert!((d.ce - entropy(y) - kl).abs() < 1e-15, "{} vs {}", d.ce - entropy(y), kl);
        // H(0.5) = ln 2; hard targets have none.
        assert!((entropy(0.5) - std::f64::consts::LN_2).abs() < 1e-16);
        assert_eq!((entropy(0.0), entropy(1.0)), (0.0, 0.0));
    }
}
