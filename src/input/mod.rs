//! Reading dumps: Parquet discovery, schema detection and validation, and row-group batches.
//!
//! [`Dump::open`] finds the files, reads only their footers, resolves the layout and columns and
//! checks them (fail fast, before the long pass). [`Dump::read_unit`] decodes one row group,
//! projected to the columns the analysis needs, in batches of at most [`MAX_BATCH_ROWS`] rows
//! (and about [`MAX_BATCH_SCORE_BYTES`] of scores), each a validated [`Batch`]. Memory is
//! bounded by the batches in flight, whatever the row-group size: a dump is never collected
//! whole, and neither is a row group.
//!
//! A dump may also hold in-memory Arrow sources ([`ArrowSource`], [`Dump::open_inputs`]):
//! record batches already in memory (a Python producer's, imported through the Arrow C stream
//! interface), checked by the same rules and read in place, without copying (see `memory.rs`).
//!
//! The footer and the schema are read with polars (the types and checks users' files were
//! validated against); the data pages are decoded with arrow-rs `parquet`, whose reader
//! streams a row group page by page and whose fixed-size-list decoder is ~1.7x faster per core
//! than polars' (docs/benchmarks.md, "Reader"). A dense dump's scores, its largest column, are
//! read from their leaf column with parquet's typed column reader while every row holds its
//! scores, without building list arrays (`leaf.rs`; docs/benchmarks.md, "Tenth round").

mod discover;
mod groups;
mod leaf;
mod memory;
mod pages;
mod read;
mod schema;
mod slice;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::ScalarBuffer;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use polars_io::parquet::read::{infer_schema, FileMetadata, ParquetReader};
use polars_io::SerReader;
use serde::{Deserialize, Serialize};

pub use discover::{discover, HiveValue, InputFile};
pub use groups::{Group, Grouping};
pub use memory::ArrowSource;
pub use read::{Rule, RULES};
pub use schema::{ColumnType, DumpShape, FileColumns, Resolved, Source};

pub use crate::config::Extras;
use crate::config::{Activation, DumpOptions, Layout, OnInvalid};
use crate::error::InputError;

/// The largest logit magnitude accepted. Real detectors stay within a few hundred; larger values
/// mean the column does not hold logits (or training diverged). The bound also keeps every loss
/// term far inside the range of the exact accumulators.
pub const MAX_ABS_LOGIT: f64 = 1e6;

/// The most rows in one decoded batch. Large enough that per-batch costs (a reader call, a
/// fresh accumulator, a merge) vanish against ~1M decisions, small enough that a batch and its
/// derived per-row vectors stay a few MB per thread whatever the row-group size (users' files
/// have row groups of 1M rows and more; polars decoded them whole).
pub const MAX_BATCH_ROWS: usize = 65_536;

/// The most score bytes in one decoded batch (wide score lists get fewer rows per batch), so
/// that memory per batch in flight stays ~2 MB of scores for any class count. Not larger:
/// arrow-rs grows a batch's value buffer page by page with `reserve_exact`, copying it at each
/// page, so the copies grow with the square of the batch (16 MB batches of 80-class rows spent
/// 8% of `analyze` in memmove; 2 MB: 3%, and 109 MB max RSS instead of 187 MB on one thread).
pub const MAX_BATCH_SCORE_BYTES: usize = 2 << 20;

/// Rows per batch for `width` scores per row of `score_bytes` bytes each.
pub fn batch_rows(width: usize, score_bytes: usize) -> usize {
    (MAX_BATCH_SCORE_BYTES / (width.max(1) * score_bytes.max(1))).clamp(1, MAX_BATCH_ROWS)
}

/// Identifies an image across the whole dump.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageKey {
    /// An integer id.
    Int(i64),
    /// A string id (e.g. a file name).
    Str(Box<str>),
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageKey::Int(i) => write!(f, "{i}"),
            ImageKey::Str(s) => f.write_str(s),
        }
    }
}

