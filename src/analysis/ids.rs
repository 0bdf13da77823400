//! Duplicate `(image_id, anchor_id)` rows.
//!
//! A dump that holds an image twice (a resumed dumping job appending to the same files, a data
//! loader that repeats an image) counts its anchors twice and skews every share. When the dump
//! has an `anchor_id` column, two checks catch this:
//!
//! - **exact**, for rows of one image that are contiguous in the dump: within each image run of a
//!   batch the ids are checked for repeats (a linear scan when they are increasing, as dumps
//!   usually write them; a sort otherwise), and the ids of the images at the edges of each part
//!   of the pass are kept until the neighbouring part is merged, so an image split between row
//!   groups or files is checked as a whole (consecutive ids on consecutive rows, as dense dumps
//!   write them, are kept as their first id and row). The error names both rows.
//! - **by count**, for any dump (also unsorted ones and merged shards): an image with more rows
//!   than distinct ids between its smallest and largest id has a repeat, by the pigeonhole
//!   principle. This catches an image written twice anywhere in the dump.
//!
//! In a binary dump the key is `(anchor_id, class)`: one anchor has one row per class.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::input::{Batch, ImageKey};

/// A repeated key: the image, the anchor id and the two rows (file index, row within the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The image.
    pub image: ImageKey,
    /// The repeated anchor id.
    pub anchor_id: i64,
    /// Class of the repeated row (binary dumps).
    pub class: Option<i32>,
    /// The first row: file index and row within the file.
    pub first: (u32, u64),
    /// The repeat.
    pub second: (u32, u64),
}

/// The key span of one image: rows and the smallest and largest key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Rows with an anchor id.
    pub rows: u64,
    /// Smallest key.
    pub min: i128,
    /// Largest key.
    pub max: i128,
}

impl Span {
    fn merge(&mut self, o: &Span) {
        self.rows += o.rows;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Distinct keys the span can hold.
    pub fn capacity(&self) -> u128 {
        (self.max - self.min) as u128 + 1
    }
}

/// A row's key with its file index and row within the file.
type Keyed = (i128, u32, u64);

/// Keys of one edge segment, sorted: listed, or (the usual dense dump) a run of consecutive
/// keys on consecutive rows of one file, held as its first key and row.
#[derive(Clone, Debug)]
enum Segment {
    /// The keys, sorted.
    Keys(Vec<Keyed>),
    /// Keys `key..key + len` on rows `row..row + len` of file `file`.
    Run { key: i128, file: u32, row: u64, len: u64 },
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Keys(k) => k.len(),
            Segment::Run { len, .. } => *len as usize,
        }
    }

    /// Key `j` of the segment (`j < len`).
    fn at(&self, j: usize) -> Keyed {
        match self {
            Segment::Keys(k) => k[j],
            Segment::Run { key, file, row, .. } => (key + j as i128, *file, row + j as u64),
        }
    }
}

/// Keys of one image at an edge of a part, sorted by key: in segments, each sorted, every key
/// of a segment below every key of the next (parts whose keys continue upwards are joined by
/// moving their segments, without copying the keys).
#[derive(Clone, Debug)]
struct Edge {
    image: ImageKey,
    segments: Vec<Segment>,
}

impl Edge {
    fn new(image: ImageKey, segment: Segment) -> Edge {
        Edge { image, segments: vec![segment] }
    }

    /// The keys in order.
    fn keys(&self) -> impl Iterator<Item = Keyed> + '_ {
        self.segments.iter().flat_map(|s| (0..s.len()).map(move |j| s.at(j)))
    }

    fn first(&self) -> Option<Keyed> {
        self.keys().next()
    }

    fn last(&self) -> Option<Keyed> {
        self.segments.iter().rev().find(|s| s.len() > 0).map(|s| s.at(s.len() - 1))
    }

    /// The keys in one vector (a single listed segment moved out, not copied).
    fn into_keys(mut self) -> Vec<Keyed> {
        if let [Segment::Keys(keys)] = &mut self.segments[..] {
            return std::mem::take(keys);
        }
        self.keys().collect()
    }
}

/// Edges are equal when they hold the same keys, however segmented.
impl PartialEq for Edge {
    fn eq(&self, o: &Edge) -> bool {
        self.image == o.image && self.keys().eq(o.keys())
    }
}

