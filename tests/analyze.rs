//! `hardmine analyze` against an independent brute force, on real Parquet files.

use crate::util::fixture::{write, Col};
use crate::util::reference::{check, expected, expected_soft, Dec, Score, SoftLoss};
use crate::util::{assert_close, assert_json_close, Env, Lcg};

const STRATEGIES: [&str; 3] = ["ce", "alpha_ce", "focal"];

/// A dense sigmoid dump: rows of (image, label, logits).
struct Dense {
    image: Vec<i64>,
    label: Vec<i32>,
    logits: Vec<Vec<f32>>,
}

fn dense(seed: u64, images: i64, per_image: usize, c: usize) -> Dense {
    let mut r = Lcg(seed);
    let mut d = Dense { image: vec![], label: vec![], logits: vec![] };
    for img in 0..images {
        // The last image has only ignored anchors.
        let all_ignored = img == images - 1;
        for _ in 0..per_image {
            d.image.push(img);
            let label =
                if all_ignored { -2 } else { r.pick(&[-2, -1, -1, -1, -1, 0, 1, 2, 3]).min(c as i32 - 1) };
            d.label.push(label);
            d.logits.push((0..c).map(|_| r.range(-12.0, 12.0) as f32).collect());
        }
    }
    d
}

impl Dense {
    fn decisions(&self) -> Vec<Dec> {
        let mut out = Vec::new();
        for ((img, &label), xs) in self.image.iter().zip(&self.label).zip(&self.logits) {
            if label == -2 {
                continue;
            }
            for (c, &x) in xs.iter().enumerate() {
                let y = if label == c as i32 { 1.0 } else { 0.0 };
                out.push(Dec { image: img.to_string(), score: Score::Logit(x as f64), y, weight: 1.0 });
            }
        }
        out
    }
    fn images(&self) -> Vec<String> {
        let mut v: Vec<String> = self.image.iter().map(|i| i.to_string()).collect();
        v.dedup();
        v
    }
    fn write(&self, path: &std::path::Path, range: std::ops::Range<usize>, rows_per_group: usize) {
        let c = self.logits[0].len();
        write(
            path,
            vec![
                ("image_id", Col::I64(self.image[range.clone()].to_vec())),
                ("label", Col::I32(self.label[range.clone()].to_vec())),
                ("logits", Col::Fixed(c, self.logits[range].iter().flatten().copied().collect())),
            ],
            rows_per_group,
        );
    }
}

#[test]
fn dense_sigmoid_logits_match_brute_force_across_files_and_row_groups() {
    let env = Env::new();
    let d = dense(1, 6, 40, 4);
    // Two files; row groups of 7 rows, so images span row groups and files.
    d.write(&env.path("dump/a.parquet"), 0..130, 7);
    d.write(&env.path("dump/b.parquet"), 130..d.image.len(), 7);
    let decs = d.decisions();
    for (gamma, alpha, tau) in [(2.0, 0.25, 0.9), (1.5, 0.3, 0.8), (0.0, 0.5, 0.5)] {
        let r = env
            .run(&[
                "analyze",
                "dump",
                "--keep-ignored-images",
                "--format",
                "json",
                "--gamma",
                &gamma.to_string(),
                "--alpha",
                &alpha.to_string(),
                "--easy-threshold",
                &tau.to_string(),
            ])
            .json();
        let ds = &r["dataset"];
        let ignored = d.label.iter().filter(|&&l| l == -2).count() as u64;
        let positives = d.label.iter().filter(|&&l| l >= 0).count() as u64;
        // Hard targets only: no soft-target section.
        assert!(r.get("soft_targets").is_none());
        assert_eq!(ds["files"], 2);
        assert_eq!(ds["images"], 6);
        assert_eq!(ds["anchors"], 240);
        assert_eq!(ds["ignored"].as_u64().unwrap(), ignored);
        assert_eq!(ds["decisions"].as_u64().unwrap(), (240 - ignored) * 4);
        assert_eq!(ds["positives"].as_u64().unwrap(), positives);
        assert_eq!(ds["negatives"].as_u64().unwrap(), (240 - ignored) * 4 - positives);
        for s in STRATEGIES {
            check(&r, s, &expected(&decs, &d.images(), s, gamma, Some(alpha), tau));
        }
    }
}

#[test]
fn binary_soft_targets_and_weights_match_brute_force() {
    let env = Env::new();
    let mut r = Lcg(2);
    let n: usize = 300;
    let image: Vec<String> = (0..n).map(|i| format!("img_{:02}", i / 37)).collect();
    let target: Vec<f64> = (0..n).map(|_| r.pick(&[0.0, 0.0, 0.0, 1.0, 0.3, 0.8])).collect();
    let logit: Vec<f32> = (0..n).map(|_| r.range(-10.0, 10.0) as f32).collect();
    let weight: Vec<f64> = (0..n).map(|_| r.pick(&[1.0, 1.0, 0.5, 2.0, 0.0])).collect();
    let class: Vec<i32> = (0..n).map(|i| (i % 3) as i32).collect();
    write(
        &env.path("bin.parquet"),
        vec![
            ("image_id", Col::Str(image.clone())),
            ("class", Col::I32(class)),
            ("target", Col::F64(target.clone())),
            ("logit", Col::F32(logit.clone())),
            ("weight", Col::F64(weight.clone())),
        ],
        50,
    );
    let (decs, images) = logit_decisions(&image, &logit, &target, &weight);
    let rep = env.run(&["analyze", "bin.parquet", "--format", "json"]).json();
    assert_eq!(rep["metadata"]["layout"], "binary");
    assert_eq!(rep["dataset"]["anchors"], serde_json::Value::Null);
    assert_eq!(
        rep["dataset"]["positives"].as_u64().unwrap(),
        target.iter().filter(|&&t| t > 0.0).count() as u64
    );
    for s in STRATEGIES {
        check(&rep, s, &expected(&decs, &images, s, 2.0, Some(0.25), 0.9));
    }
}

