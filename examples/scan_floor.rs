//! The I/O floor of `hardmine analyze`: read the same columns from Parquet with polars, one row
//! group per task in parallel, and sum them, with nothing else. `cargo run --release --example scan_floor -- DUMP [--threads N]`
//! prints the wall time; docs/benchmarks.md compares it with the full analysis.

use std::time::Instant;

use polars_arrow::array::{Array, FixedSizeListArray, ListArray, PrimitiveArray};
use polars_io::parquet::read::{ParallelStrategy, ParquetReader};
use polars_io::SerReader;
use rayon::prelude::*;

use hardmine::config::AnalysisParams;
use hardmine::input::{Dump, Source};

// The same allocator as the hardmine binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sums every number of a decoded column (lists flattened), as f64.
fn sum(arr: &dyn Array) -> f64 {
    let any = arr.as_any();
    if let Some(l) = any.downcast_ref::<FixedSizeListArray>() {
        return sum(l.values().as_ref());
    }
    if let Some(l) = any.downcast_ref::<ListArray<i64>>() {
        return sum(l.values().as_ref());
    }
    macro_rules! prim {
        ($($t:ty),*) => {$(
            if let Some(a) = any.downcast_ref::<PrimitiveArray<$t>>() {
                return a.values().iter().map(|&x| x as f64).sum();
            }
        )*};
    }
    prim!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);
    0.0
}

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
    // Exactly the columns `analyze` reads (image id, label, scores and anchor id when present),
    // one row group per task, decoded by polars as hardmine does, then summed: no validation,
    // no losses.
    let total: f64 = pool.install(|| {
        dump.units()
            .par_iter()
            .map(|u| {
                let f = &dump.files()[u.file];
                let c = &f.columns;
                let columns: Vec<String> =
                    [Some(&c.image_id), Some(&c.label), Some(&c.scores), c.anchor_id.as_ref()]
                        .into_iter()
                        .flatten()
                        .filter_map(|r| match &r.source {
                            Source::Column(n) => Some(n.clone()),
                            Source::Hive(_) => None,
                        })
                        .collect();
                let file = std::fs::File::open(&f.input.path).expect("readable");
                let df = ParquetReader::new(file)
                    .with_columns(Some(columns))
                    .with_slice(Some((u.offset as usize, u.rows)))
                    .read_parallel(ParallelStrategy::None)
                    .finish()
                    .expect("decodable");
                df.columns()
                    .iter()
                    .map(|col| {
                        let s = col.as_materialized_series().rechunk();
                        s.chunks().iter().map(|a| sum(a.as_ref())).sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .sum()
    });
    println!(
        "read {} rows x {} scores in {:.3} s (checksum {total:.6e})",
        dump.rows(),
        dump.width(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
