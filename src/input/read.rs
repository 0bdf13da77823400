//! Decoding one row group into validated [`Batch`]es.
//!
//! Every value is checked here, before any loss is computed: nulls, ragged or empty score lists,
//! non-finite or implausible logits, probabilities outside [0, 1], labels outside the valid set,
//! targets outside [0, 1], and the optional columns. A problem with the file's structure (a
//! column of the wrong type, an unreadable page) always stops the run. A problem with a row's
//! values stops it too under the default policy ([`OnInvalid::Error`]), with the file, column and
//! row; under [`OnInvalid::Skip`] the row is dropped and counted by reason instead.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, GenericListArray, OffsetSizeTrait, RecordBatch, RecordBatchOptions,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, FieldRef, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;

use super::leaf::ScoreLeaf;
use super::schema::{ColumnType, Resolved, Source};
use super::{
    batch_rows, decode_group, next_batch, open_group, Batch, Dump, DumpFile, HiveValue, ImageKey, ImageRun,
    ScoreValues, Targets, Unit, MAX_ABS_LOGIT,
};
use crate::config::{Activation, Layout, OnInvalid, ScoreKind};
use crate::error::InputError;

/// Reads the first row of a variable-length score list to learn the class count.
pub(super) fn first_list_width(file: &DumpFile, unit: Unit) -> Result<usize, InputError> {
    let Source::Column(name) = &file.columns.scores.source else { return Ok(1) };
    let mut width = None;
    decode_group(file, unit, std::slice::from_ref(name), 1, Some(1), &mut |b| {
        if width.is_none() {
            let arr = column_array(&b, name, file)?;
            let o: Option<(usize, usize)> = match arr.data_type() {
                DataType::List(_) => {
                    arr.as_list::<i32>().value_offsets().get(..2).map(|o| (o[0] as usize, o[1] as usize))
                }
                DataType::LargeList(_) => {
                    arr.as_list::<i64>().value_offsets().get(..2).map(|o| (o[0] as usize, o[1] as usize))
                }
                _ => Some((0, 0)),
            };
            width = o.map(|(a, b)| b.saturating_sub(a));
        }
        Ok::<(), InputError>(())
    })?;
    width.ok_or_else(|| InputError::Parquet {
        path: file.input.path.clone(),
        detail: format!("column '{name}' decoded no rows where the footer announces {}", unit.rows),
    })
}

/// One per-value check of the input, as a row of the table [`RULES`]: the reason code a row that
/// fails it is counted under with `--on-invalid skip` (the key of `dataset.skipped`), the column
/// it applies to, what a valid value is, and the fix printed with the error under the default
/// strict policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Reason code.
    pub reason: &'static str,
    /// The column (by role: `image_id`, `label`/`target`, `logits`/`probs`/`logit`/`prob`,
    /// `class`, `weight`, `iou`, a box corner, or any).
    pub column: &'static str,
    /// What a valid value is.
    pub requires: &'static str,
    /// How to fix the dump (a few rules add specifics to it).
    pub fix: &'static str,
}

/// A null where a value is needed (any column read, or an entry of a score list).
pub const NULL: Rule = Rule {
    reason: "null",
    column: "any",
    requires: "a value in every row",
    fix: "write a value in every row (drop or fill incomplete rows when dumping)",
};
/// A dense score list with no entries.
pub const EMPTY_LIST: Rule = Rule {
    reason: "empty_list",
    column: "scores",
    requires: "C scores per row",
    fix: "write exactly one score per class in every row",
};
/// A dense score list whose length differs from the first row's.
pub const RAGGED_LIST: Rule = Rule {
    reason: "ragged_list",
    column: "scores",
    requires: "C scores per row",
    fix: "write exactly one score per class in every row",
};
/// A NaN or infinite logit.
pub const NON_FINITE_LOGIT: Rule = Rule {
    reason: "non_finite_logit",
    column: "scores",
    requires: "finite logits",
    fix: "hardmine needs finite logits: look for diverged training or fp16 overflow in the dumping code",
};
/// A logit beyond [`super::MAX_ABS_LOGIT`].
pub const LOGIT_TOO_LARGE: Rule = Rule {
    reason: "logit_too_large",
    column: "scores",
    requires: "|logit| <= 1e6",
    fix: "check that the column holds logits (not e.g. box coordinates); real detectors stay within a few hundred",
};
/// A probability outside [0, 1].
pub const PROBABILITY_OUT_OF_RANGE: Rule = Rule {
    reason: "probability_out_of_range",
    column: "scores",
    requires: "probabilities in [0, 1]",
    fix: "dump probabilities after the sigmoid/softmax, or dump the logits instead (preferred)",
};
/// A row of softmax probabilities that does not sum to 1 (within 1e-3).
pub const SOFTMAX_SUM: Rule = Rule {
    reason: "softmax_sum",
    column: "scores",
    requires: "softmax probabilities summing to 1",
    fix: "dump the softmax output over all K classes (including background), or the logits",
};
/// A dense label outside the valid set (sigmoid: -2..C-1; softmax: -2 and 0..K-1).
pub const LABEL_OUT_OF_RANGE: Rule = Rule {
    reason: "label_out_of_range",
    column: "label",
    requires: "sigmoid: 0..C-1, -1 (background), -2 (ignored); softmax: 0..K-1 or -2",
    fix: "write labels in hardmine's convention (docs/dump-format.md)",
};
/// A binary target outside [0, 1] (or an integer target other than 0 and 1).
pub const TARGET_OUT_OF_RANGE: Rule = Rule {
    reason: "target_out_of_range",
    column: "target",
    requires: "targets in [0, 1] (integers: 0 or 1)",
    fix: "write 0/1 targets, or soft targets (IoU quality) in [0, 1]",
};
/// A binary `class` that is negative or above 65535.
pub const CLASS_OUT_OF_RANGE: Rule = Rule {
    reason: "class_out_of_range",
    column: "class",
    requires: "class indices 0..65535",
    fix: "write class indices 0..C-1",
};
/// A binary `weight` that is negative, non-finite or above 1e6.
pub const WEIGHT_INVALID: Rule = Rule {
    reason: "weight_invalid",
    column: "weight",
    requires: "finite weights in [0, 1e6]",
    fix: "write loss weights >= 0",
};
/// An `iou` outside [0, 1].
pub const IOU_OUT_OF_RANGE: Rule = Rule {
    reason: "iou_out_of_range",
    column: "iou",
    requires: "IoU in [0, 1]",
    fix: "write the max IoU of each anchor with any ground-truth box",
};
/// A `box_loss` that is negative, non-finite or above 1e6.
pub const BOX_LOSS_INVALID: Rule = Rule {
    reason: "box_loss_invalid",
    column: "box_loss",
    requires: "finite box losses in [0, 1e6]",
    fix: "write each anchor's box-regression loss (0 for anchors without a box target)",
};
/// A NaN or infinite box coordinate.
pub const BOX_NON_FINITE: Rule = Rule {
    reason: "box_non_finite",
    column: "x1, y1, x2, y2",
    requires: "finite box corners",
    fix: "write finite box corners",
};