#[test]
fn qfl_and_vfl_on_soft_targets_match_the_mmdetection_formulas_by_brute_force() {
    let env = Env::new();
    let mut r = Lcg(5);
    let n: usize = 400;
    let image: Vec<String> = (0..n).map(|i| format!("img_{:02}", i / 45)).collect();
    // IoU-quality targets: soft positives, hard positives, negatives.
    let target: Vec<f64> = (0..n).map(|_| r.pick(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.35, 0.62, 0.91])).collect();
    let logit: Vec<f32> = (0..n).map(|_| r.range(-9.0, 9.0) as f32).collect();
    let weight: Vec<f64> = (0..n).map(|_| r.pick(&[1.0, 1.0, 0.5, 2.0])).collect();
    write(
        &env.path("soft.parquet"),
        vec![
            ("image_id", Col::Str(image.clone())),
            ("target", Col::F64(target.clone())),
            ("logit", Col::F32(logit.clone())),
            ("weight", Col::F64(weight.clone())),
        ],
        64,
    );
    let (decs, images) = logit_decisions(&image, &logit, &target, &weight);
    // mmdetection's defaults, then other settings.
    let rep = env.run(&["analyze", "soft.parquet", "--strategies", "qfl,vfl", "--format", "json"]).json();
    assert_eq!(rep["strategies"][0]["params"], serde_json::json!({"beta": 2.0}));
    assert_eq!(rep["strategies"][1]["params"], serde_json::json!({"alpha": 0.75, "gamma": 2.0}));
    check(&rep, "qfl", &expected_soft(&decs, &images, SoftLoss::Qfl { beta: 2.0 }, 0.9));
    check(&rep, "vfl", &expected_soft(&decs, &images, SoftLoss::Vfl { alpha: 0.75, gamma: 2.0 }, 0.9));
    // CE = H(y) + KL(y || p) per bucket, KL written out from its definition.
    let names = ["easy_negative", "hard_negative", "easy_positive", "hard_positive"];
    let mut want = [[0.0f64; 3]; 4];
    let mut soft = [0u64; 4];
    for i in 0..n {
        let (x, y, w) = (logit[i] as f64, target[i], weight[i]);
        let p = 1.0 / (1.0 + (-x).exp());
        let xlogy = |a: f64, b: f64| if a > 0.0 { a * (a / b).ln() } else { 0.0 };
        let h = -(if y > 0.0 { y * y.ln() } else { 0.0 })
            - if y < 1.0 { (1.0 - y) * (1.0 - y).ln() } else { 0.0 };
        let kl = xlogy(y, p) + xlogy(1.0 - y, 1.0 - p);
        let p_t = p * y + (1.0 - p) * (1.0 - y);
        let b = usize::from(y > 0.0) * 2 + usize::from(p_t < 0.9);
        want[b][0] += w * (h + kl);
        want[b][1] += w * h;
        want[b][2] += w * kl;
        soft[b] += u64::from(y > 0.0 && y < 1.0);
    }
    let st = &rep["soft_targets"];
    for (b, name) in names.iter().enumerate() {
        let got = &st["buckets"][name];
        assert_eq!(got["soft_decisions"].as_u64().unwrap(), soft[b], "{name}");
        for (k, field) in ["ce", "entropy", "kl"].iter().enumerate() {
            assert_close(got[field].as_f64().unwrap(), want[b][k], 1e-9, &format!("soft {name} {field}"));
        }
    }
    let total_h: f64 = want.iter().map(|w| w[1]).sum();
    let total_ce: f64 = want.iter().map(|w| w[0]).sum();
    assert_close(
        st["total"]["entropy_share"].as_f64().unwrap(),
        total_h / total_ce,
        1e-9,
        "irreducible share",
    );
    // The renderers show it.
    let table = env.run(&["analyze", "soft.parquet", "--strategies", "qfl"]).ok();
    assert!(table.contains("H(y): irreducible"), "{table}");
    env.run(&["report", "soft.parquet", "--strategies", "qfl", "--out", "r.md"]).ok();
    let md = std::fs::read_to_string(env.path("r.md")).unwrap();
    assert!(md.contains("## Soft targets: irreducible and excess loss"), "{md}");
    let args = ["--qfl-beta", "1.5", "--vfl-alpha", "0.5", "--vfl-gamma", "1", "--easy-threshold", "0.8"];
    let rep = env
        .run(
            &[&["analyze", "soft.parquet", "--strategies", "vfl,qfl", "--format", "json"][..], &args]
                .concat(),
        )
        .json();
    check(&rep, "qfl", &expected_soft(&decs, &images, SoftLoss::Qfl { beta: 1.5 }, 0.8));
    check(&rep, "vfl", &expected_soft(&decs, &images, SoftLoss::Vfl { alpha: 0.5, gamma: 1.0 }, 0.8));
    // Softmax dumps are refused up front: both are sigmoid losses.
    let err =
        env.run(&["analyze", "soft.parquet", "--strategies", "ce,vfl", "--activation", "softmax"]).err();
    assert!(err.contains("--strategies") && err.contains("vfl") && err.contains("sigmoid"), "{err}");
}