/// The edge images of a part: the first, and the last when it differs.
#[derive(Clone, Debug, PartialEq)]
struct Edges {
    first: Edge,
    last: Option<Edge>,
}

/// Mergeable duplicate checks. Parts must be merged in dump order for the exact check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdsAcc {
    /// Key span per image (images with an anchor id only).
    #[serde(with = "crate::analysis::pairs")]
    pub spans: BTreeMap<ImageKey, Span>,
    #[serde(skip)]
    edges: Option<Edges>,
    #[serde(skip)]
    duplicate: Option<Duplicate>,
    /// Keys carry a class (binary dump).
    #[serde(skip)]
    binary: bool,
}

/// The row's key: the anchor id, combined with the class in binary dumps.
fn key(anchor: i64, class: Option<i32>) -> i128 {
    match class {
        Some(c) => (i128::from(anchor) << 16) | i128::from(c),
        None => i128::from(anchor),
    }
}

/// Splits a key back into anchor id and class.
fn unkey(k: i128, binary: bool) -> (i64, Option<i32>) {
    if binary {
        ((k >> 16) as i64, Some((k & 0xffff) as i32))
    } else {
        (k as i64, None)
    }
}

/// The first repeated key of a sorted slice, as its two entries.
fn first_repeat(keys: &[Keyed]) -> Option<(Keyed, Keyed)> {
    keys.windows(2).find(|w| w[0].0 == w[1].0).map(|w| (w[0], w[1]))
}

/// The least and greatest of `ids` (`(i64::MAX, i64::MIN)` when empty), and whether they
/// strictly increase: three folds without early exits, which vectorise. The AVX2 copy where
/// the processor has it: the baseline instruction set (SSE2) has no 64-bit comparison, and
/// emulating one took the scan of a 4-class dump's anchor ids to 3% of `analyze`.
fn scan(ids: &[i64]) -> (i64, i64, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(ids: &[i64]) -> (i64, i64, bool) {
            scan_body(ids)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            return unsafe { avx2(ids) };
        }
    }
    scan_body(ids)
}

/// [`scan`]'s body, for every instruction set.
#[inline(always)]
fn scan_body(ids: &[i64]) -> (i64, i64, bool) {
    let min = ids.iter().copied().fold(i64::MAX, i64::min);
    let max = ids.iter().copied().fold(i64::MIN, i64::max);
    let next = ids.get(1..).unwrap_or(&[]);
    let increasing = ids.iter().zip(next).fold(true, |all, (a, b)| all & (b > a));
    (min, max, increasing)
}

impl IdsAcc {
    /// Checks one batch (a no-op without anchor ids).
    pub fn observe_batch(&mut self, batch: &Batch) {
        let Some(ids) = &batch.anchor_id else { return };
        let class = batch.class.as_deref();
        let binary = class.is_some();
        self.binary |= binary;
        let k = |r: usize| key(ids[r], class.map(|c| c[r]));
        let file = batch.file as u32;
        let n = batch.images.len();
        for (i, run) in batch.images.iter().enumerate() {
            if run.start == run.end {
                continue;
            }
            let (min, max, increasing) = match class {
                // Dense dumps: the key is the anchor id, scanned as i64 (a loop that
                // vectorises).
                None => {
                    let (min, max, increasing) = scan(&ids[run.start..run.end]);
                    (i128::from(min), i128::from(max), increasing)
                }
                Some(_) => {
                    let (mut min, mut max) = (i128::MAX, i128::MIN);
                    let mut increasing = true;
                    let mut prev = i128::MIN;
                    for r in run.start..run.end {
                        let x = k(r);
                        min = min.min(x);
                        max = max.max(x);
                        increasing &= x > prev;
                        prev = x;
                    }
                    (min, max, increasing)
                }
            };
            let span = Span { rows: (run.end - run.start) as u64, min, max };
            match self.spans.get_mut(&run.key) {
                Some(s) => s.merge(&span),
                None => {
                    self.spans.insert(run.key.clone(), span);
                }
            }
            let edge = i == 0 || i + 1 == n;
            if increasing && !edge {
                continue;
            }
            let rows = (run.end - run.start) as u64;
            let segment = if increasing && batch.row_index.is_none() && span.capacity() == u128::from(rows) {
                // Strictly increasing keys as many as their span holds: every key from the
                // least, on consecutive rows.
                Segment::Run { key: min, file, row: batch.file_row(run.start), len: rows }
            } else {
                let mut keys: Vec<Keyed> =
                    (run.start..run.end).map(|r| (k(r), file, batch.file_row(r))).collect();
                if !increasing {
                    keys.sort_unstable();
                    if let Some((a, b)) = first_repeat(&keys) {
                        self.found(&run.key, a, b, binary);
                    }
                }
                Segment::Keys(keys)
            };
            if edge {
                let e = Edge::new(run.key.clone(), segment);
                match &mut self.edges {
                    None => self.edges = Some(Edges { first: e, last: None }),
                    Some(edges) => edges.last = Some(e),
                }
            }
        }
    }

