//! Fixed positive/negative sampling, with torchvision `BalancedPositiveNegativeSampler` and
//! detectron2 `subsample_labels` semantics.
//!
//! Per image: n_pos = min(#pos, floor(B f)), n_neg = min(#neg, B - n_pos), each drawn uniformly
//! without replacement. hardmine reports the exact expectation (every positive is kept with
//! probability n_pos / #pos, every negative with n_neg / #neg), the exact variance of each
//! bucket's selected count and loss (sampling without replacement within each stratum: the
//! hypergeometric variance, generalised to candidates with several decisions), and the spread of
//! the bucket loss shares over seeded draws.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Chosen, Image, Kept, Selector, Split};
use crate::analysis::bucket_sums;
use crate::analysis::sum::ExactSum;
use crate::config::{check_fraction, AnalysisConfig};
use crate::error::ConfigError;
use crate::input::ImageKey;
use crate::report::StrategyReport;
use crate::rng::{stable_hash, Rng};

/// Fixed positive/negative sampling settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampledParams {
    /// Candidates sampled per image (`--batch-size-per-image`, default 256).
    pub batch_size_per_image: usize,
    /// Target share of positives (`--positive-fraction`, default 0.5).
    pub positive_fraction: f64,
    /// Seeded draws for the spread of the loss shares (`--draws`, default 100; 0 = none).
    pub draws: usize,
    /// Seed of the draws (`--seed`, default 0).
    pub seed: u64,
}

impl Default for SampledParams {
    fn default() -> Self {
        SampledParams { batch_size_per_image: 256, positive_fraction: 0.5, draws: 100, seed: 0 }
    }
}

impl SampledParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.batch_size_per_image == 0 {
            return Err(ConfigError::invalid(
                "--batch-size-per-image",
                0,
                "sample at least 1 candidate per image (RPN 256, Fast R-CNN 512)",
            ));
        }
        check_fraction("--positive-fraction", self.positive_fraction)?;
        if self.draws > 100_000 {
            return Err(ConfigError::invalid("--draws", self.draws, "at most 100000 draws"));
        }
        Ok(())
    }
}

/// The sampling selector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampled {
    /// Batch size, positive fraction, draws and seed (`--batch-size-per-image`,
    /// `--positive-fraction`, `--preset`, `--draws`, `--seed`).
    pub params: SampledParams,
}

impl Selector for Sampled {
    type Totals = SampledTotals;

    fn from_config(config: &AnalysisConfig) -> Sampled {
        Sampled { params: *config.sampled() }
    }

    fn needs_strata(&self) -> bool {
        true
    }

    fn select(&self, image: &Image<'_>, totals: &mut SampledTotals) -> Kept {
        let plan = Plan::new(image.split, &self.params);
        totals.add_image(image, &plan, &self.params);
        Kept::Each { p_pos: plan.p_pos, p_neg: plan.p_neg }
    }

    /// The first seeded draw.
    fn export(&self, image: &Image<'_>, _kept: Kept) -> Vec<usize> {
        let plan = Plan::new(image.split, &self.params);
        draw(image.split, &plan, &self.params, image.key, 0)
    }

    fn merge(totals: &mut SampledTotals, other: &SampledTotals) {
        totals.merge(other);
    }

    fn report(&self, totals: &SampledTotals, images: u64, _positives: u64) -> StrategyReport {
        use serde_json::json;
        let p = &self.params;
        let params = crate::analysis::strategy::params([
            ("batch_size_per_image", json!(p.batch_size_per_image)),
            ("positive_fraction", json!(p.positive_fraction)),
            ("draws", json!(p.draws)),
            ("seed", json!(p.seed)),
        ]);
        let c = &totals.chosen;
        let mut r = StrategyReport::from_buckets("sampled", params, bucket_sums(&c.buckets), c.mean(images));
        r.extra = totals.extra(r.selected, r.loss.total);
        r
    }
}

/// How many candidates of each kind an image contributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Positives in the image.
    pub n_positives: usize,
    /// Negatives in the image.
    pub n_negatives: usize,
    /// Positives sampled.
    pub n_pos: usize,
    /// Negatives sampled.
    pub n_neg: usize,
    /// Inclusion probability of a positive.
    pub p_pos: f64,
    /// Inclusion probability of a negative.
    pub p_neg: f64,
}