#[test]
fn binary_bool_and_integer_targets_are_hard_targets() {
    let env = Env::new();
    let logit = vec![2.0f32, -1.0, 0.5, -3.0];
    write(
        &env.path("b.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0, 1, 1])),
            ("target", Col::Bool(vec![true, false, false, true])),
            ("logit", Col::F32(logit.clone())),
        ],
        10,
    );
    write(
        &env.path("i.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0, 1, 1])),
            ("target", Col::I32(vec![1, 0, 0, 1])),
            ("logit", Col::F32(logit.clone())),
        ],
        10,
    );
    let a = env.run(&["analyze", "b.parquet", "--format", "json"]).json();
    let b = env.run(&["analyze", "i.parquet", "--format", "json"]).json();
    assert_eq!(a["strategies"], b["strategies"]);
    let decs: Vec<Dec> = [(0, 2.0, 1.0), (0, -1.0, 0.0), (1, 0.5, 0.0), (1, -3.0, 1.0)]
        .iter()
        .map(|&(i, x, y)| Dec { image: i.to_string(), score: Score::Logit(x), y, weight: 1.0 })
        .collect();
    for s in STRATEGIES {
        check(&a, s, &expected(&decs, &["0".into(), "1".into()], s, 2.0, Some(0.25), 0.9));
    }
}

#[test]
fn softmax_logits_and_probabilities_match_brute_force() {
    let env = Env::new();
    let mut r = Lcg(3);
    let (n, k) = (120, 4);
    let image: Vec<i64> = (0..n).map(|i| (i / 25) as i64).collect();
    let label: Vec<i32> = (0..n).map(|_| r.pick(&[-2, 0, 0, 0, 1, 2, 3])).collect();
    let logits: Vec<Vec<f64>> = (0..n).map(|_| (0..k).map(|_| r.range(-8.0, 8.0)).collect()).collect();
    let probs: Vec<Vec<f64>> = logits
        .iter()
        .map(|row| {
            let s: f64 = row.iter().map(|x| x.exp()).sum();
            row.iter().map(|x| x.exp() / s).collect()
        })
        .collect();
    write(
        &env.path("logits.parquet"),
        vec![
            ("image_id", Col::I64(image.clone())),
            ("label", Col::I32(label.clone())),
            ("logits", Col::ListF64(logits.clone())),
        ],
        16,
    );
    write(
        &env.path("probs.parquet"),
        vec![
            ("image_id", Col::I64(image.clone())),
            ("label", Col::I32(label.clone())),
            ("probs", Col::ListF64(probs.clone())),
        ],
        16,
    );
    let mut images: Vec<String> = image.iter().map(|i| i.to_string()).collect();
    images.dedup();
    for bg in [0usize, 3] {
        let decs = |probabilities: bool| -> Vec<Dec> {
            (0..n)
                .filter(|&i| label[i] != -2)
                .map(|i| {
                    let t = label[i] as usize;
                    let score = if probabilities {
                        Score::SoftmaxProbs(probs[i].clone(), t)
                    } else {
                        Score::SoftmaxLogits(logits[i].clone(), t)
                    };
                    Dec {
                        image: image[i].to_string(),
                        score,
                        y: if t == bg { 0.0 } else { 1.0 },
                        weight: 1.0,
                    }
                })
                .collect()
        };
        for (file, p) in [("logits.parquet", false), ("probs.parquet", true)] {
            let bgs = bg.to_string();
            let rep = env
                .run(&[
                    "analyze",
                    file,
                    "--activation",
                    "softmax",
                    "--background-class",
                    &bgs,
                    "--format",
                    "json",
                ])
                .json();
            assert_eq!(rep["metadata"]["classes"], 4);
            assert_eq!(rep["metadata"]["parameters"]["background_class"], bg);
            let want = decs(p);
            assert_eq!(rep["dataset"]["decisions"].as_u64().unwrap(), want.len() as u64);
            for s in STRATEGIES {
                check(&rep, s, &expected(&want, &images, s, 2.0, Some(0.25), 0.9));
            }
        }
    }
}

