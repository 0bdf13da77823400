//! The I/O floor of `hardmine analyze`: read the same columns from Parquet, in parallel, and sum
//! them, with nothing else. `cargo run --release --example scan_floor -- DUMP [--threads N]`
//! prints the wall time; docs/benchmarks.md compares it with the full analysis.

use std::time::Instant;

use rayon::prelude::*;

use hardmine::config::AnalysisParams;
use hardmine::input::{Dump, ScoreValues, Targets};

// The same allocator as the hardmine binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map(|t| t.parse())
        .transpose()?;
    let inputs: Vec<String> = args.iter().take_while(|a| *a != "--threads").cloned().collect();
    let config = AnalysisParams { threads, ..Default::default() }.check()?;
    let dump = Dump::open(&inputs, config.dump())?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    let start = Instant::now();
    let (sum, labels) = pool.install(|| {
        dump.units()
            .par_iter()
            .map(|&u| {
                let b = dump.read(u).expect("readable");
                let s: f64 = match &b.scores {
                    ScoreValues::F32(a) => a.values().iter().map(|&x| f64::from(x)).sum(),
                    ScoreValues::F64(a) => a.values().iter().sum(),
                };
                let l: i64 = match &b.targets {
                    Targets::Labels(l) => l.iter().map(|&x| i64::from(x)).sum(),
                    Targets::Binary(t) => t.iter().map(|&x| x as i64).sum(),
                };
                (s, l)
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    println!(
        "read {} rows x {} scores in {:.3} s (checksum {sum:.3e}, {labels})",
        dump.rows(),
        dump.width(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