    fn found(&mut self, image: &ImageKey, a: Keyed, b: Keyed, binary: bool) {
        if self.duplicate.is_none() {
            let (anchor_id, class) = unkey(a.0, binary);
            let (first, second) = if (a.1, a.2) <= (b.1, b.2) { (a, b) } else { (b, a) };
            self.duplicate = Some(Duplicate {
                image: image.clone(),
                anchor_id,
                class,
                first: (first.1, first.2),
                second: (second.1, second.2),
            });
        }
    }

    /// Absorbs the checks of the next part of the dump (in dump order).
    pub fn merge(&mut self, other: IdsAcc) {
        for (k, v) in other.spans {
            match self.spans.get_mut(&k) {
                Some(s) => s.merge(&v),
                None => {
                    self.spans.insert(k, v);
                }
            }
        }
        if self.duplicate.is_none() {
            self.duplicate = other.duplicate;
        }
        let Some(b) = other.edges else { return };
        let Some(a) = self.edges.take() else {
            self.edges = Some(b);
            return;
        };
        self.binary |= other.binary;
        let a_single = a.last.is_none();
        let (a_first, a_last) = match a.last {
            Some(l) => (Some(a.first), l),
            None => (None, a.first),
        };
        let Edges { first: b_first, last: b_last } = b;
        if a_last.image != b_first.image {
            // Different images meet: the edges are a's first and b's last.
            let first = a_first.unwrap_or(a_last);
            let last = Some(b_last.unwrap_or(b_first));
            self.edges = Some(Edges { first, last });
            return;
        }
        // One image continues across the boundary: check and join its keys.
        let joined = self.join(a_last, b_first);
        self.edges = Some(match (a_single, b_last) {
            (true, None) => Edges { first: joined, last: None },
            (true, Some(l)) => Edges { first: joined, last: Some(l) },
            (false, None) => Edges { first: a_first.expect("a has two edges"), last: Some(joined) },
            (false, Some(l)) => Edges { first: a_first.expect("a has two edges"), last: Some(l) },
        });
    }

    /// The union of two sorted key lists of one image, recording the first key in both.
    fn join(&mut self, a: Edge, b: Edge) -> Edge {
        // Usual case: ids keep increasing across the boundary. b's segments follow a's, so an
        // image split over many row groups costs no copy of its keys.
        if let (Some(x), Some(y)) = (a.last(), b.first()) {
            if x.0 < y.0 {
                let mut a = a;
                a.segments.extend(b.segments);
                return a;
            }
        }
        let image = a.image.clone();
        let (a, b) = (a.into_keys(), b.into_keys());
        let mut keys = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        let mut repeat = None;
        while i < a.len() && j < b.len() {
            if a[i].0 == b[j].0 && repeat.is_none() {
                repeat = Some((a[i], b[j]));
            }
            if a[i] <= b[j] {
                keys.push(a[i]);
                i += 1;
            } else {
                keys.push(b[j]);
                j += 1;
            }
        }
        keys.extend_from_slice(&a[i..]);
        keys.extend_from_slice(&b[j..]);
        if let Some((x, y)) = repeat {
            self.found(&image, x, y, self.binary);
        }
        Edge::new(image, Segment::Keys(keys))
    }

    /// The first exact repeat found so far.
    pub fn duplicate(&self) -> Option<&Duplicate> {
        self.duplicate.as_ref()
    }

