//! A short run of the in-tree fuzz harness (`tests/util/fuzz.rs`): mutated Parquet files,
//! edge-value settings and random command lines never panic, hang or print anything but one
//! `error:` message. `examples/fuzz.rs` runs the same harness for longer.

use std::path::Path;

use crate::util::fuzz::{self, Budget};
use crate::util::Env;

fn budget(cases: u64) -> Budget {
    Budget { cases, until: None }
}

#[test]
fn mutated_parquet_files_give_a_report_or_a_typed_error() {
    let env = Env::new();
    let (seeds, _) = fuzz::seeds(env.root());
    let out = fuzz::parquet(&seeds, budget(300), 1, env.root(), &env.path("failures"));
    assert!(out.failures.is_empty(), "{}\n{:#?}", out.summary("parquet"), out.failures);
    // Both outcomes are exercised: the mutations are neither all harmless nor all fatal.
    assert!(out.ok > 0 && out.errors.values().sum::<u64>() > 0, "{}", out.summary("parquet"));
}

#[test]
fn edge_value_settings_are_accepted_and_run_or_refused() {
    let env = Env::new();
    let (_, dump) = fuzz::seeds(env.root());
    let out = fuzz::config(budget(150), 2, &dump);
    assert!(out.failures.is_empty(), "{}\n{:#?}", out.summary("config"), out.failures);
    assert!(out.ok > 0 && out.errors.values().sum::<u64>() > 0, "{}", out.summary("config"));
}

#[test]
fn random_command_lines_exit_cleanly() {
    let env = Env::new();
    let (_, dump) = fuzz::seeds(env.root());
    let bin = Path::new(env!("CARGO_BIN_EXE_hardmine"));
    let out = fuzz::argv(bin, budget(60), 3, env.root(), &dump, &env.path("failures"));
    assert!(out.failures.is_empty(), "{}\n{:#?}", out.summary("argv"), out.failures);
    assert!(out.ok > 0 && out.errors.values().sum::<u64>() > 0, "{}", out.summary("argv"));
}