impl Plan {
    /// The sampling plan of an image whose candidates split into `split`.
    pub fn new(split: &Split, p: &SampledParams) -> Plan {
        let (n_positives, n_negatives) = (split.pos.len(), split.n_neg);
        // int(B * f) in Python: truncation of the float product.
        let want = (p.batch_size_per_image as f64 * p.positive_fraction).floor() as usize;
        let n_pos = n_positives.min(want);
        let n_neg = n_negatives.min(p.batch_size_per_image - n_pos);
        let ratio = |k: usize, n: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        Plan {
            n_positives,
            n_negatives,
            n_pos,
            n_neg,
            p_pos: ratio(n_pos, n_positives),
            p_neg: ratio(n_neg, n_negatives),
        }
    }
}

/// Per stratum (negatives, positives), per bucket: candidates, and the sums of their decision
/// counts, CE and gradient norm, added in dump order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Strata {
    /// Candidates per stratum.
    pub n: [usize; 2],
    /// Decisions per stratum and bucket.
    pub count: [[f64; 4]; 2],
    /// CE per stratum and bucket.
    pub loss: [[f64; 4]; 2],
    /// Gradient norm per stratum and bucket.
    pub grad: [[f64; 4]; 2],
}

impl Strata {
    /// The strata of the negatives' and the positives' sums.
    pub fn of(negatives: &Stratum, positives: &Stratum) -> Strata {
        Strata {
            n: [negatives.n, positives.n],
            count: [negatives.count, positives.count],
            loss: [negatives.loss, positives.loss],
            grad: [negatives.grad, positives.grad],
        }
    }
}

/// One stratum's part of [`Strata`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stratum {
    /// Candidates.
    pub n: usize,
    /// Decisions per bucket.
    pub count: [f64; 4],
    /// CE per bucket.
    pub loss: [f64; 4],
    /// Gradient norm per bucket.
    pub grad: [f64; 4],
}

impl Stratum {
    /// Adds one pure candidate: `n` decisions in bucket `B` with CE `ce` and gradient norm `g`
    /// (the same sums as [`Stratum::add`] of its parts: the other buckets add +0.0, which
    /// changes no sum that starts at +0.0).
    #[inline(always)]
    pub fn add_pure<const B: usize>(&mut self, n: u16, ce: f64, g: f64) {
        self.n += 1;
        self.count[B] += f64::from(n);
        self.loss[B] += ce;
        self.grad[B] += g;
    }

    /// Adds one candidate (its [`super::Pile`] columns).
    #[inline(always)]
    pub fn add(&mut self, count: &[u16; 4], loss: &[f64; 4], grad: &[f64; 4]) {
        self.n += 1;
        for b in 0..4 {
            self.count[b] += f64::from(count[b]);
            self.loss[b] += loss[b];
            self.grad[b] += grad[b];
        }
    }
}

/// The sums of squared deviations from the stratum means, per stratum (negatives, positives),
/// [count|loss], bucket, candidate after candidate ([`super::Pile::visit`]); each stratum's
/// sums apart, so that they stay in registers.
struct Deviations {
    /// [stratum][count|loss][bucket] means.
    means: [[[f64; 4]; 2]; 2],
    /// [stratum][count|loss][bucket] squared deviation of a zero (a bucket a pure candidate has
    /// no decision in): the same bits as computing it per candidate.
    zero: [[[f64; 4]; 2]; 2],
    neg: [[f64; 4]; 2],
    pos: [[f64; 4]; 2],
}

impl Deviations {
    fn new(means: &[[[f64; 4]; 2]; 2]) -> Deviations {
        let zero = means.map(|m| m.map(|m| m.map(|x| (0.0 - x) * (0.0 - x))));
        Deviations { means: *means, zero, neg: [[0.0; 4]; 2], pos: [[0.0; 4]; 2] }
    }
}

impl super::pile::Visit for Deviations {
    #[inline(always)]
    fn pure<const B: usize>(&mut self, n: u16, ce: f64, _g: f64) {
        let s = usize::from(B >= 2);
        let (dev, means, zero) =
            (if B >= 2 { &mut self.pos } else { &mut self.neg }, &self.means[s], &self.zero[s]);
        for b in 0..4 {
            if b == B {
                let dc = f64::from(n) - means[0][b];
                let dl = ce - means[1][b];
                dev[0][b] += dc * dc;
                dev[1][b] += dl * dl;
            } else {
                dev[0][b] += zero[0][b];
                dev[1][b] += zero[1][b];
            }
        }
    }

