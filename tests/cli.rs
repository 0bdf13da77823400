//! The command line itself: help, demo, generate.

use crate::util::Env;

#[test]
fn help_lists_the_subcommands() {
    let env = Env::new();
    let out = env.run(&["--help"]).ok();
    for cmd in ["analyze", "generate", "demo"] {
        assert!(out.contains(cmd), "{out}");
    }
    let out = env.run(&["analyze", "--help"]).ok();
    for flag in [
        "--gamma",
        "--alpha",
        "--easy-threshold",
        "--activation",
        "--col",
        "--format",
        "--output",
        "--threads",
    ] {
        assert!(out.contains(flag), "{flag}: {out}");
    }
}

#[test]
fn demo_runs_end_to_end_and_answers_the_headline_first() {
    let env = Env::new();
    let out = env
        .run(&["demo", "--images", "2", "--anchors-per-image", "2000", "--classes", "3", "--out", "kept"])
        .ok();
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("easy negatives: "), "{out}");
    assert!(first.contains("of CE loss") && first.contains("of focal loss (gamma 2, alpha 0.25)"), "{first}");
    assert!(env.path("kept/part-00000.parquet").exists());
    let json = env
        .run(&["demo", "--images", "2", "--anchors-per-image", "2000", "--classes", "3", "--format", "json"])
        .json();
    assert_eq!(json["dataset"]["anchors"], 4000);
}

#[test]
fn generate_is_deterministic_per_seed() {
    let env = Env::new();
    let gen = |dir: &str, seed: &str| {
        env.run(&[
            "generate",
            "--out",
            dir,
            "--images",
            "3",
            "--anchors-per-image",
            "1500",
            "--classes",
            "2",
            "--seed",
            seed,
            "--images-per-file",
            "2",
        ])
        .ok()
    };
    gen("a", "5");
    gen("b", "5");
    gen("c", "6");
    for f in ["part-00000.parquet", "part-00001.parquet"] {
        let a = std::fs::read(env.path(&format!("a/{f}"))).unwrap();
        assert_eq!(a, std::fs::read(env.path(&format!("b/{f}"))).unwrap(), "{f}");
        assert_ne!(a, std::fs::read(env.path(&format!("c/{f}"))).unwrap(), "{f}");
    }
    let e = env.run(&["generate", "--out", "x", "--images", "0"]).err();
    assert!(e.contains("--images"), "{e}");
}
