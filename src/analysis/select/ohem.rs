//! Online hard example mining (Shrivastava et al. 2016).
//!
//! Per image: rank the candidates by their loss, hardest first (ties: earlier in the dump first), and
//! keep the top k. With `nms`, candidates are first suppressed greedily in that order as
//! torchvision's `ops.nms` does (a candidate is dropped when its IoU with an already kept box
//! exceeds the threshold), then the first k survivors are kept. With `pos_fraction` f, at most
//! floor(f k) positives are kept and the rest of the k slots go to negatives, each by loss (the
//! focal-loss paper's "OHEM 1:3" is f = 0.25).
//!
//! The loss ranked by ([`score`]) is the candidate's CE plus its box-regression loss when the
//! dump has a `box_loss` column, as the OHEM paper ranks RoIs (classification + box loss), and
//! CE alone otherwise, as mmdetection's `OHEMSampler` does; the report's `extra.ranked_by` says
//! which. The selected *loss* reported is always the classification CE.

use serde::{Deserialize, Serialize};

use super::{rank, top, top_ce, Chosen, Image, Kept, Pile, Piles, Selector};
use crate::analysis::bucket_sums;
use crate::config::{check_fraction, AnalysisConfig};
use crate::error::ConfigError;
use crate::report::StrategyReport;

/// OHEM settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OhemParams {
    /// Candidates kept per image (`--ohem-k`, default 128).
    pub k: usize,
    /// Greedy NMS IoU threshold applied in loss order before taking the top k (`--ohem-nms`);
    /// needs the box columns.
    pub nms: Option<f64>,
    /// At most `floor(fraction * k)` positives, the rest negatives (`--ohem-pos-fraction`; the
    /// focal-loss paper's "OHEM 1:3" is 0.25).
    pub pos_fraction: Option<f64>,
}

impl Default for OhemParams {
    fn default() -> Self {
        OhemParams { k: 128, nms: None, pos_fraction: None }
    }
}

impl OhemParams {
    /// Checks the settings; the error names the flag and what it accepts.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.k == 0 {
            return Err(ConfigError::invalid(
                "--ohem-k",
                0,
                "keep at least 1 candidate per image (default 128)",
            ));
        }
        if let Some(t) = self.nms {
            if !(t > 0.0 && t <= 1.0) {
                return Err(ConfigError::invalid(
                    "--ohem-nms",
                    t,
                    "the IoU threshold must be in (0, 1] (the OHEM paper uses 0.7)",
                ));
            }
        }
        if let Some(f) = self.pos_fraction {
            check_fraction("--ohem-pos-fraction", f)?;
        }
        Ok(())
    }
}

/// The OHEM selector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ohem {
    /// k, NMS and the positive quota (`--ohem-k`, `--ohem-nms`, `--ohem-pos-fraction`).
    pub params: OhemParams,
}

/// OHEM's totals: the selection's sums, and whether candidates were ranked with a box loss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OhemTotals {
    /// The selection's sums.
    pub chosen: Chosen,
    /// Whether the dump had a `box_loss` column (ranking by CE + box loss).
    pub with_box_loss: bool,
}

/// The loss OHEM ranks by, of candidate `j` of `pile`: its CE plus its box-regression loss, as
/// the OHEM paper does, when the dump has a `box_loss` column (0 otherwise: CE alone, as
/// mmdetection's `OHEMSampler`, which ranks by the classification loss only).
#[inline]
pub fn score(pile: &Pile, j: usize) -> f64 {
    pile.ce[j] + pile.box_loss(j)
}

/// A candidate's score: a column of candidate `j` of a pile, or a function of its columns.
pub type Score = fn(&Pile, usize) -> f64;

/// [`score`], or CE alone without reading the candidates' info (an image's candidates do not
/// fit in cache: another column is another trip to memory).
fn scorer(piles: &Piles) -> Score {
    if piles.has_box_loss() {
        score
    } else {
        |p, j| p.ce[j]
    }
}

