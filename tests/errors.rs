//! Bad input and bad flags: a non-zero exit and one clear message naming the file, column, row
//! (where known) and a fix. Never a panic, never a number.

use crate::util::fixture::{write, Col};
use crate::util::Env;

fn ids(n: usize) -> Col {
    Col::I64((0..n as i64).map(|i| i / 4).collect())
}

fn logits(n: usize, c: usize) -> Col {
    Col::Fixed(c, (0..n * c).map(|i| (i % 7) as f32 - 3.0).collect())
}

/// Runs analyze on `file` and returns the error message.
fn analyze_err(env: &Env, args: &[&str]) -> String {
    let mut argv = vec!["analyze"];
    argv.extend(args);
    env.run(&argv).err()
}

#[track_caller]
fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
    assert!(msg.contains("fix:") || msg.contains("must") || msg.contains("expected"), "no fix hint:\n{msg}");
}

#[test]
fn missing_required_column() {
    let env = Env::new();
    write(&env.path("d.parquet"), vec![("image_id", ids(8)), ("logits", logits(8, 2))], 100);
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(
        &e,
        &["d.parquet", "missing required column 'label'", "--col label=", "image_id, logits"],
    );
}

#[test]
fn string_logits_are_a_type_error() {
    let env = Env::new();
    let n = 4;
    write(
        &env.path("d.parquet"),
        vec![
            ("image_id", ids(n)),
            ("label", Col::I32(vec![0; n])),
            ("logits", Col::Str(vec!["0.1".into(); n])),
        ],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "column 'logits' is string", "list of float32"]);
}

#[test]
fn float_labels_are_a_type_error() {
    let env = Env::new();
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(4)), ("label", Col::F32(vec![0.0; 4])), ("logits", logits(4, 2))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "column 'label' is float", "integer"]);
}

#[test]
fn ragged_logit_lists_name_the_row() {
    let env = Env::new();
    let mut rows: Vec<Vec<f32>> = vec![vec![0.0, 1.0]; 9];
    rows[5] = vec![0.0, 1.0, 2.0];
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(9)), ("label", Col::I32(vec![-1; 9])), ("logits", Col::ListF32(rows))],
        4,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "column 'logits', row 5", "ragged score list: 3 entries"]);
}

#[test]
fn empty_logit_lists_name_the_row() {
    let env = Env::new();
    let mut rows: Vec<Vec<f32>> = vec![vec![0.0, 1.0]; 6];
    rows[3] = vec![];
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(6)), ("label", Col::I32(vec![-1; 6])), ("logits", Col::ListF32(rows))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "row 3", "empty score list"]);
}

#[test]
fn both_logits_and_probs_need_a_choice() {
    let env = Env::new();
    write(
        &env.path("d.parquet"),
        vec![
            ("image_id", ids(4)),
            ("label", Col::I32(vec![0; 4])),
            ("logits", logits(4, 2)),
            ("probs", Col::Fixed(2, vec![0.5; 8])),
        ],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "both 'logits' and 'probs'", "--scores logits"]);
    // With the choice made, it runs.
    env.run(&["analyze", "d.parquet", "--scores", "probs"]).ok();
}

#[test]
fn neither_logits_nor_probs() {
    let env = Env::new();
    write(&env.path("d.parquet"), vec![("image_id", ids(4)), ("label", Col::I32(vec![0; 4]))], 100);
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "no score column", "--col logits="]);
}

#[test]
fn probabilities_outside_the_unit_interval() {
    let env = Env::new();
    let mut p = vec![0.5f32; 12];
    p[7] = 1.25; // row 3, class 1
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(6)), ("label", Col::I32(vec![-1; 6])), ("probs", Col::Fixed(2, p))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(
        &e,
        &["d.parquet", "column 'probs', row 3", "probability 1.25 at class 1 is outside [0, 1]"],
    );
    let mut p = vec![0.5f32; 6];
    p[2] = -0.5;
    write(
        &env.path("b.parquet"),
        vec![("image_id", ids(6)), ("target", Col::I32(vec![0; 6])), ("prob", Col::F32(p))],
        100,
    );
    let e = analyze_err(&env, &["b.parquet"]);
    assert_mentions(&e, &["b.parquet", "column 'prob', row 2", "probability -0.5"]);
}