/// A maximal run of consecutive rows with the same image id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRun {
    /// The image.
    pub key: ImageKey,
    /// First row of the run (within the batch).
    pub start: usize,
    /// One past the last row.
    pub end: usize,
}

/// Per-row class information.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Dense layout: the matched label per anchor (validated against the activation).
    Labels(Vec<i32>),
    /// Binary layout: the target per decision, in [0, 1].
    Binary(Vec<f64>),
}

/// The score values of a batch, zero-copy from the decoded Parquet column (an arrow-rs buffer,
/// already sliced to the batch's rows).
#[derive(Clone, Debug)]
pub enum ScoreValues {
    /// float32 scores.
    F32(ScalarBuffer<f32>),
    /// float64 scores.
    F64(ScalarBuffer<f64>),
}

impl ScoreValues {
    /// Scores held as float32 (`None` for float64 columns).
    pub fn f32s(&self) -> Option<&[f32]> {
        match self {
            ScoreValues::F32(a) => Some(a),
            ScoreValues::F64(_) => None,
        }
    }

    /// Scores held as float64 (`None` for float32 columns).
    pub fn f64s(&self) -> Option<&[f64]> {
        match self {
            ScoreValues::F64(a) => Some(a),
            ScoreValues::F32(_) => None,
        }
    }

    /// float32 scores from a vector (tests and library users building batches by hand).
    pub fn from_f32(v: Vec<f32>) -> ScoreValues {
        ScoreValues::F32(ScalarBuffer::from(v))
    }
}

/// One decoded, validated batch of consecutive rows of a row group.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Index of the file in [`Dump::files`].
    pub file: usize,
    /// Row index (within the file) of the batch's first row.
    pub first_row: u64,
    /// One past the file row of the last row this batch covers (skipped rows included): the
    /// batch covers the file rows `first_row..end_row`.
    pub end_row: u64,
    /// Rows in the batch's file.
    pub file_rows: u64,
    /// Number of rows (after skipping invalid ones).
    pub rows: usize,
    /// Each row's index within the file, when invalid rows were skipped (otherwise row `i` is
    /// `first_row + i`).
    pub row_index: Option<Vec<u64>>,
    /// Rows skipped by the `--on-invalid skip` policy, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Image runs covering all rows, in row order.
    pub images: Vec<ImageRun>,
    /// Labels (dense) or targets (binary).
    pub targets: Targets,
    /// Scores, `rows * width` values in row-major order.
    pub scores: ScoreValues,
    /// Binary layout: class index per row.
    pub class: Option<Vec<i32>>,
    /// Binary layout: per-decision loss weight.
    pub weight: Option<Vec<f64>>,
    /// `anchor_id`, when requested with [`Extras`] and present.
    pub anchor_id: Option<Vec<i64>>,
    /// `level`, when requested and present.
    pub level: Option<Vec<i64>>,
    /// `iou`, when requested and present.
    pub iou: Option<Vec<f32>>,
    /// `x1, y1, x2, y2`, when requested and present.
    pub boxes: Option<Vec<[f32; 4]>>,
    /// `box_loss` per row, when requested and present.
    pub box_loss: Option<Vec<f64>>,
}

/// What a report needs to know about the dump it describes (and what a state file keeps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpInfo {
    /// The files (and Arrow sources, by name), in reading order.
    pub inputs: Vec<String>,
    /// Layout, scores and activation.
    pub shape: DumpShape,
    /// Scores per row.
    pub width: usize,
    /// Softmax background class.
    pub background_class: u32,
}

/// Image runs of rows with integer ids `ids`, for unit tests.
#[cfg(test)]
pub(crate) fn runs_of(ids: impl IntoIterator<Item = i64>) -> Vec<ImageRun> {
    let mut images: Vec<ImageRun> = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        match images.last_mut() {
            Some(run) if run.key == ImageKey::Int(id) => run.end = i + 1,
            _ => images.push(ImageRun { key: ImageKey::Int(id), start: i, end: i + 1 }),
        }
    }
    images
}

