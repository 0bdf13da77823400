//! Brute-force references for the per-image selection strategies and GHM: every candidate of an
//! image sorted in f64, NMS run to the end, sampling probabilities from the definitions.

use std::collections::BTreeMap;

use super::assert_close;

/// One anchor of a dense sigmoid dump, with its decisions already evaluated.
#[derive(Clone, Debug)]
pub struct Anchor {
    pub image: i64,
    pub row: u64,
    pub positive: bool,
    pub ce: f64,
    pub focal: f64,
    pub count: [u64; 4],
    pub loss: [f64; 4],
    pub grad: [f64; 4],
    pub bbox: [f32; 4],
    /// Per decision: (g = |p - y|, CE, bucket), for GHM.
    pub decisions: Vec<(f64, f64, usize)>,
}

impl Anchor {
    pub fn n(&self) -> u64 {
        self.count.iter().sum()
    }
}

/// Evaluates dense sigmoid rows (label, logits, box) naively.
pub fn anchors(
    image: &[i64],
    label: &[i32],
    logits: &[Vec<f32>],
    boxes: &[[f32; 4]],
    tau: f64,
    gamma: f64,
    alpha: f64,
) -> Vec<Anchor> {
    let mut out = Vec::new();
    for i in 0..image.len() {
        if label[i] == -2 {
            continue;
        }
        let mut a = Anchor {
            image: image[i],
            row: i as u64,
            positive: label[i] >= 0,
            ce: 0.0,
            focal: 0.0,
            count: [0; 4],
            loss: [0.0; 4],
            grad: [0.0; 4],
            bbox: boxes[i],
            decisions: Vec::new(),
        };
        for (c, &x) in logits[i].iter().enumerate() {
            let y = if label[i] == c as i32 { 1.0 } else { 0.0 };
            let p = 1.0 / (1.0 + (-(x as f64)).exp());
            let p_t = if y == 1.0 { p } else { 1.0 - p };
            let ce = -p_t.ln();
            let alpha_t = if y == 1.0 { alpha } else { 1.0 - alpha };
            let b = match (y == 1.0, p_t >= tau) {
                (false, true) => 0,
                (false, false) => 1,
                (true, true) => 2,
                (true, false) => 3,
            };
            a.ce += ce;
            a.focal += alpha_t * (1.0 - p_t).powf(gamma) * ce;
            a.count[b] += 1;
            a.loss[b] += ce;
            a.grad[b] += (p - y).abs();
            a.decisions.push(((p - y).abs(), ce, b));
        }
        out.push(a);
    }
    out
}

/// Anchors grouped by image, in dump order.
pub fn by_image(anchors: &[Anchor]) -> BTreeMap<i64, Vec<Anchor>> {
    let mut m: BTreeMap<i64, Vec<Anchor>> = BTreeMap::new();
    for a in anchors {
        m.entry(a.image).or_default().push(a.clone());
    }
    m
}

/// Indices hardest first (CE descending; ties by row, i.e. a stable sort of dump order).
fn ranked(img: &[Anchor]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..img.len()).collect();
    idx.sort_by(|&i, &j| img[j].ce.partial_cmp(&img[i].ce).unwrap());
    idx
}

fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    let lt = [a[0].max(b[0]), a[1].max(b[1])];
    let rb = [a[2].min(b[2]), a[3].min(b[3])];
    let inter = (rb[0] - lt[0]).max(0.0) * (rb[1] - lt[1]).max(0.0);
    let union = area_a + area_b - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// OHEM: full greedy NMS (no early exit), then the first k, or quotas.
pub fn ohem(img: &[Anchor], k: usize, nms: Option<f32>, pos_fraction: Option<f64>) -> Vec<usize> {
    let mut order = ranked(img);
    if let Some(t) = nms {
        let mut survivors: Vec<usize> = Vec::new();
        for i in order {
            if survivors.iter().all(|&s| box_iou(img[s].bbox, img[i].bbox) <= t) {
                survivors.push(i);
            }
        }
        order = survivors;
    }
    match pos_fraction {
        None => order.into_iter().take(k).collect(),
        Some(f) => {
            let max_pos = (k as f64 * f).floor() as usize;
            let pos: Vec<usize> = order.iter().copied().filter(|&i| img[i].positive).take(max_pos).collect();
            let neg: Vec<usize> =
                order.iter().copied().filter(|&i| !img[i].positive).take(k - pos.len()).collect();
            [pos, neg].concat()
        }
    }
}

