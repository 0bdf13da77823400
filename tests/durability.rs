//! Outputs appear whole or not at all: a process killed mid-write leaves the previous file
//! intact, and Ctrl-C stops a run cleanly. (Failing writers are covered by the unit tests of
//! `src/output.rs`.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::Env;

/// A dump that takes the debug binary a second or more to mine: 12 images x 40k anchors x 4
/// classes, in row groups of 4000 rows over three files.
fn big_dump(env: &Env) {
    env.run(&[
        "generate",
        "--out",
        "dump",
        "--images",
        "12",
        "--anchors-per-image",
        "40000",
        "--classes",
        "4",
        "--rows-per-group",
        "4000",
        "--images-per-file",
        "4",
    ])
    .ok();
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hardmine"))
        .args(args)
        .current_dir(env.root())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hardmine")
}

/// Temporary files left next to `name` (a killed process cannot remove its own).
fn leftovers(env: &Env, name: &str) -> Vec<(std::path::PathBuf, u64)> {
    std::fs::read_dir(env.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!(".{name}.")) && n.ends_with(".tmp")
        })
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

#[test]
fn killing_an_export_mid_write_keeps_the_previous_file_whole() {
    let env = Env::new();
    big_dump(&env);
    // The previous export: another strategy, so its bytes differ from the new one.
    env.run(&["mine", "dump", "--strategy", "ssd", "--out", "hard.parquet", "--quiet"]).ok();
    let previous = std::fs::read(env.path("hard.parquet")).unwrap();
    // Every anchor, ranked: 480k rows written in row groups of 64k while the pass runs.
    let args = ["mine", "dump", "--strategy", "focal", "--top", "40000", "--out", "hard.parquet", "--quiet"];
    let cleanup = || {
        for (path, _) in leftovers(&env, "hard.parquet") {
            std::fs::remove_file(path).unwrap();
        }
    };
    // Killed early (before or while opening), then killed as soon as export bytes are on disk.
    for delay in [5, 50] {
        let mut child = spawn(&env, &args);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL: no destructor, no cleanup
        let _ = child.wait();
        assert_eq!(std::fs::read(env.path("hard.parquet")).unwrap(), previous, "killed after {delay} ms");
        cleanup();
    }
    let mut child = spawn(&env, &args);
    let start = Instant::now();
    let written = loop {
        if let Some((_, len)) = leftovers(&env, "hard.parquet").into_iter().find(|(_, len)| *len > 0) {
            let _ = child.kill();
            break len;
        }
        assert!(child.try_wait().unwrap().is_none(), "mine finished before any export bytes were seen");
        assert!(start.elapsed() < Duration::from_secs(120), "no export bytes after 2 minutes");
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.wait();
    assert!(written > 0);
    assert_eq!(
        std::fs::read(env.path("hard.parquet")).unwrap(),
        previous,
        "killed with {written} bytes written"
    );
    cleanup();
    // A complete run replaces the file whole.
    env.run(&args).ok();
    assert_ne!(std::fs::read(env.path("hard.parquet")).unwrap(), previous);
    assert!(leftovers(&env, "hard.parquet").is_empty());
}

#[test]
fn killing_a_report_keeps_the_previous_report_and_a_rerun_replaces_it() {
    let env = Env::new();
    big_dump(&env);
    std::fs::write(env.path("r.json"), b"previous report").unwrap();
    let mut delay = Duration::from_millis(10);
    loop {
        let mut child =
            spawn(&env, &["analyze", "dump", "--output", "r.json", "--format", "json", "--quiet"]);
        std::thread::sleep(delay);
        let _ = child.kill();
        if child.wait().unwrap().success() {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(env.path("r.json")).unwrap()).unwrap();
            assert_eq!(v["schema_version"], 1);
            break;
        }
        assert_eq!(std::fs::read(env.path("r.json")).unwrap(), b"previous report", "killed after {delay:?}");
        for (path, _) in leftovers(&env, "r.json") {
            std::fs::remove_file(path).unwrap();
        }
        delay = delay.mul_f64(1.5);
        assert!(delay < Duration::from_secs(60), "analyze never finished");
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_run_with_exit_130_and_writes_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    big_dump(&env);
    // No fixed sleep: a SIGINT that arrives before hardmine installed its handler ends the child
    // by the signal itself (the default action), which this loop sees and retries later. The
    // first interrupt that hardmine handles must give exit 130, a message and no file.
    let mut delay = Duration::from_millis(20);
    let (out, start) = loop {
        let start = Instant::now();
        let child = spawn(&env, &["report", "dump", "--out", "r.html"]);
        std::thread::sleep(delay);
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        if out.status.signal() == Some(2) {
            // Before the handler: killed like by SIGKILL (see the test above); nothing may have
            // been written, and a temporary file it could not remove is cleared for the next try.
            assert!(!env.path("r.html").exists());
            for (path, _) in leftovers(&env, "r.html") {
                std::fs::remove_file(path).unwrap();
            }
            delay = delay.mul_f64(1.5);
            assert!(delay < Duration::from_secs(30), "hardmine never installed its Ctrl-C handler");
            continue;
        }
        break (out, start);
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "finished in {:?}, before the interrupt: use a bigger dump",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted") && !stderr.contains("panicked"), "{stderr}");
    assert!(!env.path("r.html").exists());
    assert!(leftovers(&env, "r.html").is_empty(), "temp file left after Ctrl-C");
}