/// A batch of file 0 for unit tests: image ids per row, targets and scores, nothing optional.
/// Its file ends with it (set `file_rows` when a test splits one file into several batches).
#[cfg(test)]
pub(crate) fn test_batch(
    ids: impl IntoIterator<Item = i64>,
    targets: Targets,
    scores: ScoreValues,
    first_row: u64,
) -> Batch {
    let images = runs_of(ids);
    let rows = images.last().map_or(0, |r| r.end);
    Batch {
        file: 0,
        first_row,
        end_row: first_row + rows as u64,
        file_rows: first_row + rows as u64,
        rows,
        row_index: None,
        skipped: BTreeMap::new(),
        images,
        targets,
        scores,
        class: None,
        weight: None,
        anchor_id: None,
        level: None,
        iou: None,
        boxes: None,
        box_loss: None,
    }
}

impl Batch {
    /// The row's index within its file.
    #[inline]
    pub fn file_row(&self, row: usize) -> u64 {
        match &self.row_index {
            Some(ix) => ix[row],
            None => self.first_row + row as u64,
        }
    }
}

/// One unit of work: a row group of a file, or a run of rows of one record batch of an Arrow
/// source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Index of the file in [`Dump::files`].
    pub file: usize,
    /// Row-group index within the file (an Arrow source: the record batch's index).
    pub row_group: usize,
    /// First row of the row group within the file.
    pub offset: u64,
    /// Rows in the row group.
    pub rows: usize,
}

/// One input file with its footer and resolved columns (or an Arrow source with its batches).
#[derive(Debug)]
pub struct DumpFile {
    /// Path and hive partition values (an Arrow source: its name, and no hive values).
    pub input: InputFile,
    /// Total rows.
    pub rows: u64,
    /// Resolved columns.
    pub columns: FileColumns,
    /// Where the rows are read from.
    data: Data,
}

/// The rows of a [`DumpFile`].
#[derive(Clone, Debug)]
enum Data {
    /// A Parquet file.
    Parquet {
        /// The footer as polars reads it (schema resolution and the page checks).
        metadata: Arc<FileMetadata>,
        /// The footer as arrow-rs reads it, loaded once per file and shared by every read.
        arrow: ArrowReaderMetadata,
    },
    /// An in-memory Arrow source.
    Memory(memory::Batches),
}

impl DumpFile {
    /// The arrow-rs schema of the rows.
    fn arrow_schema(&self) -> &arrow_schema::SchemaRef {
        match &self.data {
            Data::Parquet { arrow, .. } => arrow.schema(),
            Data::Memory(m) => &m.schema,
        }
    }
}

/// One input of a dump.
#[derive(Clone, Debug)]
pub enum Input {
    /// A Parquet file, a directory or a glob, as on the command line.
    Path(String),
    /// Record batches in memory.
    Arrow(ArrowSource),
}

/// An opened, validated dump: the files, their shared shape and the row groups to read.
#[derive(Debug)]
pub struct Dump {
    files: Vec<DumpFile>,
    shape: DumpShape,
    width: usize,
    background_class: u32,
    units: Vec<Unit>,
    extras: Extras,
    on_invalid: OnInvalid,
}

impl Dump {
    /// Finds the inputs, reads every footer and validates the schema. No data pages are read
    /// except the first row of a variable-length score list, to learn the class count.
    pub fn open(inputs: &[String], options: &DumpOptions) -> Result<Dump, InputError> {
        Dump::open_inputs(inputs.iter().cloned().map(Input::Path).collect(), options)
    }

