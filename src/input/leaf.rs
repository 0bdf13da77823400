//! A dense dump's scores read straight from their Parquet leaf column.
//!
//! The score lists are a dense dump's largest column. arrow-rs reads them as list arrays: for
//! each batch it decodes the levels, then builds the list's offsets and validity and copies the
//! values into place. None of that is needed in the common case, where every row holds `width`
//! present scores. [`ScoreLeaf`] reads the column with parquet's typed column reader instead:
//! values, definition levels and repetition levels into plain vectors (dictionary pages are
//! decoded by the reader), and two comparisons prove the common case for a batch:
//! - every definition level is the column's maximum: no null row, list or score;
//! - the repetition levels are 0 exactly at every `width`-th level and 1 elsewhere: every row
//!   starts where it should and holds `width` entries.
//!
//! A batch that fails either comparison is not decoded here: [`ScoreLeaf::read`] says so, and
//! `read.rs` reads the row group's scores from that row on through arrow-rs, whose list arrays
//! the existing checks turn into errors (or skipped rows) that name the row and the problem.
//! docs/benchmarks.md ("Tenth round") has the measurements that justify the second reader.

use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_buffer::ScalarBuffer;
use arrow_schema::DataType;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{DataType as ParquetType, DoubleType, FloatType};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;

use super::schema::Source;
use super::{guarded, pages, parquet_error, Data, DumpFile, ScoreValues, Unit};
use crate::error::InputError;

/// The typed reader of the scores' leaf column.
enum Typed {
    F32(ColumnReaderImpl<FloatType>),
    F64(ColumnReaderImpl<DoubleType>),
}

/// The score lists of one row group, read batch by batch from their leaf column.
pub(super) struct ScoreLeaf {
    reader: Typed,
    /// Scores per row.
    width: usize,
    /// The definition level of a present score.
    max_def: i16,
    /// Levels of the current batch (reused).
    def: Vec<i16>,
    rep: Vec<i16>,
    path: PathBuf,
    column: String,
}

impl ScoreLeaf {
    /// The reader of `unit`'s scores, with the column's page headers checked, or `None` when it
    /// does not apply: an Arrow source, a score column that is not a one-level list of
    /// float32/float64 scores (arrow-rs reads it, and the checks name what is wrong), or a
    /// fixed-size list of other than `width` scores (likewise).
    pub(super) fn open(file: &DumpFile, unit: Unit, width: usize) -> Result<Option<ScoreLeaf>, InputError> {
        let Data::Parquet { metadata, arrow } = &file.data else { return Ok(None) };
        let Source::Column(name) = &file.columns.scores.source else { return Ok(None) };
        let Ok(field) = arrow.schema().field_with_name(name) else { return Ok(None) };
        let element = match field.data_type() {
            DataType::List(f) | DataType::LargeList(f) => f.data_type(),
            DataType::FixedSizeList(f, n) if usize::try_from(*n) == Ok(width) => f.data_type(),
            _ => return Ok(None),
        };
        let physical = match element {
            DataType::Float32 => PhysicalType::FLOAT,
            DataType::Float64 => PhysicalType::DOUBLE,
            _ => return Ok(None),
        };
        let schema = arrow.parquet_schema();
        let mut leaves =
            schema.columns().iter().enumerate().filter(|(_, c)| c.path().parts().first() == Some(name));
        let (Some((leaf, descr)), None) = (leaves.next(), leaves.next()) else { return Ok(None) };
        if descr.max_rep_level() != 1 || descr.physical_type() != physical || width == 0 {
            return Ok(None);
        }
        let max_def = descr.max_def_level();
        let path = &file.input.path;
        let reader = guarded(path, || {
            pages::check_pages(path, metadata, unit.row_group, std::slice::from_ref(name))?;
            let f = File::open(path).map_err(|source| InputError::Io { path: path.clone(), source })?;
            let footer = arrow.metadata();
            let group = SerializedRowGroupReader::new(
                Arc::new(f),
                footer.row_group(unit.row_group),
                footer.page_index_for_row_group(unit.row_group),
                Arc::new(ReaderProperties::builder().build()),
            )
            .map_err(|e| parquet_error(path, e))?;
            group.get_column_reader(leaf).map_err(|e| parquet_error(path, e))
        })?;
        let reader = match reader {
            ColumnReader::FloatColumnReader(r) if physical == PhysicalType::FLOAT => Typed::F32(r),
            ColumnReader::DoubleColumnReader(r) if physical == PhysicalType::DOUBLE => Typed::F64(r),
            _ => return Ok(None),
        };
        Ok(Some(ScoreLeaf {
            reader,
            width,
            max_def,
            def: Vec::new(),
            rep: Vec::new(),
            path: path.clone(),
            column: name.clone(),
        }))
    }

