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
        vec![("image_id", ids(4)), ("label", Col::I32(vec![-1; 4])), ("logits", logits(4, 2))],
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
    ] {
        let mut argv = vec!["d.parquet"];
        argv.extend(args.iter().copied());
        let e = analyze_err(&env, &argv);
        assert!(e.contains(flag), "{args:?}: {e}");
    }
}

#[test]
fn an_unwritable_output_fails_fast_and_a_failed_run_keeps_the_previous_report() {
    let env = Env::new();
    write(
        &env.path("d.parquet"),
        vec![("image_id", ids(4)), ("label", Col::I32(vec![-1; 4])), ("logits", logits(4, 2))],
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
