//! The I/O floor of `hardmine analyze`: read the same columns from Parquet with arrow-rs as
//! hardmine does (one row group per task in parallel, in batches of the same size), and sum
//! them, with nothing else: no validation, no losses.
//! `cargo run --release --example scan_floor -- DUMP [--threads N]` prints the wall time;
//! docs/benchmarks.md compares it with the full analysis.

use std::fs::File;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::Array;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;

use hardmine::config::AnalysisParams;
use hardmine::input::{batch_rows, Dump, Source};

// The same allocator as the hardmine binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sums every number of a decoded column (lists flattened), as f64.
fn sum(arr: &dyn Array) -> f64 {
    macro_rules! prim {
        ($($t:ty),*) => {$(
            if let Some(a) = arr.as_primitive_opt::<$t>() {
                return a.values().iter().map(|&x| x as f64).sum();
            }
        )*};
    }
    match arr.data_type() {
        DataType::FixedSizeList(..) => sum(arr.as_fixed_size_list().values().as_ref()),
        DataType::List(_) => sum(arr.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => sum(arr.as_list::<i64>().values().as_ref()),
        _ => {
            prim!(
                Float32Type,
                Float64Type,
                Int8Type,
                Int16Type,
                Int32Type,
                Int64Type,
                UInt8Type,
                UInt16Type,
                UInt32Type,
                UInt64Type
            );
            0.0
        }
    }
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
    // Exactly the columns `analyze` reads (image id, label, scores and anchor id when present).
    let files: Vec<(ArrowReaderMetadata, ProjectionMask)> = dump
        .files()
        .iter()
        .map(|f| {
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
            let meta = ArrowReaderMetadata::load(&File::open(&f.input.path)?, ArrowReaderOptions::new())?;
            let sd = meta.parquet_schema();
            let leaves = sd
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| columns.contains(&c.path().parts()[0]))
                .map(|(i, _)| i);
            let mask = ProjectionMask::leaves(sd, leaves);
            Ok((meta, mask))
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let size = batch_rows(dump.width(), 4);
    let total: f64 = pool.install(|| {
        dump.units()
            .par_iter()
            .map(|u| {
                let (meta, mask) = &files[u.file];
                let file = File::open(&dump.files()[u.file].input.path).expect("readable");
                let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                    .with_projection(mask.clone())
                    .with_row_groups(vec![u.row_group])
                    .with_batch_size(size)
                    .build()
                    .expect("decodable");
                reader
                    .map(|b| b.expect("decodable").columns().iter().map(|c| sum(c.as_ref())).sum::<f64>())
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