    /// The scores of the next `rows` rows, row-major, or `None` when one of them is not a list
    /// of `width` present scores, or the column ends before them (the caller reads them through
    /// arrow-rs, and this reader is spent).
    pub(super) fn read(&mut self, rows: usize) -> Result<Option<ScoreValues>, InputError> {
        let n = rows * self.width;
        self.def.clear();
        self.rep.clear();
        let (def, rep) = (&mut self.def, &mut self.rep);
        let path = &self.path;
        let values = guarded(path, || {
            match &mut self.reader {
                Typed::F32(r) => read_values(r, rows, n, def, rep).map(|v| v.map(ScoreValues::F32)),
                Typed::F64(r) => read_values(r, rows, n, def, rep).map(|v| v.map(ScoreValues::F64)),
            }
            .map_err(|e| parquet_error(path, e))
        })?;
        let Some(values) = values else { return Ok(None) };
        let regular = REGULAR.with_borrow_mut(|r| r.holds(self.width, self.max_def, &self.def, &self.rep, n));
        Ok(regular.then_some(values))
    }

    /// Checks that the column holds no rows past the row group's.
    pub(super) fn finish(mut self, rows: usize) -> Result<(), InputError> {
        let (def, rep) = (&mut self.def, &mut self.rep);
        let path = &self.path;
        let more = guarded(path, || {
            Ok(match &mut self.reader {
                Typed::F32(r) => r.read_records(1, Some(def), Some(rep), &mut Vec::new()),
                Typed::F64(r) => r.read_records(1, Some(def), Some(rep), &mut Vec::new()),
            }
            .map_err(|e| parquet_error(path, e))?
            .0)
        })?;
        if more == 0 {
            return Ok(());
        }
        Err(parquet_error(
            path,
            format!("column '{}' holds more rows than the row group's {rows}", self.column),
        ))
    }
}

thread_local! {
    /// The levels of regular rows, kept per thread for the width last read.
    static REGULAR: RefCell<Regular> = const { RefCell::new(Regular::new()) };
}

/// The levels of `n / width` regular rows of `width` scores, for any `n` up to the largest
/// batch read so far: the maximum definition level everywhere, and per row a repetition level
/// of 0 then `width - 1` ones. Comparing a batch's levels with them is two `memcmp`s. A batch
/// holds at most [`super::MAX_BATCH_SCORE_BYTES`] of scores, so these take at most as much per
/// thread.
struct Regular {
    width: usize,
    max_def: i16,
    defined: Vec<i16>,
    starts: Vec<i16>,
}

impl Regular {
    const fn new() -> Regular {
        Regular { width: 0, max_def: 0, defined: Vec::new(), starts: Vec::new() }
    }

    /// Whether `def` and `rep` are the levels of `n / width` regular rows.
    fn holds(&mut self, width: usize, max_def: i16, def: &[i16], rep: &[i16], n: usize) -> bool {
        if (self.width, self.max_def) != (width, max_def) || self.starts.len() < n {
            let row: Vec<i16> = (0..width).map(|c| i16::from(c != 0)).collect();
            self.starts = row.repeat(n.div_ceil(width));
            self.defined = vec![max_def; self.starts.len()];
            (self.width, self.max_def) = (width, max_def);
        }
        def == &self.defined[..n] && rep == &self.starts[..n]
    }
}

