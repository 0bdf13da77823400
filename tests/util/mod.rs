//! Test helpers: a temp dir per test, running the binary with full diagnostics on failure,
//! Parquet fixture writers and an independent f64 reference implementation.

pub mod fixture;
pub mod fuzz;
pub mod reference;
pub mod select_ref;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory for one test.
pub struct Env {
    dir: tempfile::TempDir,
}

/// The result of running the binary.
pub struct Run {
    pub argv: Vec<String>,
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "argv: {:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.argv,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert!(self.output.status.success(), "expected success\n{}", self.describe());
        assert!(!self.stderr().contains("panicked"), "panic\n{}", self.describe());
        self.stdout()
    }
    /// Asserts a clean failure (non-zero exit, one `error:` message, no panic) and returns stderr.
    pub fn err(&self) -> String {
        assert!(!self.output.status.success(), "expected failure\n{}", self.describe());
        let e = self.stderr();
        assert!(!e.contains("panicked"), "panic\n{}", self.describe());
        assert!(e.starts_with("error:") || e.starts_with("error: "), "no error: prefix\n{}", self.describe());
        e
    }
    /// Parses stdout as JSON (asserting success).
    pub fn json(&self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.describe()))
    }
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `hardmine` with `args` in this directory.
    pub fn run(&self, args: &[&str]) -> Run {
        let bin = env!("CARGO_BIN_EXE_hardmine");
        let output = Command::new(bin)
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("run hardmine");
        let mut argv = vec![bin.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        Run { argv, output }
    }
}

/// Asserts `a` and `b` agree to `rel` relative tolerance (absolute below 1e-300).
#[track_caller]
pub fn assert_close(a: f64, b: f64, rel: f64, what: &str) {
    let scale = a.abs().max(b.abs());
    assert!(
        (a - b).abs() <= rel * scale || (a - b).abs() < 1e-300,
        "{what}: hardmine {a} vs reference {b} (rel err {:e})",
        (a - b).abs() / scale
    );
}

/// A tiny deterministic generator for test data (independent of hardmine's own).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform pick.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Two JSON values with the same structure whose numbers agree to `rel` (integers exactly).
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, rel: f64, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let scale = x.abs().max(y.abs());
            assert!((x - y).abs() <= rel * scale, "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, rel, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}");
            for (k, v) in x {
                assert_json_close(v, &y[k], rel, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}