#[test]
fn non_finite_logits_name_row_and_class() {
    for (bad, text) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let env = Env::new();
        let mut x: Vec<f32> = vec![0.0; 30];
        x[3 * 3 + 2] = bad; // row 3, class 2
        write(
            &env.path("d.parquet"),
            vec![("image_id", ids(10)), ("label", Col::I32(vec![-1; 10])), ("logits", Col::Fixed(3, x))],
            4,
        );
        let e = analyze_err(&env, &["d.parquet"]);
        assert_mentions(
            &e,
            &["d.parquet", "column 'logits', row 3", &format!("non-finite logit {text} at class 2")],
        );
    }
}

#[test]
fn implausibly_large_logits_are_rejected() {
    let env = Env::new();
    write(
        &env.path("b.parquet"),
        vec![
            ("image_id", ids(3)),
            ("target", Col::I32(vec![0; 3])),
            ("logit", Col::F64(vec![0.0, 3e9, 1.0])),
        ],
        100,
    );
    let e = analyze_err(&env, &["b.parquet"]);
    assert_mentions(&e, &["b.parquet", "column 'logit', row 1", "exceeds the supported magnitude"]);
}

#[test]
fn labels_outside_the_valid_set() {
    let env = Env::new();
    for (bad, hint) in [
        (7, "sigmoid labels are 0..3"),
        (-3, "sigmoid labels are 0..3"),
        (4, "mmdetection's background code"),
    ] {
        let mut l = vec![-1; 8];
        l[6] = bad;
        write(
            &env.path("d.parquet"),
            vec![("image_id", ids(8)), ("label", Col::I32(l)), ("logits", logits(8, 4))],
            100,
        );
        let e = analyze_err(&env, &["d.parquet"]);
        assert_mentions(
            &e,
            &["d.parquet", "column 'label', row 6", &format!("label {bad} is outside"), hint],
        );
    }
}

#[test]
fn softmax_labels_and_background_class() {
    let env = Env::new();
    let mut l = vec![0; 8];
    l[2] = -1;
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(8)), ("label", Col::I32(l)), ("logits", logits(8, 4))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet", "--activation", "softmax"]);
    assert_mentions(&e, &["d.parquet", "row 2", "label -1", "--background-class"]);
    write(
        &env.path("ok.parquet"),
        vec![("image_id", ids(8)), ("label", Col::I32(vec![1; 8])), ("logits", logits(8, 4))],
        100,
    );
    let e = analyze_err(&env, &["ok.parquet", "--activation", "softmax", "--background-class", "4"]);
    assert_mentions(&e, &["ok.parquet", "--background-class 4 is outside the softmax width K = 4"]);
}

#[test]
fn binary_targets_outside_the_unit_interval() {
    let env = Env::new();
    write(
        &env.path("f.parquet"),
        vec![
            ("image_id", ids(4)),
            ("target", Col::F64(vec![0.0, 1.0, 1.5, 0.0])),
            ("logit", Col::F32(vec![0.0; 4])),
        ],
        100,
    );
    let e = analyze_err(&env, &["f.parquet"]);
    assert_mentions(&e, &["f.parquet", "column 'target', row 2", "target 1.5 is outside [0, 1]"]);
    write(
        &env.path("i.parquet"),
        vec![("image_id", ids(4)), ("target", Col::I32(vec![0, 2, 1, 0])), ("logit", Col::F32(vec![0.0; 4]))],
        100,
    );
    let e = analyze_err(&env, &["i.parquet"]);
    assert_mentions(&e, &["i.parquet", "column 'target', row 1", "integer target 2 is not 0 or 1"]);
}

#[test]
fn null_values_name_the_row() {
    let env = Env::new();
    let l = vec![Some(0), Some(-1), None, Some(-1)];
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(4)), ("label", Col::OptI32(l)), ("logits", logits(4, 2))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet"]);
    assert_mentions(&e, &["d.parquet", "column 'label', row 2", "null value"]);
}