    /// [`Dump::open`] over paths and in-memory Arrow sources, read in the order given (each
    /// path's files in sorted order, as [`discover`] finds them; a file named twice is read
    /// once). An Arrow source is checked as a file is, and named by its name in errors and in
    /// [`DumpInfo::inputs`].
    pub fn open_inputs(inputs: Vec<Input>, options: &DumpOptions) -> Result<Dump, InputError> {
        let inputs = find(inputs)?;
        let mut files = Vec::with_capacity(inputs.len());
        let mut shape: Option<DumpShape> = None;
        for found in inputs {
            let (input, (s, columns), data) = match found {
                Found::File(input) => {
                    let (metadata, schema, arrow) = read_footer(&input.path)?;
                    let resolved = schema::resolve(&input, &schema, options)?;
                    (input, resolved, Data::Parquet { metadata, arrow })
                }
                Found::Arrow(source) => {
                    let input = InputFile { path: source.name().into(), hive: Vec::new() };
                    let resolved = schema::resolve_arrow(&input, source.schema(), options)?;
                    (input, resolved, Data::Memory(memory::Batches::new(source)))
                }
            };
            if let (Some(s0), Some(f0)) = (shape.as_ref(), files.first()) {
                let f0: &DumpFile = f0;
                schema::check_consistent((&f0.input.path, s0, &f0.columns), (&input.path, &s, &columns))?;
            }
            shape.get_or_insert(s);
            let rows = match &data {
                Data::Parquet { metadata, .. } => metadata.num_rows as u64,
                Data::Memory(m) => m.rows(),
            };
            files.push(DumpFile { rows, input, columns, data });
        }
        let shape = shape.expect("discover returns at least one file");
        let mut units = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let metadata = match &f.data {
                Data::Parquet { metadata, .. } => metadata,
                Data::Memory(m) => {
                    units.extend(m.units(i));
                    continue;
                }
            };
            let mut offset = 0u64;
            for (g, rg) in metadata.row_groups.iter().enumerate() {
                let rows = rg.num_rows();
                if rows > 0 {
                    units.push(Unit { file: i, row_group: g, offset, rows });
                }
                offset += rows as u64;
            }
        }
        if options.extras().boxes {
            if let Some(f) = files.iter().find(|f| f.columns.boxes.is_none()) {
                return Err(InputError::Schema {
                    path: f.input.path.clone(),
                    problem: "--ohem-nms needs the box columns x1, y1, x2, y2, and this file has none".into(),
                    fix: "dump the anchor (or predicted) boxes, map yours with --col x1=<column> (and y1, x2, y2), or drop --ohem-nms".into(),
                });
            }
        }
        if options.extras().level {
            if let Some(f) = files.iter().find(|f| f.columns.level.is_none()) {
                return Err(InputError::Schema {
                    path: f.input.path.clone(),
                    problem: "--ghm-per-level needs the FPN level of each anchor, and this file has no 'level' column".into(),
                    fix: "dump each anchor's FPN level (3 for P3, ...), map yours with --col level=<column>, or drop --ghm-per-level".into(),
                });
            }
        }
        let Some(first) = units.first().copied() else {
            return Err(InputError::Empty { files: files.len() });
        };
        let width = match files[first.file].columns.scores.ty {
            ColumnType::FloatList(Some(w)) => w,
            ColumnType::FloatList(None) => read::first_list_width(&files[first.file], first)?,
            _ => 1,
        };
        let f0 = &files[first.file];
        if shape.layout == Layout::Dense && width == 0 {
            return Err(InputError::Value {
                path: f0.input.path.clone(),
                column: f0.columns.scores.name.clone(),
                row: first.offset,
                problem: "empty score list".into(),
                fix: "write one score per class in every row".into(),
            });
        }
        if width > usize::from(u16::MAX) {
            return Err(InputError::Schema {
                path: f0.input.path.clone(),
                problem: format!("score lists hold {width} classes; hardmine supports at most {}", u16::MAX),
                fix: "check that the list column holds per-class scores of one anchor".into(),
            });
        }
        if shape.activation == Activation::Softmax {
            if width < 2 {
                return Err(InputError::Schema {
                    path: f0.input.path.clone(),
                    problem: format!(
                        "softmax needs at least 2 classes (background + 1), the score lists hold {width}"
                    ),
                    fix: "use --activation sigmoid for one-class sigmoid dumps".into(),
                });
            }
            if options.background_class() as usize >= width {
                return Err(InputError::Schema {
                    path: f0.input.path.clone(),
                    problem: format!(
                        "--background-class {} is outside the softmax width K = {width}",
                        options.background_class()
                    ),
                    fix: format!("pass the background's index in 0..{width} (torchvision and detectron2 put background at 0 and at K-1 respectively)"),
                });
            }
        }
        Ok(Dump {
            files,
            shape,
            width,
            background_class: options.background_class(),
            units,
            extras: options.extras(),
            on_invalid: options.on_invalid(),
        })
    }

    /// The input files (and Arrow sources), in reading order.
    pub fn files(&self) -> &[DumpFile] {
        &self.files
    }

    /// Layout, score kind and activation.
    pub fn shape(&self) -> DumpShape {
        self.shape
    }

    /// Scores per row: C (sigmoid), K (softmax) or 1 (binary).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The softmax background class.
    pub fn background_class(&self) -> u32 {
        self.background_class
    }

    /// The facts a report records about this dump.
    pub fn info(&self) -> DumpInfo {
        DumpInfo {
            inputs: self.files.iter().map(|f| f.input.path.display().to_string()).collect(),
            shape: self.shape,
            width: self.width,
            background_class: self.background_class,
        }
    }

    /// The row groups to read, in file and row order.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// Rows in the dump's units (every row of its files, or of a group's row groups: see
    /// [`Dump::group_by`]).
    pub fn rows(&self) -> u64 {
        self.units.iter().map(|u| u.rows as u64).sum()
    }

    /// The policy for rows with invalid values.
    pub fn on_invalid(&self) -> OnInvalid {
        self.on_invalid
    }

    /// The optional columns being read.
    pub fn extras(&self) -> Extras {
        self.extras
    }

    /// Decodes and validates one row group, handing its batches to `f` in row order (each of at
    /// most [`MAX_BATCH_ROWS`] rows, with `first_row` its first row's index in the file). Stops
    /// at the first error, the reader's or `f`'s.
    pub fn read_unit<E: From<InputError>>(
        &self,
        unit: Unit,
        f: &mut dyn FnMut(Batch) -> Result<(), E>,
    ) -> Result<(), E> {
        read::read_unit(self, &self.files[unit.file], unit, f)
    }

    /// The batches of one row group, collected (tests and benches; the pass streams them with
    /// [`Dump::read_unit`]).
    pub fn read_batches(&self, unit: Unit) -> Result<Vec<Batch>, InputError> {
        let mut out = Vec::new();
        self.read_unit(unit, &mut |b| {
            out.push(b);
            Ok::<(), InputError>(())
        })?;
        Ok(out)
    }
}