    /// The negatives' sums in locals (the same adds in the same order as
    /// [`Deviations::pure`]'s).
    #[inline(always)]
    fn easy_negatives(&mut self, n: &[u16], ce: &[f64], _g: &[f64]) {
        let (means, zero) = (self.means[0], self.zero[0]);
        let mut dev = self.neg;
        for (&k, &ce) in n.iter().zip(ce) {
            let dc = f64::from(k) - means[0][0];
            let dl = ce - means[1][0];
            dev[0][0] += dc * dc;
            dev[1][0] += dl * dl;
            for b in 1..4 {
                dev[0][b] += zero[0][b];
                dev[1][b] += zero[1][b];
            }
        }
        self.neg = dev;
    }

    #[inline(always)]
    fn mixed(&mut self, positive: bool, parts: &super::pile::Parts) {
        let s = usize::from(positive);
        let (dev, means) = (if positive { &mut self.pos } else { &mut self.neg }, &self.means[s]);
        for b in 0..4 {
            let dc = f64::from(parts.count[b]) - means[0][b];
            let dl = parts.loss[b] - means[1][b];
            dev[0][b] += dc * dc;
            dev[1][b] += dl * dl;
        }
    }
}

/// Sampling totals over finalised images.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampledTotals {
    /// The expectation, in the standard fields.
    pub chosen: Chosen,
    /// Per bucket: variance of the selected decision count.
    pub var_count: [ExactSum; 4],
    /// Per bucket: variance of the selected CE.
    pub var_loss: [ExactSum; 4],
    /// Per draw, per bucket: selected CE.
    pub draws: Vec<[ExactSum; 4]>,
    /// Per draw: selected decisions.
    pub draw_selected: Vec<u64>,
}

impl SampledTotals {
    /// Adds one image's expectation, variances and draws (its split made by
    /// [`Split::with_strata`]) under `plan`.
    pub fn add_image(&mut self, image: &Image<'_>, plan: &Plan, p: &SampledParams) {
        let Image { key, pile, split, norm } = *image;
        self.chosen.count_all(&split.counts);
        // Per stratum (negatives, positives), per bucket: sums of decision counts, CE and
        // gradient; the expectation is each sum times the stratum's inclusion probability.
        // f64 sums: the image is complete and its candidates are in canonical (dump) order, so
        // the sums do not depend on how the dump was split.
        let Strata { n, count, loss, grad } = split
            .strata
            .clone()
            .expect("the split of an image with sampling scans its strata (Split::with_strata)");
        let pi = [plan.p_neg, plan.p_pos];
        let mut image_loss = 0.0;
        for s in 0..2 {
            for b in 0..4 {
                let bucket = &mut self.chosen.buckets[b];
                bucket.selected += pi[s] * count[s][b];
                let l = pi[s] * loss[s][b];
                bucket.loss += l;
                bucket.grad += pi[s] * grad[s][b];
                image_loss += l;
            }
        }
        self.chosen.normalized += image_loss / norm;

        // Exact variance of sampling n of N without replacement in each stratum:
        // n (N - n) / (N - 1) times the population variance of the per-candidate values.
        let k = [plan.n_neg, plan.n_pos];
        let means: [[[f64; 4]; 2]; 2] = [0, 1].map(|s| {
            let m = n[s].max(1) as f64;
            [count[s].map(|x| x / m), loss[s].map(|x| x / m)]
        });
        let mut dev = Deviations::new(&means);
        for (_, s) in pile.segments() {
            s.visit(&mut dev);
        }
        let dev = [dev.neg, dev.pos]; // [stratum][count|loss][bucket]
        for s in 0..2 {
            let (big_n, k) = (n[s], k[s]);
            if big_n <= 1 || k == 0 || k == big_n {
                continue; // nothing random in this stratum
            }
            let factor = k as f64 * (big_n - k) as f64 / (big_n - 1) as f64 / big_n as f64;
            for (b, (vc, vl)) in self.var_count.iter_mut().zip(self.var_loss.iter_mut()).enumerate() {
                *vc += factor * dev[s][0][b];
                *vl += factor * dev[s][1][b];
            }
        }

        if self.draws.len() < p.draws {
            self.draws.resize(p.draws, [ExactSum::ZERO; 4]);
            self.draw_selected.resize(p.draws, 0);
        }
        let mut pools = Pools::new(split, p, key);
        // The positives' CE per bucket and decisions, looked up once for every draw (a
        // positive is a mixed candidate, whose parts are found by a search).
        let positives: Vec<([f64; 4], u64)> = if p.draws == 0 {
            Vec::new()
        } else {
            split.pos.iter().map(|&i| pile.at(i)).map(|(seg, j)| (seg.loss(j), seg.decisions(j))).collect()
        };
        let mut drawn = Vec::with_capacity(plan.n_pos + plan.n_neg);
        for (d, (sums, selected)) in
            self.draws.iter_mut().zip(&mut self.draw_selected).take(p.draws).enumerate()
        {
            // f64 within the image (its draw is a fixed sequence of candidates), one exact add
            // per bucket and image.
            let mut loss = [0.0f64; 4];
            pools.draw_into(plan, d as u64, &mut drawn);
            for &(i, rank) in &drawn {
                let (l, n) = match positives.get(rank) {
                    Some(&terms) => terms,
                    None => {
                        let (seg, j) = pile.at(i);
                        (seg.loss(j), seg.decisions(j))
                    }
                };
                for (sum, l) in loss.iter_mut().zip(l) {
                    *sum += l;
                }
                *selected += n;
            }
            for (sum, l) in sums.iter_mut().zip(loss) {
                *sum += l;
            }
        }
    }