/// SSD: positives plus the ratio x #positives hardest negatives.
pub fn ssd(img: &[Anchor], ratio: usize, all_if_empty: bool) -> Vec<usize> {
    let pos: Vec<usize> = (0..img.len()).filter(|&i| img[i].positive).collect();
    let n_neg = img.len() - pos.len();
    let m = if pos.is_empty() {
        if all_if_empty {
            n_neg
        } else {
            0
        }
    } else {
        (ratio * pos.len()).min(n_neg)
    };
    let neg: Vec<usize> = ranked(img).into_iter().filter(|&i| !img[i].positive).take(m).collect();
    [pos, neg].concat()
}

/// The sampler's inclusion probability of every candidate.
pub fn sampled(img: &[Anchor], b: usize, f: f64) -> Vec<f64> {
    let n_p = img.iter().filter(|a| a.positive).count();
    let n_n = img.len() - n_p;
    let n_pos = n_p.min((b as f64 * f) as usize);
    let n_neg = n_n.min(b - n_pos);
    img.iter()
        .map(|a| if a.positive { n_pos as f64 / n_p as f64 } else { n_neg as f64 / n_n as f64 })
        .collect()
}

/// Totals of a selection.
#[derive(Debug, Default)]
pub struct Sel {
    pub count: [u64; 4],
    pub selected: [f64; 4],
    pub loss: [f64; 4],
    pub grad: [f64; 4],
    pub normalized: f64,
}

/// Sums a per-image selection (weights per candidate) over all images. `n_images` counts
/// every image of the dump, including those without candidates.
pub fn total(
    images: &BTreeMap<i64, Vec<Anchor>>,
    n_images: usize,
    weights: impl Fn(&[Anchor]) -> Vec<f64>,
) -> Sel {
    let mut s = Sel::default();
    for img in images.values() {
        let w = weights(img);
        let positives: u64 = img.iter().map(|a| a.count[2] + a.count[3]).sum();
        let mut image_loss = 0.0;
        for (a, &w) in img.iter().zip(&w) {
            for b in 0..4 {
                s.count[b] += a.count[b];
                s.selected[b] += w * a.count[b] as f64;
                s.loss[b] += w * a.loss[b];
                s.grad[b] += w * a.grad[b];
            }
            image_loss += w * a.ce;
        }
        s.normalized += image_loss / positives.max(1) as f64;
    }
    s.normalized /= n_images as f64;
    s
}

/// 0/1 weights from selected indices.
pub fn indicator(n: usize, sel: &[usize]) -> Vec<f64> {
    let mut w = vec![0.0; n];
    for &i in sel {
        w[i] = 1.0;
    }
    w
}

/// Checks a strategy entry of a JSON report against a reference selection.
#[track_caller]
pub fn check_sel(report: &serde_json::Value, name: &str, e: &Sel) {
    let s = report["strategies"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap();
    let buckets = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];
    let total: f64 = e.loss.iter().sum();
    let grad: f64 = e.grad.iter().sum();
    for (b, name_b) in buckets.iter().enumerate() {
        let j = &s["buckets"][name_b];
        let what = format!("{name} {name_b}");
        assert_eq!(j["count"].as_u64().unwrap(), e.count[b], "{what} count");
        assert_close(j["selected"].as_f64().unwrap(), e.selected[b], 1e-12, &format!("{what} selected"));
        assert_close(j["loss"].as_f64().unwrap(), e.loss[b], 1e-9, &format!("{what} loss"));
        if total > 0.0 {
            assert_close(
                j["loss_share"].as_f64().unwrap(),
                e.loss[b] / total,
                1e-9,
                &format!("{what} loss_share"),
            );
        }
        if grad > 0.0 {
            assert_close(
                j["grad_share"].as_f64().unwrap(),
                e.grad[b] / grad,
                1e-9,
                &format!("{what} grad_share"),
            );
        }
    }
    assert_close(
        s["selected"].as_f64().unwrap(),
        e.selected.iter().sum(),
        1e-12,
        &format!("{name} selected"),
    );
    assert_close(s["loss"]["total"].as_f64().unwrap(), total, 1e-9, &format!("{name} total"));
    assert_close(
        s["loss"]["normalized"].as_f64().unwrap(),
        e.normalized,
        1e-9,
        &format!("{name} normalized"),
    );
}

