//! In-memory Arrow sources: record batches handed over by the caller (from Python through the
//! Arrow C stream interface, or built with arrow-rs), read in place.
//!
//! A source is one more kind of input beside the Parquet files: its schema resolves with the
//! files' rules ([`super::schema::resolve_arrow`]), its rows are cut into [`Unit`]s of at most
//! [`MAX_BATCH_ROWS`] rows, and where a file's row group is decoded (`decode_group`) a unit's
//! rows are sliced from the imported record batches instead, then validated by the files'
//! checks (read.rs) into [`super::Batch`]es whose score values are the producer's own buffers.
//! Nothing is copied: a slice of a record batch shares its buffers.
//!
//! A stream is drained when it is imported, and the imported batches are kept for the whole
//! run: a pass that restarts in partitioned mode (images not contiguous) reads them again. A
//! stream is therefore held in memory whole, however lazily its producer makes it.

use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{Array, RecordBatch, RecordBatchReader};
use arrow_schema::SchemaRef;

use super::{Unit, MAX_BATCH_ROWS};
use crate::error::InputError;

/// An in-memory Arrow input: a schema and its record batches, read without copying.
#[derive(Clone)]
pub struct ArrowSource {
    name: String,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl ArrowSource {
    /// A source named `name` (in errors, notes and `metadata.inputs`) holding `batches`, which
    /// must all have the fields of `schema`.
    pub fn new(
        name: impl Into<String>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<ArrowSource, InputError> {
        let name = name.into();
        if let Some((i, _)) = batches.iter().enumerate().find(|(_, b)| b.schema().fields() != schema.fields())
        {
            return Err(arrow_error(
                &name,
                format!("record batch {i} has other fields than the source's schema"),
            ));
        }
        Ok(ArrowSource { name, schema, batches })
    }

    /// Drains a stream imported through the Arrow C stream interface (e.g. the capsule of a
    /// Python object's `__arrow_c_stream__`), checking each batch's buffers against its type
    /// (the producer is trusted with nothing; no data is copied). `cancelled` is asked between
    /// batches; when it says so the import stops with [`InputError::Interrupted`].
    pub fn from_stream(
        name: impl Into<String>,
        stream: FFI_ArrowArrayStream,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ArrowSource, InputError> {
        let name = name.into();
        let reader = RecordBatchStreamReader::try_new(stream).map_err(|e| arrow_error(&name, e))?;
        let schema = reader.schema();
        let mut batches = Vec::new();
        for batch in reader {
            if cancelled() {
                return Err(InputError::Interrupted);
            }
            let batch = batch.map_err(|e| arrow_error(&name, e))?;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                column.to_data().validate_full().map_err(|e| {
                    arrow_error(&name, format!("column '{}' holds malformed Arrow data: {e}", field.name()))
                })?;
            }
            batches.push(batch);
        }
        Ok(ArrowSource { name, schema, batches })
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema of its batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Its record batches, in row order.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Total rows.
    pub fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }
}

/// The name and the shape, not the data (which may be gigabytes).
impl std::fmt::Debug for ArrowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowSource")
            .field("name", &self.name)
            .field("columns", &self.schema.fields().iter().map(|c| c.name()).collect::<Vec<_>>())
            .field("batches", &self.batches.len())
            .field("rows", &self.rows())
            .finish()
    }
}

/// An error of the Arrow import, naming the source. A producer's own message is kept without
/// arrow-rs' wrapping, on one line (Arrow C++ producers append a "Detail:", e.g. a Python
/// traceback).
fn arrow_error(name: &str, detail: impl ToString) -> InputError {
    let detail = detail.to_string();
    let detail = match detail.split_once("Producer error: ") {
        Some((_, producer)) => {
            let producer = producer.lines().next().unwrap_or("");
            let producer = producer.split_once(". Detail: ").map_or(producer, |(m, _)| m);
            format!("the producer failed: {producer}")
        }
        None => detail.strip_prefix("C Data interface error: ").unwrap_or(&detail).to_string(),
    };
    InputError::Arrow { name: name.to_string(), detail }
}

/// The imported batches of a source in a [`super::Dump`], with each batch's first row.
#[derive(Clone)]
pub(super) struct Batches {
    pub(super) schema: SchemaRef,
    batches: Vec<RecordBatch>,
    starts: Vec<u64>,
}

