//! The CLI's own argument definitions and helpers, compiled into the extension from the
//! binary's sources (src/cli/*.rs), so that `hardmine.analyze(...)` and `hardmine analyze ...`
//! parse, default and validate their settings with the very same clap definitions.
//!
//! Only the subcommands the bindings expose are included (not `generate` and `demo`); their
//! `run` functions, which print to stdout and install a Ctrl-C handler (that would replace
//! Python's SIGINT handler), are compiled but not called: see `commands` in lib.rs.
#![allow(dead_code)]

#[path = "../../src/cli/analyze.rs"]
pub mod analyze;
#[path = "../../src/cli/common.rs"]
pub mod common;
#[path = "../../src/cli/merge.rs"]
pub mod merge;
#[path = "../../src/cli/mine.rs"]
pub mod mine;
#[path = "../../src/cli/report.rs"]
pub mod report;
#[path = "../../src/cli/sweep.rs"]
pub mod sweep;
