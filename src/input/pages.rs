//! Sanity checks of the Parquet footer and page headers, before any data page is decoded.
//!
//! Decoders trust the counts they read: with polars-parquet 0.55 (the decoder before arrow-rs)
//! a corrupt page header (say a value count that became negative) made it reserve exabytes, and
//! the process aborted with "memory allocation failed" instead of reporting the file (found by
//! the fuzz harness, `tests/util/fuzz.rs`, which now runs against the arrow-rs decoder). These checks bound every count and size by what the file can hold,
//! so such files give a clear error naming the file, row group, column and byte offset.
//! They read only the page headers (a few dozen bytes per page, pages are ~1 MB).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use polars_io::parquet::read::FileMetadata;
use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
use polars_parquet_format::PageHeader;

use crate::error::InputError;

/// No real page is larger than this uncompressed (writers default to ~1 MB pages).
const MAX_PAGE_BYTES: i64 = 1 << 30;
/// Page headers are small; a larger one is corrupt.
const MAX_HEADER_BYTES: usize = 1 << 20;
/// Values per row: at most the largest score list hardmine accepts, plus one.
const MAX_VALUES_PER_ROW: i64 = 65_536;

fn corrupt(path: &Path, detail: String) -> InputError {
    InputError::Parquet { path: path.to_path_buf(), detail }
}

/// Checks the footer against the file: row counts add up, every column chunk lies inside the
/// file and holds a plausible number of values.
pub(super) fn check_footer(path: &Path, meta: &FileMetadata, file_len: u64) -> Result<(), InputError> {
    let total: u64 = meta.row_groups.iter().map(|rg| rg.num_rows() as u64).sum();
    if meta.num_rows as u64 != total {
        return Err(corrupt(
            path,
            format!("the footer says {} rows but its row groups hold {total}", meta.num_rows),
        ));
    }
    for (g, rg) in meta.row_groups.iter().enumerate() {
        let rows = rg.num_rows() as i64;
        for cc in rg.parquet_columns() {
            let name = cc.descriptor().path_in_schema.join(".");
            let range = cc.byte_range();
            if range.end > file_len || range.start > range.end {
                return Err(corrupt(
                    path,
                    format!(
                        "row group {g}, column '{name}': bytes {}..{} lie outside the file ({file_len} bytes)",
                        range.start, range.end
                    ),
                ));
            }
            let n = cc.num_values();
            if n < 0 || n > rows.saturating_mul(MAX_VALUES_PER_ROW) {
                return Err(corrupt(
                    path,
                    format!("row group {g}, column '{name}': {n} values for {rows} rows is impossible"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the page headers of the columns `columns` (top-level names) in row group `group`.
pub(super) fn check_pages(
    path: &Path,
    meta: &FileMetadata,
    group: usize,
    columns: &[String],
) -> Result<(), InputError> {
    let Some(rg) = meta.row_groups.get(group) else {
        return Err(corrupt(path, format!("row group {group} is missing from the footer")));
    };
    let io = |source| InputError::Io { path: path.to_path_buf(), source };
    let mut reader = BufReader::with_capacity(8 << 10, File::open(path).map_err(io)?);
    for cc in rg.parquet_columns() {
        let d = cc.descriptor();
        if !d.path_in_schema.first().is_some_and(|top| columns.iter().any(|c| c == top)) {
            continue;
        }
        let name = d.path_in_schema.join(".");
        let range = cc.byte_range();
        let total = cc.num_values();
        let bad = |at: u64, what: String| {
            corrupt(path, format!("row group {group}, column '{name}', page at byte {at}: {what}"))
        };
        let mut pos = range.start;
        let mut seen: i64 = 0;
        while seen < total {
            if pos >= range.end {
                return Err(bad(
                    pos,
                    format!("the pages end after {seen} of the {total} values the footer announces"),
                ));
            }
            reader.seek(SeekFrom::Start(pos)).map_err(io)?;
            let mut counted = Counted { inner: &mut reader, read: 0 };
            let header = {
                let mut prot = TCompactInputProtocol::new(&mut counted, MAX_HEADER_BYTES);
                PageHeader::read_from_in_protocol(&mut prot)
                    .map_err(|e| bad(pos, format!("unreadable page header ({e})")))?
            };
            let body_start = pos + counted.read;
            let compressed = i64::from(header.compressed_page_size);
            if compressed < 0 || body_start + compressed as u64 > range.end {
                return Err(bad(pos, format!("page of {compressed} bytes overruns its column chunk")));
            }
            let uncompressed = i64::from(header.uncompressed_page_size);
            if !(0..=MAX_PAGE_BYTES).contains(&uncompressed) {
                return Err(bad(pos, format!("implausible uncompressed page size {uncompressed}")));
            }
            let values = if let Some(h) = &header.data_page_header {
                i64::from(h.num_values)
            } else if let Some(h) = &header.data_page_header_v2 {
                if h.num_nulls < 0 || h.num_rows < 0 || h.num_nulls > h.num_values {
                    return Err(bad(
                        pos,
                        format!(
                            "impossible counts (values {}, nulls {}, rows {})",
                            h.num_values, h.num_nulls, h.num_rows
                        ),
                    ));
                }
                if h.definition_levels_byte_length < 0
                    || h.repetition_levels_byte_length < 0
                    || i64::from(h.definition_levels_byte_length) + i64::from(h.repetition_levels_byte_length)
                        > uncompressed
                {
                    return Err(bad(pos, "impossible level sizes".to_string()));
                }
                i64::from(h.num_values)
            } else {
                if let Some(h) = &header.dictionary_page_header {
                    if h.num_values < 0 || i64::from(h.num_values) > uncompressed.saturating_mul(8).max(1) {
                        return Err(bad(
                            pos,
                            format!("dictionary of {} values in {uncompressed} bytes", h.num_values),
                        ));
                    }
                }
                0
            };
            if values < 0 || seen + values > total {
                return Err(bad(
                    pos,
                    format!("{values} values where the column chunk has {} left", total - seen),
                ));
            }
            seen += values;
            pos = body_start + compressed as u64;
        }
    }
    Ok(())
}

/// A reader that counts the bytes taken from it.
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}