/// GHM-C by its definition (mmdetection's edges), checked against a report.
#[track_caller]
pub fn check_ghm(report: &serde_json::Value, anchors: &[Anchor], n_images: usize, bins: usize) {
    check_ghm_grouped(report, anchors, n_images, bins, &|_| 0);
}

/// GHM-C with the gradient density computed separately in each group of anchors (`group`: the
/// FPN level for `--ghm-per-level`), as mmdetection runs GHMC once per level and adds the
/// levels' losses.
pub fn check_ghm_grouped(
    report: &serde_json::Value,
    anchors: &[Anchor],
    n_images: usize,
    bins: usize,
    group: &dyn Fn(&Anchor) -> i64,
) {
    let edges: Vec<f64> =
        (0..=bins).map(|i| i as f64 / bins as f64 + if i == bins { 1e-6 } else { 0.0 }).collect();
    let bin = |g: f64| (0..bins).find(|&i| g >= edges[i] && g < edges[i + 1]).unwrap();
    let mut counts: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for a in anchors {
        let c = counts.entry(group(a)).or_insert_with(|| vec![0; bins]);
        for &(g, _, _) in &a.decisions {
            c[bin(g)] += 1;
        }
    }
    let w = |a: &Anchor, g: f64| {
        let c = &counts[&group(a)];
        let n: u64 = c.iter().sum();
        let nonempty = c.iter().filter(|&&k| k > 0).count() as f64;
        n as f64 / (c[bin(g)] as f64 * nonempty)
    };
    let mut loss = [0.0; 4];
    let mut per_group: BTreeMap<i64, f64> = BTreeMap::new();
    let mut per_image: BTreeMap<i64, (f64, u64)> = BTreeMap::new();
    for a in anchors {
        let e = per_image.entry(a.image).or_default();
        for &(g, ce, b) in &a.decisions {
            loss[b] += w(a, g) * ce;
            *per_group.entry(group(a)).or_default() += w(a, g) * ce;
            e.0 += w(a, g) * ce;
            e.1 += u64::from(b >= 2);
        }
    }
    let total: f64 = loss.iter().sum();
    let mmdetection: f64 = per_group.iter().map(|(k, l)| l / counts[k].iter().sum::<u64>() as f64).sum();
    let normalized = per_image.values().map(|(l, p)| l / (*p).max(1) as f64).sum::<f64>() / n_images as f64;
    let s = report["strategies"].as_array().unwrap().iter().find(|s| s["name"] == "ghm").unwrap();
    for (b, name) in ["easy_negative", "hard_negative", "easy_positive", "hard_positive"].iter().enumerate() {
        assert_close(
            s["buckets"][name]["loss"].as_f64().unwrap(),
            loss[b],
            1e-9,
            &format!("ghm {name} loss"),
        );
    }
    assert_close(s["loss"]["total"].as_f64().unwrap(), total, 1e-9, "ghm total");
    assert_close(s["loss"]["normalized"].as_f64().unwrap(), normalized, 1e-9, "ghm normalized");
    assert_close(s["extra"]["mmdetection_loss"].as_f64().unwrap(), mmdetection, 1e-9, "ghm mmdetection_loss");
    // Counts per bucket, and gradient shares: each decision's |p - y| times its bin's weight.
    let mut count = [0u64; 4];
    let mut grad = [0.0; 4];
    for a in anchors {
        for &(g, _, b) in &a.decisions {
            count[b] += 1;
            grad[b] += w(a, g) * g;
        }
    }
    let grad_total: f64 = grad.iter().sum();
    for (b, name) in ["easy_negative", "hard_negative", "easy_positive", "hard_positive"].iter().enumerate() {
        assert_eq!(s["buckets"][name]["count"].as_u64().unwrap(), count[b], "ghm {name} count");
        if grad_total > 0.0 {
            assert_close(
                s["buckets"][name]["grad_share"].as_f64().unwrap(),
                grad[b] / grad_total,
                1e-9,
                &format!("ghm {name} grad_share"),
            );
        }
    }
}
