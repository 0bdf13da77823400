//! `hardmine generate --steps`, `hardmine trend` and `hardmine compare`: the drift over a
//! generated training sequence, groups that cannot be analysed, and comparisons checked against
//! the single reports.

use serde_json::Value;

use crate::util::fixture::{write, Col};
use crate::util::Env;

/// RetinaNet's prior-bias logit, -log(99), where `--prior-start` puts every logit at step 0.
const PRIOR: f64 = -4.59511985013459;

fn sequence(env: &Env, out: &str, extra: &[&str]) {
    let mut args = vec![
        "generate",
        "--out",
        out,
        "--images",
        "3",
        "--anchors-per-image",
        "4000",
        "--classes",
        "4",
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    env.run(&args).ok();
}

fn groups(v: &Value) -> &Vec<Value> {
    v["groups"].as_array().expect("groups")
}

fn figure(g: &Value, f: impl Fn(&Value) -> &Value) -> f64 {
    f(&g["report"]).as_f64().unwrap_or_else(|| panic!("no figure in {}", g["value"]))
}

fn strategy<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["strategies"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[test]
fn trend_on_a_generated_five_step_dump_shows_the_expected_monotone_drift() {
    let env = Env::new();
    sequence(&env, "run", &["--steps", "5", "--prior-start"]);
    let json = env.run(&["trend", "run", "--format", "json", "--threads", "1"]).ok();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["metadata"]["by"], "step");
    let g = groups(&v);
    let steps: Vec<i64> = g.iter().map(|g| g["value"].as_i64().unwrap()).collect();
    assert_eq!(steps, [0, 1000, 2000, 3000, 4000]);
    assert!(g.iter().all(|g| g["key"] == "step" && g["error"].is_null()));

    // The generator's logits are prior + k (z - prior), k = 0, 1/4, ..., 1, with the same draws
    // z at every step: the mean negative logit starts at the prior and falls linearly in k.
    let mean: Vec<f64> = g.iter().map(|g| figure(g, |r| &r["mean_negative_logit"])).collect();
    assert!((mean[0] - PRIOR).abs() < 1e-5, "step 0 sits at the prior: {}", mean[0]);
    let slope = mean[4] - PRIOR;
    assert!(slope < -0.5, "the negatives' trained logits lie below the prior: {slope}");
    for (i, m) in mean.iter().enumerate() {
        let k = i as f64 / 4.0;
        assert!((m - (PRIOR + k * slope)).abs() < 1e-4, "step {i}: {m} is not prior + {k} x {slope}");
    }
    // Every negative is easy at the prior (p = 0.01); confusing negatives turn hard as the
    // logits sharpen, so the easy negatives' share of the decisions never rises.
    let decisions = |g: &Value| g["report"]["dataset"]["decisions"].as_f64().unwrap();
    let easy =
        |g: &Value| strategy(&g["report"], "ce")["buckets"]["easy_negative"]["count"].as_f64().unwrap();
    let negatives = |g: &Value| g["report"]["dataset"]["negatives"].as_f64().unwrap();
    assert_eq!(easy(&g[0]), negatives(&g[0]), "at the prior every negative is easy");
    let en: Vec<f64> = g.iter().map(|g| easy(g) / decisions(g)).collect();
    assert!(en.windows(2).all(|w| w[1] <= w[0]), "easy-negative share of decisions {en:?}");
    assert!(en[4] < en[0]);
    // ... while the easy negatives' share of the focal loss grows from almost nothing (at the
    // prior each easy negative's focal loss is 0.01^2 of its CE) as the positives are learnt.
    let fl: Vec<f64> = g
        .iter()
        .map(|g| strategy(&g["report"], "focal")["buckets"]["easy_negative"]["loss_share"].as_f64().unwrap())
        .collect();
    assert!(fl.windows(2).all(|w| w[1] >= w[0]), "easy-negative share of the focal loss {fl:?}");
    assert!(fl[0] < 1e-3 && fl[4] > 5.0 * fl[0], "{fl:?}");
    // The same images at every step: the counts do not drift.
    let ppi: Vec<f64> = g.iter().map(|g| figure(g, |r| &r["positives_per_image"])).collect();
    assert!(ppi.iter().all(|&p| p == ppi[0] && p > 0.0), "{ppi:?}");
    // Each group has the sweep's recommendation and the health codes.
    for g in g {
        let r = &g["report"];
        assert!(r["sweep"]["gamma"].is_f64() && r["sweep"]["by_gamma"].as_array().unwrap().len() == 5);
        assert!(r["health"].as_array().unwrap().iter().any(|h| h["code"] == "prior_bias"));
        assert_eq!(r["strategies"].as_array().unwrap().len(), 7);
        assert!(r["normalizers"].as_array().unwrap().len() >= 4);
    }

    // Each group's figures are those `analyze` gives for that step's file alone.
    let single = env.run(&["analyze", "run/part-s0000002000-00000.parquet", "--format", "json"]).json();
    assert_eq!(g[2]["report"]["strategies"], single["strategies"]);
    assert_eq!(g[2]["report"]["dataset"], single["dataset"]);
    assert_eq!(g[2]["report"]["normalizers"], single["normalizers"]);

    // Byte-identical whatever the thread count (2 threads: the groups run side by side).
    for threads in ["2", "3"] {
        let again = env.run(&["trend", "run", "--format", "json", "--threads", threads]).ok();
        assert!(again == json, "--threads {threads} changed the JSON");
    }

    // The same sequence in hive directories (step=N/, no column) gives the same groups.
    sequence(&env, "hive", &["--steps", "5", "--prior-start", "--step-partition", "hive"]);
    let hive = env.run(&["trend", "hive", "--format", "json"]).json();
    for (a, b) in groups(&hive).iter().zip(g) {
        assert_eq!(a["value"], b["value"]);
        assert_eq!(a["report"], b["report"]);
    }

    // The terminal table: one row per step, the drift in the headline.
    let text = env.run(&["trend", "run"]).ok();
    assert!(text.starts_with("5 groups by step (0 to 4000)"), "{text}");
    assert!(text.contains("mean negative logit -4.595 -> "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("4000 ")), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn trend_by_path_labels_each_argument_and_html_and_markdown_draw_the_lines() {
    let env = Env::new();
    sequence(&env, "run", &["--steps", "3", "--step-partition", "hive"]);
    let v = env.run(&["trend", "run/step=0", "run/step=2000", "--by", "path", "--format", "json"]).json();
    let labels: Vec<&str> = groups(&v).iter().map(|g| g["value"].as_str().unwrap()).collect();
    assert_eq!(labels, ["run/step=0", "run/step=2000"]);
    env.run(&["trend", "run", "--output", "t.md", "--quiet"]).ok();
    let md = std::fs::read_to_string(env.path("t.md")).unwrap();
    for id in TREND_CHARTS {
        assert!(md.contains(&format!("](t_files/{id}.svg)")), "{id} not linked");
        let svg = std::fs::read_to_string(env.path(&format!("t_files/{id}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{id}");
    }
    // Markdown needs a file for its charts.
    let e = env.run(&["trend", "run", "--format", "markdown"]).err();
    assert!(e.contains("--output"), "{e}");
}

/// The charts of a trend report with every strategy and the sweep.
pub const TREND_CHARTS: [&str; 5] =
    ["trend_easy_shares", "trend_strategies", "trend_positives", "trend_gamma", "trend_negative_logit"];

/// A dense dump of `images` x 30 anchors x 3 classes; `positives` false: every anchor background.
fn small(env: &Env, name: &str, step: Option<Col>, positives: bool, seed: u64) {
    let (images, per) = (3usize, 30usize);
    let mut g = crate::util::Lcg(seed);
    let mut cols = vec![
        ("image_id", Col::I64((0..images * per).map(|i| (i / per) as i64).collect())),
        (
            "label",
            Col::I32(
                (0..images * per)
                    .map(|i| if positives && i % 10 == 0 { (i / 10 % 3) as i32 } else { -1 })
                    .collect(),
            ),
        ),
        ("logits", Col::Fixed(3, (0..images * per * 3).map(|_| g.range(-7.0, 1.0) as f32).collect())),
    ];
    if let Some(s) = step {
        cols.push(("step", s));
    }
    write(&env.path(name), cols, 1000);
}

#[test]
fn missing_keys_mixed_types_and_groups_without_positives_are_named_and_the_rest_still_report() {
    let env = Env::new();
    std::fs::create_dir(env.path("d")).unwrap();
    let n = 90;
    small(&env, "d/a.parquet", Some(Col::I64(vec![1; n])), true, 1);
    small(&env, "d/b.parquet", Some(Col::I64(vec![2; n])), false, 2);
    small(&env, "d/c.parquet", Some(Col::I64(vec![3; n])), true, 3);
    small(&env, "d/nostep.parquet", None, true, 4);
    small(&env, "d/text.parquet", Some(Col::Str(vec!["final".into(); n])), true, 5);
    let v = env.run(&["trend", "d", "--format", "json"]).json();
    let g = groups(&v);
    let steps: Vec<i64> = g.iter().map(|g| g["value"].as_i64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3]);
    assert!(g[0]["report"].is_object() && g[2]["report"].is_object());
    assert!(g[1]["report"].is_null());
    assert!(g[1]["error"].as_str().unwrap().contains("not one positive"), "{}", g[1]["error"]);
    let left: Vec<&str> = v["left_out"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(
        left.iter().any(|s| s.contains("nostep.parquet") && s.contains("no column or hive partition 'step'")),
        "{left:?}"
    );
    assert!(left.iter().any(|s| s.contains("text.parquet") && s.contains("a string")), "{left:?}");
    let text = env.run(&["trend", "d"]).ok();
    assert!(text.contains("note: step 2: ") && text.contains("not one positive"), "{text}");

    // A row group holding two steps cannot be split: refused with the fix.
    std::fs::create_dir(env.path("m")).unwrap();
    small(&env, "m/mixed.parquet", Some(Col::I64((0..n).map(|i| (i / 45) as i64).collect())), true, 6);
    let e = env.run(&["trend", "m"]).err();
    assert!(e.contains("several values of 'step' (0 and 1)") && e.contains("fix:"), "{e}");
    // No key at all.
    let e = env.run(&["trend", "d/nostep.parquet"]).err();
    assert!(e.contains("no file has a column or hive partition 'step'") && e.contains("--by path"), "{e}");
    // Every group failing is an error, not an empty report.
    let e = env.run(&["trend", "d/b.parquet"]).err();
    assert!(e.contains("none of the 1 group(s) could be analysed") && e.contains("not one positive"), "{e}");
}

/// The figures of `analyze`'s JSON by the names `compare` gives them.
fn analyze_figures(r: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for k in ["files", "images", "anchors", "decisions", "positives", "negatives", "ignored"] {
        out.push((format!("dataset.{k}"), r["dataset"][k].as_f64().unwrap()));
    }
    for s in r["strategies"].as_array().unwrap() {
        let n = s["name"].as_str().unwrap();
        out.push((format!("strategies.{n}.selected"), s["selected"].as_f64().unwrap()));
        out.push((format!("strategies.{n}.loss.total"), s["loss"]["total"].as_f64().unwrap()));
        out.push((format!("strategies.{n}.loss.normalized"), s["loss"]["normalized"].as_f64().unwrap()));
        for (b, x) in s["buckets"].as_object().unwrap() {
            for f in ["count", "selected", "loss", "loss_share", "grad_share"] {
                out.push((format!("strategies.{n}.buckets.{b}.{f}"), x[f].as_f64().unwrap()));
            }
        }
    }
    for n in r["normalizers"].as_array().unwrap() {
        out.push((format!("normalizers.{}", n["name"].as_str().unwrap()), n["value"].as_f64().unwrap()));
    }
    out
}

#[test]
fn compare_of_a_dump_with_itself_is_zero_and_of_two_dumps_the_difference_of_their_reports() {
    let env = Env::new();
    sequence(&env, "run", &["--steps", "2"]);
    let (a, b) = ("run/part-s0000000000-00000.parquet", "run/part-s0000001000-00000.parquet");
    let same = env.run(&["compare", a, a, "--format", "json"]).json();
    let figures = same["figures"].as_array().unwrap();
    assert!(figures.len() > 100);
    assert!(figures.iter().all(|f| f["difference"] == 0.0 && f["a"] == f["b"]), "a self-comparison differs");
    assert!(same["moved_most"].as_array().unwrap().is_empty());
    assert!(same["health"]["only_a"].as_array().unwrap().is_empty());

    // Two different dumps: every figure is the pair of the single reports' values and their
    // exact difference, computed here from `analyze` and `sweep` JSON.
    let json = env.run(&["compare", a, b, "--format", "json", "--threads", "1"]).ok();
    let c: Value = serde_json::from_str(&json).unwrap();
    let (ra, rb) = (
        env.run(&["analyze", a, "--format", "json"]).json(),
        env.run(&["analyze", b, "--format", "json"]).json(),
    );
    let got = |name: &str| c["figures"].as_array().unwrap().iter().find(|f| f["name"] == name).cloned();
    let (fa, fb) = (analyze_figures(&ra), analyze_figures(&rb));
    assert_eq!(fa.len(), fb.len());
    let mut changed = 0;
    for ((name, x), (name_b, y)) in fa.iter().zip(&fb) {
        assert_eq!(name, name_b);
        let f = got(name).unwrap_or_else(|| panic!("compare has no figure {name}"));
        assert_eq!((f["a"].as_f64(), f["b"].as_f64()), (Some(*x), Some(*y)), "{name}");
        assert_eq!(f["difference"].as_f64(), Some(y - x), "{name}");
        changed += usize::from(y != x);
    }
    assert!(changed > 50, "only {changed} figures differ between two steps");
    let (sa, sb) = (
        env.run(&["sweep", a, "--format", "json"]).json(),
        env.run(&["sweep", b, "--format", "json"]).json(),
    );
    for (key, field) in [("gamma", "gamma"), ("alpha", "alpha"), ("balanced_alpha", "balanced_alpha")] {
        let (x, y) =
            (sa["sweep"]["recommendation"][field].as_f64(), sb["sweep"]["recommendation"][field].as_f64());
        let f = got(&format!("sweep.recommendation.{key}")).unwrap();
        assert_eq!((f["a"].as_f64(), f["b"].as_f64()), (x, y), "{key}");
        assert_eq!(f["difference"].as_f64(), Some(y.unwrap() - x.unwrap()), "{key}");
    }
    // The buckets that moved most: the largest |difference| of any bucket's loss share first.
    let moved = c["moved_most"].as_array().unwrap();
    let top = moved[0]["difference"].as_f64().unwrap().abs();
    let largest = fa
        .iter()
        .zip(&fb)
        .filter(|((n, _), _)| n.ends_with(".loss_share"))
        .map(|((_, x), (_, y))| (y - x).abs())
        .fold(0.0, f64::max);
    assert_eq!(top, largest);
    // Deterministic whatever the thread count.
    assert!(env.run(&["compare", a, b, "--format", "json", "--threads", "2"]).ok() == json);

    // Saved states compare like their dumps.
    env.run(&["analyze", a, "--save-state", "a.state", "--quiet"]).ok();
    env.run(&["analyze", b, "--save-state", "b.state", "--quiet"]).ok();
    let s = env.run(&["compare", "a.state", "b.state", "--format", "json"]).json();
    assert_eq!(s["a"]["kind"], "state");
    for f in s["figures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        if let Some(d) = got(name) {
            assert_eq!(f["difference"], d["difference"], "{name}");
        }
    }
    let text = env.run(&["compare", a, b]).ok();
    assert!(text.starts_with("A: run/part-s0000000000-00000.parquet (dump)"), "{text}");
    assert!(text.contains("moved most") && text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

/// Text that tries to break out of every output format.
const HOSTILE: [&str; 3] =
    ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "a|b\nc [x](javascript:alert(1))"];

#[test]
fn dump_provided_strings_are_escaped_in_trend_and_compare_reports() {
    let env = Env::new();
    std::fs::create_dir(env.path("d")).unwrap();
    let key = HOSTILE[0];
    // Two groups valued by hostile strings in a column with a hostile name; the second group's
    // only image is all ignored under a hostile id, so its error message quotes the id.
    let n = 90;
    let mut g = crate::util::Lcg(9);
    let logits =
        |g: &mut crate::util::Lcg| Col::Fixed(3, (0..n * 3).map(|_| g.range(-7.0, 1.0) as f32).collect());
    write(
        &env.path("d/a.parquet"),
        vec![
            ("image_id", Col::Str((0..n).map(|i| format!("{}{}", HOSTILE[1], i / 30)).collect())),
            ("label", Col::I32((0..n).map(|i| if i % 10 == 0 { (i / 10 % 3) as i32 } else { -1 }).collect())),
            ("logits", logits(&mut g)),
            (key, Col::Str(vec![HOSTILE[1].into(); n])),
        ],
        1000,
    );
    write(
        &env.path("d/b.parquet"),
        vec![
            ("image_id", Col::Str(vec![HOSTILE[2].into(); n])),
            ("label", Col::I32(vec![-2; n])),
            ("logits", logits(&mut g)),
            (key, Col::Str(vec![HOSTILE[2].into(); n])),
        ],
        1000,
    );
    std::fs::copy(env.path("d/a.parquet"), env.path(&format!("{}.parquet", HOSTILE[0]))).unwrap();
    let json = env.run(&["trend", "d", "--by", key, "--format", "json"]).json();
    let values: Vec<&str> = groups(&json).iter().map(|g| g["value"].as_str().unwrap()).collect();
    assert_eq!(values, [HOSTILE[1], HOSTILE[2]], "JSON keeps the strings exactly");
    assert!(groups(&json)[1]["error"].as_str().unwrap().contains(HOSTILE[2]));
    let hostile_file = format!("{}.parquet", HOSTILE[0]);
    let outputs: Vec<(&str, Vec<&str>)> = vec![
        ("trend", vec!["trend", "d", "--by", key]),
        ("compare", vec!["compare", "d/a.parquet", &hostile_file]),
    ];
    for (what, args) in outputs {
        for ext in ["md", "html"] {
            let out = format!("{what}.{ext}");
            let mut a = args.clone();
            a.extend(["--output", &out, "--quiet"]);
            env.run(&a).ok();
            let text = std::fs::read_to_string(env.path(&out)).unwrap();
            // The recorded command line is a fenced code block in Markdown (shown verbatim, never
            // markup): look at the rest.
            let text = match text.split_once("```sh\n") {
                Some((before, after)) if ext == "md" => {
                    format!("{before}{}", after.split_once("\n```").map_or("", |(_, rest)| rest))
                }
                _ => text,
            };
            let text = if ext == "md" { without_code_spans(&text) } else { text };
            // A Markdown link is markup in Markdown only.
            let raws: &[&str] = if ext == "md" {
                &["<img src=x", "<script>alert", "[x](javascript:"]
            } else {
                &["<img src=x", "<script>alert"]
            };
            for raw in raws {
                assert!(!text.contains(raw), "raw {raw:?} in {out}:\n{text}");
            }
            assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;"), "{out} shows the text, escaped");
            if ext == "md" {
                // Every table row has as many cells as its header.
                let cells = |line: &str| {
                    let b = line.as_bytes();
                    (0..b.len()).filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\')).count()
                };
                let mut header = None;
                for line in text.lines() {
                    if !line.starts_with('|') {
                        header = None;
                        continue;
                    }
                    match header {
                        None => header = Some(cells(line)),
                        Some(h) => assert_eq!(cells(line), h, "{out}: {line}"),
                    }
                }
                // The charts beside it: no element from the dump either.
                let dir = env.path(&format!("{what}_files"));
                for f in std::fs::read_dir(dir).unwrap() {
                    let svg = std::fs::read_to_string(f.unwrap().path()).unwrap();
                    assert!(!svg.contains("<img src=x") && !svg.contains("<script>"), "{what} chart");
                }
            }
        }
        let text = env.run(&args).ok();
        assert!(!text.contains("a|b\nc"), "a raw newline from the dump in the {what} terminal output");
    }
}

/// Markdown without its code spans (shown verbatim, never markup: the input paths).
fn without_code_spans(md: &str) -> String {
    let mut out = String::new();
    let mut rest = md;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let fence = "`".repeat(run);
        let body = &rest[start + run..];
        match body.find(&fence) {
            Some(end) => rest = &body[end + run..],
            None => {
                rest = body;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The trend and comparison pages in a real browser (ignored by a plain `cargo test`, as the
/// report's browser test is: `cargo test --test main -- --ignored` runs it, .ci/run does).
#[test]
#[ignore = "needs Chromium: run with `cargo test --test main -- --ignored` (.ci/run does)"]
fn the_trend_and_compare_pages_render_in_a_real_browser() {
    let browser = crate::report::chromium().expect("no chromium on PATH (or set HARDMINE_CHROMIUM)");
    let env = Env::new();
    sequence(&env, "run", &["--steps", "5", "--prior-start"]);
    env.run(&["trend", "run", "--output", "trend.html", "--quiet"]).ok();
    let (a, b) = ("run/part-s0000001000-00000.parquet", "run/part-s0000004000-00000.parquet");
    env.run(&["compare", a, b, "--output", "compare.html", "--quiet"]).ok();
    for (page, charts, sections) in [
        ("trend.html", &TREND_CHARTS[..], &["groups", "provenance"][..]),
        (
            "compare.html",
            &["compare_easy_shares", "compare_moved"][..],
            &["side_by_side", "moved", "figures"][..],
        ),
    ] {
        let url = format!("file://{}", env.path(page).display());
        let dom = crate::report::headless(&browser, &env.path(&format!("profile-{page}")))
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .unwrap();
        let dom_text = String::from_utf8_lossy(&dom.stdout);
        for id in charts {
            let at = dom_text
                .find(&format!("<section id=\"{id}\""))
                .unwrap_or_else(|| panic!("{page}: chart {id} missing from the DOM"));
            let section = &dom_text[at..at + dom_text[at..].find("</section>").unwrap()];
            assert!(section.contains("<svg") && section.contains("</svg>"), "{page}: chart {id} has no svg");
            // Line charts draw a path per series, paired bars a rect per bar.
            assert!(section.contains("<polyline") || section.contains("<rect"), "{page}: {id} draws nothing");
        }
        for id in sections {
            assert!(dom_text.contains(&format!("<section id=\"{id}\"")), "{page}: section {id} missing");
        }
        for line in String::from_utf8_lossy(&dom.stderr).lines() {
            assert!(
                !line.contains(":CONSOLE") && !line.contains("Failed to load resource"),
                "{page}: {line}"
            );
        }
        // A screenshot that is not blank, kept where a person can look at it (docs/GUIDE.md's).
        let shot = env.path(&format!("{page}.png"));
        let run = crate::report::headless(&browser, &env.path(&format!("profile-shot-{page}")))
            .arg("--window-size=1100,1400")
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&run.stderr));
        crate::report::assert_inked(&shot, (1100, 1400));
        let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{page}.png"));
        let _ = std::fs::copy(&shot, &keep);
    }
}