impl Selector for Ohem {
    type Totals = OhemTotals;

    fn from_config(config: &AnalysisConfig) -> Ohem {
        Ohem { params: *config.ohem() }
    }

    fn select(&self, image: &Image<'_>, totals: &mut OhemTotals) -> Kept {
        totals.with_box_loss |= image.pile.has_box_loss();
        totals.chosen.take(image, select(image.pile, &self.params))
    }

    fn merge(totals: &mut OhemTotals, other: &OhemTotals) {
        totals.chosen.merge(&other.chosen);
        totals.with_box_loss |= other.with_box_loss;
    }

    fn report(&self, totals: &OhemTotals, images: u64, _positives: u64) -> StrategyReport {
        use serde_json::json;
        let p = &self.params;
        let params = crate::analysis::strategy::params([
            ("k", json!(p.k)),
            ("nms", json!(p.nms)),
            ("pos_fraction", json!(p.pos_fraction)),
        ]);
        let c = &totals.chosen;
        let mut r = StrategyReport::from_buckets("ohem", params, bucket_sums(&c.buckets), c.mean(images));
        let ranked_by = if totals.with_box_loss {
            "ce + box_loss: classification plus box-regression loss, as the OHEM paper"
        } else {
            "ce: classification loss only, as mmdetection's OHEMSampler (add a box_loss column to rank as the OHEM paper)"
        };
        r.extra.insert("ranked_by".into(), json!(ranked_by));
        r
    }
}

/// Indices of the selected candidates (of the image `piles`), hardest first.
pub fn select(piles: &Piles, p: &OhemParams) -> Vec<usize> {
    let k = p.k;
    let max_pos = p.pos_fraction.map_or(k, |f| ((k as f64) * f).floor() as usize);
    let score = scorer(piles);
    // The `m` hardest of the candidates (or of the positives or negatives) by `score`: by CE
    // from a loop over the columns, without a call per candidate, when it is CE alone.
    let box_loss = piles.has_box_loss();
    let hardest = |positive: Option<bool>, m: usize| {
        if box_loss {
            top(piles.values(score, positive), m)
        } else {
            top_ce(piles, positive, m)
        }
    };
    let sel = match p.nms {
        None if p.pos_fraction.is_none() => return hardest(None, k),
        None => {
            let pos = hardest(Some(true), max_pos);
            let neg = hardest(Some(false), k - pos.len());
            [pos, neg].concat()
        }
        Some(threshold) => nms_select(piles, score, threshold as f32, k, p.pos_fraction.map(|_| max_pos)),
    };
    rank(sel.into_iter().map(|i| {
        let (pile, j) = piles.at(i);
        (i, score(pile, j))
    }))
}

/// Greedy NMS in loss order; then the first `k` survivors, or with a positive quota up to
/// `max_pos` positives and negatives for the remaining slots.
fn nms_select(piles: &Piles, score: Score, threshold: f32, k: usize, max_pos: Option<usize>) -> Vec<usize> {
    let order = rank(piles.values(score, None));
    // Every survivor suppresses later boxes, whether or not a quota lets it in.
    let mut kept: Vec<[f32; 4]> = Vec::new();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in order {
        let (pile, j) = piles.at(i);
        let b = pile.bbox(j);
        if kept.iter().any(|kb| iou(kb, &b) > threshold) {
            continue;
        }
        kept.push(b);
        match max_pos {
            None => {
                pos.push(i);
                if pos.len() == k {
                    break;
                }
            }
            Some(max_pos) => {
                if pile.positive(j) {
                    if pos.len() < max_pos {
                        pos.push(i);
                    }
                } else if neg.len() < k {
                    neg.push(i);
                }
                if pos.len() == max_pos && neg.len() >= k - max_pos {
                    break;
                }
            }
        }
    }
    neg.truncate(k - pos.len());
    [pos, neg].concat()
}