/// Reads `rows` records (`n` levels expected) of a typed column: the values, or `None` when the
/// column ended first.
fn read_values<T: ParquetType>(
    reader: &mut ColumnReaderImpl<T>,
    rows: usize,
    n: usize,
    def: &mut Vec<i16>,
    rep: &mut Vec<i16>,
) -> parquet::errors::Result<Option<ScalarBuffer<T::T>>>
where
    T::T: arrow_buffer::ArrowNativeType,
{
    def.reserve(n);
    rep.reserve(n);
    let mut values = Vec::with_capacity(n);
    let (records, _, _) = reader.read_records(rows, Some(def), Some(rep), &mut values)?;
    Ok((records == rows).then(|| values.into()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use arrow_array::{
        ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array, LargeListArray,
        ListArray, RecordBatch,
    };
    use arrow_buffer::{NullBuffer, OffsetBuffer};
    use arrow_schema::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{WriterProperties, WriterVersion};

    use super::*;
    use crate::config::{DumpParams, OnInvalid};
    use crate::input::{Batch, Dump};

    const WIDTH: usize = 400;

    /// A score that is exact in float32 and differs by row and class (about 1,000 distinct
    /// values, so that dictionary pages stay dictionary-encoded).
    fn score(row: usize, class: usize) -> f64 {
        ((row * 31 + class * 7) % 1000) as f64 / 64.0 - 7.8125
    }

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        List,
        LargeList,
        Fixed,
    }

    /// A score column of the rows `rows` (`None`: a null row; a `None` score: a null score).
    fn column(kind: Kind, f64s: bool, rows: &[Option<Vec<Option<f64>>>]) -> ArrayRef {
        let flat: Vec<Option<f64>> = rows
            .iter()
            .flat_map(|r| match (r, kind) {
                (Some(v), _) => v.clone(),
                (None, Kind::Fixed) => vec![Some(0.0); WIDTH],
                (None, _) => Vec::new(),
            })
            .collect();
        let values: ArrayRef = if f64s {
            Arc::new(Float64Array::from(flat))
        } else {
            Arc::new(Float32Array::from(flat.iter().map(|x| x.map(|x| x as f32)).collect::<Vec<_>>()))
        };
        let element = Arc::new(Field::new("element", values.data_type().clone(), true));
        let nulls =
            rows.iter().any(Option::is_none).then(|| NullBuffer::from_iter(rows.iter().map(Option::is_some)));
        let lens = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len));
        match kind {
            Kind::List => Arc::new(ListArray::new(element, OffsetBuffer::from_lengths(lens), values, nulls)),
            Kind::LargeList => {
                Arc::new(LargeListArray::new(element, OffsetBuffer::from_lengths(lens), values, nulls))
            }
            Kind::Fixed => Arc::new(FixedSizeListArray::new(element, WIDTH as i32, values, nulls)),
        }
    }

    /// Writes a dense dump of `rows` (one image per 500 rows, a positive every 7th row) with
    /// row groups of `group` rows and pages of about 16 KB.
    fn write(
        path: &Path,
        kind: Kind,
        f64s: bool,
        rows: &[Option<Vec<Option<f64>>>],
        group: usize,
        v2: bool,
        dictionary: bool,
    ) {
        let n = rows.len();
        let image: Vec<i64> = (0..n as i64).map(|r| r / 500).collect();
        let label: Vec<i32> = (0..n).map(|r| if r % 7 == 0 { (r % WIDTH) as i32 } else { -1 }).collect();
        let batch = RecordBatch::try_from_iter([
            ("image_id", Arc::new(Int64Array::from(image)) as ArrayRef),
            ("label", Arc::new(Int32Array::from(label)) as ArrayRef),
            ("logits", column(kind, f64s, rows)),
        ])
        .unwrap();
        let version = if v2 { WriterVersion::PARQUET_2_0 } else { WriterVersion::PARQUET_1_0 };
        let props = WriterProperties::builder()
            .set_writer_version(version)
            .set_dictionary_enabled(dictionary)
            .set_data_page_size_limit(16 << 10)
            .set_max_row_group_row_count(Some(group))
            .build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn regular(n: usize) -> Vec<Option<Vec<Option<f64>>>> {
        (0..n).map(|r| Some((0..WIDTH).map(|c| Some(score(r, c))).collect())).collect()
    }

    fn open(path: &Path, on_invalid: OnInvalid) -> Dump {
        let params = DumpParams { on_invalid, ..Default::default() };
        Dump::open(&[path.display().to_string()], &params.check().unwrap()).unwrap()
    }

    fn flat(values: &ScoreValues) -> Vec<f64> {
        match values {
            ScoreValues::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ScoreValues::F64(v) => v.to_vec(),
        }
    }

    /// Every score of `batches` as f64, row-major, and their rows' indices in the file.
    fn scores_of(batches: &[Batch]) -> (Vec<f64>, Vec<u64>) {
        let values = batches.iter().flat_map(|b| flat(&b.scores)).collect();
        let rows = batches.iter().flat_map(|b| (0..b.rows).map(|r| b.file_row(r))).collect();
        (values, rows)
    }

    #[test]
    fn every_list_type_float_width_page_version_and_encoding_reads_the_scores_as_written() {
        let rows = 3000;
        let cases = [
            (Kind::List, false, false, false),
            (Kind::LargeList, false, true, true),
            (Kind::Fixed, false, false, true),
            (Kind::List, true, true, false),
            (Kind::Fixed, true, false, false),
            (Kind::LargeList, true, false, true),
        ];
        for (kind, f64s, v2, dictionary) in cases {
            let what = format!("{kind:?}, f64 {f64s}, v2 pages {v2}, dictionary {dictionary}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d.parquet");
            write(&path, kind, f64s, &regular(rows), 2000, v2, dictionary);
            let dump = open(&path, OnInvalid::Error);
            assert_eq!(dump.units().len(), 2, "{what}");
            // The writer did as asked: the scores' chunks have a dictionary page or none.
            let Data::Parquet { arrow, .. } = &dump.files()[0].data else { unreachable!("a file") };
            for group in arrow.metadata().row_groups() {
                let chunk = group.columns().iter().find(|c| c.column_path().string().starts_with("logits"));
                assert_eq!(chunk.unwrap().dictionary_page_offset().is_some(), dictionary, "{what}");
            }
            let want: Vec<f64> = (0..rows).flat_map(|r| (0..WIDTH).map(move |c| score(r, c))).collect();
            // The leaf reader itself: every batch regular, in batches that cross pages.
            let mut got = Vec::new();
            for &unit in dump.units() {
                let mut leaf = ScoreLeaf::open(&dump.files()[0], unit, WIDTH).unwrap().expect(&what);
                let mut done = 0;
                while done < unit.rows {
                    let n = (unit.rows - done).min(777);
                    let values =
                        leaf.read(n).unwrap().unwrap_or_else(|| panic!("{what}: rows {done}.. irregular"));
                    assert_eq!(values.f32s().is_none(), f64s, "{what}");
                    got.extend(flat(&values));
                    done += n;
                }
                leaf.finish(unit.rows).unwrap();
            }
            assert!(got == want, "{what}: the leaf reader's scores differ from those written");
            // Through the reader, in its own batches.
            let mut batches = Vec::new();
            for &unit in dump.units() {
                batches.extend(dump.read_batches(unit).unwrap());
            }
            let (got, file_rows) = scores_of(&batches);
            assert!(got == want, "{what}: read_unit's scores differ from those written");
            assert_eq!(file_rows, (0..rows as u64).collect::<Vec<_>>(), "{what}");
            assert!(batches.len() > 2, "{what}: {} batches; several per row group expected", batches.len());
        }
    }

    #[test]
    fn an_irregular_row_after_regular_batches_is_read_through_arrow_and_named() {
        // Batches of 1,310 rows (400 float32 scores), row groups of 2,000 rows: batches
        // 0..1310 and 1310..2000 in each. Each fault alone in its batch shows one check:
        // - group 0, row 1800: a null score (every row has 400 levels, one not defined);
        // - group 1, rows 2400 and 2401: 399 and 401 scores (as many levels as regular rows,
        //   every one defined: only the repetition levels show it);
        // - group 2, rows 5500 and 5900: a null row and an empty list.
        let mut rows = regular(6000);
        rows[1800].as_mut().unwrap()[5] = None;
        let moved = rows[2400].as_mut().unwrap().pop().unwrap();
        rows[2401].as_mut().unwrap().push(moved);
        rows[5500] = None;
        rows[5900] = Some(Vec::new());
        let bad = [1800, 2400, 2401, 5500, 5900];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        write(&path, Kind::List, false, &rows, 2000, false, false);

        let strict = open(&path, OnInvalid::Error);
        let units = strict.units();
        let leaf = |unit| ScoreLeaf::open(&strict.files()[0], unit, WIDTH).unwrap().unwrap();
        let mut first = leaf(units[0]);
        assert!(first.read(1310).unwrap().is_some(), "rows 0..1310 are regular");
        assert!(first.read(690).unwrap().is_none(), "row 1800 has a null score");
        assert!(leaf(units[1]).read(1310).unwrap().is_none(), "rows 2400 and 2401 are ragged");
        let mut last = leaf(units[2]);
        assert!(last.read(1310).unwrap().is_some(), "rows 4000..5310 are regular");
        assert!(last.read(690).unwrap().is_none(), "row 5500 is null");
        let err = |unit| strict.read_batches(unit).unwrap_err().to_string();
        let e = err(units[0]);
        assert!(e.contains("bad.parquet") && e.contains("column 'logits', row 1800"), "{e}");
        assert!(e.contains("null score at class 5"), "{e}");
        let e = err(units[1]);
        assert!(
            e.contains("column 'logits', row 2400") && e.contains("ragged score list: 399 entries"),
            "{e}"
        );
        let e = err(units[2]);
        assert!(e.contains("column 'logits', row 5500") && e.contains("null value"), "{e}");

        let skip = open(&path, OnInvalid::Skip);
        let mut batches = Vec::new();
        for &unit in skip.units() {
            batches.extend(skip.read_batches(unit).unwrap());
        }
        let kept: Vec<usize> = (0..6000).filter(|r| !bad.contains(r)).collect();
        let (got, file_rows) = scores_of(&batches);
        let want: Vec<f64> = kept.iter().flat_map(|&r| (0..WIDTH).map(move |c| score(r, c))).collect();
        assert!(got == want, "the kept rows' scores differ from those written");
        assert_eq!(file_rows, kept.iter().map(|&r| r as u64).collect::<Vec<_>>());
        let mut skipped = BTreeMap::new();
        for b in &batches {
            for (reason, n) in &b.skipped {
                *skipped.entry(reason.clone()).or_insert(0) += n;
            }
        }
        let want =
            BTreeMap::from([("empty_list".to_string(), 1), ("null".into(), 2), ("ragged_list".into(), 2)]);
        assert_eq!(skipped, want);
    }

    #[test]
    fn the_regular_levels_follow_the_width_and_level_asked_for_whatever_was_asked_before() {
        // A naive check: every level defined, rep 0 exactly at each row's first score.
        let naive = |w: usize, max: i16, def: &[i16], rep: &[i16], n: usize| {
            def.len() == n
                && rep.len() == n
                && def.iter().all(|&d| d == max)
                && rep.iter().enumerate().all(|(i, &r)| r == i16::from(i % w != 0))
        };
        let mut r = Regular::new();
        // Widths and levels change between calls (one process analysing several dumps), and
        // batches grow and shrink.
        for (w, max, rows) in [(3, 3, 4), (5, 3, 2), (5, 3, 9), (3, 1, 1), (3, 3, 7), (1, 2, 5)] {
            let n = w * rows;
            let def = vec![max; n];
            let rep: Vec<i16> = (0..n).map(|i| i16::from(i % w != 0)).collect();
            assert!(r.holds(w, max, &def, &rep, n), "width {w}, level {max}, {rows} rows");
            // Every single change of a level is seen.
            for i in 0..n {
                for (d, p) in [(max - 1, rep[i]), (def[i], 1 - rep[i])] {
                    let (mut def2, mut rep2) = (def.clone(), rep.clone());
                    (def2[i], rep2[i]) = (d, p);
                    assert_eq!(r.holds(w, max, &def2, &rep2, n), naive(w, max, &def2, &rep2, n));
                }
            }
            // So is a batch of another length.
            assert!(!r.holds(w, max, &def[..n - 1], &rep[..n - 1], n));
        }
    }
}
