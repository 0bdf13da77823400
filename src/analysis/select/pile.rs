//! An image's candidates held column by column.
//!
//! Selection scans an image's candidates several times (the split and the sampling strata, the
//! OHEM and SSD rankings, the sampling variance, the overlaps), and an image's candidates do not
//! fit in cache: every scan is a trip to memory. Held as one struct per candidate (over 100
//! bytes, two cache lines), each scan would read every byte of every candidate; held in columns,
//! a ranking reads 8 bytes per candidate (its CE) and the overlaps 17. A [`Pile`] holds the same
//! numbers as the [`Candidate`]s it stands for, with the same bits.

use serde::{Deserialize, Serialize};

use super::{Candidate, CandidateInfo};

/// Candidates in columns, all of the same length (`info` is either empty or of that length).
/// A segment of an image (one batch's rows of it) is in dump order; an image's segments joined
/// by [`Pile::join`] are in dump order too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pile {
    /// File index in the dump.
    pub file: Vec<u32>,
    /// Row within the file.
    pub row: Vec<u64>,
    /// Whether one of its decisions is positive.
    pub positive: Vec<bool>,
    /// Decisions per bucket (easy_negative, hard_negative, easy_positive, hard_positive).
    pub count: Vec<[u16; 4]>,
    /// CE summed over the candidate's decisions (times the binary `weight`): its score.
    pub ce: Vec<f64>,
    /// Focal loss summed over its decisions.
    pub focal: Vec<f64>,
    /// CE per bucket.
    pub loss: Vec<[f64; 4]>,
    /// CE gradient norm per bucket.
    pub grad: Vec<[f64; 4]>,
    /// Box and identifiers, only when NMS or an export needs them (else empty).
    pub info: Vec<CandidateInfo>,
}

impl Pile {
    /// An empty pile with room for `n` candidates (and their info, when `with_info`).
    pub fn with_capacity(n: usize, with_info: bool) -> Pile {
        Pile {
            file: Vec::with_capacity(n),
            row: Vec::with_capacity(n),
            positive: Vec::with_capacity(n),
            count: Vec::with_capacity(n),
            ce: Vec::with_capacity(n),
            focal: Vec::with_capacity(n),
            loss: Vec::with_capacity(n),
            grad: Vec::with_capacity(n),
            info: Vec::with_capacity(if with_info { n } else { 0 }),
        }
    }

    /// Candidates in the pile.
    #[inline]
    pub fn len(&self) -> usize {
        self.ce.len()
    }

    /// Whether the pile has no candidates.
    pub fn is_empty(&self) -> bool {
        self.ce.is_empty()
    }