    /// Adds another part's totals.
    pub fn merge(&mut self, o: &SampledTotals) {
        self.chosen.merge(&o.chosen);
        for b in 0..4 {
            self.var_count[b] += o.var_count[b];
            self.var_loss[b] += o.var_loss[b];
        }
        if self.draws.len() < o.draws.len() {
            self.draws.resize(o.draws.len(), [ExactSum::ZERO; 4]);
            self.draw_selected.resize(o.draws.len(), 0);
        }
        for (d, sums) in o.draws.iter().enumerate() {
            for (a, b) in self.draws[d].iter_mut().zip(sums) {
                *a += *b;
            }
            self.draw_selected[d] += o.draw_selected[d];
        }
    }
}

impl SampledTotals {
    /// The extra report fields: exact standard deviations, the spread over draws, and
    /// torchvision's normalisation (mean CE over the sampled candidates' decisions).
    pub fn extra(&self, selected: f64, total: f64) -> BTreeMap<String, serde_json::Value> {
        use serde_json::json;
        const NAMES: [&str; 4] = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];
        let by_bucket =
            |f: &dyn Fn(usize) -> serde_json::Value| -> serde_json::Map<String, serde_json::Value> {
                NAMES.iter().enumerate().map(|(b, n)| (n.to_string(), f(b))).collect()
            };
        let mut extra = BTreeMap::new();
        extra.insert("torchvision_mean".into(), json!(if selected > 0.0 { total / selected } else { 0.0 }));
        extra.insert(
            "selected_std".into(),
            json!(by_bucket(&|b| json!(self.var_count[b].value().max(0.0).sqrt()))),
        );
        extra.insert(
            "loss_std".into(),
            json!(by_bucket(&|b| json!(self.var_loss[b].value().max(0.0).sqrt()))),
        );
        if !self.draws.is_empty() {
            let shares: Vec<[f64; 4]> = self
                .draws
                .iter()
                .map(|d| {
                    let v = d.map(|s| s.value());
                    let t: f64 = v.iter().sum();
                    v.map(|x| if t > 0.0 { x / t } else { 0.0 })
                })
                .collect();
            let share_stats = by_bucket(&|b| {
                let xs: Vec<f64> = shares.iter().map(|s| s[b]).collect();
                let (mean, sd, ci) = spread(&xs);
                json!({"mean": mean, "std": sd, "ci95": ci})
            });
            let loss_stats = by_bucket(&|b| {
                let xs: Vec<f64> = self.draws.iter().map(|d| d[b].value()).collect();
                let (mean, sd, ci) = spread(&xs);
                json!({"mean": mean, "std": sd, "ci95": ci})
            });
            let sel: Vec<f64> = self.draw_selected.iter().map(|&n| n as f64).collect();
            let (mean, sd, ci) = spread(&sel);
            extra.insert(
                "draws".into(),
                json!({
                    "n": self.draws.len(),
                    "loss_share": share_stats,
                    "loss": loss_stats,
                    "selected": {"mean": mean, "std": sd, "ci95": ci},
                }),
            );
        }
        extra
    }
}

/// The positive and negative candidates of an image, and its random stream's seed.
struct Pools<'a> {
    split: &'a Split,
    seed: u64,
    floyd: Floyd,
}

