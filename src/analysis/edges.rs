//! Blocks of rows cut in two by a batch boundary, kept until their pieces meet.
//!
//! The pass sums in f64 within a *block* (a fixed range of [`block_rows`] file rows, intersected
//! with an image) and adds each block's f64 subtotals exactly ([`super::sum::ExactSum`]) to the
//! totals: one exact add per block and quantity instead of one per decision. Blocks are cut by
//! the file's row index alone, so the f64 subtotals, and therefore the JSON, do not depend on
//! row groups, batches or threads. A batch that starts or ends inside a block keeps a copy of
//! those rows (at most one block at each end); when passes merge, the pieces of a block meet and
//! the block is summed whole, exactly as if no boundary had cut it.
//!
//! [`block_rows`]: super::decisions::Expansion::block_rows

use std::collections::BTreeMap;

use crate::input::Batch;

/// The pieces of blocks that batch boundaries cut, by (file, block).
#[derive(Clone, Debug, Default)]
pub struct Edges {
    /// Rows per block.
    rows: u64,
    pieces: BTreeMap<(usize, u64), Vec<Batch>>,
}

impl PartialEq for Edges {
    fn eq(&self, other: &Edges) -> bool {
        /// Each piece list as its rows' spans.
        type Spans = Vec<((usize, u64), Vec<(u64, u64)>)>;
        let spans = |e: &Edges| -> Spans {
            e.pieces.iter().map(|(k, v)| (*k, v.iter().map(|b| (b.first_row, b.end_row)).collect())).collect()
        };
        spans(self) == spans(other)
    }
}

impl Edges {
    /// Whether no piece is waiting.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Keeps the rows of `batch` that lie in blocks it does not cover whole; returns the blocks
    /// that these pieces complete. `block_rows` is the block size of the dump.
    pub fn cut(&mut self, batch: &Batch, block_rows: u64) -> Vec<Batch> {
        self.rows = block_rows;
        let (s, e) = (batch.first_row, batch.end_row);
        if s >= e {
            return Vec::new();
        }
        let (first, last) = (s / block_rows, (e - 1) / block_rows);
        let mut done = Vec::new();
        for b in if first == last { vec![first] } else { vec![first, last] } {
            let (bs, be) = (b * block_rows, ((b + 1) * block_rows).min(batch.file_rows));
            if bs >= s && be <= e {
                continue;
            }
            let span = bs.max(s)..be.min(e);
            let lo = first_at_or_after(batch, span.start);
            let hi = first_at_or_after(batch, span.end);
            let piece = batch.slice(lo..hi, span);
            done.extend(self.add((batch.file, b), vec![piece]));
        }
        done
    }

    /// Absorbs another pass's pieces; returns the blocks that are now complete.
    pub fn merge(&mut self, other: Edges) -> Vec<Batch> {
        if other.rows != 0 {
            self.rows = other.rows;
        }
        let mut done = Vec::new();
        for (key, pieces) in other.pieces {
            done.extend(self.add(key, pieces));
        }
        done
    }

    /// Every waiting block, joined from the pieces it has (none are expected once the whole
    /// dump was read; this keeps a partial input, such as a test's, from losing rows).
    pub fn drain(&mut self) -> Vec<Batch> {
        std::mem::take(&mut self.pieces).into_values().map(|p| Batch::concat(&p)).collect()
    }

    fn add(&mut self, key: (usize, u64), pieces: Vec<Batch>) -> Option<Batch> {
        let list = self.pieces.entry(key).or_default();
        list.extend(pieces);
        list.sort_by_key(|b| b.first_row);
        let rows = self.rows;
        let block_start = key.1 * rows;
        let block_end = ((key.1 + 1) * rows).min(list[0].file_rows);
        let tiled = list[0].first_row == block_start
            && list.windows(2).all(|w| w[0].end_row == w[1].first_row)
            && list.last().is_some_and(|b| b.end_row == block_end);
        if !tiled {
            return None;
        }
        let list = self.pieces.remove(&key).expect("just filled");
        Some(Batch::concat(&list))
    }
}

/// The first row of `batch` whose file row is at least `file_row`.
fn first_at_or_after(batch: &Batch, file_row: u64) -> usize {
    let (mut lo, mut hi) = (0, batch.rows);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if batch.file_row(mid) < file_row {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{test_batch, ScoreValues, Targets};

    fn batch(first_row: u64, rows: usize, file_rows: u64) -> Batch {
        let mut b = test_batch(
            (0..rows).map(|i| (first_row as i64 + i as i64) / 5),
            Targets::Labels(vec![-1; rows]),
            ScoreValues::from_f32(vec![0.5; rows]),
            first_row,
        );
        b.file_rows = file_rows;
        b
    }

    #[test]
    fn a_block_cut_by_batches_is_joined_once_its_pieces_meet() {
        // Blocks of 8 rows; a file of 20 rows read as 0..5, 5..13, 13..20.
        let mut a = Edges::default();
        let mut b = Edges::default();
        let mut c = Edges::default();
        assert!(a.cut(&batch(0, 5, 20), 8).is_empty());
        assert!(b.cut(&batch(5, 8, 20), 8).is_empty());
        assert!(c.cut(&batch(13, 7, 20), 8).is_empty());
        // Merge out of order: c then a, then b completes both cut blocks.
        assert!(c.merge(a).is_empty());
        let done = c.merge(b);
        let spans: Vec<(u64, u64, usize)> = done.iter().map(|d| (d.first_row, d.end_row, d.rows)).collect();
        assert_eq!(spans, vec![(0, 8, 8), (8, 16, 8)]);
        assert!(c.is_empty());
        // The file's last block (16..20) lay whole inside the third batch.
    }

    #[test]
    fn a_batch_covering_whole_blocks_keeps_nothing() {
        let mut e = Edges::default();
        assert!(e.cut(&batch(8, 16, 40), 8).is_empty());
        assert!(e.is_empty());
        // The file's last, shorter block is whole when the batch reaches the end of the file.
        assert!(e.cut(&batch(32, 5, 37), 8).is_empty());
        assert!(e.is_empty());
    }
}