/// Every per-value check, in the order of docs/dump-format.md.
pub const RULES: [Rule; 14] = [
    NULL,
    EMPTY_LIST,
    RAGGED_LIST,
    NON_FINITE_LOGIT,
    LOGIT_TOO_LARGE,
    PROBABILITY_OUT_OF_RANGE,
    SOFTMAX_SUM,
    LABEL_OUT_OF_RANGE,
    TARGET_OUT_OF_RANGE,
    CLASS_OUT_OF_RANGE,
    WEIGHT_INVALID,
    IOU_OUT_OF_RANGE,
    BOX_LOSS_INVALID,
    BOX_NON_FINITE,
];

/// Where we are, the policy, and the invalid rows found so far.
struct Ctx<'a> {
    file: &'a DumpFile,
    /// The file row of the batch's first row.
    first_row: u64,
    skip: bool,
    /// Invalid rows (skip policy): local row and reason.
    bad: RefCell<Vec<(usize, &'static str)>>,
    /// The error of the earliest invalid row (strict policy).
    first: RefCell<Option<(usize, InputError)>>,
}

impl Ctx<'_> {
    fn err(
        &self,
        col: &Resolved,
        local_row: usize,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> InputError {
        InputError::Value {
            path: self.file.input.path.clone(),
            column: col.name.clone(),
            row: self.first_row + local_row as u64,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A row that fails `rule`: the error under the strict policy (with the rule's fix), a
    /// recorded skip otherwise.
    fn invalid(
        &self,
        col: &Resolved,
        row: usize,
        rule: &Rule,
        problem: impl FnOnce() -> String,
    ) -> Result<(), InputError> {
        self.invalid_fix(col, row, rule, problem, rule.fix)
    }

    /// [`Ctx::invalid`] with a fix more specific than the rule's.
    fn invalid_fix(
        &self,
        col: &Resolved,
        row: usize,
        rule: &Rule,
        problem: impl FnOnce() -> String,
        fix: &str,
    ) -> Result<(), InputError> {
        if self.skip {
            self.bad.borrow_mut().push((row, rule.reason));
        } else {
            // Strict: keep the earliest row's error, so that the message names the first bad
            // row of the row group whichever column is checked first.
            let mut first = self.first.borrow_mut();
            if first.as_ref().is_none_or(|(r, _)| row < *r) {
                let e =
                    self.err(col, row, problem(), format!("{fix}; or skip such rows with --on-invalid skip"));
                *first = Some((row, e));
            }
        }
        Ok(())
    }

    /// Every null row of a column.
    fn check_nulls(&self, col: &Resolved, arr: &dyn Array) -> Result<(), InputError> {
        if arr.null_count() == 0 {
            return Ok(());
        }
        if let Some(v) = arr.nulls() {
            for (row, valid) in v.iter().enumerate() {
                if !valid {
                    self.invalid(col, row, &NULL, || "null value".into())?;
                }
            }
        }
        Ok(())
    }
}

fn column_array(batch: &RecordBatch, name: &str, file: &DumpFile) -> Result<ArrayRef, InputError> {
    batch.column_by_name(name).cloned().ok_or_else(|| InputError::Parquet {
        path: file.input.path.clone(),
        detail: format!("column '{name}' decoded no data"),
    })
}

/// Bytes per score value of the file's score column (8 when in doubt).
fn score_bytes(file: &DumpFile) -> usize {
    let Source::Column(name) = &file.columns.scores.source else { return 8 };
    let Ok(field) = file.arrow_schema().field_with_name(name) else { return 8 };
    match field.data_type() {
        DataType::Float32 => 4,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if f.data_type() == &DataType::Float32 =>
        {
            4
        }
        _ => 8,
    }
}

/// Decodes one row group in batches and validates each, handing them to `f` in row order.
pub(super) fn read_unit<E: From<InputError>>(
    dump: &Dump,
    file: &DumpFile,
    unit: Unit,
    f: &mut dyn FnMut(Batch) -> Result<(), E>,
) -> Result<(), E> {
    let cols = &file.columns;
    let shape = dump.shape();
    let mut wanted: Vec<&Resolved> = vec![&cols.image_id, &cols.label, &cols.scores];
    if shape.layout == Layout::Binary {
        wanted.extend(cols.class.iter());
        wanted.extend(cols.weight.iter());
    }
    let extras = dump.extras();
    // Always read when present: duplicate (image_id, anchor_id) rows are checked.
    wanted.extend(cols.anchor_id.iter());
    if extras.groups || extras.level {
        wanted.extend(cols.level.iter());
    }
    if extras.groups {
        wanted.extend(cols.iou.iter());
    }
    if extras.boxes {
        wanted.extend(cols.boxes.iter().flatten());
    }
    if extras.box_loss {
        wanted.extend(cols.box_loss.iter());
    }
    let mut physical: Vec<String> = Vec::new();
    for r in &wanted {
        if let Source::Column(n) = &r.source {
            if !physical.contains(n) {
                physical.push(n.clone());
            }
        }
    }
    let mut first_row = unit.offset;
    let size = batch_rows(dump.width(), score_bytes(file));
    // A dense dump's scores come from their leaf column while every row is regular, then (from
    // the first batch that is not) through arrow-rs, as the other columns (see `leaf.rs`).
    let mut scores = match shape.layout {
        Layout::Dense => ScoreLeaf::open(file, unit, dump.width())?.map(|l| Scores::Leaf(Box::new(l))),
        Layout::Binary => None,
    };
    let scores_name = match (&scores, &cols.scores.source) {
        (Some(_), Source::Column(n)) => n.as_str(),
        _ => "",
    };
    let others: Vec<String> = physical.iter().filter(|n| *n != scores_name).cloned().collect();
    if others.is_empty() {
        // The other columns set the batches; without any (no dump the schema checks accept
        // lacks them all), arrow-rs reads the scores alone.
        scores = None;
    }
    let read_cols = if scores.is_some() { &others } else { &physical };
    decode_group(file, unit, read_cols, size, None, &mut |rb| {
        let rows = rb.num_rows();
        if first_row + rows as u64 > unit.offset + unit.rows as u64 {
            return Err(E::from(decoded_too_many(file, &physical, unit)));
        }
        let done = (first_row - unit.offset) as usize;
        let (rb, values) = match scores.as_mut() {
            None => (rb, None),
            Some(s) => s.next(file, unit, scores_name, size, done, rb)?,
        };
        let batch = validate(dump, file, unit.file, first_row, &rb, values)?;
        first_row += rows as u64;
        f(batch)
    })?;
    let decoded = first_row - unit.offset;
    if decoded != unit.rows as u64 {
        let n = physical.first().map_or("", String::as_str);
        return Err(E::from(InputError::Parquet {
            path: file.input.path.clone(),
            detail: format!("column '{n}' decoded {decoded} rows, the row group has {}", unit.rows),
        }));
    }
    if let Some(Scores::Leaf(leaf)) = scores {
        (*leaf).finish(unit.rows)?;
    }
    Ok(())
}

/// Where a dense row group's scores come from, when not from the batch of the other columns.
enum Scores {
    /// The leaf column, while every row is regular.
    Leaf(Box<ScoreLeaf>),
    /// arrow-rs, from the first batch with an irregular row on.
    Arrow(ParquetRecordBatchReader),
}

impl Scores {
    /// The scores of the batch `rb` (whose first row is the row group's row `done`): its values
    /// from the leaf column, or `rb` with the scores column `name` added from arrow-rs.
    fn next(
        &mut self,
        file: &DumpFile,
        unit: Unit,
        name: &str,
        size: usize,
        done: usize,
        rb: RecordBatch,
    ) -> Result<(RecordBatch, Option<ScoreValues>), InputError> {
        let rows = rb.num_rows();
        if let Scores::Leaf(leaf) = self {
            if let Some(values) = leaf.read(rows)? {
                return Ok((rb, Some(values)));
            }
            *self = Scores::Arrow(open_group(file, unit, &[name.to_string()], size, done, None)?);
        }
        let Scores::Arrow(reader) = self else { unreachable!("the leaf reader was replaced above") };
        let extra = next_batch(file, reader)?;
        let got = extra.as_ref().map_or(0, RecordBatch::num_rows);
        let Some(extra) = extra.filter(|_| got == rows) else {
            return Err(InputError::Parquet {
                path: file.input.path.clone(),
                detail: format!(
                    "column '{name}' decoded {got} rows from row {} of row group {} where the other columns have {rows}",
                    unit.offset + done as u64,
                    unit.row_group
                ),
            });
        };
        let arr = column_array(&extra, name, file)?;
        let mut fields: Vec<FieldRef> = rb.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(name, arr.data_type().clone(), true)));
        let mut columns = rb.columns().to_vec();
        columns.push(arr);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let rb = RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
            .map_err(|e| InputError::Parquet { path: file.input.path.clone(), detail: e.to_string() })?;
        Ok((rb, None))
    }
}

fn decoded_too_many(file: &DumpFile, physical: &[String], unit: Unit) -> InputError {
    let n = physical.first().map_or("", String::as_str);
    InputError::Parquet {
        path: file.input.path.clone(),
        detail: format!("column '{n}' decoded more rows than the row group's {}", unit.rows),
    }
}

/// Validates one decoded batch whose first row is file row `first_row`.
fn validate(
    dump: &Dump,
    file: &DumpFile,
    file_index: usize,
    first_row: u64,
    rb: &RecordBatch,
    leaf_scores: Option<ScoreValues>,
) -> Result<Batch, InputError> {
    let cols = &file.columns;
    let shape = dump.shape();
    let extras = dump.extras();
    let ctx = Ctx {
        file,
        first_row,
        skip: dump.on_invalid() == OnInvalid::Skip,
        bad: RefCell::new(Vec::new()),
        first: RefCell::new(None),
    };
    let rows = rb.num_rows();
    let get = |r: &Resolved| -> Result<Option<ArrayRef>, InputError> {
        match &r.source {
            Source::Column(n) => {
                let arr = column_array(rb, n, file)?;
                ctx.check_nulls(r, arr.as_ref())?;
                Ok(Some(arr))
            }
            Source::Hive(_) => Ok(None),
        }
    };

    let images = match get(&cols.image_id)? {
        Some(arr) => image_runs(&ctx, &cols.image_id, arr.as_ref())?,
        None => {
            let key = match &cols.image_id.source {
                Source::Hive(HiveValue::Int(i)) => ImageKey::Int(*i),
                Source::Hive(HiveValue::Str(s)) => ImageKey::Str(s.as_str().into()),
                Source::Column(_) => unreachable!("column sources are read above"),
            };
            vec![ImageRun { key, start: 0, end: rows }]
        }
    };

    let width = dump.width();
    let scores = match leaf_scores {
        // Read from the leaf column: every row holds `width` present scores.
        Some(values) => values,
        None => {
            let arr = get(&cols.scores)?.ok_or_else(|| {
                let fix = "store the scores as a column";
                ctx.err(&cols.scores, 0, "scores cannot come from a hive partition", fix)
            })?;
            match shape.layout {
                Layout::Dense => list_values(&ctx, &cols.scores, arr.as_ref(), width)?,
                Layout::Binary => {
                    float_values(arr.as_ref()).ok_or_else(|| not_float(&ctx, &cols.scores, arr.as_ref()))?
                }
            }
        }
    };
    check_scores(&ctx, &cols.scores, &scores, shape.scores, width)?;

    let targets = match shape.layout {
        Layout::Dense => {
            let arr = get(&cols.label)?;
            let labels = match arr.as_deref().and_then(|a| valid_int32_labels(a, dump, width)) {
                Some(labels) => labels,
                None => {
                    let labels = int_column(&ctx, &cols.label, arr, rows)?;
                    check_labels(&ctx, &cols.label, &labels, dump, width)?
                }
            };
            if shape.activation == Activation::Softmax && shape.scores == ScoreKind::Probs {
                check_softmax_sums(&ctx, &cols.scores, &scores, width)?;
            }
            Targets::Labels(labels)
        }
        Layout::Binary => Targets::Binary(binary_targets(&ctx, &cols.label, get(&cols.label)?, rows)?),
    };

    let class = match &cols.class {
        Some(r) if shape.layout == Layout::Binary => {
            let v = int_column(&ctx, r, get(r)?, rows)?;
            for (i, &c) in v.iter().enumerate() {
                if c < 0 || c > i64::from(u16::MAX) {
                    ctx.invalid(r, i, &CLASS_OUT_OF_RANGE, || format!("class {c} is negative or too large"))?;
                }
            }
            Some(v.into_iter().map(|c| c.clamp(0, i64::from(u16::MAX)) as i32).collect())
        }
        _ => None,
    };
    // A column of finite numbers in [0, 1e6] (weights, box losses), checked against `rule`.
    let amounts =
        |r: &Option<Resolved>, on: bool, rule: &Rule, what: &str| -> Result<Option<Vec<f64>>, InputError> {
            let Some(r) = r.as_ref().filter(|_| on) else { return Ok(None) };
            let v = number_column(&ctx, r, get(r)?, rows)?;
            for (i, &x) in v.iter().enumerate() {
                if !(x.is_finite() && (0.0..=MAX_ABS_LOGIT).contains(&x)) {
                    ctx.invalid(r, i, rule, || format!("{what} {x} is not a finite number in [0, 1e6]"))?;
                }
            }
            Ok(Some(v))
        };
    let weight = amounts(&cols.weight, shape.layout == Layout::Binary, &WEIGHT_INVALID, "weight")?;

    let ints = |r: &Option<Resolved>, on: bool| -> Result<Option<Vec<i64>>, InputError> {
        match r {
            Some(r) if on => Ok(Some(int_column(&ctx, r, get(r)?, rows)?)),
            _ => Ok(None),
        }
    };
    let anchor_id = ints(&cols.anchor_id, true)?;
    let level = ints(&cols.level, extras.groups || extras.level)?;
    let iou = match &cols.iou {
        Some(r) if extras.groups => {
            let v = number_column(&ctx, r, get(r)?, rows)?;
            for (i, &x) in v.iter().enumerate() {
                if !(0.0..=1.0).contains(&x) {
                    ctx.invalid(r, i, &IOU_OUT_OF_RANGE, || format!("IoU {x} is outside [0, 1]"))?;
                }
            }
            Some(v.into_iter().map(|x| x as f32).collect())
        }
        _ => None,
    };
    let box_loss = amounts(&cols.box_loss, extras.box_loss, &BOX_LOSS_INVALID, "box loss")?;
    let boxes = match &cols.boxes {
        Some(b) if extras.boxes => {
            let mut coords = Vec::with_capacity(4);
            for r in b {
                let v = number_column(&ctx, r, get(r)?, rows)?;
                for (i, &x) in v.iter().enumerate() {
                    if !x.is_finite() {
                        ctx.invalid(r, i, &BOX_NON_FINITE, || format!("non-finite box coordinate {x}"))?;
                    }
                }
                coords.push(v);
            }
            Some((0..rows).map(|i| [0, 1, 2, 3].map(|c| coords[c][i] as f32)).collect())
        }
        _ => None,
    };

    let batch = Batch {
        file: file_index,
        first_row,
        end_row: first_row + rows as u64,
        file_rows: file.rows,
        rows,
        row_index: None,
        images,
        targets,
        scores,
        class,
        weight,
        anchor_id,
        level,
        iou,
        boxes,
        box_loss,
        skipped: BTreeMap::new(),
    };
    if let Some((_, e)) = ctx.first.into_inner() {
        return Err(e);
    }
    let bad = ctx.bad.into_inner();
    Ok(if bad.is_empty() { batch } else { compact(batch, &bad, width) })
}

/// Drops the invalid rows (skip policy), keeping every column aligned and each kept row's
/// position in the file.
fn compact(b: Batch, bad: &[(usize, &'static str)], width: usize) -> Batch {
    let mut keep = vec![true; b.rows];
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    for &(row, reason) in bad {
        if keep[row] {
            keep[row] = false;
            *skipped.entry(reason.to_string()).or_default() += 1;
        }
    }
    let kept: Vec<usize> = (0..b.rows).filter(|&r| keep[r]).collect();
    fn pick<T: Copy>(v: &[T], kept: &[usize]) -> Vec<T> {
        kept.iter().map(|&r| v[r]).collect()
    }
    fn pick_rows<T: arrow_buffer::ArrowNativeType>(
        v: &ScalarBuffer<T>,
        kept: &[usize],
        width: usize,
    ) -> ScalarBuffer<T> {
        kept.iter().flat_map(|&r| v[r * width..(r + 1) * width].iter().copied()).collect::<Vec<T>>().into()
    }
    // Runs over the kept rows, in order, as if the skipped rows had never been written: an
    // image whose rows were all skipped disappears, and the runs on either side of a skipped
    // row (say one with a null image id) join when they belong to the same image.
    let mut run_of = vec![0usize; b.rows];
    for (i, run) in b.images.iter().enumerate() {
        run_of[run.start..run.end].iter_mut().for_each(|x| *x = i);
    }
    let mut images: Vec<ImageRun> = Vec::new();
    for (new, &r) in kept.iter().enumerate() {
        let key = &b.images[run_of[r]].key;
        match images.last_mut() {
            Some(last) if last.key == *key => last.end = new + 1,
            _ => images.push(ImageRun { key: key.clone(), start: new, end: new + 1 }),
        }
    }
    Batch {
        file: b.file,
        first_row: b.first_row,
        end_row: b.end_row,
        file_rows: b.file_rows,
        rows: kept.len(),
        row_index: Some(kept.iter().map(|&r| b.first_row + r as u64).collect()),
        images,
        targets: match &b.targets {
            Targets::Labels(l) => Targets::Labels(pick(l, &kept)),
            Targets::Binary(t) => Targets::Binary(pick(t, &kept)),
        },
        scores: match &b.scores {
            ScoreValues::F32(a) => ScoreValues::F32(pick_rows(a, &kept, width)),
            ScoreValues::F64(a) => ScoreValues::F64(pick_rows(a, &kept, width)),
        },
        class: b.class.as_ref().map(|v| pick(v, &kept)),
        weight: b.weight.as_ref().map(|v| pick(v, &kept)),
        anchor_id: b.anchor_id.as_ref().map(|v| pick(v, &kept)),
        level: b.level.as_ref().map(|v| pick(v, &kept)),
        iou: b.iou.as_ref().map(|v| pick(v, &kept)),
        boxes: b.boxes.as_ref().map(|v| pick(v, &kept)),
        box_loss: b.box_loss.as_ref().map(|v| pick(v, &kept)),
        skipped,
    }
}

fn image_runs(ctx: &Ctx<'_>, col: &Resolved, arr: &dyn Array) -> Result<Vec<ImageRun>, InputError> {
    let mut runs: Vec<ImageRun> = Vec::new();
    let n = arr.len();
    let mut push_runs = |same: &dyn Fn(usize, usize) -> bool, key: &dyn Fn(usize) -> ImageKey| {
        let mut start = 0;
        for i in 1..=n {
            if i == n || !same(start, i) {
                runs.push(ImageRun { key: key(start), start, end: i });
                start = i;
            }
        }
    };
    if let Some(ints) = as_i64(arr) {
        let ints = ints.map_err(|row| {
            ctx.err(
                col,
                row,
                "image id does not fit in a signed 64-bit integer",
                "use ids below 2^63 or strings",
            )
        })?;
        push_runs(&|a, b| ints[a] == ints[b], &|i| ImageKey::Int(ints[i]));
    } else if let Some(s) = arr.as_string_view_opt() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else if let Some(s) = arr.as_string_opt::<i64>() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else if let Some(s) = arr.as_string_opt::<i32>() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else {
        return Err(ctx.err(
            col,
            0,
            format!("unsupported image id type {:?}", arr.data_type()),
            "write image ids as integers or strings",
        ));
    }
    Ok(runs)
}

/// Integer arrays of any width as i64. `Err(row)` for a u64 above i64::MAX.
fn as_i64(arr: &dyn Array) -> Option<Result<Vec<i64>, usize>> {
    fn widen<T: ArrowPrimitiveType>(arr: &dyn Array) -> Vec<i64>
    where
        T::Native: Into<i64>,
    {
        arr.as_primitive::<T>().values().iter().map(|&v| v.into()).collect()
    }
    use DataType as D;
    Some(Ok(match arr.data_type() {
        D::Int8 => widen::<Int8Type>(arr),
        D::Int16 => widen::<Int16Type>(arr),
        D::Int32 => widen::<Int32Type>(arr),
        D::Int64 => widen::<Int64Type>(arr),
        D::UInt8 => widen::<UInt8Type>(arr),
        D::UInt16 => widen::<UInt16Type>(arr),
        D::UInt32 => widen::<UInt32Type>(arr),
        D::UInt64 => {
            let a = arr.as_primitive::<UInt64Type>();
            let mut out = Vec::with_capacity(a.len());
            for (i, &v) in a.values().iter().enumerate() {
                match i64::try_from(v) {
                    Ok(v) => out.push(v),
                    Err(_) => return Some(Err(i)),
                }
            }
            out
        }
        _ => return None,
    }))
}

fn hive_int(col: &Resolved, rows: usize) -> Option<Vec<i64>> {
    match &col.source {
        Source::Hive(HiveValue::Int(i)) => Some(vec![*i; rows]),
        _ => None,
    }
}

fn int_column(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: Option<ArrayRef>,
    rows: usize,
) -> Result<Vec<i64>, InputError> {
    match arr {
        None => hive_int(col, rows)
            .ok_or_else(|| ctx.err(col, 0, "hive value is not an integer", "use an integer partition value")),
        Some(arr) => match as_i64(arr.as_ref()) {
            Some(Ok(v)) => Ok(v),
            Some(Err(row)) => Err(ctx.err(
                col,
                row,
                "value does not fit in a signed 64-bit integer",
                "write smaller integers",
            )),
            None => Err(ctx.err(
                col,
                0,
                format!("expected integers, found {:?}", arr.data_type()),
                "write an integer column",
            )),
        },
    }
}

fn number_column(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: Option<ArrayRef>,
    rows: usize,
) -> Result<Vec<f64>, InputError> {
    match arr {
        None => Ok(hive_int(col, rows)
            .ok_or_else(|| ctx.err(col, 0, "hive value is not a number", "use a numeric partition value"))?
            .into_iter()
            .map(|v| v as f64)
            .collect()),
        Some(arr) => {
            if let Some(v) = as_i64(arr.as_ref()) {
                return Ok(v
                    .map_err(|row| ctx.err(col, row, "value out of range", "write smaller numbers"))?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect());
            }
            match float_values(arr.as_ref()) {
                Some(ScoreValues::F32(a)) => Ok(a.iter().map(|&v| f64::from(v)).collect()),
                Some(ScoreValues::F64(a)) => Ok(a.to_vec()),
                None => Err(not_float(ctx, col, arr.as_ref())),
            }
        }
    }
}

/// The values of a float32/float64 array, zero-copy (`None` for other types).
fn float_values(arr: &dyn Array) -> Option<ScoreValues> {
    match arr.data_type() {
        DataType::Float32 => Some(ScoreValues::F32(arr.as_primitive::<Float32Type>().values().clone())),
        DataType::Float64 => Some(ScoreValues::F64(arr.as_primitive::<Float64Type>().values().clone())),
        _ => None,
    }
}

/// A column whose decoded type is not the float type the schema promised.
fn not_float(ctx: &Ctx<'_>, col: &Resolved, arr: &dyn Array) -> InputError {
    ctx.err(col, 0, format!("expected floats, found {:?}", arr.data_type()), "write float32/float64 values")
}

/// The values of a variable-length list with `width` entries in every valid row. When every row
/// has `width` entries the values are used in place; otherwise (rows to skip) the rows are
/// copied, with zeros standing in for the skipped ones so that rows stay aligned.
fn uniform_list<O: OffsetSizeTrait>(
    ctx: &Ctx<'_>,
    col: &Resolved,
    l: &GenericListArray<O>,
    width: usize,
) -> Result<ScoreValues, InputError> {
    let offsets = l.value_offsets();
    let rows = offsets.len() - 1;
    let mut ragged = false;
    for (i, w) in offsets.windows(2).enumerate() {
        let len = w[1].as_usize() - w[0].as_usize();
        if len == width {
            continue;
        }
        // Null rows (already reported as nulls) have no entries either.
        ragged = true;
        if l.is_valid(i) {
            let (rule, problem) = if len == 0 {
                (&EMPTY_LIST, "empty score list".to_string())
            } else {
                (&RAGGED_LIST, format!("ragged score list: {len} entries where earlier rows have {width}"))
            };
            ctx.invalid(col, i, rule, || problem)?;
        }
    }
    let start = offsets[0].as_usize();
    let end = offsets[rows].as_usize();
    // The child array is not sliced to the list's rows: positions are absolute.
    let values = l.values().slice(start, end - start);
    null_scores(
        ctx,
        col,
        values.as_ref(),
        |pos| {
            // The row whose range holds `pos`.
            offsets.partition_point(|o| o.as_usize() <= pos + start).saturating_sub(1)
        },
        |pos, row| pos + start - offsets[row].as_usize(),
    )?;
    let floats = float_values(values.as_ref()).ok_or_else(|| not_float(ctx, col, values.as_ref()))?;
    if !ragged {
        return Ok(floats);
    }
    fn aligned<T: arrow_buffer::ArrowNativeType>(
        v: &ScalarBuffer<T>,
        offsets: &[usize],
        width: usize,
    ) -> ScalarBuffer<T> {
        let mut out = Vec::with_capacity((offsets.len() - 1) * width);
        for w in offsets.windows(2) {
            if w[1] - w[0] == width {
                out.extend_from_slice(&v[w[0]..w[1]]);
            } else {
                out.extend(std::iter::repeat_n(T::default(), width));
            }
        }
        out.into()
    }
    // Offsets relative to the sliced values.
    let offs: Vec<usize> = offsets.iter().map(|o| o.as_usize() - start).collect();
    Ok(match floats {
        ScoreValues::F32(a) => ScoreValues::F32(aligned(&a, &offs, width)),
        ScoreValues::F64(a) => ScoreValues::F64(aligned(&a, &offs, width)),
    })
}

/// Null entries inside score lists: one invalid row each (`row_of` maps a value position to
/// its row, `class_of` to its class).
fn null_scores(
    ctx: &Ctx<'_>,
    col: &Resolved,
    values: &dyn Array,
    row_of: impl Fn(usize) -> usize,
    class_of: impl Fn(usize, usize) -> usize,
) -> Result<(), InputError> {
    if values.null_count() == 0 {
        return Ok(());
    }
    if let Some(v) = values.nulls() {
        for (pos, valid) in v.iter().enumerate() {
            if !valid {
                let row = row_of(pos);
                let class = class_of(pos, row);
                ctx.invalid_fix(
                    col,
                    row,
                    &NULL,
                    || format!("null score at class {class}"),
                    "write a score for every class",
                )?;
            }
        }
    }
    Ok(())
}

/// The flat values of a list column with `width` entries per row.
fn list_values(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: &dyn Array,
    width: usize,
) -> Result<ScoreValues, InputError> {
    if let Some(f) = arr.as_fixed_size_list_opt() {
        let size = f.value_length() as usize;
        if size != width {
            return Err(ctx.err(
                col,
                0,
                format!("fixed-size list of {size} scores, earlier rows had {width}"),
                "write the same number of classes in every file",
            ));
        }
        // arrow-rs slices fixed-size list values with the list; the slice (of an Arc, no copy)
        // only guards the length.
        let values = f.values().slice(0, f.len() * size);
        null_scores(ctx, col, values.as_ref(), |pos| pos / width.max(1), |pos, _| pos % width.max(1))?;
        return float_values(values.as_ref()).ok_or_else(|| not_float(ctx, col, values.as_ref()));
    }
    if let Some(l) = arr.as_list_opt::<i64>() {
        return uniform_list(ctx, col, l, width);
    }
    if let Some(l) = arr.as_list_opt::<i32>() {
        return uniform_list(ctx, col, l, width);
    }
    Err(ctx.err(col, 0, format!("unsupported list type {:?}", arr.data_type()), "write list<float32>"))
}

fn check_scores(
    ctx: &Ctx<'_>,
    col: &Resolved,
    scores: &ScoreValues,
    kind: ScoreKind,
    width: usize,
) -> Result<(), InputError> {
    fn each_bad<T: Copy + Into<f64>>(
        v: &[T],
        ok: impl Fn(f64) -> bool + Copy,
        mut f: impl FnMut(usize, f64) -> Result<(), InputError>,
    ) -> Result<(), InputError> {
        // Fast path over the whole slice, a block at a time without an early exit inside a
        // block (so that it vectorises); look closer only when something is wrong.
        if v.chunks(256).all(|block| block.iter().fold(true, |all, &x| all & ok(x.into()))) {
            return Ok(());
        }
        for (i, &x) in v.iter().enumerate() {
            if !ok(x.into()) {
                f(i, x.into())?;
            }
        }
        Ok(())
    }
    // The checks, one closure each (a function pointer would be an indirect call per value).
    let logit_ok = |x: f64| x.abs() <= MAX_ABS_LOGIT;
    let prob_ok = |x: f64| (0.0..=1.0).contains(&x);
    let report = |i: usize, v: f64| -> Result<(), InputError> {
        let (row, class) = (i / width, i % width);
        let at = if width > 1 { format!(" at class {class}") } else { String::new() };
        match kind {
            ScoreKind::Logits if !v.is_finite() => {
                ctx.invalid(col, row, &NON_FINITE_LOGIT, || format!("non-finite logit {v}{at}"))
            }
            ScoreKind::Logits => ctx.invalid(col, row, &LOGIT_TOO_LARGE, || {
                format!("logit {v}{at} exceeds the supported magnitude {MAX_ABS_LOGIT:e}")
            }),
            ScoreKind::Probs => ctx.invalid(col, row, &PROBABILITY_OUT_OF_RANGE, || {
                format!("probability {v}{at} is outside [0, 1]")
            }),
        }
    };
    match (scores, kind) {
        (ScoreValues::F32(a), ScoreKind::Logits) => each_bad(a, logit_ok, report),
        (ScoreValues::F32(a), ScoreKind::Probs) => each_bad(a, prob_ok, report),
        (ScoreValues::F64(a), ScoreKind::Logits) => each_bad(a, logit_ok, report),
        (ScoreValues::F64(a), ScoreKind::Probs) => each_bad(a, prob_ok, report),
    }
}

fn check_softmax_sums(
    ctx: &Ctx<'_>,
    col: &Resolved,
    scores: &ScoreValues,
    width: usize,
) -> Result<(), InputError> {
    fn sums<T: Copy + Into<f64>>(v: &[T], width: usize) -> Vec<(usize, f64)> {
        v.chunks_exact(width)
            .enumerate()
            .filter_map(|(i, r)| {
                let s: f64 = r.iter().map(|&x| x.into()).sum();
                ((s - 1.0).abs() > 1e-3).then_some((i, s))
            })
            .collect()
    }
    let bad = match scores {
        ScoreValues::F32(a) => sums(a, width),
        ScoreValues::F64(a) => sums(a, width),
    };
    for (row, s) in bad {
        ctx.invalid(col, row, &SOFTMAX_SUM, || format!("softmax probabilities sum to {s:.6}, not 1"))?;
    }
    Ok(())
}

/// The common case of [`check_labels`] in one vectorised pass: an `int32` label column whose
/// labels are all valid, copied as they are. `None` for any other column, or when a label is
/// invalid (then the general path finds it and says which).
fn valid_int32_labels(arr: &dyn Array, dump: &Dump, width: usize) -> Option<Vec<i32>> {
    let values = arr.as_primitive_opt::<Int32Type>()?.values();
    let c = i32::try_from(width).ok()?;
    // Generic over the test, so that each copy is inlined (a `&dyn Fn` would be a call per
    // label).
    fn all(values: &[i32], ok: impl Fn(i32) -> bool + Copy) -> bool {
        values.chunks(256).all(|b| b.iter().fold(true, |all, &l| all & ok(l)))
    }
    let valid = if dump.shape().activation == Activation::Softmax {
        all(values, |l| l == -2 || (0..c).contains(&l))
    } else {
        all(values, |l| (-2..c).contains(&l))
    };
    valid.then(|| values.to_vec())
}

fn check_labels(
    ctx: &Ctx<'_>,
    col: &Resolved,
    labels: &[i64],
    dump: &Dump,
    width: usize,
) -> Result<Vec<i32>, InputError> {
    let softmax = dump.shape().activation == Activation::Softmax;
    let valid = |l: i64| {
        if softmax {
            l == -2 || (0..width as i64).contains(&l)
        } else {
            (-2..width as i64).contains(&l)
        }
    };
    for (i, &l) in labels.iter().enumerate() {
        if valid(l) {
            continue;
        }
        let fix = if !softmax && l == width as i64 {
            format!("label {l} = C looks like mmdetection's background code: map it to -1 when dumping (labels[labels == {width}] = -1)")
        } else if softmax && l == -1 {
            format!(
                "softmax dumps mark background with its class index (--background-class, here {}), not -1",
                dump.background_class()
            )
        } else if softmax {
            format!("softmax labels are 0..{} (background included) or -2 for ignored anchors", width - 1)
        } else {
            format!("sigmoid labels are 0..{} (foreground class), -1 (background) or -2 (ignored)", width - 1)
        };
        ctx.invalid_fix(
            col,
            i,
            &LABEL_OUT_OF_RANGE,
            || format!("label {l} is outside the valid set for {width} classes"),
            &fix,
        )?;
    }
    // Skipped rows keep a harmless label; they are dropped before anyone reads it.
    Ok(labels.iter().map(|&l| if valid(l) { l as i32 } else { -2 }).collect())
}

fn binary_targets(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: Option<ArrayRef>,
    rows: usize,
) -> Result<Vec<f64>, InputError> {
    let values: Vec<f64> = match &arr {
        Some(a) if matches!(a.data_type(), DataType::Boolean) => {
            a.as_boolean().values().iter().map(|v| if v { 1.0 } else { 0.0 }).collect()
        }
        _ => {
            let is_int = matches!(col.ty, ColumnType::Int);
            let v = number_column(ctx, col, arr, rows)?;
            if is_int {
                for (i, &t) in v.iter().enumerate() {
                    if t != 0.0 && t != 1.0 {
                        ctx.invalid_fix(
                            col,
                            i,
                            &TARGET_OUT_OF_RANGE,
                            || format!("integer target {t} is not 0 or 1"),
                            "write 0/1 targets (or floats in [0,1] for soft targets)",
                        )?;
                    }
                }
            }
            v
        }
    };
    for (i, &t) in values.iter().enumerate() {
        // Integer targets other than 0 and 1 were reported above.
        if !matches!(col.ty, ColumnType::Int) && !(0.0..=1.0).contains(&t) {
            ctx.invalid(col, i, &TARGET_OUT_OF_RANGE, || format!("target {t} is outside [0, 1]"))?;
        }
    }
    Ok(values.into_iter().map(|t| if (0.0..=1.0).contains(&t) { t } else { 0.0 }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_distinct_reason_a_requirement_and_a_fix() {
        let mut reasons: Vec<&str> = RULES.iter().map(|r| r.reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), RULES.len(), "reasons must be distinct: they key dataset.skipped");
        for r in RULES {
            assert!(r.reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", r.reason);
            assert!(!r.column.is_empty() && !r.requires.is_empty() && !r.fix.is_empty(), "{r:?}");
            // The docs' table lists every reason (docs/dump-format.md, "Value checks").
            let docs = include_str!("../../docs/dump-format.md");
            assert!(
                docs.contains(&format!("| `{}` |", r.reason)),
                "{} missing from docs/dump-format.md",
                r.reason
            );
        }
    }

    #[test]
    fn compact_drops_the_bad_rows_keeps_the_others_aligned_and_counts_reasons() {
        let mut b = crate::input::test_batch(
            [0, 0, 0, 1, 1],
            Targets::Labels(vec![0, -1, -1, 1, -1]),
            ScoreValues::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),
            100,
        );
        b.level = Some(vec![3, 4, 5, 6, 7]);
        let c = compact(b, &[(1, NULL.reason), (4, IOU_OUT_OF_RANGE.reason), (2, NULL.reason)], 2);
        assert_eq!(c.rows, 2);
        assert_eq!(c.level, Some(vec![3, 6]));
        assert_eq!(c.scores.f32s().unwrap(), &[1.0, 2.0, 7.0, 8.0]);
        assert!(matches!(&c.targets, Targets::Labels(l) if l == &[0, 1]));
        // Each kept row remembers its row in the file.
        assert_eq!((c.file_row(0), c.file_row(1)), (100, 103));
        assert_eq!(c.skipped.get("null"), Some(&2));
        assert_eq!(c.skipped.get("iou_out_of_range"), Some(&1));
        assert_eq!(c.images.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), vec![(0, 1), (1, 2)]);
    }
}