/// An input after discovery.
enum Found {
    File(InputFile),
    Arrow(ArrowSource),
}

/// Discovers each path's files (a file found twice is kept once, where first found) and keeps
/// the Arrow sources where they stand.
fn find(inputs: Vec<Input>) -> Result<Vec<Found>, InputError> {
    if inputs.is_empty() {
        discover(&[])?;
    }
    let mut found = Vec::with_capacity(inputs.len());
    for input in inputs {
        match input {
            Input::Path(p) => {
                for f in discover(std::slice::from_ref(&p))? {
                    if !found.iter().any(|o| matches!(o, Found::File(o) if o.path == f.path)) {
                        found.push(Found::File(f));
                    }
                }
            }
            Input::Arrow(source) => found.push(Found::Arrow(source)),
        }
    }
    Ok(found)
}

type Footer = (Arc<FileMetadata>, polars_arrow::datatypes::ArrowSchema, ArrowReaderMetadata);

fn read_footer(path: &Path) -> Result<Footer, InputError> {
    let file = File::open(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| InputError::Io { path: path.to_path_buf(), source })?.len();
    if len == 0 {
        return Err(parquet_error(path, "the file is empty (0 bytes)"));
    }
    guarded(path, || {
        let mut reader = ParquetReader::new(file);
        let metadata = reader.get_metadata().map_err(|e| parquet_error(path, e))?.clone();
        pages::check_footer(path, &metadata, len)?;
        let schema = infer_schema(&metadata).map_err(|e| parquet_error(path, e))?;
        let file = File::open(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
        let arrow = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| parquet_error(path, e))?;
        Ok((metadata, schema, arrow))
    })
}