    /// The first image (in id order) with more rows than its key span holds, if any.
    pub fn overfull(&self) -> Option<(&ImageKey, &Span)> {
        self.spans.iter().find(|(_, s)| u128::from(s.rows) > s.capacity())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scan_is_the_naive_min_max_and_strict_increase() {
        let cases: [&[i64]; 7] = [
            &[],
            &[5],
            &[1, 2, 3, 9],
            &[1, 2, 2, 3],
            &[3, 2, 1],
            &[i64::MIN, 0, i64::MAX],
            &[7, -4, 12, 12, -90, 3],
        ];
        let long: Vec<i64> = (0..1000).map(|i| i * 3 - 700).collect();
        let mut bumped = long.clone();
        bumped[637] = bumped[636];
        for ids in cases.into_iter().chain([&long[..], &bumped[..]]) {
            let min = ids.iter().copied().min().unwrap_or(i64::MAX);
            let max = ids.iter().copied().max().unwrap_or(i64::MIN);
            let increasing = (1..ids.len()).all(|i| ids[i] > ids[i - 1]);
            // `scan` takes the AVX2 copy where the processor has it; the body called here is
            // compiled for the baseline instruction set.
            assert_eq!(scan(ids), (min, max, increasing), "{ids:?}");
            assert_eq!(scan_body(ids), (min, max, increasing), "{ids:?}");
        }
    }

    use super::*;
    use crate::input::{ScoreValues, Targets};

    /// A batch of (image, anchor id) rows of file 0 from row `first_row`.
    fn batch(rows: &[(i64, i64)], first_row: u64) -> Batch {
        let n = rows.len();
        let scores = ScoreValues::from_f32(vec![0.0; n]);
        let mut b = crate::input::test_batch(
            rows.iter().map(|r| r.0),
            Targets::Labels(vec![-1; n]),
            scores,
            first_row,
        );
        b.anchor_id = Some(rows.iter().map(|r| r.1).collect());
        b
    }

    /// Runs the checks over `rows` split into batches at `cuts`, merged in order.
    fn check(rows: &[(i64, i64)], cuts: &[usize]) -> IdsAcc {
        let mut total = IdsAcc::default();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&rows.len())) {
            let mut part = IdsAcc::default();
            part.observe_batch(&batch(&rows[start..end], start as u64));
            total.merge(part);
            start = end;
        }
        total
    }

    /// Brute force: the first repeated (image, anchor) pair in row order, as (first, second) rows.
    fn brute(rows: &[(i64, i64)]) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for j in 0..rows.len() {
            for i in 0..j {
                if rows[i] == rows[j] {
                    best = Some(best.map_or((i as u64, j as u64), |b| b.min((i as u64, j as u64))));
                }
            }
        }
        best
    }

    #[test]
    fn repeats_are_found_within_and_across_batches_exactly_when_they_exist() {
        let mut rng = crate::rng::Rng::new(5, 0);
        for case in 0..300 {
            // Contiguous images of 1..6 rows, ids mostly increasing, sometimes shuffled or repeated.
            let mut rows = Vec::new();
            for img in 0..(1 + rng.below(5) as i64) {
                let n = 1 + rng.below(6) as i64;
                // Consecutive ids (held as runs) or ids with gaps (listed).
                let step = 1 + rng.below(2) as i64;
                let mut ids: Vec<i64> = (0..n).map(|a| a * step).collect();
                if rng.uniform() < 0.3 {
                    ids.reverse();
                }
                if rng.uniform() < 0.2 {
                    let a = rng.below(n as u64) as usize;
                    let b = rng.below(n as u64) as usize;
                    ids[a] = ids[b];
                }
                rows.extend(ids.into_iter().map(|a| (img, a)));
            }
            let mut cuts: Vec<usize> =
                (0..rng.below(4)).map(|_| rng.below(rows.len() as u64 + 1) as usize).collect();
            cuts.sort_unstable();
            let acc = check(&rows, &cuts);
            let want = brute(&rows);
            let got = acc.duplicate().map(|d| (d.first.1, d.second.1));
            assert_eq!(got.is_some(), want.is_some(), "case {case}: {rows:?} cut at {cuts:?}");
            if let (Some(d), Some(_)) = (acc.duplicate(), want) {
                let (a, b) = (d.first.1 as usize, d.second.1 as usize);
                assert!(a < b && rows[a] == rows[b], "case {case}: rows {a} and {b} of {rows:?}");
            }
        }
    }

    #[test]
    fn an_image_over_many_parts_keeps_every_key_for_the_parts_that_follow() {
        // One image over eight parts with increasing even ids (joined as segments), then a
        // part going back down: a repeat of an id from the first part is found with its rows,
        // distinct odd ids are not a repeat.
        let up: Vec<(i64, i64)> = (0..40).map(|a| (1, a * 2)).collect();
        let cuts: Vec<usize> = (1..=8).map(|k| k * 5).collect();
        for (back, want) in
            [(vec![(1, 7), (1, 4), (1, 3)], Some((2, 41))), (vec![(1, 7), (1, 5), (1, 3)], None)]
        {
            let rows: Vec<(i64, i64)> = up.iter().copied().chain(back).collect();
            let acc = check(&rows, &cuts);
            assert_eq!(acc.duplicate().map(|d| (d.first.1, d.second.1)), want, "{rows:?}");
            assert_eq!(brute(&rows), want);
            // However the parts were cut, the accumulators are equal (segments compare by keys).
            assert_eq!(check(&rows, &[]), acc);
            assert_eq!(check(&rows, &[13, 29]), acc);
        }
    }

    #[test]
    fn consecutive_ids_over_many_parts_find_a_repeat_with_its_file_rows() {
        // One image with ids 0..40 over five parts (each part's edge a run of keys), then ids
        // going back down: the repeat of id 30 is found with its two rows; ids above the
        // first part's are not a repeat.
        let up: Vec<(i64, i64)> = (0..40).map(|a| (1, a)).collect();
        for (back, want) in [(vec![(1, 45), (1, 30)], Some((30, 41))), (vec![(1, 41), (1, 40)], None)] {
            let rows: Vec<(i64, i64)> = up.iter().copied().chain(back).collect();
            let acc = check(&rows, &[8, 16, 24, 40]);
            assert_eq!(acc.duplicate().map(|d| (d.first.1, d.second.1)), want, "{rows:?}");
            assert_eq!(brute(&rows), want);
            assert_eq!(check(&rows, &[]), acc);
        }
        // Rows that skip file rows (a row index) are listed, and the repeat names file rows:
        // row r of each part is file row 2 r + 1 of the part's start.
        let rows: Vec<(i64, i64)> = (0..20).map(|a| (1, a)).chain([(1, 5)]).collect();
        let mut total = IdsAcc::default();
        for (start, end) in [(0, 10), (10, 21)] {
            let mut b = batch(&rows[start..end], 0);
            b.row_index = Some((start..end).map(|r| 2 * r as u64 + 1).collect());
            let mut part = IdsAcc::default();
            part.observe_batch(&b);
            total.merge(part);
        }
        assert_eq!(total.duplicate().map(|d| (d.first.1, d.second.1)), Some((11, 41)));
    }

    #[test]
    fn an_image_written_twice_anywhere_overfills_its_span() {
        // Image 1 twice, apart: the exact check cannot see it, the count can.
        let rows = [(1, 0), (1, 1), (1, 2), (2, 0), (1, 0), (1, 1), (1, 2)];
        let acc = check(&rows, &[3, 4]);
        let (image, span) = acc.overfull().expect("overfull");
        assert_eq!(*image, ImageKey::Int(1));
        assert_eq!((span.rows, span.min, span.max), (6, 0, 2));
        // Sparse ids: three rows spread over 0..=4 are not overfull.
        assert!(check(&[(1, 0), (1, 4), (1, 2)], &[]).overfull().is_none());
    }

    #[test]
    fn binary_keys_keep_anchor_and_class_apart() {
        assert_eq!(unkey(key(7, Some(3)), true), (7, Some(3)));
        assert_eq!(unkey(key(-7, Some(65535)), true), (-7, Some(65535)));
        assert_ne!(key(1, Some(0)), key(0, Some(1)));
        assert_eq!(unkey(key(i64::MIN, None), false), (i64::MIN, None));
    }
}