#[test]
fn empty_inputs() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("empty")).unwrap();
    let e = analyze_err(&env, &["empty"]);
    assert_mentions(&e, &["empty", "directory holds no *.parquet files"]);
    let e = analyze_err(&env, &["nothing-*.parquet"]);
    assert_mentions(&e, &["nothing-*.parquet", "glob matched no files"]);
    let e = analyze_err(&env, &["missing.parquet"]);
    assert_mentions(&e, &["missing.parquet", "no such file"]);
    std::fs::write(env.path("zero.parquet"), b"").unwrap();
    let e = analyze_err(&env, &["zero.parquet"]);
    assert_mentions(&e, &["zero.parquet", "not a readable Parquet file", "0 bytes"]);
    write(
        &env.path("norows.parquet"),
        vec![("image_id", Col::I64(vec![])), ("label", Col::I32(vec![])), ("logits", Col::ListF32(vec![]))],
        100,
    );
    let e = analyze_err(&env, &["norows.parquet"]);
    assert_mentions(&e, &["the dump is empty", "0 rows"]);
}

#[test]
fn files_that_are_not_parquet_or_are_truncated() {
    let env = Env::new();
    std::fs::write(env.path("csv.parquet"), b"image_id,label\n0,1\n").unwrap();
    let e = analyze_err(&env, &["csv.parquet"]);
    assert_mentions(&e, &["csv.parquet", "not a readable Parquet file"]);
    write(
        &env.path("full.parquet"),
        vec![("image_id", ids(400)), ("label", Col::I32(vec![-1; 400])), ("logits", logits(400, 4))],
        50,
    );
    let bytes = std::fs::read(env.path("full.parquet")).unwrap();
    std::fs::write(env.path("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let e = analyze_err(&env, &["cut.parquet"]);
    assert_mentions(&e, &["cut.parquet", "not a readable Parquet file", "completely written"]);
}

#[test]
fn mismatched_schemas_name_both_files() {
    let env = Env::new();
    write(
        &env.path("d/a.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![-1; 4])), ("logits", logits(4, 2))],
        100,
    );
    write(
        &env.path("d/b.parquet"),
        vec![
            ("image_id", Col::Str(vec!["x".into(); 4])),
            ("label", Col::I32(vec![-1; 4])),
            ("logits", logits(4, 2)),
        ],
        100,
    );
    let e = analyze_err(&env, &["d"]);
    assert_mentions(&e, &["d/b.parquet", "column 'image_id' has type Str here but Int in", "d/a.parquet"]);
    write(
        &env.path("e/a.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![-1; 4])), ("logits", logits(4, 2))],
        100,
    );
    write(
        &env.path("e/b.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![-1; 4])), ("logits", logits(4, 3))],
        100,
    );
    let e = analyze_err(&env, &["e"]);
    assert_mentions(&e, &["e/b.parquet", "3 scores", "2"]);
}

#[test]
fn invalid_flag_values_name_the_flag() {
    let env = Env::new();
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![0, -1, -1, -1])), ("logits", logits(4, 2))],
        100,
    );
    for (args, flag) in [
        (vec!["--gamma", "-1"], "--gamma"),
        (vec!["--alpha", "2"], "--alpha"),
        (vec!["--easy-threshold", "1.5"], "--easy-threshold"),
        (vec!["--easy-threshold", "0"], "--easy-threshold"),
        (vec!["--strategies", "ce,ohm"], "--strategies"),
        (vec!["--col", "labels=x"], "--col"),
        (vec!["--threads", "0"], "--threads"),
        (vec!["--layout", "binary", "--activation", "softmax"], "--activation"),
        (vec!["--ohem-k", "0"], "--ohem-k"),
        (vec!["--positive-fraction", "1.5"], "--positive-fraction"),
        (vec!["--positive-fraction", "-0.1"], "--positive-fraction"),
        (vec!["--ohem-pos-fraction", "2"], "--ohem-pos-fraction"),
        (vec!["--ohem-nms", "0"], "--ohem-nms"),
        (vec!["--batch-size-per-image", "0"], "--batch-size-per-image"),
        (vec!["--ghm-bins", "0"], "--ghm-bins"),
        (vec!["--on-invalid", "drop"], "--on-invalid"),
        (vec!["--gamma", "nan"], "--gamma"),
        (vec!["--alpha", "inf"], "--alpha"),
    ] {
        let mut argv = vec!["d.parquet"];
        argv.extend(args.iter().copied());
        let e = analyze_err(&env, &argv);
        assert!(e.contains(flag), "{args:?}: {e}");
    }
    for (cmd, flag) in [
        (vec!["mine", "d.parquet", "--out", "m.parquet", "--top", "0"], "--top"),
        (vec!["sweep", "d.parquet", "--gammas", "0,-1"], "--gammas"),
        (vec!["sweep", "d.parquet", "--alphas", "0.25,1.5"], "--alphas"),
        (vec!["sweep", "d.parquet", "--easy-thresholds", "0.9,1"], "--easy-thresholds"),
        (vec!["generate", "--out", "g", "--images", "0"], "--images"),
    ] {
        let e = env.run(&cmd).err();
        assert!(e.contains(flag), "{cmd:?}: {e}");
    }
}

#[test]
fn an_unwritable_output_fails_fast_and_a_failed_run_keeps_the_previous_report() {
    let env = Env::new();
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![0, -1, -1, -1])), ("logits", logits(4, 2))],
        100,
    );
    let e = analyze_err(&env, &["d.parquet", "--output", "no/such/dir/r.json"]);
    assert_mentions(&e, &["no/such/dir/r.json", "cannot write"]);
    // A previous report survives a run that fails on bad input, and no temp file is left.
    std::fs::write(env.path("r.json"), b"previous").unwrap();
    analyze_err(&env, &["missing.parquet", "--output", "r.json"]);
    assert_eq!(std::fs::read(env.path("r.json")).unwrap(), b"previous");
    env.run(&["analyze", "d.parquet", "--output", "r.json", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(env.path("r.json")).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    let leftovers: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The rows of a small dense sigmoid dump (C = 3): four images of ten anchors, with positives.
fn clean_rows() -> (Vec<i64>, Vec<i32>, Vec<Vec<f32>>) {
    let mut g = crate::util::Lcg(8);
    let image = (0..40).map(|i| i / 10).collect();
    let label = (0..40).map(|i| [0, -1, -1, 2, -1, -2, -1, 1, -1, -1][i % 10]).collect();
    let logits = (0..40).map(|_| (0..3).map(|_| g.range(-6.0, 6.0) as f32).collect()).collect();
    (image, label, logits)
}

#[test]
fn on_invalid_skip_drops_and_counts_bad_rows_and_equals_the_dump_without_them() {
    let env = Env::new();
    let (image, label, logits) = clean_rows();
    let mut img: Vec<Option<i64>> = image.iter().map(|&i| Some(i)).collect();
    let mut lab: Vec<Option<i32>> = label.iter().map(|&l| Some(l)).collect();
    let mut log: Vec<Option<Vec<Option<f32>>>> =
        logits.iter().map(|r| Some(r.iter().map(|&x| Some(x)).collect())).collect();
    // One problem per bad row.
    lab[3] = None;
    log[7].as_mut().unwrap()[1] = Some(f32::NAN);
    lab[12] = Some(9);
    log[15] = Some(vec![Some(0.5), Some(0.5)]);
    log[21] = Some(vec![]);
    log[25].as_mut().unwrap()[2] = None;
    log[28] = None;
    img[33] = None;
    log[36].as_mut().unwrap()[0] = Some(1e7);
    let bad = [3usize, 7, 12, 15, 21, 25, 28, 33, 36];
    // Row groups of 8: the bad rows fall in several groups, images span groups.
    write(
        &env.path("bad.parquet"),
        vec![("image_id", Col::OptI64(img)), ("label", Col::OptI32(lab)), ("logits", Col::OptListF32(log))],
        8,
    );
    let kept: Vec<usize> = (0..40).filter(|r| !bad.contains(r)).collect();
    write(
        &env.path("clean.parquet"),
        vec![
            ("image_id", Col::I64(kept.iter().map(|&r| image[r]).collect())),
            ("label", Col::I32(kept.iter().map(|&r| label[r]).collect())),
            ("logits", Col::ListF32(kept.iter().map(|&r| logits[r].clone()).collect())),
        ],
        8,
    );
    // Strict (default): the first bad row, with the policy offered.
    let e = analyze_err(&env, &["bad.parquet"]);
    assert_mentions(&e, &["bad.parquet", "column 'label', row 3", "null value", "--on-invalid skip"]);

    let all = "ce,alpha_ce,focal,ohem,ssd,sampled,ghm";
    let run = |file: &str, extra: &[&str]| {
        let mut argv = vec!["analyze", file, "--strategies", all, "--ohem-k", "4", "--format", "json"];
        argv.extend_from_slice(extra);
        env.run(&argv).json()
    };
    let skipped = run("bad.parquet", &["--on-invalid", "skip"]);
    let clean = run("clean.parquet", &[]);
    let want = serde_json::json!({
        "null": 4, "non_finite_logit": 1, "label_out_of_range": 1, "ragged_list": 1,
        "empty_list": 1, "logit_too_large": 1
    });
    assert_eq!(skipped["dataset"]["skipped"], want);
    assert_eq!(skipped["metadata"]["parameters"]["on_invalid"], "skip");
    assert!(clean["dataset"].get("skipped").is_none(), "no skipped key without skipped rows");
    for key in ["images", "anchors", "decisions", "positives", "negatives", "ignored"] {
        assert_eq!(skipped["dataset"][key], clean["dataset"][key], "{key}");
    }
    assert_eq!(skipped["dataset"]["anchors"], kept.len());
    assert_eq!(skipped["strategies"], clean["strategies"]);
    assert_eq!(skipped["overlaps"], clean["overlaps"]);
    // The terminal summary says what was skipped.
    let text = env.run(&["analyze", "bad.parquet", "--on-invalid", "skip"]).ok();
    assert!(text.contains("skipped") && text.contains("non_finite_logit"), "{text}");

    // The export names rows of the file as written, not as compacted.
    let export = |file: &str, out: &str, extra: &[&str]| -> Vec<i64> {
        let mut argv = vec!["mine", file, "--strategy", "ohem", "--ohem-k", "3", "--out", out, "--quiet"];
        argv.extend_from_slice(extra);
        env.run(&argv).ok();
        use polars_io::prelude::*;
        let df = ParquetReader::new(std::fs::File::open(env.path(out)).unwrap()).finish().unwrap();
        df.column("row").unwrap().i64().unwrap().into_no_null_iter().collect()
    };
    let from_bad = export("bad.parquet", "b.parquet", &["--on-invalid", "skip"]);
    let from_clean = export("clean.parquet", "c.parquet", &[]);
    let mapped: Vec<i64> = from_clean.iter().map(|&r| kept[r as usize] as i64).collect();
    assert_eq!(from_bad, mapped);
}

#[test]
fn nulls_in_every_column_name_the_row() {
    let env = Env::new();
    let n = 8;
    let mut img: Vec<Option<i64>> = (0..n as i64).map(|i| Some(i / 4)).collect();
    img[5] = None;
    write(
        &env.path("id.parquet"),
        vec![("image_id", Col::OptI64(img)), ("label", Col::I32(vec![0; n])), ("logits", logits(n, 2))],
        100,
    );
    assert_mentions(
        &analyze_err(&env, &["id.parquet"]),
        &["id.parquet", "column 'image_id', row 5", "null value"],
    );
    let mut rows: Vec<Option<Vec<Option<f32>>>> = (0..n).map(|_| Some(vec![Some(0.0), Some(1.0)])).collect();
    rows[6] = None;
    write(
        &env.path("row.parquet"),
        vec![
            ("image_id", ids(n)),
            ("label", Col::I32(vec![0; n])),
            ("logits", Col::OptListF32(rows.clone())),
        ],
        100,
    );
    assert_mentions(
        &analyze_err(&env, &["row.parquet"]),
        &["row.parquet", "column 'logits', row 6", "null value"],
    );
    rows[6] = Some(vec![Some(0.0), None]);
    write(
        &env.path("entry.parquet"),
        vec![("image_id", ids(n)), ("label", Col::I32(vec![0; n])), ("logits", Col::OptListF32(rows))],
        100,
    );
    assert_mentions(
        &analyze_err(&env, &["entry.parquet"]),
        &["entry.parquet", "column 'logits', row 6", "null score at class 1"],
    );
    let mut t: Vec<Option<f32>> = vec![Some(1.0); n];
    t[2] = None;
    write(
        &env.path("t.parquet"),
        vec![("image_id", ids(n)), ("target", Col::OptF32(t)), ("logit", Col::F32(vec![0.5; n]))],
        100,
    );
    assert_mentions(
        &analyze_err(&env, &["t.parquet"]),
        &["t.parquet", "column 'target', row 2", "null value"],
    );
    let mut x: Vec<Option<f32>> = vec![Some(0.5); n];
    x[7] = None;
    write(
        &env.path("x.parquet"),
        vec![("image_id", ids(n)), ("target", Col::F32(vec![1.0; n])), ("logit", Col::OptF32(x))],
        100,
    );
    assert_mentions(
        &analyze_err(&env, &["x.parquet"]),
        &["x.parquet", "column 'logit', row 7", "null value"],
    );
}

#[test]
fn a_dump_without_positives_and_an_all_ignored_image_are_refused_unless_allowed() {
    let env = Env::new();
    write(
        &env.path("neg.parquet"),
        vec![("image_id", ids(8)), ("label", Col::I32(vec![-1; 8])), ("logits", logits(8, 3))],
        100,
    );
    let e = analyze_err(&env, &["neg.parquet"]);
    assert_mentions(&e, &["24 decisions and not one positive", "label mapping", "--allow-no-positives"]);
    let rep = env.run(&["analyze", "neg.parquet", "--allow-no-positives", "--format", "json"]).json();
    assert_eq!(rep["dataset"]["positives"], 0);
    assert_eq!(rep["dataset"]["negatives"], 24);
    // Images 0 and 1 (rows 0..8) have positives; image 1 (rows 4..8) is all ignored.
    let mut l = vec![0, -1, -1, -1, -2, -2, -2, -2];
    l.extend([-2, -2, 1, -1]);
    write(
        &env.path("ign.parquet"),
        vec![("image_id", ids(12)), ("label", Col::I32(l)), ("logits", logits(12, 3))],
        100,
    );
    let e = analyze_err(&env, &["ign.parquet"]);
    assert_mentions(&e, &["image '1' has 4 anchors and all are ignored", "--keep-ignored-images"]);
    let rep = env.run(&["analyze", "ign.parquet", "--keep-ignored-images", "--format", "json"]).json();
    assert_eq!(rep["dataset"]["images"], 3);
    assert_eq!(rep["dataset"]["ignored"], 6);
    // The same applies to every command that reads a dump.
    for cmd in [
        vec!["sweep", "ign.parquet"],
        vec!["report", "ign.parquet", "--out", "r.html"],
        vec!["mine", "ign.parquet", "--strategy", "ohem", "--out", "m.parquet"],
    ] {
        let e = env.run(&cmd).err();
        assert!(e.contains("all are ignored"), "{cmd:?}: {e}");
    }
    assert!(!env.path("r.html").exists() && !env.path("m.parquet").exists());
}

#[test]
fn duplicate_image_and_anchor_ids_are_refused_naming_both_rows() {
    let env = Env::new();
    let dense = |path: &str, image: Vec<i64>, anchor: Vec<i64>, group: usize| {
        let n = image.len();
        let label = (0..n).map(|i| if i % 3 == 0 { 0 } else { -1 }).collect();
        write(
            &env.path(path),
            vec![
                ("image_id", Col::I64(image)),
                ("anchor_id", Col::I64(anchor)),
                ("label", Col::I32(label)),
                ("logits", logits(n, 2)),
            ],
            group,
        );
    };
    // Within a row group, out of order.
    dense("a.parquet", vec![0, 0, 0, 1, 1, 1], vec![2, 0, 2, 0, 1, 2], 100);
    let e = analyze_err(&env, &["a.parquet"]);
    assert_mentions(
        &e,
        &[
            "image '0' has anchor_id 2 twice",
            "row 0 of a.parquet",
            "row 2 of a.parquet",
            "dump each image once",
        ],
    );
    // Across row groups of one image (groups of 2 rows).
    dense("b.parquet", vec![0, 0, 0, 0, 0, 1], vec![0, 1, 2, 3, 1, 0], 2);
    let e = analyze_err(&env, &["b.parquet"]);
    assert_mentions(&e, &["image '0' has anchor_id 1 twice", "row 1 of b.parquet", "row 4 of b.parquet"]);
    // Across files: an image continued from one file into the next.
    dense("c/1.parquet", vec![0, 0, 1, 1], vec![0, 1, 0, 1], 100);
    dense("c/2.parquet", vec![1, 1, 2, 2], vec![1, 2, 0, 1], 100);
    let e = analyze_err(&env, &["c"]);
    assert_mentions(
        &e,
        &["image '1' has anchor_id 1 twice", "row 3 of", "1.parquet", "row 0 of", "2.parquet"],
    );
    // An image dumped twice, apart: found by count.
    dense("d.parquet", vec![0, 0, 0, 1, 1, 0, 0, 0], vec![0, 1, 2, 0, 1, 0, 1, 2], 3);
    let e = analyze_err(&env, &["d.parquet", "--strategies", "ce"]);
    assert_mentions(&e, &["image '0' has 6 rows but only 3 distinct anchor ids", "dumped twice"]);
    // Unique ids are fine, in any order and with gaps.
    dense("e.parquet", vec![0, 0, 0, 1, 1, 1], vec![9, 3, 5, 0, 7, 1], 2);
    env.run(&["analyze", "e.parquet"]).ok();
    // Binary dumps: one anchor has one row per class; a repeated (anchor, class) is refused.
    let binary = |path: &str, class: Vec<i32>| {
        let n = class.len();
        write(
            &env.path(path),
            vec![
                ("image_id", Col::I64(vec![0; n])),
                ("anchor_id", Col::I64(vec![0, 0, 1, 1])),
                ("class", Col::I32(class)),
                ("target", Col::F32(vec![1.0, 0.0, 0.0, 0.0])),
                ("logit", Col::F32(vec![0.5; n])),
            ],
            100,
        );
    };
    binary("f.parquet", vec![0, 1, 0, 1]);
    env.run(&["analyze", "f.parquet"]).ok();
    binary("g.parquet", vec![0, 1, 1, 1]);
    let e = analyze_err(&env, &["g.parquet"]);
    assert_mentions(
        &e,
        &["image '0' has anchor_id 1 and class 1 twice", "row 2 of g.parquet", "row 3 of g.parquet"],
    );
}

/// A file that breaks `reason`'s rule at row 2 (and nowhere else), the column it names and the
/// flags it needs.
fn breaking(reason: &str) -> (Vec<(&'static str, Col)>, &'static str, Vec<&'static str>) {
    let n = 8;
    let image = || Col::I64((0..n as i64).map(|i| i / 4).collect());
    let labels = |bad: Option<i32>| {
        let mut l = vec![0, -1, -1, -1, 1, -1, -2, -1];
        if let Some(b) = bad {
            l[2] = b;
        }
        Col::I32(l)
    };
    let scores = |c: usize| -> Vec<Vec<f32>> {
        (0..n).map(|i| (0..c).map(|k| (i + k) as f32 * 0.5 - 2.0).collect()).collect()
    };
    let with = |mut rows: Vec<Vec<f32>>, f: &dyn Fn(&mut Vec<f32>)| {
        f(&mut rows[2]);
        Col::ListF32(rows)
    };
    let dense = |logits: Col| vec![("image_id", image()), ("label", labels(None)), ("logits", logits)];
    let binary = |extra: Vec<(&'static str, Col)>, target: Vec<f32>| {
        let mut cols = vec![
            ("image_id", image()),
            ("target", Col::F32(target)),
            ("logit", Col::F32((0..n).map(|i| i as f32 - 4.0).collect())),
        ];
        cols.extend(extra);
        cols
    };
    let targets = || vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    match reason {
        "null" => {
            let mut l: Vec<Option<i32>> =
                vec![Some(0), Some(-1), None, Some(-1), Some(1), Some(-1), Some(-2), Some(-1)];
            l[2] = None;
            (
                vec![("image_id", image()), ("label", Col::OptI32(l)), ("logits", Col::ListF32(scores(3)))],
                "label",
                vec![],
            )
        }
        "empty_list" => (dense(with(scores(3), &|r| r.clear())), "logits", vec![]),
        "ragged_list" => (dense(with(scores(3), &|r| r.truncate(2))), "logits", vec![]),
        "non_finite_logit" => (dense(with(scores(3), &|r| r[1] = f32::NAN)), "logits", vec![]),
        "logit_too_large" => (dense(with(scores(3), &|r| r[1] = 1e7)), "logits", vec![]),
        "probability_out_of_range" => {
            let probs: Vec<Vec<f32>> = (0..n).map(|i| vec![0.1 + 0.1 * (i % 3) as f32, 0.2, 0.05]).collect();
            let mut p = probs;
            p[2][0] = 1.5;
            (
                vec![("image_id", image()), ("label", labels(None)), ("probs", Col::ListF32(p))],
                "probs",
                vec![],
            )
        }
        "softmax_sum" => {
            let mut p: Vec<Vec<f32>> = (0..n).map(|_| vec![0.5, 0.25, 0.25]).collect();
            p[2] = vec![0.2, 0.2, 0.2];
            let l = Col::I32(vec![1, 0, 0, 0, 2, 0, -2, 0]);
            (
                vec![("image_id", image()), ("label", l), ("probs", Col::ListF32(p))],
                "probs",
                vec!["--activation", "softmax"],
            )
        }
        "label_out_of_range" => (
            vec![("image_id", image()), ("label", labels(Some(9))), ("logits", Col::ListF32(scores(3)))],
            "label",
            vec![],
        ),
        "target_out_of_range" => {
            let mut t = targets();
            t[2] = 1.5;
            (binary(vec![], t), "target", vec![])
        }
        "class_out_of_range" => {
            let c = Col::I32(vec![0, 1, -1, 2, 0, 1, 2, 0]);
            (binary(vec![("class", c)], targets()), "class", vec![])
        }
        "weight_invalid" => {
            let w = Col::F32(vec![1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
            (binary(vec![("weight", w)], targets()), "weight", vec![])
        }
        "iou_out_of_range" => {
            let mut cols = dense(Col::ListF32(scores(3)));
            cols.push(("iou", Col::F32(vec![0.1, 0.2, 1.5, 0.0, 0.7, 0.3, 0.45, 0.1])));
            (cols, "iou", vec![])
        }
        "box_loss_invalid" => {
            let mut cols = dense(Col::ListF32(scores(3)));
            cols.push(("box_loss", Col::F32(vec![0.3, 0.0, f32::NAN, 0.0, 0.8, 0.0, 0.0, 0.0])));
            (cols, "box_loss", vec![])
        }
        "box_non_finite" => {
            let mut cols = dense(Col::ListF32(scores(3)));
            for (k, name) in ["x1", "y1", "x2", "y2"].into_iter().enumerate() {
                let mut v: Vec<f32> = (0..n).map(|i| (i * 10 + k * 5) as f32).collect();
                if name == "x1" {
                    v[2] = f32::INFINITY;
                }
                cols.push((name, Col::F32(v)));
            }
            (cols, "x1", vec!["--ohem-nms", "0.5"])
        }
        other => panic!("no test case for the input rule '{other}': add one to `breaking`"),
    }
}

#[test]
fn every_input_rule_errors_with_file_column_row_and_fix_and_skips_with_its_reason() {
    let env = Env::new();
    for rule in hardmine::input::RULES {
        let (cols, column, flags) = breaking(rule.reason);
        let file = format!("{}.parquet", rule.reason);
        write(&env.path(&file), cols, 3);
        // Strict (default): the file, the column, the row, what is wrong and the fix.
        let mut argv = vec!["analyze", file.as_str()];
        argv.extend(flags.iter().copied());
        let e = env.run(&argv).err();
        let at = format!("column '{column}', row 2:");
        assert!(e.contains(&file) && e.contains(&at), "{}: no '{file}' or '{at}' in:\n{e}", rule.reason);
        assert!(e.contains("fix:") && e.contains("--on-invalid skip"), "{}: no fix in:\n{e}", rule.reason);
        let specific = ["label_out_of_range"]; // names the expected convention instead
        if !specific.contains(&rule.reason) {
            assert!(e.contains(rule.fix), "{}: the rule's fix missing from:\n{e}", rule.reason);
        }
        // Skip: the row is dropped and counted under the rule's reason, and nothing else.
        argv.extend(["--on-invalid", "skip", "--format", "json", "--allow-no-positives"]);
        let j = env.run(&argv).json();
        assert_eq!(j["dataset"]["skipped"], serde_json::json!({ rule.reason: 1 }), "{}", rule.reason);
    }
}

#[test]
fn unsigned_image_ids_beyond_i64_are_refused_clearly() {
    let env = Env::new();
    // An unsigned id above i64::MAX cannot be an image id.
    use polars_core::prelude::*;
    let mut df = df!(
        "image_id" => [0u64, u64::MAX],
        "label" => [0i32, -1],
    )
    .unwrap();
    let logits = Series::new(
        "logits".into(),
        [Series::new("".into(), [1.0f32, 2.0]), Series::new("".into(), [0.5f32, -1.0])],
    );
    df.with_column(logits.into()).unwrap();
    let mut f = std::fs::File::create(env.path("u64.parquet")).unwrap();
    polars_io::prelude::ParquetWriter::new(&mut f).finish(&mut df).unwrap();
    let e = analyze_err(&env, &["u64.parquet"]);
    assert_mentions(&e, &["u64.parquet", "image_id"]);
}
