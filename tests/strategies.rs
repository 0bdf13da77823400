//! OHEM, SSD mining, sampling, GHM and the hard-example export against brute force.

use std::collections::BTreeMap;

use crate::util::fixture::{write, Col};
use crate::util::select_ref::{self as r, Anchor};
use crate::util::{assert_close, assert_json_close, Env, Lcg};

/// A dense sigmoid dump built to hit the edge cases: ties, an image smaller than k, an image
/// without positives, an image whose anchors are all ignored.
struct Dump {
    image: Vec<i64>,
    label: Vec<i32>,
    logits: Vec<Vec<f32>>,
    boxes: Vec<[f32; 4]>,
}

fn dump() -> Dump {
    let mut g = Lcg(11);
    let mut d = Dump { image: vec![], label: vec![], logits: vec![], boxes: vec![] };
    let sizes = [(0, 40), (1, 6), (2, 20), (3, 5), (4, 30)];
    for (img, n) in sizes {
        for i in 0..n {
            let label = match img {
                2 => -1,
                3 => -2,
                _ => g.pick(&[-1, -1, -1, -1, -1, 0, 1, 2, -2]),
            };
            let mut logits: Vec<f32> = (0..3).map(|_| g.range(-6.0, 6.0) as f32).collect();
            let (x, y, s) =
                (g.range(0.0, 100.0) as f32, g.range(0.0, 100.0) as f32, g.range(10.0, 40.0) as f32);
            let mut label = label;
            if img == 0 && (5..8).contains(&i) {
                // Three identical, very hard anchors: equal CE, ties broken by row.
                logits = vec![5.5, 5.5, 5.5];
                label = -1;
            }
            d.image.push(img);
            d.label.push(label);
            d.logits.push(logits);
            d.boxes.push([x, y, x + s, y + s]);
        }
    }
    d
}