#[test]
fn sigmoid_probabilities_clamp_like_torch_and_match_brute_force() {
    let env = Env::new();
    let mut r = Lcg(4);
    let n = 80;
    let image: Vec<i64> = (0..n).map(|i| (i / 20) as i64).collect();
    let label: Vec<i32> = (0..n).map(|_| r.pick(&[-1, -1, 0, 1, -2])).collect();
    let probs: Vec<Vec<f32>> = (0..n).map(|_| (0..2).map(|_| r.range(0.01, 0.99) as f32).collect()).collect();
    write(
        &env.path("p.parquet"),
        vec![
            ("image_id", Col::I64(image.clone())),
            ("label", Col::I32(label.clone())),
            ("probs", Col::ListF32(probs.clone())),
        ],
        30,
    );
    let mut decs = Vec::new();
    for i in 0..n {
        if label[i] == -2 {
            continue;
        }
        for (c, &p) in probs[i].iter().enumerate() {
            let y = if label[i] == c as i32 { 1.0 } else { 0.0 };
            decs.push(Dec { image: image[i].to_string(), score: Score::Prob(p as f64), y, weight: 1.0 });
        }
    }
    let mut images: Vec<String> = image.iter().map(|i| i.to_string()).collect();
    images.dedup();
    let rep = env.run(&["analyze", "p.parquet", "--format", "json"]).json();
    assert_eq!(rep["metadata"]["scores"], "probs");
    for s in STRATEGIES {
        check(&rep, s, &expected(&decs, &images, s, 2.0, Some(0.25), 0.9));
    }
}