    /// Adds a candidate given by its columns (`info` is ignored unless the pile keeps infos).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn push_parts(
        &mut self,
        file: u32,
        row: u64,
        positive: bool,
        count: [u16; 4],
        ce: f64,
        focal: f64,
        loss: [f64; 4],
        grad: [f64; 4],
    ) {
        self.file.push(file);
        self.row.push(row);
        self.positive.push(positive);
        self.count.push(count);
        self.ce.push(ce);
        self.focal.push(focal);
        self.loss.push(loss);
        self.grad.push(grad);
    }

    /// The candidates, one struct each (an info that is all defaults stays one: it means the
    /// same as none).
    pub fn candidates(&self) -> Vec<Candidate> {
        (0..self.len())
            .map(|i| Candidate {
                file: self.file[i],
                count: self.count[i],
                positive: self.positive[i],
                row: self.row[i],
                ce: self.ce[i],
                focal: self.focal[i],
                loss: self.loss[i],
                grad: self.grad[i],
                info: self.info.get(i).map(|x| Box::new(x.clone())),
            })
            .collect()
    }

    /// The pile of `cands` (when some carry an info and others do not, the others get the
    /// default info, which means the same as none).
    pub fn from_candidates(cands: &[Candidate]) -> Pile {
        let with_info = cands.iter().any(|c| c.info.is_some());
        let mut p = Pile::with_capacity(cands.len(), with_info);
        for c in cands {
            p.push_parts(c.file, c.row, c.positive, c.count, c.ce, c.focal, c.loss, c.grad);
            if with_info {
                p.info.push(c.info.as_deref().cloned().unwrap_or_default());
            }
        }
        p
    }

    /// Moves `other`'s candidates to the end of this pile.
    pub fn append(&mut self, other: &mut Pile) {
        let (a, b) = (self.len(), other.len());
        match (self.info.is_empty() && a > 0, other.info.is_empty() && b > 0) {
            (false, false) => self.info.append(&mut other.info),
            (true, false) => {
                self.info.resize(a, CandidateInfo::default());
                self.info.append(&mut other.info);
            }
            (false, true) => self.info.resize(a + b, CandidateInfo::default()),
            (true, true) => {}
        }
        self.file.append(&mut other.file);
        self.row.append(&mut other.row);
        self.positive.append(&mut other.positive);
        self.count.append(&mut other.count);
        self.ce.append(&mut other.ce);
        self.focal.append(&mut other.focal);
        self.loss.append(&mut other.loss);
        self.grad.append(&mut other.grad);
    }

    /// Room for `n` more candidates (and their infos, when `with_info`).
    pub fn reserve(&mut self, n: usize, with_info: bool) {
        self.file.reserve(n);
        self.row.reserve(n);
        self.positive.reserve(n);
        self.count.reserve(n);
        self.ce.reserve(n);
        self.focal.reserve(n);
        self.loss.reserve(n);
        self.grad.reserve(n);
        if with_info {
            self.info.reserve(n);
        }
    }

    /// An image's segments as one pile in dump order (moved, not copied, when there is only
    /// one in dump order).
    pub fn join(segments: Vec<Pile>) -> Pile {
        let mut segments = segments.into_iter();
        let mut joined = segments.next().unwrap_or_default();
        let rest: Vec<Pile> = segments.collect();
        if !rest.is_empty() {
            let with_info = rest.iter().any(|s| !s.info.is_empty()) || !joined.info.is_empty();
            joined.reserve(rest.iter().map(Pile::len).sum(), with_info);
            for mut s in rest {
                joined.append(&mut s);
            }
        }
        if joined.in_dump_order() {
            joined
        } else {
            joined.sorted()
        }
    }

    /// Whether the candidates are in dump order (file, then row).
    pub fn in_dump_order(&self) -> bool {
        let pos = || self.file.iter().zip(&self.row);
        pos().zip(pos().skip(1)).all(|(a, b)| a <= b)
    }

    /// The pile in dump order (a stable sort: candidates at the same position keep their
    /// order).
    pub fn sorted(&self) -> Pile {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| (self.file[i], self.row[i]));
        fn gather<T: Clone>(v: &[T], order: &[usize]) -> Vec<T> {
            if v.is_empty() {
                return Vec::new();
            }
            order.iter().map(|&i| v[i].clone()).collect()
        }
        Pile {
            file: gather(&self.file, &order),
            row: gather(&self.row, &order),
            positive: gather(&self.positive, &order),
            count: gather(&self.count, &order),
            ce: gather(&self.ce, &order),
            focal: gather(&self.focal, &order),
            loss: gather(&self.loss, &order),
            grad: gather(&self.grad, &order),
            info: gather(&self.info, &order),
        }
    }

    /// The earliest dump position (file, row) of a candidate.
    pub fn first_position(&self) -> Option<(u32, u64)> {
        self.file.iter().copied().zip(self.row.iter().copied()).min()
    }

    /// Decisions in candidate `i`.
    #[inline]
    pub fn decisions(&self, i: usize) -> u64 {
        self.count[i].iter().map(|&c| u64::from(c)).sum()
    }

    /// The info of candidate `i`, if the pile keeps infos.
    #[inline]
    pub fn info(&self, i: usize) -> Option<&CandidateInfo> {
        self.info.get(i)
    }

    /// The box of candidate `i` (all zeros when the dump has none).
    pub fn bbox(&self, i: usize) -> [f32; 4] {
        self.info(i).and_then(|x| x.bbox).unwrap_or([0.0; 4])
    }

    /// Whether the candidates carry box losses (all of them do, or none: the column is the
    /// dump's; the first one says).
    pub fn has_box_loss(&self) -> bool {
        self.info.first().is_some_and(|x| x.box_loss.is_some())
    }

    /// The box-regression loss of candidate `i` (0 when the dump has none).
    #[inline]
    pub fn box_loss(&self, i: usize) -> f64 {
        self.info(i).and_then(|x| x.box_loss).unwrap_or(0.0)
    }
}