impl Dump {
    /// Writes the image ids, labels and logits, and `extra` columns.
    fn write_with(&self, env: &Env, name: &str, rows_per_group: usize, extra: Vec<(&'static str, Col)>) {
        let mut cols = vec![
            ("image_id", Col::I64(self.image.clone())),
            ("label", Col::I32(self.label.clone())),
            ("logits", Col::ListF32(self.logits.clone())),
        ];
        cols.extend(extra);
        write(&env.path(name), cols, rows_per_group);
    }

    fn write(&self, env: &Env, name: &str, rows_per_group: usize) {
        let col = |k: usize| Col::F32(self.boxes.iter().map(|b| b[k]).collect());
        write(
            &env.path(name),
            vec![
                ("image_id", Col::I64(self.image.clone())),
                ("anchor_id", Col::I64((0..self.image.len() as i64).map(|i| 1000 + i).collect())),
                ("label", Col::I32(self.label.clone())),
                ("logits", Col::ListF32(self.logits.clone())),
                ("x1", col(0)),
                ("y1", col(1)),
                ("x2", col(2)),
                ("y2", col(3)),
            ],
            rows_per_group,
        );
    }

    fn anchors(&self) -> Vec<Anchor> {
        r::anchors(&self.image, &self.label, &self.logits, &self.boxes, 0.9, 2.0, 0.25)
    }
}

const N_IMAGES: usize = 5;

fn jaccard(
    images: &BTreeMap<i64, Vec<Anchor>>,
    a: &dyn Fn(&[Anchor]) -> Vec<f64>,
    b: &dyn Fn(&[Anchor]) -> Vec<f64>,
) -> f64 {
    let (mut inter, mut union) = (0.0, 0.0);
    for img in images.values() {
        for ((x, wa), wb) in img.iter().zip(a(img)).zip(b(img)) {
            inter += x.n() as f64 * wa.min(wb);
            union += x.n() as f64 * wa.max(wb);
        }
    }
    inter / union
}

#[test]
fn ohem_ssd_sampled_and_ghm_match_brute_force() {
    let env = Env::new();
    let d = dump();
    d.write(&env, "d.parquet", 7);
    let images = r::by_image(&d.anchors());
    let rep = env
        .run(&[
            "analyze",
            "d.parquet",
            "--ohem-k",
            "10",
            "--neg-pos-ratio",
            "2",
            "--batch-size-per-image",
            "8",
            "--positive-fraction",
            "0.3",
            "--ghm-bins",
            "10",
            "--draws",
            "0",
            "--keep-ignored-images",
            "--format",
            "json",
        ])
        .json();
    let ohem = |img: &[Anchor]| r::indicator(img.len(), &r::ohem(img, 10, None, None));
    let ssd = |img: &[Anchor]| r::indicator(img.len(), &r::ssd(img, 2, false));
    // int(8 * 0.3) = 2 positives at most.
    let sampled = |img: &[Anchor]| r::sampled(img, 8, 0.3);
    r::check_sel(&rep, "ohem", &r::total(&images, N_IMAGES, ohem));
    r::check_sel(&rep, "ssd", &r::total(&images, N_IMAGES, ssd));
    r::check_sel(&rep, "sampled", &r::total(&images, N_IMAGES, sampled));
    r::check_ghm(&rep, &d.anchors(), N_IMAGES, 10);

    // The image without positives contributes no SSD negatives.
    let ssd_selected: f64 = rep["strategies"][4]["selected"].as_f64().unwrap();
    let positives_and_mined: usize = images.values().map(|img| r::ssd(img, 2, false).len() * 3).sum();
    assert_eq!(ssd_selected, positives_and_mined as f64);
    // torchvision's SSD normaliser: selected CE / all positives.
    let positives: u64 = d.anchors().iter().map(|a| a.count[2] + a.count[3]).sum();
    let ssd_total = rep["strategies"][4]["loss"]["total"].as_f64().unwrap();
    assert_close(
        rep["strategies"][4]["extra"]["torchvision_normalized"].as_f64().unwrap(),
        ssd_total / positives as f64,
        1e-12,
        "torchvision_normalized",
    );

    let ov = &rep["overlaps"];
    let pair = |a: &str, b: &str| {
        ov["jaccard"].as_array().unwrap().iter().find(|j| j["a"] == a && j["b"] == b).unwrap()["jaccard"]
            .as_f64()
            .unwrap()
    };
    assert_close(pair("ohem", "ssd"), jaccard(&images, &ohem, &ssd), 1e-12, "ohem~ssd");
    assert_close(pair("ohem", "sampled"), jaccard(&images, &ohem, &sampled), 1e-12, "ohem~sampled");
    assert_close(pair("ssd", "sampled"), jaccard(&images, &ssd, &sampled), 1e-12, "ssd~sampled");
    let (mut inside, mut all) = (0.0, 0.0);
    for img in images.values() {
        for (a, w) in img.iter().zip(ohem(img)) {
            inside += w * a.focal;
            all += a.focal;
        }
    }
    assert_close(ov["focal_share_in_ohem"].as_f64().unwrap(), inside / all, 1e-9, "focal share in ohem");
}

#[test]
fn ohem_ranks_by_ce_plus_box_loss_when_the_dump_has_one() {
    let env = Env::new();
    let d = dump();
    // Box losses: positives in [0, 4), negatives mostly 0 and sometimes in [0, 2).
    let mut g = Lcg(3);
    let box_loss: Vec<f32> = d
        .label
        .iter()
        .map(|&l| {
            if l >= 0 {
                g.range(0.0, 4.0) as f32
            } else if g.unit() < 0.3 {
                g.range(0.0, 2.0) as f32
            } else {
                0.0
            }
        })
        .collect();
    d.write_with(&env, "b.parquet", 7, vec![("box_loss", Col::F32(box_loss.clone()))]);
    d.write(&env, "d.parquet", 7);
    let args = |file| {
        vec![
            "analyze",
            file,
            "--strategies",
            "ohem",
            "--ohem-k",
            "10",
            "--keep-ignored-images",
            "--format",
            "json",
        ]
    };
    let with_box = env.run(&args("b.parquet")).json();
    let ce_only = env.run(&args("d.parquet")).json();
    // The reference ranks each image's anchors by CE + box loss (ties: earlier row), keeps the
    // top 10 and sums their classification CE.
    let images = r::by_image(&d.anchors());
    let by_total = |img: &[Anchor]| {
        let ranked: Vec<Anchor> = img
            .iter()
            .map(|a| Anchor { ce: a.ce + f64::from(box_loss[a.row as usize]), ..a.clone() })
            .collect();
        r::indicator(img.len(), &r::ohem(&ranked, 10, None, None))
    };
    let by_ce = |img: &[Anchor]| r::indicator(img.len(), &r::ohem(img, 10, None, None));
    let want_box = r::total(&images, N_IMAGES, by_total);
    let want_ce = r::total(&images, N_IMAGES, by_ce);
    r::check_sel(&with_box, "ohem", &want_box);
    r::check_sel(&ce_only, "ohem", &want_ce);
    // The box loss changes the selection here, so the check above can tell the two apart.
    assert!((want_box.loss.iter().sum::<f64>() - want_ce.loss.iter().sum::<f64>()).abs() > 1e-6);
    let ranked_by =
        |rep: &serde_json::Value| rep["strategies"][0]["extra"]["ranked_by"].as_str().unwrap().to_string();
    assert!(ranked_by(&with_box).starts_with("ce + box_loss"), "{}", ranked_by(&with_box));
    assert!(ranked_by(&ce_only).starts_with("ce: classification loss only"), "{}", ranked_by(&ce_only));
    // Mining exports the same selection in the same order, with CE + box loss as its loss.
    use polars_io::prelude::*;
    env.run(&[
        "mine",
        "b.parquet",
        "--keep-ignored-images",
        "--strategy",
        "ohem",
        "--ohem-k",
        "3",
        "--out",
        "hard.parquet",
    ])
    .ok();
    let df = ParquetReader::new(std::fs::File::open(env.path("hard.parquet")).unwrap()).finish().unwrap();
    let rows: Vec<i64> = df.column("row").unwrap().i64().unwrap().into_no_null_iter().collect();
    let losses: Vec<f64> = df.column("loss").unwrap().f64().unwrap().into_no_null_iter().collect();
    let mut want = Vec::new();
    for img in images.values() {
        let ranked: Vec<Anchor> = img
            .iter()
            .map(|a| Anchor { ce: a.ce + f64::from(box_loss[a.row as usize]), ..a.clone() })
            .collect();
        want.extend(
            r::ohem(&ranked, 3, None, None).into_iter().map(|i| (ranked[i].row as i64, ranked[i].ce)),
        );
    }
    assert_eq!(rows, want.iter().map(|w| w.0).collect::<Vec<_>>());
    for (got, (_, loss)) in losses.iter().zip(&want) {
        assert_close(*got, *loss, 1e-6, "exported CE + box loss");
    }
}

#[test]
fn ghm_per_level_computes_the_density_in_each_level_as_mmdetection() {
    let env = Env::new();
    let d = dump();
    let level: Vec<i64> = (0..d.image.len()).map(|i| 3 + (i % 3) as i64).collect();
    d.write_with(&env, "l.parquet", 7, vec![("level", Col::I64(level.clone()))]);
    let run = |extra: &[&str]| {
        let mut argv =
            vec!["analyze", "l.parquet", "--strategies", "ghm", "--ghm-bins", "10", "--keep-ignored-images"];
        argv.extend(extra);
        argv.extend(["--format", "json"]);
        env.run(&argv).json()
    };
    let per_level = run(&["--ghm-per-level"]);
    r::check_ghm_grouped(&per_level, &d.anchors(), N_IMAGES, 10, &|a| level[a.row as usize]);
    let s = &per_level["strategies"][0];
    assert_eq!(s["params"]["per_level"], true);
    assert_eq!(s["extra"]["bin_weights_by_level"].as_object().unwrap().len(), 3);
    // The same numbers whatever the row groups and threads.
    let strategies = |rep: &serde_json::Value| rep["strategies"].to_string();
    std::fs::rename(env.path("l.parquet"), env.path("l7.parquet")).unwrap();
    d.write_with(&env, "l.parquet", 3, vec![("level", Col::I64(level.clone()))]);
    assert_eq!(strategies(&run(&["--ghm-per-level", "--threads", "1"])), strategies(&per_level));
    // Pooled over levels (the default) it is the single-density GHM, and differs.
    let pooled = run(&[]);
    r::check_ghm(&pooled, &d.anchors(), N_IMAGES, 10);
    let total = |rep: &serde_json::Value| rep["strategies"][0]["loss"]["total"].as_f64().unwrap();
    assert!((total(&per_level) - total(&pooled)).abs() > 1e-6 * total(&pooled));
    // Without a level column it says what is missing.
    d.write(&env, "d.parquet", 7);
    let err = env.run(&["analyze", "d.parquet", "--strategies", "ghm", "--ghm-per-level"]).err();
    assert!(err.contains("--ghm-per-level") && err.contains("'level'") && err.contains("d.parquet"), "{err}");
}

#[test]
fn nms_quotas_empty_image_policy_and_oversized_batches_match_brute_force() {
    let env = Env::new();
    let d = dump();
    d.write(&env, "d.parquet", 11);
    let images = r::by_image(&d.anchors());
    for (nms, frac) in [("0.3", None), ("0.3", Some("0.3")), ("0.05", Some("0.5"))] {
        let mut args = vec![
            "analyze",
            "d.parquet",
            "--strategies",
            "ohem,ssd,sampled",
            "--ohem-k",
            "7",
            "--ohem-nms",
            nms,
        ];
        if let Some(f) = frac {
            args.extend(["--ohem-pos-fraction", f]);
        }
        args.extend(["--ssd-empty-images", "all-negatives", "--batch-size-per-image", "100", "--draws", "0"]);
        args.extend(["--keep-ignored-images", "--format", "json"]);
        let rep = env.run(&args).json();
        let t: f32 = nms.parse().unwrap();
        let f = frac.map(|f| f.parse::<f64>().unwrap());
        let ohem = |img: &[Anchor]| r::indicator(img.len(), &r::ohem(img, 7, Some(t), f));
        r::check_sel(&rep, "ohem", &r::total(&images, N_IMAGES, ohem));
        let ssd = |img: &[Anchor]| r::indicator(img.len(), &r::ssd(img, 3, true));
        r::check_sel(&rep, "ssd", &r::total(&images, N_IMAGES, ssd));
        // B larger than every image: everything is sampled, with probability 1.
        let sampled = |img: &[Anchor]| r::sampled(img, 100, 0.5);
        r::check_sel(&rep, "sampled", &r::total(&images, N_IMAGES, sampled));
        let s = &rep["strategies"][2];
        assert_eq!(
            s["selected"].as_f64().unwrap(),
            rep["strategies"][2]["buckets"]["easy_negative"]["count"].as_f64().unwrap()
                + s["buckets"]["hard_negative"]["count"].as_f64().unwrap()
                + s["buckets"]["easy_positive"]["count"].as_f64().unwrap()
                + s["buckets"]["hard_positive"]["count"].as_f64().unwrap()
        );
    }
}

#[test]
fn nms_without_boxes_is_an_error_that_names_the_flag() {
    let env = Env::new();
    write(
        &env.path("nobox.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0])),
            ("label", Col::I32(vec![0, -1])),
            ("logits", Col::ListF32(vec![vec![1.0], vec![-1.0]])),
        ],
        10,
    );
    let e = env.run(&["analyze", "nobox.parquet", "--ohem-nms", "0.7"]).err();
    assert!(
        e.contains("--ohem-nms needs the box columns x1, y1, x2, y2") && e.contains("nobox.parquet"),
        "{e}"
    );
}

#[test]
fn images_split_around_other_images_are_reread_in_partitions() {
    let env = Env::new();
    // Image 0, then image 1, then image 0 again, in separate row groups.
    let logits: Vec<Vec<f32>> = [1.0f32, -2.0, 0.5, -1.0, 3.0, -4.0].iter().map(|&x| vec![x]).collect();
    write(
        &env.path("u.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0, 1, 1, 0, 0])),
            ("label", Col::I32(vec![0, -1, 0, -1, -1, -1])),
            ("logits", Col::ListF32(logits.clone())),
        ],
        2,
    );
    let out = env.run(&["analyze", "u.parquet", "--threads", "1", "--format", "json"]);
    let e = out.stderr();
    assert!(e.contains("note: image '0' appears again in u.parquet from row 4"), "{e}");
    assert!(e.contains("re-read the dump in partitions"), "{e}");
    // The same rows with image 0 together give the same selections.
    let order = [0usize, 1, 4, 5, 2, 3];
    write(
        &env.path("s.parquet"),
        vec![
            ("image_id", Col::I64(order.iter().map(|&i| [0, 0, 1, 1, 0, 0][i]).collect())),
            ("label", Col::I32(order.iter().map(|&i| [0, -1, 0, -1, -1, -1][i]).collect())),
            ("logits", Col::ListF32(order.iter().map(|&i| logits[i].clone()).collect())),
        ],
        2,
    );
    let sorted = env.run(&["analyze", "s.parquet", "--threads", "1", "--format", "json"]).json();
    let unsorted = out.json();
    // Counts and selections agree exactly; sums to f64 precision, not to the bit, since the rows
    // of the two files are in a different order (sums are f64 within blocks of file rows; see
    // docs/strategies.md, "Numerics").
    for k in 0..7 {
        let (a, b) = (&unsorted["strategies"][k], &sorted["strategies"][k]);
        let name = a["name"].as_str().unwrap_or("?").to_string();
        assert_json_close(&a["buckets"], &b["buckets"], 1e-12, &name);
        assert_json_close(&a["loss"], &b["loss"], 1e-12, &name);
        for bucket in ["easy_negative", "hard_negative", "easy_positive", "hard_positive"] {
            assert_eq!(a["buckets"][bucket]["count"], b["buckets"][bucket]["count"], "{name} {bucket}");
            assert_eq!(a["buckets"][bucket]["selected"], b["buckets"][bucket]["selected"], "{name} {bucket}");
        }
    }
    // --quiet keeps stderr empty.
    assert_eq!(env.run(&["analyze", "u.parquet", "--quiet"]).stderr(), "");
}

#[test]
fn sampled_variance_is_the_hypergeometric_one_and_draws_agree_with_the_expectation() {
    use statrs::distribution::Hypergeometric;
    use statrs::statistics::Distribution;
    // A binary dump: every candidate is one decision, so the selected count of a bucket is
    // hypergeometric within each stratum.
    let env = Env::new();
    let mut g = Lcg(21);
    let n = 3000;
    let image: Vec<i64> = (0..n).map(|i| (i / 600) as i64).collect();
    let target: Vec<f32> = (0..n).map(|_| if g.unit() < 0.05 { 1.0 } else { 0.0 }).collect();
    let logit: Vec<f32> = (0..n).map(|_| g.range(-5.0, 5.0) as f32).collect();
    write(
        &env.path("b.parquet"),
        vec![
            ("image_id", Col::I64(image.clone())),
            ("target", Col::F32(target.clone())),
            ("logit", Col::F32(logit.clone())),
        ],
        256,
    );
    let rep = env
        .run(&[
            "analyze",
            "b.parquet",
            "--strategies",
            "sampled",
            "--batch-size-per-image",
            "64",
            "--positive-fraction",
            "0.25",
            "--draws",
            "2000",
            "--seed",
            "3",
            "--format",
            "json",
        ])
        .json();
    let s = &rep["strategies"][0];
    let names = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];
    let mut var = [0.0; 4];
    for img in 0..5 {
        let rows: Vec<usize> = (0..n).filter(|&i| image[i] == img).collect();
        for positive in [false, true] {
            let stratum: Vec<usize> =
                rows.iter().copied().filter(|&i| (target[i] > 0.0) == positive).collect();
            let big_n = stratum.len() as u64;
            let pos_total = rows.iter().filter(|&&i| target[i] > 0.0).count() as u64;
            let n_pos = pos_total.min(16);
            let k = if positive { n_pos } else { (rows.len() as u64 - pos_total).min(64 - n_pos) };
            for (b, v) in var.iter_mut().enumerate() {
                let in_bucket = stratum
                    .iter()
                    .filter(|&&i| {
                        let p = 1.0 / (1.0 + (-(logit[i] as f64)).exp());
                        let p_t = if positive { p } else { 1.0 - p };
                        let bucket = usize::from(positive) * 2 + usize::from(p_t < 0.9);
                        bucket == b
                    })
                    .count() as u64;
                if big_n > 0 && k > 0 {
                    *v += Hypergeometric::new(big_n, in_bucket, k).unwrap().variance().unwrap();
                }
            }
        }
    }
    // The selected loss of a bucket: within each stratum a simple random sample of k of N
    // candidates, each carrying x_i = its CE if it is in the bucket, else 0; the sample sum has
    // variance k (N - k) / (N - 1) x (1/N) sum (x_i - mean)^2 (Cochran, Sampling Techniques,
    // theorem 2.2), and the strata and images are independent.
    let mut var_loss = [0.0; 4];
    for img in 0..5 {
        let rows: Vec<usize> = (0..n).filter(|&i| image[i] == img).collect();
        let pos_total = rows.iter().filter(|&&i| target[i] > 0.0).count();
        let n_pos = pos_total.min(16);
        for positive in [false, true] {
            let stratum: Vec<usize> =
                rows.iter().copied().filter(|&i| (target[i] > 0.0) == positive).collect();
            let big_n = stratum.len();
            let k = if positive { n_pos } else { (rows.len() - pos_total).min(64 - n_pos) };
            if big_n < 2 || k == 0 {
                continue;
            }
            for (b, v) in var_loss.iter_mut().enumerate() {
                let x: Vec<f64> = stratum
                    .iter()
                    .map(|&i| {
                        let p = 1.0 / (1.0 + (-(logit[i] as f64)).exp());
                        let p_t = if positive { p } else { 1.0 - p };
                        let bucket = usize::from(positive) * 2 + usize::from(p_t < 0.9);
                        if bucket == b {
                            -p_t.ln()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mean = x.iter().sum::<f64>() / big_n as f64;
                let pop_var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / big_n as f64;
                *v += (k * (big_n - k)) as f64 / (big_n - 1) as f64 * pop_var;
            }
        }
    }
    for (b, name) in names.iter().enumerate() {
        let got = s["extra"]["selected_std"][name].as_f64().unwrap();
        assert!((got - var[b].sqrt()).abs() < 1e-9, "{name}: {got} vs {}", var[b].sqrt());
        let got = s["extra"]["loss_std"][name].as_f64().unwrap();
        crate::util::assert_close(got, var_loss[b].sqrt(), 1e-9, &format!("{name} loss_std"));
        // 2000 seeded draws: their mean bucket loss is within 4 standard errors of the exact
        // expectation, and their spread matches the exact standard deviation.
        let draws = &s["extra"]["draws"]["loss"][name];
        let expected = s["buckets"][name]["loss"].as_f64().unwrap();
        let sd = s["extra"]["loss_std"][name].as_f64().unwrap();
        let mean = draws["mean"].as_f64().unwrap();
        assert!(
            (mean - expected).abs() <= 4.0 * sd / 2000f64.sqrt() + 1e-12,
            "{name}: draws {mean} vs {expected} (sd {sd})"
        );
        let draw_sd = draws["std"].as_f64().unwrap();
        assert!((draw_sd - sd).abs() <= 0.1 * sd + 1e-12, "{name}: draw sd {draw_sd} vs exact {sd}");
    }
    assert_eq!(s["extra"]["draws"]["n"], 2000);
}

#[test]
fn json_with_every_strategy_is_byte_identical_at_one_and_two_threads() {
    let env = Env::new();
    let d = dump();
    d.write(&env, "d.parquet", 3);
    let run = |t: &str| {
        env.run(&[
            "analyze",
            "d.parquet",
            "--ohem-nms",
            "0.5",
            "--threads",
            t,
            "--keep-ignored-images",
            "--format",
            "json",
        ])
        .ok()
    };
    assert_eq!(run("1"), run("2"));
}

#[test]
fn mine_exports_what_the_strategy_selects_and_reads_back() {
    use polars_core::prelude::*;
    use polars_io::prelude::*;
    let env = Env::new();
    let d = dump();
    d.write(&env, "d.parquet", 7);
    let images = r::by_image(&d.anchors());
    let read = |name: &str| -> DataFrame {
        let f = std::fs::File::open(env.path(name)).unwrap();
        ParquetReader::new(f).finish().unwrap()
    };
    let i64s = |df: &DataFrame, c: &str| -> Vec<i64> {
        df.column(c).unwrap().i64().unwrap().into_no_null_iter().collect()
    };

    // k = 2 keeps two of the three tied anchors of image 0: rows 5 and 6, in that order.
    let out = env.run(&[
        "mine",
        "--keep-ignored-images",
        "d.parquet",
        "--strategy",
        "ohem",
        "--ohem-k",
        "2",
        "--out",
        "ohem.parquet",
    ]);
    out.ok();
    assert!(out.stderr().contains("rows (ohem) from 4 images"), "{}", out.stderr());
    let df = read("ohem.parquet");
    let mut want = Vec::new();
    for img in images.values() {
        for (rank, i) in r::ohem(img, 2, None, None).into_iter().enumerate() {
            want.push((img[i].image, img[i].row as i64, rank as i32 + 1, img[i].ce));
        }
    }
    assert_eq!(df.height(), want.len());
    assert_eq!(i64s(&df, "row")[..2], [5, 6]);
    let ranks: Vec<i32> = df.column("rank").unwrap().i32().unwrap().into_no_null_iter().collect();
    let losses: Vec<f64> = df.column("loss").unwrap().f64().unwrap().into_no_null_iter().collect();
    for (k, (img, row, rank, ce)) in want.iter().enumerate() {
        assert_eq!(i64s(&df, "image_id")[k], *img);
        assert_eq!(i64s(&df, "row")[k], *row);
        assert_eq!(i64s(&df, "anchor_id")[k], 1000 + row);
        assert_eq!(ranks[k], *rank);
        assert_close(losses[k], *ce, 1e-12, "exported loss");
    }
    let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "strategy",
            "image_id",
            "file",
            "row",
            "anchor_id",
            "level",
            "label",
            "class",
            "loss",
            "rank",
            "weight"
        ]
    );

    // focal --top 2: the two highest focal losses per image, weight = focal / CE.
    env.run(&[
        "mine",
        "--keep-ignored-images",
        "d.parquet",
        "--strategy",
        "focal",
        "--top",
        "2",
        "--out",
        "focal.parquet",
        "--quiet",
    ])
    .ok();
    let df = read("focal.parquet");
    assert_eq!(df.height(), 2 * images.len());
    let weights: Vec<f64> = df.column("weight").unwrap().f64().unwrap().into_no_null_iter().collect();
    let losses: Vec<f64> = df.column("loss").unwrap().f64().unwrap().into_no_null_iter().collect();
    let rows = i64s(&df, "row");
    for k in 0..df.height() {
        let a = d.anchors().into_iter().find(|a| a.row as i64 == rows[k]).unwrap();
        assert_close(losses[k], a.focal, 1e-12, "focal loss");
        assert_close(weights[k], a.focal / a.ce, 1e-12, "focal weight");
    }

    // ssd and sampled: the selected counts per image.
    env.run(&[
        "mine",
        "--keep-ignored-images",
        "d.parquet",
        "--strategy",
        "ssd",
        "--out",
        "ssd.parquet",
        "--quiet",
    ])
    .ok();
    let want: usize = images.values().map(|img| r::ssd(img, 3, false).len()).sum();
    assert_eq!(read("ssd.parquet").height(), want);
    env.run(&[
        "mine",
        "--keep-ignored-images",
        "d.parquet",
        "--strategy",
        "sampled",
        "--batch-size-per-image",
        "5",
        "--out",
        "s.parquet",
        "--quiet",
    ])
    .ok();
    let want: usize = images.values().map(|img| img.len().min(5)).sum();
    assert_eq!(read("s.parquet").height(), want);
    let leftovers = std::fs::read_dir(env.root())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn help_shows_an_example_for_each_strategy() {
    let env = Env::new();
    let help = env.run(&["analyze", "--help"]).ok();
    for s in [
        "--strategies ce,focal",
        "alpha_ce",
        "--strategies ohem",
        "--strategies ssd",
        "--strategies sampled --preset rpn",
        "--strategies ghm",
    ] {
        assert!(help.contains(s), "{s} missing from:\n{help}");
    }
    let help = env.run(&["mine", "--help"]).ok();
    for s in ["--strategy ohem", "--strategy ssd", "--strategy sampled", "--strategy focal"] {
        assert!(help.contains(s), "{s} missing from:\n{help}");
    }
}

#[test]
fn images_scattered_over_files_and_row_groups_give_the_same_selection() {
    let env = Env::new();
    let d = dump();
    // Interleave the images: a fixed permutation of the rows, over two files.
    let n = d.image.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut g = Lcg(99);
    for i in (1..n).rev() {
        order.swap(i, (g.next() % (i as u64 + 1)) as usize);
    }
    let shuffled = Dump {
        image: order.iter().map(|&i| d.image[i]).collect(),
        label: order.iter().map(|&i| d.label[i]).collect(),
        logits: order.iter().map(|&i| d.logits[i].clone()).collect(),
        boxes: order.iter().map(|&i| d.boxes[i]).collect(),
    };
    let half = n / 2;
    let part = |range: std::ops::Range<usize>| Dump {
        image: shuffled.image[range.clone()].to_vec(),
        label: shuffled.label[range.clone()].to_vec(),
        logits: shuffled.logits[range.clone()].to_vec(),
        boxes: shuffled.boxes[range].to_vec(),
    };
    part(0..half).write(&env, "u/a.parquet", 9);
    part(half..n).write(&env, "u/b.parquet", 9);
    // The reference sees the rows in the same order: file a, then file b.
    let images = r::by_image(&shuffled.anchors());
    let args = [
        "analyze",
        "u",
        "--ohem-k",
        "10",
        "--neg-pos-ratio",
        "2",
        "--batch-size-per-image",
        "8",
        "--draws",
        "0",
        "--ohem-nms",
        "0.4",
        "--keep-ignored-images",
        "--format",
        "json",
    ];
    let out = env.run(&args);
    assert!(out.stderr().contains("re-read the dump in partitions"), "{}", out.stderr());
    let rep = out.json();
    let ohem = |img: &[Anchor]| r::indicator(img.len(), &r::ohem(img, 10, Some(0.4), None));
    let ssd = |img: &[Anchor]| r::indicator(img.len(), &r::ssd(img, 2, false));
    let sampled = |img: &[Anchor]| r::sampled(img, 8, 0.5);
    r::check_sel(&rep, "ohem", &r::total(&images, N_IMAGES, ohem));
    r::check_sel(&rep, "ssd", &r::total(&images, N_IMAGES, ssd));
    r::check_sel(&rep, "sampled", &r::total(&images, N_IMAGES, sampled));
    // The same at one thread, byte for byte, and the export follows the same selection.
    let mut at_one_thread = args.to_vec();
    at_one_thread.extend(["--threads", "1", "--quiet"]);
    let one = env.run(&at_one_thread);
    assert_eq!(one.json(), rep);
    let out = env.run(&[
        "mine",
        "--keep-ignored-images",
        "u",
        "--strategy",
        "ohem",
        "--ohem-k",
        "3",
        "--out",
        "h.parquet",
    ]);
    out.ok();
    assert!(out.stderr().contains("re-reads the dump in partitions"), "{}", out.stderr());
    let want: usize = images.values().map(|img| r::ohem(img, 3, None, None).len()).sum();
    let f = std::fs::File::open(env.path("h.parquet")).unwrap();
    use polars_io::prelude::*;
    assert_eq!(ParquetReader::new(f).finish().unwrap().height(), want);
}