#[test]
fn sigmoid_probabilities_of_exactly_0_and_1_clamp_the_log_at_minus_100_like_torch() {
    // torch.nn.functional.binary_cross_entropy clamps its log terms at -100: a certain and wrong
    // probability costs 100 nats, not infinity; a certain and right one costs 0.
    let env = Env::new();
    write(
        &env.path("p.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0, 1])),
            // Row 0: class 0 positive with p = 0, class 1 negative with p = 1 (both wrong).
            // Row 1: class 0 negative with p = 0, class 1 positive with p = 1 (both right).
            // Row 2: background; class 0 at f32's smallest subnormal (a negative: it costs
            // -ln(1 - 1.4e-45), about 1.4e-45), class 1 at p = 1 (wrong: 100).
            ("label", Col::I32(vec![0, 1, -1])),
            ("probs", Col::ListF32(vec![vec![0.0, 1.0], vec![0.0, 1.0], vec![f32::from_bits(1), 1.0]])),
        ],
        10,
    );
    let rep = env
        .run(&[
            "analyze",
            "p.parquet",
            "--strategies",
            "ce,focal",
            "--gamma",
            "2",
            "--alpha",
            "0.25",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(rep["metadata"]["scores"], "probs");
    let total = |s: usize| rep["strategies"][s]["loss"]["total"].as_f64().unwrap();
    // CE: 100 (row 0, class 0) + 100 (row 0, class 1) + 0 + 0 + 1.4e-45 + 100 (row 2, class 1).
    crate::util::assert_close(total(0), 300.0, 1e-12, "ce total");
    // Focal, p_t = 0 for the three wrong ones: alpha_t (1 - 0)^2 x 100 = 25 + 75 + 75.
    crate::util::assert_close(total(1), 175.0, 1e-12, "focal total");
    let hard = |s: usize, b: &str| rep["strategies"][s]["buckets"][b]["count"].as_u64().unwrap();
    assert_eq!((hard(0, "hard_positive"), hard(0, "hard_negative")), (1, 2));
    assert_eq!((hard(0, "easy_positive"), hard(0, "easy_negative")), (1, 2));
}

#[test]
fn focal_loss_paper_ratios_100x_at_pt_0_9_and_about_1000x_at_pt_0_968() {
    // Lin et al. 2017, section 3.2: with gamma = 2, an example with p_t = 0.9 has 100x lower
    // loss than with CE, and with p_t ~ 0.968 about 1000x lower.
    let env = Env::new();
    let pos = (0.9f64 / 0.1).ln(); // positive with p_t = 0.9
    let neg = -(0.968f64 / 0.032).ln(); // negative with p_t = 0.968
    write(
        &env.path("paper.parquet"),
        vec![
            ("image_id", Col::I64(vec![0, 0])),
            ("target", Col::F32(vec![1.0, 0.0])),
            ("logit", Col::F64(vec![pos, neg])),
        ],
        10,
    );
    // tau 0.5 keeps p_t = 0.9 (which rounds either side of 0.9) in the easy bucket.
    let rep = env
        .run(&[
            "analyze",
            "paper.parquet",
            "--alpha",
            "-1",
            "--strategies",
            "ce,focal",
            "--easy-threshold",
            "0.5",
            "--format",
            "json",
        ])
        .json();
    let loss = |s: usize, b: &str| rep["strategies"][s]["buckets"][b]["loss"].as_f64().unwrap();
    let r_pos = loss(0, "easy_positive") / loss(1, "easy_positive");
    let r_neg = loss(0, "easy_negative") / loss(1, "easy_negative");
    assert!((r_pos - 100.0).abs() < 1e-9, "{r_pos}");
    assert!((r_neg - 1.0 / 0.032f64.powi(2)).abs() < 1e-6, "{r_neg}");
    assert!(r_neg > 900.0 && r_neg < 1100.0);
    // Hand-worked: CE at p_t = 0.9 is -ln 0.9.
    assert!((loss(0, "easy_positive") - -(0.9f64.ln())).abs() < 1e-15);
}

#[test]
fn negative_alpha_disables_alpha_weighting_like_torchvision() {
    let env = Env::new();
    let d = dense(5, 3, 30, 2);
    d.write(&env.path("d.parquet"), 0..d.image.len(), 1000);
    let rep = env
        .run(&["analyze", "d.parquet", "--alpha", "-1", "--keep-ignored-images", "--format", "json"])
        .json();
    assert_eq!(rep["metadata"]["parameters"]["alpha"], serde_json::Value::Null);
    assert_eq!(rep["strategies"][1]["params"]["alpha"], serde_json::Value::Null);
    // alpha_ce without alpha is CE, exactly.
    assert_eq!(rep["strategies"][0]["buckets"], rep["strategies"][1]["buckets"]);
    let decs = d.decisions();
    check(&rep, "focal", &expected(&decs, &d.images(), "focal", 2.0, None, 0.9));
    // gamma 0 and no alpha: focal is CE.
    let rep = env
        .run(&[
            "analyze",
            "d.parquet",
            "--alpha",
            "-1",
            "--gamma",
            "0",
            "--keep-ignored-images",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(rep["strategies"][0]["buckets"], rep["strategies"][2]["buckets"]);
}

#[test]
fn string_ids_variable_lists_hive_partitions_and_renamed_columns() {
    let env = Env::new();
    let d = dense(6, 4, 25, 3);
    // image_id comes from the hive directory name; labels and logits use other names.
    let mut decs = Vec::new();
    for img in 0..4 {
        let rows: Vec<usize> = (0..d.image.len()).filter(|&i| d.image[i] == img).collect();
        let name = format!("photo{img}");
        write(
            &env.path(&format!("runs/image_id={name}/part.parquet")),
            vec![
                ("gt", Col::I32(rows.iter().map(|&i| d.label[i]).collect())),
                ("cls", Col::ListF32(rows.iter().map(|&i| d.logits[i].clone()).collect())),
            ],
            8,
        );
        for &i in &rows {
            if d.label[i] == -2 {
                continue;
            }
            for c in 0..3 {
                let y = if d.label[i] == c as i32 { 1.0 } else { 0.0 };
                decs.push(Dec {
                    image: name.clone(),
                    score: Score::Logit(d.logits[i][c] as f64),
                    y,
                    weight: 1.0,
                });
            }
        }
    }
    let images: Vec<String> = (0..4).map(|i| format!("photo{i}")).collect();
    let run = |input: &str| {
        env.run(&[
            "analyze",
            input,
            "--col",
            "label=gt",
            "--col",
            "logits=cls",
            "--keep-ignored-images",
            "--format",
            "json",
        ])
        .json()
    };
    let rep = run("runs");
    assert_eq!(rep["dataset"]["files"], 4);
    assert_eq!(rep["dataset"]["images"], 4);
    assert_eq!(rep["metadata"]["columns"]["label"], "gt");
    for s in STRATEGIES {
        check(&rep, s, &expected(&decs, &images, s, 2.0, Some(0.25), 0.9));
    }
    // A quoted glob reaches the same files.
    let glob = run("runs/*/part.parquet");
    assert_eq!(glob["strategies"], rep["strategies"]);
}

#[test]
fn json_is_byte_identical_across_threads_and_row_group_sizes() {
    let env = Env::new();
    let d = dense(7, 12, 150, 5);
    std::fs::create_dir_all(env.path("groups_of_17")).unwrap();
    std::fs::create_dir_all(env.path("groups_of_100k")).unwrap();
    d.write(&env.path("groups_of_17/dump.parquet"), 0..d.image.len(), 17);
    d.write(&env.path("groups_of_100k/dump.parquet"), 0..d.image.len(), 100_000);
    // Every strategy (seeded sampling included), then the sweep with its breakdowns.
    let commands: [&[&str]; 2] =
        [&["analyze", "--strategies", "ce,alpha_ce,focal,ohem,ssd,sampled,ghm", "--draws", "20"], &["sweep"]];
    for command in commands {
        let mut outputs = Vec::new();
        for dir in ["groups_of_17", "groups_of_100k"] {
            // Three thread counts, and a rerun of the first.
            for threads in ["1", "2", "3", "1"] {
                let input = format!("{dir}/../{dir}/dump.parquet");
                let mut argv = command.to_vec();
                argv.extend([
                    input.as_str(),
                    "--threads",
                    threads,
                    "--keep-ignored-images",
                    "--format",
                    "json",
                ]);
                let out = env.run(&argv).ok();
                // Paths differ by directory name only; compare everything after the inputs.
                outputs.push(out.replace(dir, "DIR"));
            }
        }
        for o in &outputs[1..] {
            assert_eq!(o, &outputs[0], "{command:?}");
        }
    }
}

#[test]
fn a_row_group_of_several_batches_gives_the_same_json_on_any_threads() {
    // One row group of 150,000 rows: three batches (at most 65,536 rows each), which the other
    // threads take from the one reading them; the same dump in row groups of 20,000 rows.
    let env = Env::new();
    let common = ["--images", "3", "--anchors-per-image", "50000", "--classes", "4", "--seed", "5"];
    for (dir, rows) in [("one_group", "1000000"), ("small_groups", "20000")] {
        let mut args = vec!["generate", "--out", dir, "--rows-per-group", rows];
        args.extend(common);
        env.run(&args).ok();
    }
    let mut outputs = Vec::new();
    for dir in ["one_group", "small_groups"] {
        for threads in ["1", "2", "3"] {
            let argv = [
                "analyze",
                dir,
                "--strategies",
                "ce,alpha_ce,focal,ohem,ssd,sampled,ghm",
                "--draws",
                "5",
                "--threads",
                threads,
                "--format",
                "json",
            ];
            let run = env.run(&argv);
            // In dump order: a batch folded out of order would make an image appear again, and
            // the pass would re-read the dump in partitions (the same numbers, and a note).
            assert!(!run.stderr().contains("appears again"), "{dir}, {threads} threads: {}", run.stderr());
            outputs.push(run.ok().replace(dir, "DIR"));
        }
    }
    for (k, o) in outputs.iter().enumerate() {
        assert_eq!(o, &outputs[0], "run {k}");
    }
}

#[test]
fn dense_and_binary_dumps_of_the_same_seed_agree() {
    let env = Env::new();
    let common = [
        "--images",
        "3",
        "--anchors-per-image",
        "3000",
        "--classes",
        "4",
        "--seed",
        "11",
        "--rows-per-group",
        "1000",
    ];
    let mut args = vec!["generate", "--out", "dense"];
    args.extend(common);
    env.run(&args).ok();
    let mut args = vec!["generate", "--out", "binary", "--layout", "binary"];
    args.extend(common);
    env.run(&args).ok();
    // Per-decision strategies agree; selection strategies differ by design (their unit is the
    // anchor in a dense dump and the decision in a binary one).
    let per_decision = "ce,alpha_ce,focal,ghm";
    let a = env.run(&["analyze", "dense", "--strategies", per_decision, "--format", "json"]).json();
    let b = env.run(&["analyze", "binary", "--strategies", per_decision, "--format", "json"]).json();
    for key in ["images", "decisions", "positives", "negatives"] {
        assert_eq!(a["dataset"][key], b["dataset"][key], "{key}");
    }
    // Counts agree exactly; sums to f64 precision, not to the bit: the two layouts form different
    // summation blocks (an anchor's C decisions are one row in one and C rows in the other; see
    // docs/strategies.md, "Numerics").
    assert_json_close(&a["strategies"], &b["strategies"], 1e-12, "strategies");
}

/// The committed fixtures in tests/fixtures were written by pyarrow (tests/fixtures/make_fixtures.py).
fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn pyarrow_written_dumps_read_like_polars_written_ones() {
    use polars_arrow::array::{BinaryViewArrayGeneric, ListArray, PrimitiveArray};
    use polars_io::prelude::*;
    let env = Env::new();
    // Values straight from the file, to build the reference.
    let df = ParquetReader::new(std::fs::File::open(fixture("pyarrow_dense_list.parquet")).unwrap())
        .finish()
        .unwrap();
    let arr = |name: &str| df.column(name).unwrap().as_materialized_series().rechunk().chunks()[0].clone();
    let ids_arr = arr("image_id");
    let ids_arr = ids_arr.as_any().downcast_ref::<BinaryViewArrayGeneric<str>>().unwrap();
    let images: Vec<String> = (0..ids_arr.len()).map(|i| ids_arr.value(i).to_string()).collect();
    let labels_arr = arr("label");
    let labels: Vec<i32> =
        labels_arr.as_any().downcast_ref::<PrimitiveArray<i32>>().unwrap().values().as_slice().to_vec();
    let lists = arr("logits");
    let lists = lists.as_any().downcast_ref::<ListArray<i64>>().unwrap();
    let mut decs = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        if label == -2 {
            continue;
        }
        let row = lists.value(i);
        let row = row.as_any().downcast_ref::<PrimitiveArray<f32>>().unwrap();
        for (c, &x) in row.values().iter().enumerate() {
            let y = if label == c as i32 { 1.0 } else { 0.0 };
            decs.push(Dec { image: images[i].clone(), score: Score::Logit(x as f64), y, weight: 1.0 });
        }
    }
    let mut ids = images.clone();
    ids.dedup();
    let fixed = env.run(&["analyze", &fixture("pyarrow_dense.parquet"), "--format", "json"]).json();
    let list = env.run(&["analyze", &fixture("pyarrow_dense_list.parquet"), "--format", "json"]).json();
    for s in STRATEGIES {
        check(&fixed, s, &expected(&decs, &ids, s, 2.0, Some(0.25), 0.9));
    }
    assert_eq!(fixed["strategies"], list["strategies"]);
    assert_eq!(fixed["breakdowns"]["by_level"].as_array().unwrap().len(), 3);
    // Binary with bool targets, float64 logits and int16 classes.
    let bin = env.run(&["analyze", &fixture("pyarrow_binary.parquet"), "--format", "json"]).json();
    assert_eq!(bin["dataset"]["decisions"], 30);
    assert_eq!(bin["metadata"]["layout"], "binary");
    check_pyarrow_binary(&bin);
}

/// The pyarrow binary fixture's numbers against the brute-force reference, from its values read
/// with polars (bool targets, float64 logits, int16 classes): every reweighting strategy, and the
/// per-class breakdown's counts and CE shares.
fn check_pyarrow_binary(bin: &serde_json::Value) {
    use polars_io::prelude::*;
    let df =
        ParquetReader::new(std::fs::File::open(fixture("pyarrow_binary.parquet")).unwrap()).finish().unwrap();
    let ids: Vec<i64> = df.column("image_id").unwrap().i64().unwrap().into_no_null_iter().collect();
    let targets: Vec<bool> =
        df.column("target").unwrap().bool().unwrap().iter().map(|t| t.unwrap()).collect();
    let logits: Vec<f64> = df.column("logit").unwrap().f64().unwrap().into_no_null_iter().collect();
    let classes: Vec<i16> = df.column("class").unwrap().i16().unwrap().into_no_null_iter().collect();
    assert_eq!((ids.len(), targets.len(), logits.len(), classes.len()), (30, 30, 30, 30));
    let decs: Vec<Dec> = (0..30)
        .map(|i| Dec {
            image: ids[i].to_string(),
            score: Score::Logit(logits[i]),
            y: if targets[i] { 1.0 } else { 0.0 },
            weight: 1.0,
        })
        .collect();
    let mut images: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    images.dedup();
    for s in STRATEGIES {
        check(bin, s, &expected(&decs, &images, s, 2.0, Some(0.25), 0.9));
    }
    // Per class: decisions, positives and the class's share of CE, summed here from the logits.
    let ce = |i: usize| {
        let p = 1.0 / (1.0 + (-logits[i]).exp());
        if targets[i] {
            -p.ln()
        } else {
            -(1.0 - p).ln()
        }
    };
    let total: f64 = (0..30).map(ce).sum();
    let rows = bin["breakdowns"]["by_class"].as_array().unwrap();
    let mut seen: Vec<i16> = classes.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(rows.len(), seen.len(), "one row per class present");
    for row in rows {
        let k = row["key"].as_i64().unwrap() as i16;
        let mine: Vec<usize> = (0..30).filter(|&i| classes[i] == k).collect();
        assert_eq!(row["decisions"].as_u64().unwrap(), mine.len() as u64, "class {k} decisions");
        let positives = mine.iter().filter(|&&i| targets[i]).count() as u64;
        assert_eq!(row["positives"].as_u64().unwrap(), positives, "class {k} positives");
        let share: f64 = mine.iter().map(|&i| ce(i)).sum::<f64>() / total;
        crate::util::assert_close(
            row["ce_share"].as_f64().unwrap(),
            share,
            1e-9,
            &format!("class {k} ce_share"),
        );
    }
}

#[test]
fn shard_states_merge_into_the_report_of_one_run() {
    let env = Env::new();
    env.run(&[
        "generate",
        "--out",
        "d",
        "--images",
        "9",
        "--anchors-per-image",
        "2000",
        "--classes",
        "3",
        "--images-per-file",
        "3",
    ])
    .ok();
    let whole = env.run(&["analyze", "d", "--format", "json"]).json();
    let mut states = Vec::new();
    for i in 0..3 {
        let file = format!("d/part-0000{i}.parquet");
        let state = format!("s{i}.state");
        env.run(&[
            "analyze",
            &file,
            "--save-state",
            &state,
            "--threads",
            &(1 + i % 2).to_string(),
            "--quiet",
        ])
        .ok();
        states.push(state);
    }
    let mut argv = vec!["merge"];
    argv.extend(states.iter().map(String::as_str));
    argv.extend(["--format", "json"]);
    let mut merged = env.run(&argv).json();
    assert_eq!(merged["metadata"]["command"], "merge");
    merged["metadata"]["command"] = whole["metadata"]["command"].clone();
    // Exact sums: the merge is not just close, it is the same report.
    assert_eq!(merged, whole);

    // A shard run twice, different flags, another file: clear errors.
    let e = env.run(&["merge", "s0.state", "s0.state"]).err();
    assert!(e.contains("each file must be in one shard"), "{e}");
    env.run(&["analyze", "d/part-00001.parquet", "--gamma", "1", "--save-state", "g1.state", "--quiet"]).ok();
    let e = env.run(&["merge", "s0.state", "g1.state"]).err();
    assert!(e.contains("the analysis settings differ"), "{e}");
    std::fs::write(env.path("bad.state"), b"{\"state_version\": 99}").unwrap();
    let e = env.run(&["merge", "bad.state"]).err();
    assert!(e.contains("state version 99") && e.contains("fix:"), "{e}");
    std::fs::write(env.path("junk.state"), b"not json").unwrap();
    assert!(env.run(&["merge", "junk.state"]).err().contains("not a hardmine state file"));
    // A state written by another hardmine version.
    // (Edited as text: the state's 128-bit sums do not survive a serde_json::Value.)
    let text = std::fs::read_to_string(env.path("s1.state")).unwrap();
    let ours = env!("CARGO_PKG_VERSION");
    let field = format!("\"hardmine_version\":\"{ours}\"");
    assert!(text.contains(&field), "no {field} in the state");
    std::fs::write(env.path("old.state"), text.replace(&field, "\"hardmine_version\":\"0.0.1-old\""))
        .unwrap();
    let e = env.run(&["merge", "s0.state", "old.state"]).err();
    assert!(
        e.contains("written by hardmine 0.0.1-old")
            && e.contains(&format!("the first by hardmine {ours}"))
            && e.contains("old.state"),
        "{e}"
    );
    // A state computed on a processor that fuses multiply-adds differently from this one's.
    let (fused, other) = if text.contains("\"fused\":true") { ("true", "false") } else { ("false", "true") };
    let field = format!("\"fused\":{fused}");
    assert!(text.contains(&field), "no {field} in the state");
    std::fs::write(env.path("other.state"), text.replace(&field, &format!("\"fused\":{other}"))).unwrap();
    let e = env.run(&["merge", "s0.state", "other.state"]).err();
    assert!(e.contains("fused multiply-adds") && e.contains("other.state"), "{e}");
    // Dumps of another shape (4 classes instead of 3).
    env.run(&["generate", "--out", "c4", "--images", "2", "--anchors-per-image", "500", "--classes", "4"])
        .ok();
    env.run(&["analyze", "c4", "--save-state", "c4.state", "--quiet"]).ok();
    let e = env.run(&["merge", "s0.state", "c4.state"]).err();
    assert!(
        e.contains("the dumps differ in layout, scores, activation or class count") && e.contains("fix:"),
        "{e}"
    );
}

#[test]
fn an_image_split_between_shards_is_refused_for_per_image_strategies() {
    let env = Env::new();
    // Image 1 in both shards (image 2, all ignored, has no candidates).
    let d = dense(12, 3, 20, 2);
    d.write(&env.path("a.parquet"), 0..25, 100);
    d.write(&env.path("b.parquet"), 25..60, 100);
    env.run(&["analyze", "a.parquet", "--save-state", "a.state", "--keep-ignored-images", "--quiet"]).ok();
    env.run(&["analyze", "b.parquet", "--save-state", "b.state", "--keep-ignored-images", "--quiet"]).ok();
    let e = env.run(&["merge", "a.state", "b.state"]).err();
    assert!(e.contains("image '1' is in both") && e.contains("shard by image"), "{e}");
    // Without per-image strategies the per-image sums merge by id: allowed.
    let s = "ce,alpha_ce,focal,ghm";
    env.run(&[
        "analyze",
        "a.parquet",
        "--strategies",
        s,
        "--save-state",
        "a2.state",
        "--keep-ignored-images",
        "--quiet",
    ])
    .ok();
    env.run(&[
        "analyze",
        "b.parquet",
        "--strategies",
        s,
        "--save-state",
        "b2.state",
        "--keep-ignored-images",
        "--quiet",
    ])
    .ok();
    let merged = env.run(&["merge", "a2.state", "b2.state", "--format", "json"]).json();
    let one = env
        .run(&[
            "analyze",
            "a.parquet",
            "b.parquet",
            "--strategies",
            s,
            "--keep-ignored-images",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(merged["strategies"], one["strategies"]);
}

#[test]
fn one_large_row_group_is_read_in_bounded_batches_that_give_the_many_small_groups_result() {
    use hardmine::config::AnalysisParams;
    use hardmine::input::{batch_rows, Dump, MAX_BATCH_ROWS};
    let env = Env::new();
    // Just over two batches of rows in one row group; images of 4000 rows span the batch ends.
    let d = dense(11, 34, 4000, 3);
    let n = d.image.len();
    let size = batch_rows(3, 4);
    assert_eq!(size, MAX_BATCH_ROWS);
    assert!(n > 2 * size && n < 3 * size);
    for (dir, group) in [("one_group", n), ("batch_groups", size), ("groups_of_999", 999)] {
        std::fs::create_dir_all(env.path(dir)).unwrap();
        d.write(&env.path(&format!("{dir}/dump.parquet")), 0..n, group);
    }
    // The row group reaches the pass in ceil(n / size) batches of consecutive rows: memory per
    // batch does not grow with the row group.
    let config = AnalysisParams::default().check().unwrap();
    let dump = Dump::open(&[env.path("one_group").display().to_string()], config.dump()).unwrap();
    assert_eq!(dump.units().len(), 1);
    let batches = dump.read_batches(dump.units()[0]).unwrap();
    assert_eq!(batches.len(), n.div_ceil(size));
    let mut next = 0u64;
    for b in &batches {
        assert!(b.rows <= size);
        assert_eq!(b.first_row, next);
        assert_eq!(b.scores.f32s().unwrap().len(), b.rows * 3);
        next += b.rows as u64;
    }
    assert_eq!(next, n as u64);
    // And the report is the one of the file whose row groups are those batches (and of any other
    // grouping), for every strategy, per-image selections included.
    let mut outputs = Vec::new();
    for dir in ["one_group", "batch_groups", "groups_of_999"] {
        for threads in ["1", "2"] {
            let input = format!("{dir}/dump.parquet");
            let argv = [
                "analyze",
                "--strategies",
                "ce,alpha_ce,focal,ohem,ssd,sampled,ghm",
                "--draws",
                "5",
                input.as_str(),
                "--threads",
                threads,
                "--keep-ignored-images",
                "--format",
                "json",
            ];
            outputs.push(env.run(&argv).ok().replace(dir, "DIR"));
        }
    }
    for o in &outputs[1..] {
        assert_eq!(o, &outputs[0]);
    }
}

/// The reference's sigmoid-logit decisions of a binary dump, and its images in dump order.
fn logit_decisions(
    image: &[String],
    logit: &[f32],
    target: &[f64],
    weight: &[f64],
) -> (Vec<Dec>, Vec<String>) {
    let decs = (0..image.len())
        .map(|i| Dec {
            image: image[i].clone(),
            score: Score::Logit(logit[i] as f64),
            y: target[i],
            weight: weight[i],
        })
        .collect();
    let mut images = image.to_vec();
    images.dedup();
    (decs, images)
}
