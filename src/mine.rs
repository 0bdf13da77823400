//! Hard-example export: the candidates a strategy selects, one Parquet row each.
//!
//! Columns (in this order): `strategy` (string), `image_id` (int64 or string, as in the dump),
//! `file` (the dump file's path), `row` (row within that file), `anchor_id` and `level` (int64,
//! null when the dump has none), `label` (int32: the dense label, or 1/0 for binary
//! positives/negatives), `class` (int32, binary dumps' `class`, else null), `loss` (float64: CE;
//! for `ohem` CE + box loss when the dump has a `box_loss` column; the focal loss for `focal`), `rank` (int32, 1 = hardest in the image) and `weight`
//! (float64: 1, or the focal weight). Rows come image by image in dump order (by each image's first row), hardest first.
//! The file is written atomically: it appears complete or not at all.

use std::path::Path;

use polars_core::prelude::{Column, DataFrame, NamedFrom, Series};
use polars_io::parquet::write::{BatchedWriter, ParquetCompression, ParquetWriter};

use crate::analysis::select::{ExportRow, MineSpec};
use crate::analysis::{self, Mode, Observer};
use crate::config::AnalysisConfig;
use crate::error::{Error, OutputError};
use crate::input::{ColumnType, Dump, HiveValue, ImageKey, Source};
use crate::output::AtomicFile;

/// What [`mine`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MineSummary {
    /// Rows written.
    pub rows: u64,
    /// Images with at least one row.
    pub images: u64,
}

/// Rows buffered before a row group is written.
const GROUP: usize = 65_536;

/// Runs the pass over `dump` and writes the hard examples of `spec` to `out`. `config` must
/// include the mined strategy's settings (see `hardmine mine`). A dump whose images are not
/// contiguous is detected during the streaming pass; the export then starts over, partitioned.
pub fn mine(
    dump: &Dump,
    config: &AnalysisConfig,
    spec: MineSpec,
    out: &Path,
    observer: &dyn Observer,
) -> Result<MineSummary, Error> {
    // The export file is created afresh by each attempt: a restart is always possible.
    analysis::restarting(
        observer,
        "the export re-reads",
        || true,
        |mode| mine_mode(dump, config, spec, out, observer, mode),
    )
}

fn mine_mode(
    dump: &Dump,
    config: &AnalysisConfig,
    spec: MineSpec,
    out: &Path,
    observer: &dyn Observer,
    mode: Mode,
) -> Result<MineSummary, Error> {
    let mut file = AtomicFile::create(out)?;
    let files: Vec<String> = dump.files().iter().map(|f| f.input.path.display().to_string()).collect();
    let string_ids = match &dump.files()[0].columns.image_id {
        c if matches!(c.source, Source::Hive(HiveValue::Str(_))) => true,
        c => c.ty == ColumnType::Str,
    };
    let perr = |e: polars_core::error::PolarsError| OutputError::Parquet {
        path: out.to_path_buf(),
        detail: e.to_string(),
    };
    let schema = frame(&[], spec, &files, string_ids).map_err(perr)?.schema().clone();
    let mut summary = MineSummary { rows: 0, images: 0 };
    {
        let mut writer: BatchedWriter<&mut std::fs::File> = ParquetWriter::new(file.file_mut()?)
            .with_compression(ParquetCompression::Zstd(None))
            .batched(&schema)
            .map_err(perr)?;
        let mut pending: Vec<ExportRow> = Vec::new();
        let mut last_image: Option<ImageKey> = None;
        let mut sink = |rows: Vec<ExportRow>| -> Result<(), Error> {
            for r in &rows {
                if last_image.as_ref() != Some(&r.image) {
                    summary.images += 1;
                    last_image = Some(r.image.clone());
                }
            }
            summary.rows += rows.len() as u64;
            pending.extend(rows);
            while pending.len() >= GROUP {
                let rest = pending.split_off(GROUP);
                let df = frame(&pending, spec, &files, string_ids).map_err(perr)?;
                writer.write_batch(&df).map_err(perr)?;
                pending = rest;
            }
            Ok(())
        };
        let mut exported = false;
        analysis::run_mode(dump, config, observer, Some((spec, &mut sink)), mode, &mut exported)?;
        if !pending.is_empty() {
            let df = frame(&pending, spec, &files, string_ids).map_err(perr)?;
            writer.write_batch(&df).map_err(perr)?;
        }
        writer.finish().map_err(perr)?;
    }
    file.commit()?;
    Ok(summary)
}

/// The export rows as a data frame.
fn frame(
    rows: &[ExportRow],
    spec: MineSpec,
    files: &[String],
    string_ids: bool,
) -> polars_core::error::PolarsResult<DataFrame> {
    let n = rows.len();
    let image: Series = if string_ids {
        Series::new("image_id".into(), rows.iter().map(|r| r.image.to_string()).collect::<Vec<String>>())
    } else {
        let ids: Vec<i64> = rows.iter().map(|r| if let ImageKey::Int(i) = r.image { i } else { 0 }).collect();
        Series::new("image_id".into(), ids)
    };
    let columns: Vec<Column> = vec![
        Series::new("strategy".into(), vec![spec.strategy.name(); n]).into(),
        image.into(),
        Series::new(
            "file".into(),
            rows.iter().map(|r| files[r.file as usize].as_str()).collect::<Vec<&str>>(),
        )
        .into(),
        Series::new("row".into(), rows.iter().map(|r| r.row as i64).collect::<Vec<i64>>()).into(),
        Series::new("anchor_id".into(), rows.iter().map(|r| r.anchor_id).collect::<Vec<Option<i64>>>())
            .into(),
        Series::new("level".into(), rows.iter().map(|r| r.level).collect::<Vec<Option<i64>>>()).into(),
        Series::new("label".into(), rows.iter().map(|r| r.label).collect::<Vec<i32>>()).into(),
        Series::new("class".into(), rows.iter().map(|r| r.class).collect::<Vec<Option<i32>>>()).into(),
        Series::new("loss".into(), rows.iter().map(|r| r.loss).collect::<Vec<f64>>()).into(),
        Series::new("rank".into(), rows.iter().map(|r| r.rank as i32).collect::<Vec<i32>>()).into(),
        Series::new("weight".into(), rows.iter().map(|r| r.weight).collect::<Vec<f64>>()).into(),
    ];
    DataFrame::new(n, columns)
}
