//! Long runs of the in-tree fuzz harness (the suite runs it briefly in `tests/fuzz.rs`).
//!
//! ```text
//! cargo build --release && cargo run --release --example fuzz -- --minutes 10 [--seed N]
//! ```
//!
//! Splits the time between the Parquet reader (60%), the settings checks (10%) and command lines
//! through the release binary (30%), prints what each saw, saves failing inputs under
//! `fuzz-failures/` and exits non-zero if there was any failure.

#[path = "../tests/util/fuzz.rs"]
mod fuzz;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fuzz::Budget;

fn arg(args: &[String], name: &str) -> Option<f64> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let minutes = arg(&args, "--minutes").unwrap_or(10.0);
    let seed = arg(&args, "--seed").unwrap_or(1.0) as u64;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/examples/fuzz -> target/<profile>/hardmine
    let bin: PathBuf = exe.parent().and_then(|p| p.parent()).expect("target dir").join("hardmine");
    if !bin.exists() {
        eprintln!("error: {} not found\n  fix: cargo build --release first", bin.display());
        return std::process::ExitCode::from(2);
    }
    let work = tempfile::tempdir().expect("temp dir");
    let save = PathBuf::from("fuzz-failures");
    let (seeds, dump) = fuzz::seeds(work.path());
    let start = Instant::now();
    let until = |share: f64| Budget { cases: u64::MAX, until: Some(Instant::now() + total.mul_f64(share)) };
    let p = fuzz::parquet(&seeds, until(0.6), seed, work.path(), &save);
    println!("{}", p.summary("parquet"));
    let c = fuzz::config(until(0.1), seed, &dump);
    println!("{}", c.summary("config"));
    let a = fuzz::argv(&bin, until(0.3), seed, work.path(), &dump, &save);
    println!("{}", a.summary("argv"));
    println!("{:.1} minutes", start.elapsed().as_secs_f64() / 60.0);
    let failures: Vec<&String> = p.failures.iter().chain(&c.failures).chain(&a.failures).collect();
    for f in &failures {
        println!("FAILURE: {f}");
    }
    if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