impl Batches {
    pub(super) fn new(source: ArrowSource) -> Batches {
        let mut at = 0;
        let starts = source
            .batches
            .iter()
            .map(|b| {
                let start = at;
                at += b.num_rows() as u64;
                start
            })
            .collect();
        Batches { schema: source.schema, batches: source.batches, starts }
    }

    /// Total rows.
    pub(super) fn rows(&self) -> u64 {
        self.starts.last().zip(self.batches.last()).map_or(0, |(s, b)| s + b.num_rows() as u64)
    }

    /// The units of source `file`: each record batch in pieces of at most [`MAX_BATCH_ROWS`]
    /// rows (`row_group` is the record batch's index), so that one large batch still spreads
    /// over the threads.
    pub(super) fn units(&self, file: usize) -> impl Iterator<Item = Unit> + '_ {
        self.batches.iter().zip(&self.starts).enumerate().flat_map(move |(b, (batch, &start))| {
            let rows = batch.num_rows();
            (0..rows).step_by(MAX_BATCH_ROWS).map(move |at| Unit {
                file,
                row_group: b,
                offset: start + at as u64,
                rows: MAX_BATCH_ROWS.min(rows - at),
            })
        })
    }

    /// The rows of `unit` in slices of at most `batch_rows` rows (`limit`: stop after that many
    /// rows), handed to `f`: what `decode_group` gives for a row group of a file, without
    /// decoding or copying anything. Every column comes along (readers look columns up by name,
    /// and a projection would save nothing).
    pub(super) fn read<E>(
        &self,
        unit: Unit,
        batch_rows: usize,
        limit: Option<usize>,
        f: &mut dyn FnMut(RecordBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        let batch = &self.batches[unit.row_group];
        let start = (unit.offset - self.starts[unit.row_group]) as usize;
        let rows = limit.map_or(unit.rows, |n| n.min(unit.rows));
        let mut done = 0;
        while done < rows {
            let n = batch_rows.max(1).min(rows - done);
            f(batch.slice(start + done, n))?;
            done += n;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} record batches, {} rows", self.batches.len(), self.rows())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{Int32Array, Int64Array, RecordBatchIterator};
    use arrow_schema::{ArrowError, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::analysis;
    use crate::config::{AnalysisConfig, AnalysisParams, DumpParams, SweepParams};
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;

    use crate::input::{Batch, Dump, HiveValue};
    use crate::input::{Input, Targets};
    use crate::render::{self, Format};
    use crate::synth::{self, SynthConfig};
    use crate::vocab::StrategyKind;

    fn config(dump: DumpParams) -> AnalysisConfig {
        AnalysisParams {
            dump,
            strategies: StrategyKind::ALL.to_vec(),
            sweep: Some(SweepParams::default()),
            breakdowns: true,
            ..Default::default()
        }
        .check()
        .unwrap()
    }

    /// The analysis JSON of `inputs`, with `metadata.inputs` left out.
    fn json(inputs: Vec<Input>, config: &AnalysisConfig) -> String {
        let dump = Dump::open_inputs(inputs, config.dump()).unwrap();
        let mut report = analysis::analyze(&dump, config).unwrap();
        report.metadata.inputs.clear();
        render::render_to_string(&report, Format::Json).unwrap()
    }

    /// Every record batch of a Parquet file, read with arrow-rs' own reader.
    fn read_parquet(path: &std::path::Path) -> (SchemaRef, Vec<RecordBatch>) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .with_batch_size(777)
            .build()
            .unwrap();
        let schema = reader.schema();
        (schema, reader.collect::<Result<_, _>>().unwrap())
    }

    fn write_parquet(path: &std::path::Path, schema: &SchemaRef, batches: &[RecordBatch]) {
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }

    /// A dense sigmoid source of `rows` rows, 3 classes in a fixed-size list, one image per
    /// 100 rows; `label(row)` sets the labels.
    fn dense(rows: usize, label: impl Fn(usize) -> i32) -> (SchemaRef, RecordBatch) {
        let mut logits = FixedSizeListBuilder::new(Float32Builder::new(), 3);
        for r in 0..rows {
            for c in 0..3 {
                logits.values().append_value(((r * 7 + c * 3) % 11) as f32 - 5.0);
            }
            logits.append(true);
        }
        let logits = logits.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Int64, false),
            Field::new("label", DataType::Int32, false),
            Field::new("logits", logits.data_type().clone(), false),
        ]));
        let ids = Int64Array::from_iter_values((0..rows).map(|r| (r / 100) as i64));
        let labels = Int32Array::from_iter_values((0..rows).map(label));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(labels), Arc::new(logits)])
                .unwrap();
        (schema, batch)
    }

    fn ffi(schema: &SchemaRef, batches: Vec<Result<RecordBatch, ArrowError>>) -> FFI_ArrowArrayStream {
        FFI_ArrowArrayStream::new(Box::new(RecordBatchIterator::new(batches, schema.clone())))
    }

    fn error(inputs: Vec<Input>, options: DumpParams) -> String {
        let config = config(options);
        match Dump::open_inputs(inputs, config.dump()) {
            Ok(dump) => analysis::analyze(&dump, &config).map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_arrow_source_gives_the_json_of_its_parquet_files_in_any_batching() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            images: 6,
            anchors_per_image: 900,
            classes: 4,
            seed: 3,
            images_per_file: 3,
            rows_per_group: 1000,
            ..Default::default()
        };
        let files = synth::generate(dir.path(), &cfg).unwrap().files;
        let config = config(DumpParams::default());
        let paths: Vec<Input> = files.iter().map(|f| Input::Path(f.display().to_string())).collect();
        let want = json(paths, &config);
        // Two sources (one per file), in batches of 777 rows; and one source of both files.
        let parts: Vec<(SchemaRef, Vec<RecordBatch>)> = files.iter().map(|f| read_parquet(f)).collect();
        let sources: Vec<Input> = parts
            .iter()
            .enumerate()
            .map(|(i, (s, b))| Input::Arrow(ArrowSource::new(format!("s{i}"), s.clone(), b.clone()).unwrap()))
            .collect();
        assert_eq!(json(sources, &config), want);
        let all: Vec<RecordBatch> = parts.iter().flat_map(|(_, b)| b.iter().cloned()).collect();
        let one = ArrowSource::new("one", parts[0].0.clone(), all).unwrap();
        assert_eq!(one.rows(), 6 * 900);
        // One source of both files' rows: the JSON of one Parquet file of those rows.
        let whole = dir.path().join("whole.parquet");
        write_parquet(&whole, one.schema(), one.batches());
        assert_eq!(
            json(vec![Input::Arrow(one)], &config),
            json(vec![Input::Path(whole.display().to_string())], &config)
        );
    }

    #[test]
    fn an_unsorted_source_is_read_twice_and_equals_its_parquet_file() {
        // Images 0..4 of 100 rows each, written as 50-row halves in the order 0a 1a 0b 1b ...:
        // no image is contiguous, so the per-image selectors restart in partitioned mode.
        let (schema, batch) = dense(400, |r| [-1, 0, -1, 2, -2][r % 5]);
        let halves: Vec<RecordBatch> = (0..8).map(|h| batch.slice(h * 50, 50)).collect();
        let order = [0, 2, 1, 3, 4, 6, 5, 7];
        let shuffled: Vec<RecordBatch> = order.iter().map(|&h| halves[h].clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unsorted.parquet");
        write_parquet(&path, &schema, &shuffled);
        let config = config(DumpParams::default());
        let source = ArrowSource::new("mem", schema, shuffled).unwrap();
        let dump = Dump::open_inputs(vec![Input::Arrow(source)], config.dump()).unwrap();
        struct Notes(std::sync::Mutex<Vec<String>>);
        impl analysis::Observer for Notes {
            fn restarted(&self, why: &str) {
                self.0.lock().unwrap().push(why.to_string());
            }
        }
        let notes = Notes(Default::default());
        let pass = analysis::run(&dump, &config, &notes, None).unwrap();
        let mut report = pass.finish(&dump, &config, "analyze");
        let notes = notes.0.into_inner().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("appears again in mem from row"), "{notes:?}");
        report.metadata.inputs.clear();
        let got = render::render_to_string(&report, Format::Json).unwrap();
        assert_eq!(got, json(vec![Input::Path(path.display().to_string())], &config));
    }

    #[test]
    fn scores_are_read_in_place_from_the_imported_buffers() {
        // 200k rows: several units and batches, all slices of the exported buffer.
        let (schema, batch) = dense(200_000, |r| if r % 3 == 0 { 1 } else { -1 });
        let values = batch
            .column(2)
            .as_fixed_size_list()
            .values()
            .as_primitive::<arrow_array::types::Float32Type>()
            .values()
            .clone();
        let (base, len) = (values.as_ptr() as usize, values.len() * 4);
        let source = ArrowSource::from_stream("mem", ffi(&schema, vec![Ok(batch)]), &|| false).unwrap();
        let dump =
            Dump::open_inputs(vec![Input::Arrow(source)], &DumpParams::default().check().unwrap()).unwrap();
        assert!(dump.units().len() > 1);
        let mut rows = 0;
        for &unit in dump.units() {
            for b in dump.read_batches(unit).unwrap() {
                let s = b.scores.f32s().unwrap();
                let at = s.as_ptr() as usize;
                assert!(
                    at >= base && at + s.len() * 4 <= base + len,
                    "batch at row {} was copied",
                    b.first_row
                );
                assert_eq!(at - base, b.first_row as usize * 3 * 4);
                rows += b.rows;
            }
        }
        assert_eq!(rows, 200_000);
    }

    #[test]
    fn batches_are_validated_rows_of_the_source() {
        let (schema, batch) = dense(250, |r| (r % 4) as i32 - 1);
        let parts = vec![batch.slice(0, 120), batch.slice(120, 0), batch.slice(120, 130)];
        let source = ArrowSource::new("mem", schema, parts).unwrap();
        let dump =
            Dump::open_inputs(vec![Input::Arrow(source)], &DumpParams::default().check().unwrap()).unwrap();
        assert_eq!((dump.width(), dump.rows()), (3, 250));
        let batches: Vec<Batch> = dump.units().iter().flat_map(|&u| dump.read_batches(u).unwrap()).collect();
        assert_eq!(
            batches.iter().map(|b| (b.first_row, b.rows)).collect::<Vec<_>>(),
            vec![(0, 120), (120, 130)]
        );
        let b = &batches[1];
        assert_eq!(b.file_rows, 250);
        assert!(matches!(&b.targets, Targets::Labels(l) if l[..3] == [-1, 0, 1]));
        // Row 120 is image 1; its logits are ((120*7 + c*3) % 11) - 5.
        let want: Vec<f32> = (0..3).map(|c| ((120 * 7 + c * 3) % 11) as f32 - 5.0).collect();
        assert_eq!(&b.scores.f32s().unwrap()[..3], &want[..]);
        assert_eq!(b.images[0].key, crate::input::ImageKey::Int(1));
    }

    #[test]
    fn a_bad_value_is_reported_with_the_source_the_column_and_the_row() {
        // Row 70_123 lies in the source's second unit.
        let (schema, batch) = dense(80_000, |r| if r == 70_123 { 7 } else { -1 });
        let source = ArrowSource::new("arrow source 0", schema, vec![batch]).unwrap();
        let e = error(vec![Input::Arrow(source)], DumpParams::default());
        assert!(e.starts_with("arrow source 0: column 'label', row 70123: label 7 is outside"), "{e}");
        assert!(e.contains("fix: "), "{e}");
    }

    #[test]
    fn schema_errors_name_the_source() {
        let (schema, batch) = dense(10, |_| -1);
        let renamed = Arc::new(Schema::new(vec![
            Field::new("img", DataType::Int64, false),
            schema.field(1).clone(),
            schema.field(2).clone(),
        ]));
        let source = ArrowSource::new(
            "src",
            renamed.clone(),
            vec![RecordBatch::try_new(renamed, batch.columns().to_vec()).unwrap()],
        );
        let e = error(vec![Input::Arrow(source.unwrap())], DumpParams::default());
        assert!(e.starts_with("src: missing required column 'image_id'") && e.contains("img"), "{e}");
        let float_labels = Arc::new(Schema::new(vec![
            schema.field(0).clone(),
            Field::new("label", DataType::Float32, false),
            schema.field(2).clone(),
        ]));
        let labels = arrow_array::Float32Array::from(vec![0.0f32; 10]);
        let b = RecordBatch::try_new(
            float_labels.clone(),
            vec![batch.column(0).clone(), Arc::new(labels), batch.column(2).clone()],
        )
        .unwrap();
        let e = error(
            vec![Input::Arrow(ArrowSource::new("src", float_labels, vec![b]).unwrap())],
            DumpParams::default(),
        );
        assert!(e.starts_with("src: column 'label' is float; expected an integer class index"), "{e}");
        // A batch that does not match the source's schema is refused up front.
        let e = ArrowSource::new("src", schema.clone(), vec![batch.clone(), batch.project(&[0, 1]).unwrap()])
            .unwrap_err();
        assert!(
            e.to_string().starts_with("src: cannot read the Arrow stream (record batch 1 has other fields"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_producer_is_an_error_naming_the_source() {
        let (schema, batch) = dense(10, |_| -1);
        let stream =
            ffi(&schema, vec![Ok(batch), Err(ArrowError::ComputeError("the query was cancelled".into()))]);
        let e = ArrowSource::from_stream("<duckdb #1>", stream, &|| false).unwrap_err().to_string();
        assert!(
            e.starts_with("<duckdb #1>: cannot read the Arrow stream (the producer failed: ")
                && e.contains("the query was cancelled)\n  fix: "),
            "{e}"
        );
        // A cancelled import stops between batches.
        let (schema, batch) = dense(10, |_| -1);
        let e = ArrowSource::from_stream("s", ffi(&schema, vec![Ok(batch)]), &|| true).unwrap_err();
        assert!(matches!(e, InputError::Interrupted), "{e}");
    }

    #[test]
    fn a_source_groups_by_a_column_as_files_do() {
        // Steps 0 and 1 in one record batch each: `trend` groups whole units.
        let (schema, batch) = dense(300, |r| (r % 3) as i32 - 1);
        let steps = Arc::new(Int64Array::from_iter_values((0..300).map(|r| (r / 150) as i64)));
        let mut fields = schema.fields().to_vec();
        fields.push(Arc::new(Field::new("step", DataType::Int64, false)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns = batch.columns().to_vec();
        columns.push(steps);
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let source =
            ArrowSource::new("mem", schema, vec![batch.slice(0, 150), batch.slice(150, 150)]).unwrap();
        let dump =
            Dump::open_inputs(vec![Input::Arrow(source)], &DumpParams::default().check().unwrap()).unwrap();
        let grouping = dump.group_by("step").unwrap();
        let got: Vec<_> = grouping
            .groups
            .iter()
            .map(|g| (g.value.clone(), g.dump.units().iter().map(|u| u.rows).sum::<usize>()))
            .collect();
        assert_eq!(got, vec![(HiveValue::Int(0), 150), (HiveValue::Int(1), 150)]);
        // A unit with both steps is refused, naming the source.
        let source = ArrowSource::new("mem", batch.schema(), vec![batch]).unwrap();
        let dump =
            Dump::open_inputs(vec![Input::Arrow(source)], &DumpParams::default().check().unwrap()).unwrap();
        let e = dump.group_by("step").unwrap_err().to_string();
        assert!(e.starts_with("mem: row group 0 holds several values of 'step' (0 and 1)"), "{e}");
    }

    #[test]
    fn files_and_sources_mix_in_the_order_given() {
        let (schema, batch) = dense(300, |r| (r % 3) as i32 - 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("first.parquet");
        write_parquet(&path, &schema, &[batch.slice(0, 100)]);
        let source = ArrowSource::new("mem", schema, vec![batch.slice(100, 200)]).unwrap();
        let dump = Dump::open_inputs(
            vec![
                Input::Path(path.display().to_string()),
                Input::Arrow(source),
                Input::Path(path.display().to_string()),
            ],
            &DumpParams::default().check().unwrap(),
        )
        .unwrap();
        assert_eq!(dump.info().inputs, vec![path.display().to_string(), "mem".to_string()]);
        assert_eq!(dump.rows(), 300);
    }
}
