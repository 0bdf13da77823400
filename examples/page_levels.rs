//! A spike for issue 10 (tenth round): how much of reading a dense dump's scores is decoding
//! their levels. The f32 list column `COLUMN` of one file is read on one thread (a) with
//! parquet's typed column reader, as `src/input/leaf.rs` reads it (values and both levels
//! decoded into vectors, then compared with the regular rows' levels), and (b) page by page,
//! checking the levels' RLE/bit-packed runs against the regular pattern without decoding them
//! level by level, and copying the PLAIN values out of the page. Both count the rows and add
//! up the values' bit patterns (in any order the same), which must agree. Only PLAIN data pages (v1 or v2) with levels of at most 8 bits
//! are handled by (b): it stops on anything else. docs/benchmarks.md ("Tenth round") has the
//! figures.
//! `cargo run --release --example page_levels -- FILE COLUMN WIDTH`

use std::fs::File;
use std::time::Instant;

use parquet::basic::Encoding;
use parquet::column::page::Page;
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, column, width] = &args[..] else {
        return Err("usage: page_levels FILE COLUMN WIDTH".into());
    };
    let width: usize = width.parse()?;
    let reader = SerializedFileReader::new(File::open(path)?)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let leaf = schema
        .columns()
        .iter()
        .position(|c| c.path().parts()[0] == *column)
        .ok_or_else(|| format!("{path} has no column {column}"))?;
    let descr = schema.column(leaf);
    let (max_def, max_rep) = (descr.max_def_level(), descr.max_rep_level());
    if max_rep != 1 {
        return Err("not a one-level list".into());
    }
    let batch = (2 << 20) / (4 * width);
    for round in 0..3 {
        // (a) The typed column reader, levels decoded and compared, as leaf.rs.
        let start = Instant::now();
        let (mut a_rows, mut a_sum) = (0usize, 0u64);
        let (mut def, mut rep) = (Vec::<i16>::new(), Vec::<i16>::new());
        let n_max = batch * width;
        let all_defined = vec![max_def; n_max];
        let starts: Vec<i16> = (0..width).map(|c| i16::from(c != 0)).collect::<Vec<_>>().repeat(batch);
        for rg in 0..reader.num_row_groups() {
            let group = reader.get_row_group(rg)?;
            let ColumnReader::FloatColumnReader(mut col) = group.get_column_reader(leaf)? else {
                return Err("not f32".into());
            };
            loop {
                def.clear();
                rep.clear();
                let mut values = Vec::with_capacity(n_max);
                let (records, _, _) = col.read_records(batch, Some(&mut def), Some(&mut rep), &mut values)?;
                if records == 0 {
                    break;
                }
                let n = records * width;
                if def[..] != all_defined[..n] || rep[..] != starts[..n] {
                    return Err(format!("(a): an irregular batch in row group {rg}").into());
                }
                a_rows += records;
                a_sum = values.iter().fold(a_sum, |s, &x| s.wrapping_add(u64::from(x.to_bits())));
            }
        }
        let a = start.elapsed().as_secs_f64();

        // (b) Page by page: the levels' runs checked, the values copied.
        let start = Instant::now();
        let (mut b_rows, mut b_sum) = (0usize, 0u64);
        let rep_check = RepCheck::new(width);
        let def_group = packed_group(max_def);
        let def_width = bit_width(max_def);
        for rg in 0..reader.num_row_groups() {
            let group = reader.get_row_group(rg)?;
            let mut pages = group.get_column_page_reader(leaf)?;
            let mut at = 0usize;
            while let Some(page) = pages.get_next_page()? {
                let (rep_bytes, def_bytes, values, n, encoding) = match &page {
                    Page::DataPage { buf, num_values, encoding, .. } => {
                        let (rep, rest) = prefixed(buf)?;
                        let (def, values) = prefixed(rest)?;
                        (rep, def, values, *num_values as usize, *encoding)
                    }
                    Page::DataPageV2 {
                        buf,
                        num_values,
                        encoding,
                        def_levels_byte_len,
                        rep_levels_byte_len,
                        ..
                    } => {
                        let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
                        (&buf[..r], &buf[r..r + d], &buf[r + d..], *num_values as usize, *encoding)
                    }
                    Page::DictionaryPage { .. } => return Err("(b): a dictionary page".into()),
                };
                if encoding != Encoding::PLAIN {
                    return Err(format!("(b): values encoded {encoding:?}").into());
                }
                if !runs_all(def_bytes, def_width, n, &def_group, max_def) {
                    return Err(format!("(b): an undefined level in row group {rg}").into());
                }
                let Some(starts) = rep_check.check(rep_bytes, n, at) else {
                    return Err(format!("(b): an irregular row in row group {rg}").into());
                };
                let mut v: Vec<f32> = Vec::with_capacity(n);
                v.extend(
                    values[..4 * n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                b_sum = v.iter().fold(b_sum, |s, &x| s.wrapping_add(u64::from(x.to_bits())));
                b_rows += starts;
                at += n;
            }
        }
        let b = start.elapsed().as_secs_f64();
        println!(
            "round {round}: column reader {a:.3} s ({a_rows} rows, bits sum {a_sum:x}); \
             page runs {b:.3} s ({b_rows} rows, bits sum {b_sum:x})"
        );
        if a_rows != b_rows || a_sum != b_sum {
            return Err("the two reads disagree".into());
        }
    }
    Ok(())
}

/// A v1 page's level section: a 4-byte little-endian length, then the bytes.
fn prefixed(buf: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let len = u32::from_le_bytes(buf.get(..4).ok_or("short page")?.try_into()?) as usize;
    let rest = &buf[4..];
    if rest.len() < len {
        return Err("short page".into());
    }
    Ok(rest.split_at(len))
}

fn bit_width(max: i16) -> usize {
    (16 - max.leading_zeros()) as usize
}

/// Eight levels of value `v` bit-packed (`bit_width(v)` bytes).
fn packed_group(v: i16) -> Vec<u8> {
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

/// An RLE/bit-packed hybrid run header: the varint and the bytes after it.
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

/// Whether the `n` levels in `bytes` (bit width `w`) are all `v` (`group`: eight of them packed).
fn runs_all(mut bytes: &[u8], w: usize, n: usize, group: &[u8], v: i16) -> bool {
    let mut left = n;
    let value_bytes = w.div_ceil(8);
    while left > 0 {
        let Some((h, rest)) = varint(bytes) else { return false };
        if h & 1 == 1 {
            let groups = (h >> 1) as usize;
            let len = groups * w;
            let Some(packed) = rest.get(..len) else { return false };
            let levels = (groups * 8).min(left);
            // Whole groups compared as bytes; a last partial group bit by bit.
            let whole = levels / 8;
            if !packed[..whole * w].chunks_exact(w).all(|g| g == group) {
                return false;
            }
            for i in whole * 8..levels {
                let bit = i * w;
                let x = (u64::from_le_bytes({
                    let mut b = [0u8; 8];
                    let s = &packed[bit / 8..(bit / 8 + 8).min(len)];
                    b[..s.len()].copy_from_slice(s);
                    b
                }) >> (bit % 8))
                    & ((1 << w) - 1);
                if x != v as u64 {
                    return false;
                }
            }
            left -= levels;
            bytes = &rest[len..];
        } else {
            let count = (h >> 1) as usize;
            let Some(value) = rest.get(..value_bytes) else { return false };
            if value.first().copied().map(i16::from) != Some(v) || count == 0 {
                return false;
            }
            left = left.saturating_sub(count);
            bytes = &rest[value_bytes..];
        }
    }
    true
}

/// Checks repetition levels (bit width 1) against the regular pattern: 0 at every `width`-th
/// level of the row group, 1 elsewhere.
struct RepCheck {
    width: usize,
    /// `table[o]`: the byte of eight levels starting at offset `o` within a row.
    table: Vec<u8>,
}

impl RepCheck {
    fn new(width: usize) -> RepCheck {
        let table =
            (0..width).map(|o| (0..8).fold(0u8, |b, i| b | (u8::from((o + i) % width != 0) << i))).collect();
        RepCheck { width, table }
    }

    /// The rows started by the `n` levels in `bytes`, the first at level `at` of the row group,
    /// or `None` when they are not the pattern.
    fn check(&self, mut bytes: &[u8], n: usize, at: usize) -> Option<usize> {
        let w = self.width;
        let (mut k, end) = (at, at + n);
        let mut starts = 0;
        while k < end {
            let (h, rest) = varint(bytes)?;
            if h & 1 == 1 {
                let len = (h >> 1) as usize;
                let packed = rest.get(..len)?;
                let levels = (len * 8).min(end - k);
                let whole = levels / 8;
                for &byte in &packed[..whole] {
                    if byte != self.table[k % w] {
                        return None;
                    }
                    // Row starts among these eight levels.
                    starts += (8 - byte.count_ones()) as usize;
                    k += 8;
                }
                for i in 0..levels - whole * 8 {
                    let r = packed[whole] >> i & 1;
                    if r != u8::from(k % w != 0) {
                        return None;
                    }
                    starts += usize::from(r == 0);
                    k += 1;
                }
                bytes = &rest[len..];
            } else {
                let count = (h >> 1) as usize;
                let value = *rest.first()?;
                let o = k % w;
                match value {
                    // Row starts: one level each, so only a run of one unless rows are single.
                    0 if o == 0 && (count == 1 || w == 1) => starts += count,
                    // Within a row: the run must end at or before the row's end.
                    1 if o != 0 && o + count <= w => {}
                    _ => return None,
                }
                k += count;
                bytes = &rest[1..];
            }
        }
        Some(starts)
    }
}