/// IoU as torchvision's `box_iou` computes it (float32; an empty union gives 0).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |x: &[f32; 4]| (x[2] - x[0]) * (x[3] - x[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::select::{Candidate, CandidateInfo};

    fn cand(row: u64, ce: f64, positive: bool, bbox: [f32; 4]) -> Candidate {
        Candidate {
            file: 0,
            count: [1, 0, 0, 0],
            positive,
            row,
            ce,
            focal: 0.0,
            loss: [ce, 0.0, 0.0, 0.0],
            grad: [0.0; 4],
            info: Some(Box::new(CandidateInfo {
                bbox: Some(bbox),
                anchor_id: None,
                level: None,
                label: -1,
                class: None,
                box_loss: None,
            })),
        }
    }

    fn sel(c: &[Candidate], p: &OhemParams) -> Vec<usize> {
        select(&Piles::new(vec![Pile::from_candidates(c)]), p)
    }

    #[test]
    fn ties_go_to_the_earlier_row_and_k_may_exceed_the_image() {
        let c =
            vec![cand(0, 1.0, false, [0.0; 4]), cand(1, 2.0, false, [0.0; 4]), cand(2, 1.0, false, [0.0; 4])];
        let p = OhemParams { k: 2, nms: None, pos_fraction: None };
        assert_eq!(sel(&c, &p), vec![1, 0]);
        let p = OhemParams { k: 10, ..p };
        assert_eq!(sel(&c, &p), vec![1, 0, 2]);
    }

    #[test]
    fn nms_suppresses_overlapping_boxes_in_loss_order() {
        // Row 1 (hardest) suppresses row 0 (IoU 0.81 > 0.5); row 2 is far away.
        let c = vec![
            cand(0, 1.0, false, [0.0, 0.0, 10.0, 10.0]),
            cand(1, 3.0, false, [0.5, 0.5, 10.5, 10.5]),
            cand(2, 0.5, false, [50.0, 50.0, 60.0, 60.0]),
        ];
        let p = OhemParams { k: 2, nms: Some(0.5), pos_fraction: None };
        assert_eq!(sel(&c, &p), vec![1, 2]);
        // A suppressed box cannot suppress: the threshold is strict (IoU 0.81 is not > 0.9).
        let p = OhemParams { k: 3, nms: Some(0.9), pos_fraction: None };
        assert_eq!(sel(&c, &p), vec![1, 0, 2]);
    }

    #[test]
    fn the_positive_fraction_caps_positives_and_fills_with_negatives() {
        let c = vec![
            cand(0, 5.0, true, [0.0; 4]),
            cand(1, 4.0, true, [0.0; 4]),
            cand(2, 3.0, false, [0.0; 4]),
            cand(3, 2.0, false, [0.0; 4]),
            cand(4, 1.0, false, [0.0; 4]),
        ];
        let p = OhemParams { k: 4, nms: None, pos_fraction: Some(0.25) };
        assert_eq!(sel(&c, &p), vec![0, 2, 3, 4]);
        // The same through NMS that suppresses nothing (boxes far apart).
        let spread: Vec<Candidate> = c
            .iter()
            .map(|x| {
                let o = 100.0 * x.row as f32;
                let info = CandidateInfo {
                    bbox: Some([o, o, o + 10.0, o + 10.0]),
                    anchor_id: None,
                    level: None,
                    label: 0,
                    class: None,
                    box_loss: None,
                };
                Candidate { info: Some(Box::new(info)), ..x.clone() }
            })
            .collect();
        let p = OhemParams { k: 4, nms: Some(0.5), pos_fraction: Some(0.25) };
        assert_eq!(sel(&spread, &p), vec![0, 2, 3, 4]);
        let p = OhemParams { k: 2, nms: Some(0.5), pos_fraction: None };
        assert_eq!(sel(&spread, &p), vec![0, 1]);
    }
}
