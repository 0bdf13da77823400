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
//! A column chunk of PLAIN values without a dictionary page goes one step lower ([`PageWalk`]):
//! its pages are read one at a time, their levels checked in their RLE/bit-packed runs without
//! being decoded, and their values copied out.
//!
//! A batch that fails either comparison, or needs a page the walk cannot use (see [`PageWalk`]),
//! is not decoded here: [`ScoreLeaf::read`] says so, and
//! `read.rs` reads the row group's scores from that row on through arrow-rs, whose list arrays
//! the existing checks turn into errors (or skipped rows) that name the row and the problem.
//! docs/benchmarks.md ("Tenth round") has the measurements that justify the second reader.

use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_buffer::ScalarBuffer;
use arrow_schema::DataType;
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{DataType as ParquetType, DoubleType, FloatType};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;

use super::schema::Source;
use super::{guarded, pages, parquet_error, Data, DumpFile, ScoreValues, Unit};
use crate::error::InputError;

/// How the scores' leaf column is read.
enum Reader {
    F32(ColumnReaderImpl<FloatType>),
    F64(ColumnReaderImpl<DoubleType>),
    /// The pages themselves, for a column chunk of PLAIN values without a dictionary.
    Pages(Box<PageWalk>),
}

/// The score lists of one row group, read batch by batch from their leaf column.
pub(super) struct ScoreLeaf {
    reader: Reader,
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
            let chunk = footer.row_group(unit.row_group).column(leaf);
            let plain = chunk.dictionary_page_offset().is_none()
                && chunk.encodings().all(|e| matches!(e, Encoding::PLAIN | Encoding::RLE));
            if plain {
                let pages = group.get_column_page_reader(leaf).map_err(|e| parquet_error(path, e))?;
                let f64s = physical == PhysicalType::DOUBLE;
                return Ok(Some(Reader::Pages(Box::new(PageWalk::new(pages, f64s, width, max_def)))));
            }
            Ok(match group.get_column_reader(leaf).map_err(|e| parquet_error(path, e))? {
                ColumnReader::FloatColumnReader(r) if physical == PhysicalType::FLOAT => Some(Reader::F32(r)),
                ColumnReader::DoubleColumnReader(r) if physical == PhysicalType::DOUBLE => {
                    Some(Reader::F64(r))
                }
                _ => None,
            })
        })?;
        let Some(reader) = reader else { return Ok(None) };
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
        let path = &self.path;
        if let Reader::Pages(w) = &mut self.reader {
            // The pages' levels are checked as they are loaded.
            return guarded(path, || w.read(n).map_err(|e| parquet_error(path, e)));
        }
        self.def.clear();
        self.rep.clear();
        let (def, rep) = (&mut self.def, &mut self.rep);
        let values = guarded(path, || {
            match &mut self.reader {
                Reader::F32(r) => read_values(r, rows, n, def, rep).map(|v| v.map(ScoreValues::F32)),
                Reader::F64(r) => read_values(r, rows, n, def, rep).map(|v| v.map(ScoreValues::F64)),
                Reader::Pages(_) => unreachable!("read above"),
            }
            .map_err(|e| parquet_error(path, e))
        })?;
        let Some(values) = values else { return Ok(None) };
        let regular = REGULAR.with_borrow_mut(|r| r.holds(self.width, self.max_def, &self.def, &self.rep, n));
        Ok(regular.then_some(values))
    }

    /// Whether the pages are read by [`PageWalk`] (tests).
    #[cfg(test)]
    fn walks_pages(&self) -> bool {
        matches!(self.reader, Reader::Pages(_))
    }

    /// Checks that the column holds no rows past the row group's.
    pub(super) fn finish(mut self, rows: usize) -> Result<(), InputError> {
        let (def, rep) = (&mut self.def, &mut self.rep);
        let path = &self.path;
        let more = guarded(path, || {
            match &mut self.reader {
                Reader::F32(r) => {
                    r.read_records(1, Some(def), Some(rep), &mut Vec::new()).map(|(n, _, _)| n > 0)
                }
                Reader::F64(r) => {
                    r.read_records(1, Some(def), Some(rep), &mut Vec::new()).map(|(n, _, _)| n > 0)
                }
                Reader::Pages(w) => w.more(),
            }
            .map_err(|e| parquet_error(path, e))
        })?;
        if !more {
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

/// The scores' pages of a column chunk of PLAIN values without a dictionary, read one at a
/// time. A page is used when its levels are those of regular rows; they are checked run by run
/// in their RLE/bit-packed encoding, without decoding them level by level (a run of 1s must end
/// within its row, a 0 must be a row's first level, a byte of eight bit-packed repetition levels
/// must be the pattern's byte at its offset in the row), and its values are copied out of the
/// page. A page must begin a row (arrow-rs and polars start each page at a record); one that
/// continues a row, as a v1 page may, is read another way.
struct PageWalk {
    pages: Box<dyn PageReader>,
    f64s: bool,
    max_def: i16,
    /// Eight levels of `max_def`, bit-packed.
    defined: Vec<u8>,
    /// `starts[o]`: eight repetition levels from offset `o` of a row, bit-packed (one per
    /// offset: its length is the row's width).
    starts: Vec<u8>,
    /// The current page and where its unread values start, and how many are left.
    page: Option<Page>,
    at: usize,
    left: usize,
}

impl PageWalk {
    fn new(pages: Box<dyn PageReader>, f64s: bool, width: usize, max_def: i16) -> PageWalk {
        let starts =
            (0..width).map(|o| (0..8).fold(0u8, |b, i| b | (u8::from((o + i) % width != 0) << i))).collect();
        PageWalk { pages, f64s, max_def, defined: packed_eight(max_def), starts, page: None, at: 0, left: 0 }
    }

    /// The next `n` values, or `None` when a page on the way is not regular, is of another
    /// kind, or the pages end first.
    fn read(&mut self, n: usize) -> parquet::errors::Result<Option<ScoreValues>> {
        Ok(if self.f64s {
            self.copy(n, f64::from_le_bytes)?.map(|v| ScoreValues::F64(v.into()))
        } else {
            self.copy(n, f32::from_le_bytes)?.map(|v| ScoreValues::F32(v.into()))
        })
    }

    /// [`PageWalk::read`] for values of `S` bytes, each decoded by `decode`.
    fn copy<T, const S: usize>(
        &mut self,
        n: usize,
        decode: impl Fn([u8; S]) -> T,
    ) -> parquet::errors::Result<Option<Vec<T>>> {
        let mut out = Vec::with_capacity(n);
        let mut need = n;
        while need > 0 {
            if self.left == 0 && !self.load()? {
                return Ok(None);
            }
            let take = need.min(self.left);
            let page = self.page.as_ref().map_or(&[][..], |p| &p.buffer()[..]);
            let bytes = &page[self.at..self.at + take * S];
            out.extend(bytes.chunks_exact(S).map(|b| decode(b.try_into().expect("S bytes"))));
            self.at += take * S;
            self.left -= take;
            need -= take;
        }
        Ok(Some(out))
    }

    /// Whether the column holds values past those read.
    fn more(&mut self) -> parquet::errors::Result<bool> {
        if self.left > 0 {
            return Ok(true);
        }
        while let Some(page) = self.pages.get_next_page()? {
            match page {
                Page::DataPage { num_values, .. } | Page::DataPageV2 { num_values, .. } if num_values > 0 => {
                    return Ok(true)
                }
                _ => {}
            }
        }
        Ok(false)
    }

    /// Loads the next page with values: `false` at the end, or when it is not a PLAIN data page
    /// of regular rows (the caller reads them another way).
    fn load(&mut self) -> parquet::errors::Result<bool> {
        loop {
            let Some(page) = self.pages.get_next_page()? else { return Ok(false) };
            let buf = &page.buffer()[..];
            let (n, rep, def, values) = match &page {
                Page::DataPage { num_values, encoding, def_level_encoding, rep_level_encoding, .. } => {
                    let rle = (*def_level_encoding, *rep_level_encoding) == (Encoding::RLE, Encoding::RLE);
                    if *encoding != Encoding::PLAIN || !rle {
                        return Ok(false);
                    }
                    let Some((rep, at)) = prefixed(buf, 0) else { return Ok(false) };
                    let Some((def, values)) = prefixed(buf, at) else { return Ok(false) };
                    (*num_values as usize, rep, def, values)
                }
                Page::DataPageV2 {
                    num_values, encoding, def_levels_byte_len, rep_levels_byte_len, ..
                } => {
                    let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
                    if *encoding != Encoding::PLAIN || r + d > buf.len() {
                        return Ok(false);
                    }
                    (*num_values as usize, 0..r, r..r + d, r + d)
                }
                Page::DictionaryPage { .. } => return Ok(false),
            };
            if n == 0 {
                continue;
            }
            let size = if self.f64s { 8 } else { 4 };
            // A PLAIN page holds a value per defined level, and nothing after them: `n` values
            // mean every level is defined. The definition levels are checked too, in case a page
            // holds bytes past its values.
            let regular = buf.len() - values == n * size
                && all_levels(&buf[def], bit_width(self.max_def), n, &self.defined, self.max_def)
                && self.rows_start(&buf[rep], n);
            if !regular {
                return Ok(false);
            }
            (self.page, self.at, self.left) = (Some(page), values, n);
            return Ok(true);
        }
    }

    /// Whether the `n` repetition levels in `bytes` (bit width 1), the first a row's first, are 0
    /// exactly at every row's first level.
    fn rows_start(&self, mut bytes: &[u8], n: usize) -> bool {
        let w = self.starts.len();
        let (mut k, end) = (0, n);
        while k < end {
            let Some((h, rest)) = varint(bytes) else { return false };
            if h & 1 == 1 {
                let len = usize::try_from(h >> 1).unwrap_or(usize::MAX);
                let Some(packed) = rest.get(..len) else { return false };
                let levels = len.saturating_mul(8).min(end - k);
                let whole = levels / 8;
                for &byte in &packed[..whole] {
                    if byte != self.starts[k % w] {
                        return false;
                    }
                    k += 8;
                }
                for i in 0..levels - whole * 8 {
                    if packed[whole] >> i & 1 != u8::from(k % w != 0) {
                        return false;
                    }
                    k += 1;
                }
                bytes = &rest[len..];
            } else {
                let count = usize::try_from(h >> 1).unwrap_or(usize::MAX);
                let Some(&value) = rest.first() else { return false };
                let o = k % w;
                let fits = match value {
                    // Row starts: a level each, so a run of one unless every row has one score.
                    0 => o == 0 && (count == 1 || w == 1),
                    // Within a row: the run ends at or before the row's end.
                    1 => o != 0 && count <= w - o,
                    _ => false,
                };
                if !fits || count == 0 {
                    return false;
                }
                k += count;
                bytes = &rest[1..];
            }
        }
        k == end
    }
}

/// A v1 page's level section at `at`: a 4-byte little-endian length, then the bytes. Their
/// range and where the section ends.
fn prefixed(buf: &[u8], at: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let len = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
    let end = (at + 4).checked_add(len).filter(|&e| e <= buf.len())?;
    Some((at + 4..end, end))
}

/// Bits per level of levels up to `max`.
fn bit_width(max: i16) -> usize {
    (16 - max.leading_zeros()) as usize
}

/// Eight levels of `v` bit-packed (`bit_width(v)` bytes, least significant bits first).
fn packed_eight(v: i16) -> Vec<u8> {
    let w = bit_width(v);
    let mut out = vec![0u8; w];
    for i in 0..8 {
        for b in 0..w {
            if v >> b & 1 == 1 {
                let bit = i * w + b;
                out[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    out
}

/// An RLE/bit-packed run's header (a ULEB128 varint) and the bytes after it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// Whether the `n` levels in `bytes` (bit width `w`, RLE/bit-packed runs) are all `v`
/// (`eight`: eight of them bit-packed).
fn all_levels(mut bytes: &[u8], w: usize, n: usize, eight: &[u8], v: i16) -> bool {
    let mut left = n;
    let value_bytes = w.div_ceil(8);
    while left > 0 {
        let Some((h, rest)) = varint(bytes) else { return false };
        if h & 1 == 1 {
            let groups = usize::try_from(h >> 1).unwrap_or(usize::MAX);
            let Some(packed) = groups.checked_mul(w).and_then(|len| rest.get(..len)) else { return false };
            let levels = groups.saturating_mul(8).min(left);
            let whole = levels / 8;
            if !packed[..whole * w].chunks_exact(w).all(|g| g == eight) {
                return false;
            }
            // A last partial group, level by level.
            for i in whole * 8..levels {
                let bit = i * w;
                let mut word = [0u8; 4];
                let from = &packed[bit / 8..packed.len().min(bit / 8 + 4)];
                word[..from.len()].copy_from_slice(from);
                if (u32::from_le_bytes(word) >> (bit % 8)) & ((1 << w) - 1) != v as u32 {
                    return false;
                }
            }
            left -= levels;
            bytes = &rest[packed.len()..];
        } else {
            let count = usize::try_from(h >> 1).unwrap_or(usize::MAX);
            let Some(value) = rest.get(..value_bytes) else { return false };
            if count == 0 || value.iter().enumerate().any(|(i, &b)| b != (v as u16 >> (8 * i)) as u8) {
                return false;
            }
            left = left.saturating_sub(count);
            bytes = &rest[value_bytes..];
        }
    }
    true
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
    fn column(kind: Kind, f64s: bool, rows: &[Option<Vec<Option<f64>>>], width: usize) -> ArrayRef {
        let flat: Vec<Option<f64>> = rows
            .iter()
            .flat_map(|r| match (r, kind) {
                (Some(v), _) => v.clone(),
                (None, Kind::Fixed) => vec![Some(0.0); width],
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
            Kind::Fixed => Arc::new(FixedSizeListArray::new(element, width as i32, values, nulls)),
        }
    }

    /// Writes a dense dump of `rows` (one image per 500 rows, a positive every 7th row) with
    /// row groups of `group` rows and pages of about 16 KB.
    #[allow(clippy::too_many_arguments)]
    fn write(
        path: &Path,
        width: usize,
        kind: Kind,
        f64s: bool,
        rows: &[Option<Vec<Option<f64>>>],
        group: usize,
        v2: bool,
        dictionary: bool,
    ) {
        let n = rows.len();
        let image: Vec<i64> = (0..n as i64).map(|r| r / 500).collect();
        let label: Vec<i32> = (0..n).map(|r| if r % 7 == 0 { (r % width) as i32 } else { -1 }).collect();
        let batch = RecordBatch::try_from_iter([
            ("image_id", Arc::new(Int64Array::from(image)) as ArrayRef),
            ("label", Arc::new(Int32Array::from(label)) as ArrayRef),
            ("logits", column(kind, f64s, rows, width)),
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

    fn regular(n: usize, width: usize) -> Vec<Option<Vec<Option<f64>>>> {
        (0..n).map(|r| Some((0..width).map(|c| Some(score(r, c))).collect())).collect()
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

    /// Pages handed out in order: a column chunk made by hand.
    struct Pages(std::collections::VecDeque<Page>);

    impl Iterator for Pages {
        type Item = parquet::errors::Result<Page>;
        fn next(&mut self) -> Option<Self::Item> {
            self.0.pop_front().map(Ok)
        }
    }

    impl PageReader for Pages {
        fn get_next_page(&mut self) -> parquet::errors::Result<Option<Page>> {
            Ok(self.0.pop_front())
        }
        fn peek_next_page(&mut self) -> parquet::errors::Result<Option<parquet::column::page::PageMetadata>> {
            Ok(self.0.front().map(|page| parquet::column::page::PageMetadata {
                num_rows: match page {
                    Page::DataPageV2 { num_rows, .. } => Some(*num_rows as usize),
                    _ => None,
                },
                num_levels: Some(page.num_values() as usize),
                is_dict: matches!(page, Page::DictionaryPage { .. }),
            }))
        }
        fn skip_next_page(&mut self) -> parquet::errors::Result<()> {
            self.0.pop_front();
            Ok(())
        }
    }

    #[test]
    #[allow(deprecated)] // Encoding::BIT_PACKED: the level encoding of old writers, to refuse.
    fn pages_the_walk_cannot_copy_are_left_to_arrow() {
        // Four rows of two float scores, max definition level 1: repetition levels 0 1 0 1 ...
        // (one bit-packed group: 0xAA), definition levels eight 1s (an RLE run), values 0..8.
        let rep = [3u8, 0xAA];
        let def_all = [16u8, 1];
        // Bit-packed definition levels with the fourth undefined (a null score).
        let def_null = [3u8, 0b1111_0111];
        let values: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let prefixed = |b: &[u8]| [&(b.len() as u32).to_le_bytes()[..], b].concat();
        let v1 = |def: &[u8], values: &[u8], def_encoding: Encoding| Page::DataPage {
            buf: [prefixed(&rep), prefixed(def), values.to_vec()].concat().into(),
            num_values: 8,
            encoding: Encoding::PLAIN,
            def_level_encoding: def_encoding,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let v2 = |def_len: u32| Page::DataPageV2 {
            buf: [&rep[..], &def_all, &values].concat().into(),
            num_values: 8,
            encoding: Encoding::PLAIN,
            num_nulls: 0,
            num_rows: 4,
            def_levels_byte_len: def_len,
            rep_levels_byte_len: 2,
            is_compressed: false,
            statistics: None,
        };
        let walk = |page: Page| PageWalk::new(Box::new(Pages([page].into())), false, 2, 1);
        // The regular pages of either version are copied.
        for page in [v1(&def_all, &values, Encoding::RLE), v2(2)] {
            let mut w = walk(page);
            let got = w.read(8).unwrap().expect("a regular page is copied");
            assert_eq!(flat(&got), (0..8).map(f64::from).collect::<Vec<_>>());
        }
        // Each guard on its own (the other checks pass on each of these pages).
        let extra = [&values[..], &[0u8; 4]].concat();
        for (why, page) in [
            ("levels not in RLE", v1(&def_all, &values, Encoding::BIT_PACKED)),
            ("level lengths past the page", v2(2 + values.len() as u32 + 1)),
            ("bytes past the values", v1(&def_all, &extra, Encoding::RLE)),
            ("an undefined level", v1(&def_null, &values, Encoding::RLE)),
        ] {
            assert!(walk(page).read(8).unwrap().is_none(), "{why}: read by the walk");
        }
    }

    #[test]
    fn every_list_type_float_width_page_version_and_encoding_reads_the_scores_as_written() {
        let rows = 3000;
        // Widths of 400 (batches of 1,310 rows: several per row group), 4 (bit-packed
        // repetition levels), 20 and 80 (runs of 1s), 1 (runs of 0s) and 3.
        let cases = [
            (Kind::List, false, false, false, WIDTH),
            (Kind::LargeList, false, true, true, WIDTH),
            (Kind::Fixed, false, false, true, WIDTH),
            (Kind::List, true, true, false, WIDTH),
            (Kind::Fixed, true, false, false, WIDTH),
            (Kind::LargeList, true, false, true, WIDTH),
            (Kind::Fixed, false, false, false, 4),
            (Kind::List, false, true, false, 20),
            (Kind::LargeList, true, false, false, 80),
            (Kind::List, false, false, false, 1),
            (Kind::Fixed, true, true, false, 3),
        ];
        for (kind, f64s, v2, dictionary, width) in cases {
            let what = format!("{kind:?}, f64 {f64s}, v2 pages {v2}, dictionary {dictionary}, width {width}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d.parquet");
            write(&path, width, kind, f64s, &regular(rows, width), 2000, v2, dictionary);
            let dump = open(&path, OnInvalid::Error);
            assert_eq!(dump.units().len(), 2, "{what}");
            // The writer did as asked: the scores' chunks have a dictionary page or none.
            let Data::Parquet { arrow, .. } = &dump.files()[0].data else { unreachable!("a file") };
            for group in arrow.metadata().row_groups() {
                let chunk = group.columns().iter().find(|c| c.column_path().string().starts_with("logits"));
                assert_eq!(chunk.unwrap().dictionary_page_offset().is_some(), dictionary, "{what}");
            }
            let want: Vec<f64> = (0..rows).flat_map(|r| (0..width).map(move |c| score(r, c))).collect();
            // The leaf reader itself: every batch regular, in batches that cross pages.
            let mut got = Vec::new();
            for &unit in dump.units() {
                let mut leaf = ScoreLeaf::open(&dump.files()[0], unit, width).unwrap().expect(&what);
                // Plain chunks are read page by page, the others by the typed column reader.
                assert_eq!(leaf.walks_pages(), !dictionary, "{what}");
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
            if width == WIDTH {
                assert!(
                    batches.len() > 2,
                    "{what}: {} batches; several per row group expected",
                    batches.len()
                );
            }
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
        let mut rows = regular(6000, WIDTH);
        rows[1800].as_mut().unwrap()[5] = None;
        let moved = rows[2400].as_mut().unwrap().pop().unwrap();
        rows[2401].as_mut().unwrap().push(moved);
        rows[5500] = None;
        rows[5900] = Some(Vec::new());
        let bad = [1800, 2400, 2401, 5500, 5900];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        write(&path, WIDTH, Kind::List, false, &rows, 2000, false, false);

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

    #[test]
    fn irregular_rows_in_bit_packed_levels_are_seen() {
        // Rows of 4 scores: the repetition levels are bit-packed (0111 per row), the
        // definition levels mostly one run. Rows 2500 and 2501 hold 3 and 5 scores (as many
        // levels, all defined). Pages of 16 KB hold about 1,000 rows, and a page is used only
        // when all of it is regular: rows 0..1500 come from pages before the ragged rows'.
        let mut rows = regular(3000, 4);
        let moved = rows[2500].as_mut().unwrap().pop().unwrap();
        rows[2501].as_mut().unwrap().push(moved);
        let bad = [2500, 2501];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad4.parquet");
        write(&path, 4, Kind::List, false, &rows, 3000, false, false);
        let strict = open(&path, OnInvalid::Error);
        let unit = strict.units()[0];
        let mut l = ScoreLeaf::open(&strict.files()[0], unit, 4).unwrap().unwrap();
        assert!(l.walks_pages());
        assert!(l.read(1500).unwrap().is_some(), "rows 0..1500 are regular");
        assert!(l.read(1500).unwrap().is_none(), "rows 2500 and 2501 are ragged");
        let e = strict.read_batches(unit).unwrap_err().to_string();
        assert!(e.contains("column 'logits', row 2500") && e.contains("ragged score list: 3 entries"), "{e}");
        let skip = open(&path, OnInvalid::Skip);
        let batches = skip.read_batches(unit).unwrap();
        let kept: Vec<usize> = (0..3000).filter(|r| !bad.contains(r)).collect();
        let (got, file_rows) = scores_of(&batches);
        let want: Vec<f64> = kept.iter().flat_map(|&r| (0..4).map(move |c| score(r, c))).collect();
        assert!(got == want, "the kept rows' scores differ from those written");
        assert_eq!(file_rows, kept.iter().map(|&r| r as u64).collect::<Vec<_>>());
        let skipped: u64 = batches.iter().flat_map(|b| b.skipped.values()).sum();
        assert_eq!(skipped, 2);
        // And a null score alone.
        let mut rows = regular(3000, 4);
        rows[2500].as_mut().unwrap()[2] = None;
        write(&path, 4, Kind::List, false, &rows, 3000, false, false);
        let strict = open(&path, OnInvalid::Error);
        let mut l = ScoreLeaf::open(&strict.files()[0], strict.units()[0], 4).unwrap().unwrap();
        assert!(l.read(1500).unwrap().is_some(), "rows 0..1500 are regular");
        assert!(l.read(1500).unwrap().is_none(), "row 2500 has a null score");
        let e = strict.read_batches(strict.units()[0]).unwrap_err().to_string();
        assert!(e.contains("column 'logits', row 2500") && e.contains("null score at class 2"), "{e}");
    }

    #[test]
    fn a_row_holding_the_next_rows_scores_is_ragged_not_shifted() {
        // Row 2400 holds 800 scores and row 2401 is gone: as many levels as 6,000 regular rows,
        // all defined, and a row start missing inside a run of 1s. The walk must stop there
        // (the run crosses the row's end), not hand out the second half as row 2401's scores.
        let mut rows = regular(6000, WIDTH);
        let next = rows.remove(2401).unwrap();
        rows[2400].as_mut().unwrap().extend(next);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merged.parquet");
        write(&path, WIDTH, Kind::List, false, &rows, 2000, false, false);
        let strict = open(&path, OnInvalid::Error);
        let e = strict.read_batches(strict.units()[1]).unwrap_err().to_string();
        assert!(
            e.contains("column 'logits', row 2400") && e.contains("ragged score list: 800 entries"),
            "{e}"
        );
    }
}