impl<'a> Pools<'a> {
    fn new(split: &'a Split, p: &SampledParams, key: &ImageKey) -> Pools<'a> {
        Pools { split, seed: p.seed ^ stable_hash(key.to_string().as_bytes()), floyd: Floyd::default() }
    }

    fn draw(&mut self, plan: &Plan, d: u64) -> Vec<usize> {
        let mut out = Vec::with_capacity(plan.n_pos + plan.n_neg);
        self.draw_into(plan, d, &mut out);
        out.into_iter().map(|(i, _)| i).collect()
    }

    /// Draw `d` into `out` (cleared first): each sampled candidate's index, in index order,
    /// and its rank among the positives (`usize::MAX` for a negative).
    fn draw_into(&mut self, plan: &Plan, d: u64, out: &mut Vec<(usize, usize)>) {
        out.clear();
        let mut rng = Rng::new(self.seed, d);
        let split = self.split;
        let pos = self.floyd.choose(&mut rng, split.pos.len(), plan.n_pos);
        let neg = split.negatives(self.floyd.choose(&mut rng, split.n_neg, plan.n_neg));
        // Both in index order: merged, not sorted.
        let mut pos = pos.into_iter().map(|q| (split.pos[q], q)).peekable();
        for i in neg {
            while let Some(p) = pos.next_if(|&(p, _)| p < i) {
                out.push(p);
            }
            out.push((i, usize::MAX));
        }
        out.extend(pos);
    }
}

/// One seeded draw of an image whose candidates split into `split`: the indices of the sampled
/// candidates, in index order. The stream depends only on the seed, the image id and the draw
/// number, so draws do not change with the thread count or the order in which images are
/// finalised.
pub fn draw(split: &Split, plan: &Plan, p: &SampledParams, key: &ImageKey, d: u64) -> Vec<usize> {
    Pools::new(split, p, key).draw(plan, d)
}

/// `k` distinct indices of `0..n`, uniformly (Floyd's algorithm), in ascending order.
#[cfg(test)]
fn choose(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    Floyd::default().choose(rng, n, k)
}

/// Floyd's algorithm with a membership bitmap kept from draw to draw (cleared after each): a
/// pick is a bit test, not a search and an insertion into a sorted list.
#[derive(Default)]
struct Floyd {
    seen: Vec<u64>,
}

impl Floyd {
    /// `k` distinct indices of `0..n`, uniformly, in ascending order.
    fn choose(&mut self, rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
        if k >= n {
            return (0..n).collect();
        }
        if self.seen.len() < n.div_ceil(64) {
            self.seen.resize(n.div_ceil(64), 0);
        }
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        for j in (n - k)..n {
            let t = rng.below(j as u64 + 1) as usize;
            // `j` itself was never picked: every earlier pick is at most the earlier `j`.
            let pick = if (self.seen[t / 64] >> (t % 64)) & 1 == 1 { j } else { t };
            self.seen[pick / 64] |= 1 << (pick % 64);
            chosen.push(pick);
        }
        for &c in &chosen {
            self.seen[c / 64] = 0;
        }
        chosen.sort_unstable();
        chosen
    }
}

/// Mean, sample standard deviation and the central 95% interval of `xs`.
pub fn spread(xs: &[f64]) -> (f64, f64, [f64; 2]) {
    use statrs::statistics::{Data, OrderStatistics};
    if xs.is_empty() {
        return (0.0, 0.0, [0.0, 0.0]);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let mut data = Data::new(xs.to_vec());
    (mean, sd, [data.quantile(0.025), data.quantile(0.975)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floyd_draws_are_uniform_and_distinct() {
        let mut rng = Rng::new(3, 4);
        let mut hits = [0u32; 10];
        for _ in 0..20_000 {
            let s = choose(&mut rng, 10, 3);
            assert_eq!(s.len(), 3);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            for i in s {
                hits[i] += 1;
            }
        }
        // Each index is chosen with probability 3/10: 6000 expected, sd ~65.
        for h in hits {
            assert!((h as f64 - 6000.0).abs() < 400.0, "{hits:?}");
        }
        assert_eq!(choose(&mut rng, 4, 9), vec![0, 1, 2, 3]);
    }

    #[test]
    fn the_plan_follows_torchvision_and_detectron2() {
        use crate::analysis::select::{Candidate, Pile, Piles};
        let cand = |positive| Candidate {
            file: 0,
            count: [1, 0, 0, 0],
            positive,
            row: 0,
            ce: 0.0,
            focal: 0.0,
            loss: [0.0; 4],
            grad: [0.0; 4],
            info: None,
        };
        let cands: Vec<Candidate> = (0..1000).map(|i| cand(i < 10)).collect();
        let p = SampledParams { batch_size_per_image: 256, positive_fraction: 0.5, draws: 0, seed: 0 };
        let plan = Plan::new(&Split::of(&Piles::new(vec![Pile::from_candidates(&cands)])), &p);
        assert_eq!((plan.n_pos, plan.n_neg), (10, 246));
        assert_eq!(plan.p_pos, 1.0);
        // B larger than the image: everything is taken.
        let p = SampledParams { batch_size_per_image: 5000, ..p };
        let plan = Plan::new(&Split::of(&Piles::new(vec![Pile::from_candidates(&cands)])), &p);
        assert_eq!((plan.n_pos, plan.n_neg, plan.p_neg), (10, 990, 1.0));
        // int(512 * 0.25) = 128 positives at most.
        let many: Vec<Candidate> = (0..1000).map(|i| cand(i < 500)).collect();
        let p = SampledParams { batch_size_per_image: 512, positive_fraction: 0.25, draws: 0, seed: 0 };
        assert_eq!(Plan::new(&Split::of(&Piles::new(vec![Pile::from_candidates(&many)])), &p).n_pos, 128);
    }

    #[test]
    fn spread_gives_mean_sd_and_interval() {
        let xs: Vec<f64> = (1..=101).map(f64::from).collect();
        let (m, sd, ci) = spread(&xs);
        assert_eq!(m, 51.0);
        assert!((sd - 29.3002).abs() < 1e-3);
        assert!(ci[0] > 2.0 && ci[0] < 4.0 && ci[1] > 98.0 && ci[1] < 100.0, "{ci:?}");
    }

    #[test]
    fn deviations_are_the_naive_sums_over_every_candidate_and_bucket() {
        use crate::analysis::select::{pile, Pile};
        let mut rng = Rng::new(4, 4);
        let cands = pile::tests::random_candidates(&mut rng, 4000);
        let means: [[[f64; 4]; 2]; 2] = [0, 1]
            .map(|s| [0, 1].map(|k| [0, 1, 2, 3].map(|b| (s + 1) as f64 * 0.1 + k as f64 + b as f64 * 0.37)));
        let mut dev = Deviations::new(&means);
        for part in [&cands[..1234], &cands[1234..]] {
            Pile::from_candidates(part).visit(&mut dev);
        }
        let mut naive = [[[0.0f64; 4]; 2]; 2];
        for c in &cands {
            let s = usize::from(c.positive);
            for b in 0..4 {
                let dc = f64::from(c.count[b]) - means[s][0][b];
                let dl = c.loss[b] - means[s][1][b];
                naive[s][0][b] += dc * dc;
                naive[s][1][b] += dl * dl;
            }
        }
        let bits = |x: [[[f64; 4]; 2]; 2]| x.map(|v| v.map(|w| w.map(f64::to_bits)));
        assert_eq!(bits([dev.neg, dev.pos]), bits(naive));
    }

    #[test]
    fn floyd_with_a_bitmap_picks_what_the_sorted_list_version_picks() {
        // Floyd's algorithm kept sorted by search and insertion, as hardmine drew before.
        fn reference(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
            if k >= n {
                return (0..n).collect();
            }
            let mut chosen: Vec<usize> = Vec::new();
            for j in (n - k)..n {
                let t = rng.below(j as u64 + 1) as usize;
                match chosen.binary_search(&t) {
                    Ok(_) => chosen.push(j),
                    Err(at) => chosen.insert(at, t),
                }
            }
            chosen
        }
        let mut floyd = Floyd::default();
        for (n, k) in [
            (0usize, 0usize),
            (1, 1),
            (10, 3),
            (10, 9),
            (64, 63),
            (65, 64),
            (200, 150),
            (1000, 256),
            (100_000, 159),
            (5, 9),
        ] {
            for seed in 0..20 {
                let (mut a, mut b) = (Rng::new(seed, n as u64), Rng::new(seed, n as u64));
                // One chooser reused for every size: its bitmap is left clear.
                assert_eq!(floyd.choose(&mut a, n, k), reference(&mut b, n, k), "n {n}, k {k}, seed {seed}");
                assert_eq!(a.next_u64(), b.next_u64(), "the same draws from the stream");
            }
        }
        assert!(floyd.seen.iter().all(|&w| w == 0));
    }
}
