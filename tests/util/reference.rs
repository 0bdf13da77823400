//! An independent, deliberately naive f64 reference: probabilities straight from the textbook
//! formulas, gradients by central differences. Test data keeps logits moderate (|x| <= 12) so the
//! naive formulas are accurate.

use std::collections::BTreeMap;

use super::assert_close;

/// How a decision's score is given.
#[derive(Clone, Debug)]
pub enum Score {
    /// Sigmoid logit.
    Logit(f64),
    /// Sigmoid probability.
    Prob(f64),
    /// Softmax logits and the labelled class.
    SoftmaxLogits(Vec<f64>, usize),
    /// Softmax probabilities and the labelled class.
    SoftmaxProbs(Vec<f64>, usize),
}

/// One decision.
#[derive(Clone, Debug)]
pub struct Dec {
    pub image: String,
    pub score: Score,
    /// Target (softmax: 1 for foreground, 0 for background).
    pub y: f64,
    pub weight: f64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// p_t, CE and the loss as a function of the decision's (labelled-class) logit.
/// The loss as a function of (logit, gamma, alpha).
type LossFn = Box<dyn Fn(f64, f64, Option<f64>) -> f64>;

fn model(score: &Score, y: f64) -> (f64, f64, LossFn, f64) {
    // Returns (p_t, ce, f(z, gamma, alpha) = alpha_t (1-p_t(z))^gamma CE(z), z0).
    let alpha_t = move |a: Option<f64>| a.map_or(1.0, |a| a * y + (1.0 - a) * (1.0 - y));
    match score {
        Score::Logit(x) => {
            let f = move |z: f64, g: f64, a: Option<f64>| {
                let p = sigmoid(z);
                let p_t = p * y + (1.0 - p) * (1.0 - y);
                let mut ce = 0.0;
                if y > 0.0 {
                    ce -= y * p.ln();
                }
                if y < 1.0 {
                    ce -= (1.0 - y) * (1.0 - p).ln();
                }
                alpha_t(a) * (1.0 - p_t).powf(g) * ce
            };
            let p = sigmoid(*x);
            let p_t = p * y + (1.0 - p) * (1.0 - y);
            (p_t, f(*x, 0.0, None), Box::new(f), *x)
        }
        Score::Prob(p) => {
            let z0 = (p / (1.0 - p)).ln();
            let (p_t, ce, f, _) = model(&Score::Logit(z0), y);
            let _ = ce;
            let p_t_direct = p * y + (1.0 - p) * (1.0 - y);
            assert!((p_t - p_t_direct).abs() < 1e-12);
            let ce = -(if y > 0.0 { y * p.ln().max(-100.0) } else { 0.0 }
                + if y < 1.0 { (1.0 - y) * (1.0 - p).ln().max(-100.0) } else { 0.0 });
            (p_t_direct, ce, f, z0)
        }
        Score::SoftmaxLogits(row, t) => {
            let t = *t;
            let row = row.clone();
            let row2 = row.clone();
            let f = move |z: f64, g: f64, a: Option<f64>| {
                let mut r = row.clone();
                r[t] = z;
                let sum: f64 = r.iter().map(|v| v.exp()).sum();
                let p_t = r[t].exp() / sum;
                alpha_t(a) * (1.0 - p_t).powf(g) * -(p_t.ln())
            };
            let sum: f64 = row2.iter().map(|v| v.exp()).sum();
            let p_t = row2[t].exp() / sum;
            (p_t, -(p_t.ln()), Box::new(f), row2[t])
        }
        Score::SoftmaxProbs(probs, t) => {
            let logits: Vec<f64> = probs.iter().map(|p| p.ln()).collect();
            let (_, _, f, z0) = model(&Score::SoftmaxLogits(logits, *t), y);
            (probs[*t], -(probs[*t].ln()), f, z0)
        }
    }
}

/// Expected numbers for one strategy.
#[derive(Debug)]
pub struct Expected {
    pub count: [u64; 4],
    pub loss: [f64; 4],
    pub grad: [f64; 4],
    pub total: f64,
    pub normalized: f64,
}

/// Computes a strategy (`ce`, `alpha_ce` or `focal`) by brute force. `images` lists every image
/// of the dump (including images whose anchors are all ignored).
pub fn expected(
    decs: &[Dec],
    images: &[String],
    strategy: &str,
    gamma: f64,
    alpha: Option<f64>,
    tau: f64,
) -> Expected {
    let (g, a) = match strategy {
        "ce" => (0.0, None),
        "alpha_ce" => (0.0, alpha),
        "focal" => (gamma, alpha),
        other => panic!("no reference for {other}"),
    };
    accumulate(decs, images, tau, |d| {
        let (p_t, _ce, f, z0) = model(&d.score, d.y);
        (p_t, Box::new(move |z| f(z, g, a)), z0)
    })
}

/// A soft-target loss of mmdetection, written from its formula (p = sigmoid(z), BCE with the
/// soft target y).
#[derive(Clone, Copy, Debug)]
pub enum SoftLoss {
    /// Quality focal loss, gfocal_loss.py: |y - p|^beta BCE(p, y).
    Qfl { beta: f64 },
    /// Varifocal loss, varifocal_loss.py (iou_weighted): y BCE if y > 0, else alpha p^gamma BCE.
    Vfl { alpha: f64, gamma: f64 },
}

/// Computes a soft-target loss (`qfl`, `vfl`) by brute force over sigmoid-logit decisions.
pub fn expected_soft(decs: &[Dec], images: &[String], loss: SoftLoss, tau: f64) -> Expected {
    accumulate(decs, images, tau, |d| {
        let Score::Logit(x) = d.score else { panic!("soft losses are checked on logits") };
        let y = d.y;
        let f = move |z: f64| {
            let p = sigmoid(z);
            let bce = -(y * p.ln() + (1.0 - y) * (1.0 - p).ln());
            match loss {
                SoftLoss::Qfl { beta } => (y - p).abs().powf(beta) * bce,
                SoftLoss::Vfl { .. } if y > 0.0 => y * bce,
                SoftLoss::Vfl { alpha, gamma } => alpha * p.powf(gamma) * bce,
            }
        };
        let p = sigmoid(x);
        (p * y + (1.0 - p) * (1.0 - y), Box::new(f), x)
    })
}

/// Sums, per bucket, `loss(z0)` and a central difference of it for every decision, weighted;
/// `of(d)` gives the decision's p_t, its loss as a function of its logit, and that logit.
fn accumulate(
    decs: &[Dec],
    images: &[String],
    tau: f64,
    of: impl Fn(&Dec) -> (f64, Box<dyn Fn(f64) -> f64>, f64),
) -> Expected {
    let mut e = Expected { count: [0; 4], loss: [0.0; 4], grad: [0.0; 4], total: 0.0, normalized: 0.0 };
    let mut per_image: BTreeMap<&str, (f64, u64)> = images.iter().map(|i| (i.as_str(), (0.0, 0))).collect();
    for d in decs {
        let (p_t, f, z0) = of(d);
        let loss = d.weight * f(z0);
        let h = 1e-5;
        let grad = d.weight * ((f(z0 + h) - f(z0 - h)) / (2.0 * h)).abs();
        let positive = d.y > 0.0;
        let b = match (positive, p_t >= tau) {
            (false, true) => 0,
            (false, false) => 1,
            (true, true) => 2,
            (true, false) => 3,
        };
        e.count[b] += 1;
        e.loss[b] += loss;
        e.grad[b] += grad;
        e.total += loss;
        let entry = per_image.get_mut(d.image.as_str()).expect("image listed");
        entry.0 += loss;
        entry.1 += positive as u64;
    }
    e.normalized = per_image.values().map(|(l, n)| l / (*n).max(1) as f64).sum::<f64>() / images.len() as f64;
    e
}

/// Checks one strategy of a hardmine JSON report against the reference.
#[track_caller]
pub fn check(report: &serde_json::Value, name: &str, e: &Expected) {
    let s = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("strategy {name} missing"));
    let buckets = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];
    let grad_total: f64 = e.grad.iter().sum();
    for (i, b) in buckets.iter().enumerate() {
        let j = &s["buckets"][b];
        assert_eq!(j["count"].as_u64().unwrap(), e.count[i], "{name} {b} count");
        assert_eq!(j["selected"].as_f64().unwrap(), e.count[i] as f64, "{name} {b} selected");
        assert_close(j["loss"].as_f64().unwrap(), e.loss[i], 1e-9, &format!("{name} {b} loss"));
        if e.total > 0.0 {
            assert_close(
                j["loss_share"].as_f64().unwrap(),
                e.loss[i] / e.total,
                1e-9,
                &format!("{name} {b} loss_share"),
            );
        }
        if grad_total > 0.0 {
            // Central differences are good to ~1e-8 relative.
            let want = e.grad[i] / grad_total;
            let got = j["grad_share"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-6, "{name} {b} grad_share: {got} vs {want}");
        }
    }
    assert_close(s["loss"]["total"].as_f64().unwrap(), e.total, 1e-9, &format!("{name} total"));
    assert_close(
        s["loss"]["normalized"].as_f64().unwrap(),
        e.normalized,
        1e-9,
        &format!("{name} normalized"),
    );
    let share_sum: f64 = buckets.iter().map(|b| s["buckets"][b]["loss_share"].as_f64().unwrap()).sum();
    if e.total > 0.0 {
        assert!((share_sum - 1.0).abs() < 1e-12, "{name} loss shares sum to {share_sum}");
    }
}
