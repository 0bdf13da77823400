//! Copies of a few rows of a [`Batch`], and the concatenation of such copies.
//!
//! The pass sums in f64 within fixed blocks of rows and exactly across them (see
//! [`crate::analysis::edges`]); a block that a row group boundary cuts in two is put together
//! from the two pieces, which are small (at most one block each).

use std::collections::BTreeMap;
use std::ops::Range;

use super::{Batch, ImageRun, ScoreValues, Targets};

impl ScoreValues {
    /// float64 scores from a vector.
    pub fn from_f64(v: Vec<f64>) -> ScoreValues {
        ScoreValues::F64(arrow_buffer::ScalarBuffer::from(v))
    }

    /// The number of score values.
    pub fn len(&self) -> usize {
        match (self.f32s(), self.f64s()) {
            (Some(v), _) => v.len(),
            (_, Some(v)) => v.len(),
            _ => 0,
        }
    }

    /// Whether there are no score values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Batch {
    /// Scores per row.
    pub fn width(&self) -> usize {
        self.scores.len().checked_div(self.rows).unwrap_or(0)
    }

    /// A copy of the rows `range` (within the batch), spanning the file rows `span`, with every
    /// column. Skipped-row counts stay with the original batch.
    pub fn slice(&self, range: Range<usize>, span: Range<u64>) -> Batch {
        let w = self.width();
        let r = range.clone();
        let images = self
            .images
            .iter()
            .filter(|run| run.end > r.start && run.start < r.end)
            .map(|run| ImageRun {
                key: run.key.clone(),
                start: run.start.max(r.start) - r.start,
                end: run.end.min(r.end) - r.start,
            })
            .collect();
        let scores = match (self.scores.f32s(), self.scores.f64s()) {
            (Some(v), _) => ScoreValues::from_f32(v[r.start * w..r.end * w].to_vec()),
            (_, Some(v)) => ScoreValues::from_f64(v[r.start * w..r.end * w].to_vec()),
            _ => unreachable!("scores are float32 or float64"),
        };
        fn part<T: Clone>(v: &Option<Vec<T>>, r: &Range<usize>) -> Option<Vec<T>> {
            v.as_ref().map(|v| v[r.clone()].to_vec())
        }
        Batch {
            file: self.file,
            first_row: span.start,
            end_row: span.end,
            file_rows: self.file_rows,
            rows: r.len(),
            row_index: Some(r.clone().map(|i| self.file_row(i)).collect()),
            skipped: BTreeMap::new(),
            images,
            targets: match &self.targets {
                Targets::Labels(l) => Targets::Labels(l[r.clone()].to_vec()),
                Targets::Binary(t) => Targets::Binary(t[r.clone()].to_vec()),
            },
            scores,
            class: part(&self.class, &r),
            weight: part(&self.weight, &r),
            anchor_id: part(&self.anchor_id, &r),
            level: part(&self.level, &r),
            iou: part(&self.iou, &r),
            boxes: part(&self.boxes, &r),
            box_loss: part(&self.box_loss, &r),
        }
    }

    /// The rows of `parts`, in order, as one batch. The parts must come from one file, with
    /// adjacent spans in file order, and have the same columns.
    pub fn concat(parts: &[Batch]) -> Batch {
        let first = &parts[0];
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        let mut images: Vec<ImageRun> = Vec::new();
        let mut at = 0;
        for p in parts {
            for run in &p.images {
                let (start, end) = (run.start + at, run.end + at);
                match images.last_mut() {
                    Some(last) if last.key == run.key && last.end == start => last.end = end,
                    _ => images.push(ImageRun { key: run.key.clone(), start, end }),
                }
            }
            at += p.rows;
        }
        fn join<T: Clone>(parts: &[Batch], get: impl Fn(&Batch) -> Option<&Vec<T>>) -> Option<Vec<T>> {
            get(&parts[0])?;
            Some(
                parts
                    .iter()
                    .flat_map(|p| get(p).expect("parts have the same columns").iter().cloned())
                    .collect(),
            )
        }
        let scores = if first.scores.f32s().is_some() {
            ScoreValues::from_f32(
                parts.iter().flat_map(|p| p.scores.f32s().unwrap_or(&[]).iter().copied()).collect(),
            )
        } else {
            ScoreValues::from_f64(
                parts.iter().flat_map(|p| p.scores.f64s().unwrap_or(&[]).iter().copied()).collect(),
            )
        };
        let labels = join(parts, |p| match &p.targets {
            Targets::Labels(l) => Some(l),
            Targets::Binary(_) => None,
        });
        let targets = match labels {
            Some(l) => Targets::Labels(l),
            None => Targets::Binary(
                join(parts, |p| match &p.targets {
                    Targets::Binary(t) => Some(t),
                    Targets::Labels(_) => None,
                })
                .unwrap_or_default(),
            ),
        };
        Batch {
            file: first.file,
            first_row: first.first_row,
            end_row: parts.last().map_or(first.end_row, |p| p.end_row),
            file_rows: first.file_rows,
            rows,
            row_index: Some(parts.iter().flat_map(|p| (0..p.rows).map(move |i| p.file_row(i))).collect()),
            skipped: BTreeMap::new(),
            images,
            targets,
            scores,
            class: join(parts, |p| p.class.as_ref()),
            weight: join(parts, |p| p.weight.as_ref()),
            anchor_id: join(parts, |p| p.anchor_id.as_ref()),
            level: join(parts, |p| p.level.as_ref()),
            iou: join(parts, |p| p.iou.as_ref()),
            boxes: join(parts, |p| p.boxes.as_ref()),
            box_loss: join(parts, |p| p.box_loss.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::test_batch;

    #[test]
    fn slices_concatenate_back_to_the_batch() {
        let ids = [1, 1, 2, 2, 2, 3];
        let scores: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let b =
            test_batch(ids, Targets::Labels(vec![-1, 0, 1, -2, -1, 0]), ScoreValues::from_f32(scores), 10);
        let (a, c) = (b.slice(0..3, 10..13), b.slice(3..6, 13..16));
        assert_eq!(a.images.len(), 2);
        assert_eq!(c.images[0].key, b.images[1].key);
        let j = Batch::concat(&[a, c]);
        assert_eq!(j.images, b.images);
        assert_eq!(j.targets, b.targets);
        assert_eq!(j.scores.f32s(), b.scores.f32s());
        assert_eq!((j.first_row, j.end_row, j.rows), (10, 16, 6));
        assert_eq!((0..6).map(|i| j.file_row(i)).collect::<Vec<_>>(), (10..16).collect::<Vec<_>>());
    }
}