fn parquet_error(path: &Path, detail: impl ToString) -> InputError {
    let detail = detail.to_string();
    let detail = detail.lines().next().unwrap_or("").to_string();
    InputError::Parquet { path: path.to_path_buf(), detail }
}

/// Decodes the columns `columns` (top-level names) of one row group in batches of `batch_rows`
/// rows (`limit`: stop after that many rows), handing each to `f`. The page headers are
/// checked first; every decoder call runs under [`guarded`], `f` does not. The unit of an Arrow
/// source has nothing to decode: its batches are slices of the imported record batches.
fn decode_group<E: From<InputError>>(
    file: &DumpFile,
    unit: Unit,
    columns: &[String],
    batch_rows: usize,
    limit: Option<usize>,
    f: &mut dyn FnMut(RecordBatch) -> Result<(), E>,
) -> Result<(), E> {
    if let Data::Memory(m) = &file.data {
        return m.read(unit, batch_rows, limit, f);
    }
    let mut reader = open_group(file, unit, columns, batch_rows, 0, limit)?;
    while let Some(batch) = next_batch(file, &mut reader)? {
        f(batch)?;
    }
    Ok(())
}

/// The arrow-rs reader of the columns `columns` (top-level names) of a Parquet file's row group,
/// from its row `offset` on (`limit`: at most that many rows), in batches of `batch_rows` rows,
/// with the page headers checked first. Errors for an Arrow source (nothing to decode).
fn open_group(
    file: &DumpFile,
    unit: Unit,
    columns: &[String],
    batch_rows: usize,
    offset: usize,
    limit: Option<usize>,
) -> Result<ParquetRecordBatchReader, InputError> {
    let path: &PathBuf = &file.input.path;
    let Data::Parquet { metadata, arrow } = &file.data else {
        return Err(parquet_error(path, "an in-memory source has no row groups to decode"));
    };
    guarded(path, || {
        pages::check_pages(path, metadata, unit.row_group, columns)?;
        let f = File::open(path).map_err(|source| InputError::Io { path: path.clone(), source })?;
        let schema = arrow.parquet_schema();
        let leaves = schema
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.path().parts().first().is_some_and(|top| columns.contains(top)))
            .map(|(i, _)| i);
        let mask = ProjectionMask::leaves(schema, leaves);
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(f, arrow.clone())
            .with_projection(mask)
            .with_row_groups(vec![unit.row_group])
            .with_batch_size(batch_rows);
        if offset > 0 {
            builder = builder.with_offset(offset);
        }
        if let Some(n) = limit {
            builder = builder.with_limit(n);
        }
        builder.build().map_err(|e| parquet_error(path, e))
    })
}

/// The next batch of a reader from [`open_group`], under [`guarded`].
fn next_batch(
    file: &DumpFile,
    reader: &mut ParquetRecordBatchReader,
) -> Result<Option<RecordBatch>, InputError> {
    let path = &file.input.path;
    guarded(path, || reader.next().transpose().map_err(|e| parquet_error(path, e)))
}

thread_local! {
    static IN_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a call into the Parquet decoder whose panics hardmine turns
/// into errors. A panic hook can stay silent for those (the binary's does): the error that
/// follows says what happened.
pub fn in_reader_call() -> bool {
    IN_READER.with(|f| f.get())
}

/// Runs a call into the Parquet decoder, turning a panic into an error naming the file.
/// Decoders panic on some corrupt files (malformed thrift, impossible offsets) instead of
/// returning an error; the fuzz harness (`tests/util/fuzz.rs`) found such panics in
/// polars-parquet 0.55 (footers are still parsed with it) and keeps looking in both.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, InputError>) -> Result<T, InputError> {
    let before = IN_READER.with(|flag| flag.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_READER.with(|flag| flag.set(before));
    r.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(parquet_error(path, format!("the Parquet decoder failed: {what}")))
    })
}