/// A complete image's candidates: its segments in dump order, seen as one sequence (index `i`
/// is the `i`-th candidate of the image) without copying them into one pile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piles {
    segments: Vec<Pile>,
    /// Index of each segment's first candidate, then the number of candidates.
    starts: Vec<usize>,
}

impl Piles {
    /// The image made of `segments` (its parts in the order they were merged): in dump order
    /// as they are, which is the usual case; joined and sorted otherwise.
    pub fn new(segments: Vec<Pile>) -> Piles {
        let mut segments: Vec<Pile> = segments.into_iter().filter(|s| !s.is_empty()).collect();
        let last = |s: &Pile| (s.file[s.len() - 1], s.row[s.len() - 1]);
        let first = |s: &Pile| (s.file[0], s.row[0]);
        let ordered = segments.iter().all(Pile::in_dump_order)
            && segments.windows(2).all(|w| last(&w[0]) <= first(&w[1]));
        if !ordered {
            segments = vec![Pile::join(segments)];
        }
        let mut starts = Vec::with_capacity(segments.len() + 1);
        let mut n = 0;
        for s in &segments {
            starts.push(n);
            n += s.len();
        }
        starts.push(n);
        Piles { segments, starts }
    }

    /// Candidates in the image.
    #[inline]
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the image has no candidates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments, in dump order, with the index of their first candidate.
    pub fn segments(&self) -> impl Iterator<Item = (usize, &Pile)> {
        self.starts.iter().copied().zip(&self.segments)
    }

    /// The segment holding candidate `i`, and its index there.
    #[inline]
    pub fn at(&self, i: usize) -> (&Pile, usize) {
        let s = match self.segments.len() {
            1 => 0,
            _ => self.starts.partition_point(|&start| start <= i).saturating_sub(1),
        };
        (&self.segments[s], i - self.starts[s])
    }

