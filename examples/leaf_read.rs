//! A spike for issue 10: the f32 list column `COLUMN` of one file (a dense dump's scores) read
//! on one thread (a) through arrow-rs's array readers, as hardmine reads it (one reader per row
//! group, a FixedSizeList per batch), and (b) through parquet's typed column reader (values, def
//! and rep levels into reused buffers, no list assembly, the levels checked for absent values
//! and row starts), three rounds each; both sum the values, which must agree.
//! docs/benchmarks.md ("Ninth round") shows the figures.
//! `cargo run --release --example leaf_read -- FILE COLUMN ROWS_PER_BATCH`

use std::fs::File;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, column, batch] = &args[..] else {
        return Err("usage: leaf_read FILE COLUMN ROWS_PER_BATCH".into());
    };
    let batch: usize = batch.parse()?;
    for round in 0..3 {
        // (a) arrow-rs, one reader per row group, as hardmine.
        let start = Instant::now();
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
        let meta = builder.metadata().clone();
        let sd = builder.parquet_schema().clone();
        let leaf = sd
            .columns()
            .iter()
            .position(|c| c.path().parts()[0] == *column)
            .ok_or_else(|| format!("{path} has no column {column}"))?;
        let mut a_sum = 0.0f64;
        let mut a_n = 0usize;
        for rg in 0..meta.num_row_groups() {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?
                .with_projection(ProjectionMask::leaves(&sd, [leaf]))
                .with_row_groups(vec![rg])
                .with_batch_size(batch)
                .build()?;
            for b in reader {
                let b = b?;
                let list = b.column(0).as_fixed_size_list_opt().ok_or("not a fixed-size list")?;
                let v = list.values().as_primitive_opt::<Float32Type>().ok_or("not f32 values")?;
                a_n += v.len();
                a_sum += v.values().iter().map(|&x| f64::from(x)).sum::<f64>();
            }
        }
        let a = start.elapsed().as_secs_f64();
        // (b) parquet's typed column reader, buffers reused.
        let start = Instant::now();
        let reader = SerializedFileReader::new(File::open(path)?)?;
        let (mut values, mut def, mut rep) = (Vec::<f32>::new(), Vec::<i16>::new(), Vec::<i16>::new());
        let mut b_sum = 0.0f64;
        let mut b_n = 0usize;
        for rg in 0..reader.num_row_groups() {
            let group = reader.get_row_group(rg)?;
            let ColumnReader::FloatColumnReader(mut col) = group.get_column_reader(leaf)? else {
                return Err(format!("{column} in {path} is not a list of f32").into());
            };
            loop {
                values.clear();
                def.clear();
                rep.clear();
                let (records, _, _) = col.read_records(batch, Some(&mut def), Some(&mut rep), &mut values)?;
                if records == 0 {
                    break;
                }
                // The checks a reader would make: every value present (def at its maximum) and
                // the rows' lengths (a row starts at rep level 0).
                let max_def = def.iter().copied().max().unwrap_or(0);
                let absent = def.iter().filter(|&&d| d != max_def).count();
                let starts = rep.iter().filter(|&&r| r == 0).count();
                if absent != 0 || starts != records || values.len() % records != 0 {
                    return Err(format!("{column}: {absent} absent values, {starts} row starts").into());
                }
                b_n += values.len();
                b_sum += values.iter().map(|&x| f64::from(x)).sum::<f64>();
            }
        }
        let b = start.elapsed().as_secs_f64();
        println!(
            "round {round}: arrow {a:.3} s ({a_n} values, {a_sum:.6e}); \
             column reader {b:.3} s ({b_n} values, {b_sum:.6e})"
        );
    }
    Ok(())
}