    /// `(i, value(segment, j))` for every candidate `i` (the `j`-th of its segment), in dump
    /// order; only the positives or only the negatives when `positive` says so.
    pub fn values(
        &self,
        value: fn(&Pile, usize) -> f64,
        positive: Option<bool>,
    ) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.segments().flat_map(move |(start, seg)| {
            (0..seg.len())
                .filter(move |&j| positive.is_none_or(|p| seg.positive[j] == p))
                .map(move |j| (start + j, value(seg, j)))
        })
    }

    /// Whether the candidates carry box losses (all of them do, or none: the column is the
    /// dump's; the first one says).
    pub fn has_box_loss(&self) -> bool {
        self.segments.first().is_some_and(Pile::has_box_loss)
    }

    /// The dump position (file, row) of the first candidate.
    pub fn first_position(&self) -> Option<(u32, u64)> {
        self.segments.first().map(|s| (s.file[0], s.row[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(file: u32, row: u64, with_info: bool) -> Candidate {
        Candidate {
            file,
            count: [2, 1, 0, 1],
            positive: row % 2 == 0,
            row,
            ce: 0.5 + row as f64,
            focal: 0.125 * row as f64,
            loss: [0.1, 0.2, 0.0, row as f64],
            grad: [0.3, 0.0, 0.0, 0.7],
            info: with_info.then(|| {
                Box::new(CandidateInfo {
                    bbox: Some([1.0, 2.0, 3.0, 4.0 + row as f32]),
                    anchor_id: Some(row as i64),
                    level: None,
                    label: 3,
                    class: None,
                    box_loss: Some(0.25),
                })
            }),
        }
    }

    #[test]
    fn candidates_round_trip_through_a_pile() {
        let cands: Vec<Candidate> = (0..5).map(|r| cand(1, r, true)).collect();
        let pile = Pile::from_candidates(&cands);
        assert_eq!(pile.len(), 5);
        assert_eq!(pile.candidates(), cands);
        assert_eq!(pile.decisions(0), 4);
        assert_eq!(pile.bbox(2), [1.0, 2.0, 3.0, 6.0]);
        assert_eq!(pile.box_loss(3), 0.25);
        let plain: Vec<Candidate> = (0..3).map(|r| cand(0, r, false)).collect();
        let pile = Pile::from_candidates(&plain);
        assert!(pile.info.is_empty());
        assert_eq!(pile.candidates(), plain);
        assert_eq!(pile.bbox(1), [0.0; 4]);
        assert_eq!(pile.box_loss(1), 0.0);
    }

    #[test]
    fn segments_join_in_dump_order_whatever_their_order_and_infos() {
        let a = Pile::from_candidates(&[cand(0, 4, false), cand(0, 5, false)]);
        let b = Pile::from_candidates(&[cand(0, 1, true), cand(0, 2, true)]);
        let joined = Pile::join(vec![a.clone(), b.clone()]);
        assert_eq!(joined.row, vec![1, 2, 4, 5]);
        assert!(joined.in_dump_order());
        // Candidates without an info get the default one, which reads as none.
        assert_eq!(joined.info.len(), 4);
        assert_eq!(joined.bbox(3), [0.0; 4]);
        assert_eq!(joined.info(0).and_then(|x| x.anchor_id), Some(1));
        let want: Vec<Candidate> =
            [cand(0, 1, true), cand(0, 2, true), cand(0, 4, false), cand(0, 5, false)].into();
        for (got, want) in joined.candidates().iter().zip(&want) {
            assert_eq!(
                (got.file, got.row, got.ce, got.loss, got.grad),
                (want.file, want.row, want.ce, want.loss, want.grad)
            );
        }
        assert_eq!(Pile::join(vec![b.clone()]), b);
        // Files order before rows.
        let c = Pile::from_candidates(&[cand(1, 0, false)]);
        let joined = Pile::join(vec![c, a]);
        assert_eq!(joined.file, vec![0, 0, 1]);
        assert_eq!(joined.first_position(), Some((0, 4)));
        assert_eq!(Pile::join(Vec::new()).len(), 0);
    }

    fn segment(rows: &[u64]) -> Pile {
        let mut p = Pile::with_capacity(rows.len(), false);
        for &r in rows {
            p.push_parts(0, r, r % 3 == 0, [1, 0, 0, 0], r as f64, 0.0, [0.0; 4], [0.0; 4]);
        }
        p
    }

    #[test]
    fn segments_in_dump_order_are_seen_as_one_sequence() {
        let piles = Piles::new(vec![segment(&[0, 1, 2]), Pile::default(), segment(&[5, 6])]);
        assert_eq!(piles.len(), 5);
        let rows: Vec<u64> = (0..5).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 2, 5, 6]);
        let all: Vec<(usize, f64)> = piles.values(|s, j| s.ce[j], None).collect();
        assert_eq!(all, vec![(0, 0.0), (1, 1.0), (2, 2.0), (3, 5.0), (4, 6.0)]);
        let pos: Vec<usize> = piles.values(|s, j| s.ce[j], Some(true)).map(|(i, _)| i).collect();
        assert_eq!(pos, vec![0, 4]);
        let neg: Vec<usize> = piles.values(|s, j| s.ce[j], Some(false)).map(|(i, _)| i).collect();
        assert_eq!(neg, vec![1, 2, 3]);
        assert_eq!(piles.first_position(), Some((0, 0)));
        assert!(Piles::new(Vec::new()).is_empty());
    }

    #[test]
    fn segments_out_of_order_are_joined_and_sorted() {
        let piles = Piles::new(vec![segment(&[5, 6]), segment(&[0, 1])]);
        assert_eq!(piles.segments().count(), 1);
        let rows: Vec<u64> = (0..4).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 5, 6]);
        // Overlapping segments too.
        let piles = Piles::new(vec![segment(&[0, 3]), segment(&[1, 4])]);
        let rows: Vec<u64> = (0..4).map(|i| piles.at(i)).map(|(s, j)| s.row[j]).collect();
        assert_eq!(rows, vec![0, 1, 3, 4]);
    }
}
