//! Decoding one row group into a validated [`Batch`].
//!
//! Every value is checked here, before any loss is computed: nulls, ragged or empty score lists,
//! non-finite or implausible logits, probabilities outside [0, 1], labels outside the valid set,
//! targets outside [0, 1]. Errors name the file, the column and the row within the file.

use polars_arrow::array::{
    Array, BinaryViewArrayGeneric, BooleanArray, FixedSizeListArray, ListArray, PrimitiveArray, Utf8Array,
};
use polars_arrow::datatypes::ArrowDataType;
use polars_arrow::types::NativeType;

use super::schema::{ColumnType, Resolved, Source};
use super::{
    reader_for, Batch, Dump, DumpFile, HiveValue, ImageKey, ImageRun, ScoreValues, Targets, Unit,
    MAX_ABS_LOGIT,
};
use crate::config::{Activation, Layout, ScoreKind};
use crate::error::InputError;

type ArrayRef = Box<dyn Array>;

/// Reads the first row of a variable-length score list to learn the class count.
pub(super) fn first_list_width(file: &DumpFile, unit: Unit) -> Result<usize, InputError> {
    let one = Unit { rows: 1, ..unit };
    let Source::Column(name) = &file.columns.scores.source else { return Ok(1) };
    let df = reader_for(file, one, vec![name.clone()])?;
    let arr = column_array(&df, name, file)?;
    let list = arr.as_any().downcast_ref::<ListArray<i64>>();
    match list {
        Some(l) => {
            let o = l.offsets();
            Ok((o[1] - o[0]) as usize)
        }
        None => Ok(0),
    }
}

struct Ctx<'a> {
    file: &'a DumpFile,
    unit: Unit,
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
            row: self.unit.offset + local_row as u64,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn check_nulls(&self, col: &Resolved, arr: &dyn Array) -> Result<(), InputError> {
        if arr.null_count() > 0 {
            let row = first_null(arr);
            return Err(self.err(
                col,
                row,
                "null value",
                "write a value in every row (drop incomplete rows, or fill them, when dumping)",
            ));
        }
        Ok(())
    }
}

fn first_null(arr: &dyn Array) -> usize {
    arr.validity().and_then(|v| v.iter().position(|b| !b)).unwrap_or(0)
}

fn column_array(
    df: &polars_core::frame::DataFrame,
    name: &str,
    file: &DumpFile,
) -> Result<ArrayRef, InputError> {
    let col = df
        .column(name)
        .map_err(|e| InputError::Parquet { path: file.input.path.clone(), detail: e.to_string() })?;
    let series = col.as_materialized_series().rechunk();
    Ok(series.chunks()[0].clone())
}

/// Decodes and validates one row group.
pub(super) fn read_batch(dump: &Dump, file: &DumpFile, unit: Unit) -> Result<Batch, InputError> {
    let cols = &file.columns;
    let shape = dump.shape();
    let mut wanted: Vec<&Resolved> = vec![&cols.image_id, &cols.label, &cols.scores];
    if shape.layout == Layout::Binary {
        wanted.extend(cols.class.iter());
        wanted.extend(cols.weight.iter());
    }
    let extras = dump.extras();
    if extras.ids {
        wanted.extend(cols.anchor_id.iter());
    }
    if extras.groups {
        wanted.extend(cols.level.iter());
        wanted.extend(cols.iou.iter());
    }
    if extras.boxes {
        wanted.extend(cols.boxes.iter().flatten());
    }
    let mut physical: Vec<String> = Vec::new();
    for r in &wanted {
        if let Source::Column(n) = &r.source {
            if !physical.contains(n) {
                physical.push(n.clone());
            }
        }
    }
    let df = reader_for(file, unit, physical)?;
    let ctx = Ctx { file, unit };
    let rows = unit.rows;
    let get = |r: &Resolved| -> Result<Option<ArrayRef>, InputError> {
        match &r.source {
            Source::Column(n) => {
                let arr = column_array(&df, n, file)?;
                if arr.len() != rows {
                    return Err(InputError::Parquet {
                        path: file.input.path.clone(),
                        detail: format!("column '{n}' decoded {} rows, the row group has {rows}", arr.len()),
                    });
                }
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
    let scores_arr = get(&cols.scores)?.ok_or_else(|| {
        ctx.err(&cols.scores, 0, "scores cannot come from a hive partition", "store the scores as a column")
    })?;
    let scores = match shape.layout {
        Layout::Dense => list_values(&ctx, &cols.scores, scores_arr.as_ref(), width)?,
        Layout::Binary => float_values(scores_arr.as_ref()),
    };
    check_scores(&ctx, &cols.scores, &scores, shape.scores, width)?;

    let targets = match shape.layout {
        Layout::Dense => {
            let labels = int_column(&ctx, &cols.label, get(&cols.label)?, rows)?;
            let labels = check_labels(&ctx, &cols.label, &labels, dump, width)?;
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
            if let Some(i) = v.iter().position(|&c| c < 0 || c > i64::from(i32::MAX)) {
                return Err(ctx.err(
                    r,
                    i,
                    format!("class {} is negative or too large", v[i]),
                    "write class indices 0..C-1",
                ));
            }
            Some(v.into_iter().map(|c| c as i32).collect())
        }
        _ => None,
    };
    let weight = match &cols.weight {
        Some(r) if shape.layout == Layout::Binary => {
            let v = number_column(&ctx, r, get(r)?, rows)?;
            if let Some(i) = v.iter().position(|w| !(w.is_finite() && *w >= 0.0 && *w <= MAX_ABS_LOGIT)) {
                return Err(ctx.err(
                    r,
                    i,
                    format!("weight {} is not a finite non-negative number", v[i]),
                    "write loss weights >= 0",
                ));
            }
            Some(v)
        }
        _ => None,
    };

    let ints = |r: &Option<Resolved>, on: bool| -> Result<Option<Vec<i64>>, InputError> {
        match r {
            Some(r) if on => Ok(Some(int_column(&ctx, r, get(r)?, rows)?)),
            _ => Ok(None),
        }
    };
    let anchor_id = ints(&cols.anchor_id, extras.ids)?;
    let level = ints(&cols.level, extras.groups)?;
    let iou = match &cols.iou {
        Some(r) if extras.groups => {
            let v = number_column(&ctx, r, get(r)?, rows)?;
            if let Some(i) = v.iter().position(|x| !(0.0..=1.0).contains(x)) {
                return Err(ctx.err(
                    r,
                    i,
                    format!("IoU {} is outside [0, 1]", v[i]),
                    "write the max IoU of each anchor with any ground-truth box",
                ));
            }
            Some(v.into_iter().map(|x| x as f32).collect())
        }
        _ => None,
    };
    let boxes = match &cols.boxes {
        Some(b) if extras.boxes => {
            let mut coords = Vec::with_capacity(4);
            for r in b {
                let v = number_column(&ctx, r, get(r)?, rows)?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(ctx.err(
                        r,
                        i,
                        format!("non-finite box coordinate {}", v[i]),
                        "write finite box corners",
                    ));
                }
                coords.push(v);
            }
            Some((0..rows).map(|i| [0, 1, 2, 3].map(|c| coords[c][i] as f32)).collect())
        }
        _ => None,
    };

    Ok(Batch {
        file: unit.file,
        first_row: unit.offset,
        rows,
        images,
        targets,
        scores,
        class,
        weight,
        anchor_id,
        level,
        iou,
        boxes,
    })
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
    } else if let Some(s) = arr.as_any().downcast_ref::<BinaryViewArrayGeneric<str>>() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else if let Some(s) = arr.as_any().downcast_ref::<Utf8Array<i64>>() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else if let Some(s) = arr.as_any().downcast_ref::<Utf8Array<i32>>() {
        push_runs(&|a, b| s.value(a) == s.value(b), &|i| ImageKey::Str(s.value(i).into()));
    } else {
        return Err(ctx.err(
            col,
            0,
            format!("unsupported image id type {:?}", arr.dtype()),
            "write image ids as integers or strings",
        ));
    }
    Ok(runs)
}

/// Integer arrays of any width as i64. `Err(row)` for a u64 above i64::MAX.
fn as_i64(arr: &dyn Array) -> Option<Result<Vec<i64>, usize>> {
    fn widen<T: NativeType + Into<i64>>(arr: &dyn Array) -> Vec<i64> {
        let a = arr.as_any().downcast_ref::<PrimitiveArray<T>>().expect("dtype checked");
        a.values().iter().map(|&v| v.into()).collect()
    }
    use ArrowDataType as D;
    Some(Ok(match arr.dtype() {
        D::Int8 => widen::<i8>(arr),
        D::Int16 => widen::<i16>(arr),
        D::Int32 => widen::<i32>(arr),
        D::Int64 => widen::<i64>(arr),
        D::UInt8 => widen::<u8>(arr),
        D::UInt16 => widen::<u16>(arr),
        D::UInt32 => widen::<u32>(arr),
        D::UInt64 => {
            let a = arr.as_any().downcast_ref::<PrimitiveArray<u64>>().expect("dtype checked");
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
                format!("expected integers, found {:?}", arr.dtype()),
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
                ScoreValues::F32(a) => Ok(a.values().iter().map(|&v| f64::from(v)).collect()),
                ScoreValues::F64(a) => Ok(a.values().as_slice().to_vec()),
            }
        }
    }
}

fn float_values(arr: &dyn Array) -> ScoreValues {
    if let Some(a) = arr.as_any().downcast_ref::<PrimitiveArray<f32>>() {
        ScoreValues::F32(a.clone())
    } else {
        ScoreValues::F64(
            arr.as_any().downcast_ref::<PrimitiveArray<f64>>().expect("dtype checked as float").clone(),
        )
    }
}

/// The flat values of a list column with exactly `width` entries per row.
/// Checks that every list has `width` entries; returns the first value's offset.
fn uniform_offsets<O: Copy + Into<i64>>(
    ctx: &Ctx<'_>,
    col: &Resolved,
    offsets: &[O],
    width: usize,
) -> Result<usize, InputError> {
    for (i, w) in offsets.windows(2).enumerate() {
        let len = (w[1].into() - w[0].into()) as usize;
        if len != width {
            let problem = if len == 0 {
                "empty score list".to_string()
            } else {
                format!("ragged score list: {len} entries where earlier rows have {width}")
            };
            return Err(ctx.err(col, i, problem, "write exactly one score per class in every row"));
        }
    }
    Ok(offsets.first().map_or(0, |&o| o.into() as usize))
}

fn list_values(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: &dyn Array,
    width: usize,
) -> Result<ScoreValues, InputError> {
    let rows = arr.len();
    let (values, start): (&ArrayRef, usize) =
        if let Some(f) = arr.as_any().downcast_ref::<FixedSizeListArray>() {
            if f.size() != width {
                return Err(ctx.err(
                    col,
                    0,
                    format!("fixed-size list of {} scores, earlier rows had {width}", f.size()),
                    "write the same number of classes in every file",
                ));
            }
            // polars-arrow pre-slices fixed-size list values to the array's rows.
            (f.values(), 0)
        } else if let Some(l) = arr.as_any().downcast_ref::<ListArray<i64>>() {
            (l.values(), uniform_offsets(ctx, col, l.offsets().as_slice(), width)?)
        } else if let Some(l) = arr.as_any().downcast_ref::<ListArray<i32>>() {
            (l.values(), uniform_offsets(ctx, col, l.offsets().as_slice(), width)?)
        } else {
            return Err(ctx.err(
                col,
                0,
                format!("unsupported list type {:?}", arr.dtype()),
                "write list<float32>",
            ));
        };
    if values.null_count() > 0 {
        let pos = values.validity().map(|v| v.iter().skip(start).position(|b| !b).unwrap_or(0)).unwrap_or(0);
        return Err(ctx.err(
            col,
            pos / width.max(1),
            format!("null score at class {}", pos % width.max(1)),
            "write a score for every class",
        ));
    }
    Ok(match float_values(values.as_ref()) {
        ScoreValues::F32(a) => ScoreValues::F32(a.sliced(start, rows * width)),
        ScoreValues::F64(a) => ScoreValues::F64(a.sliced(start, rows * width)),
    })
}

fn check_scores(
    ctx: &Ctx<'_>,
    col: &Resolved,
    scores: &ScoreValues,
    kind: ScoreKind,
    width: usize,
) -> Result<(), InputError> {
    fn first_bad<T: Copy + Into<f64>>(v: &[T], ok: impl Fn(f64) -> bool) -> Option<usize> {
        // Fast path over the whole slice; locate only when something is wrong.
        if v.iter().all(|&x| ok(x.into())) {
            None
        } else {
            v.iter().position(|&x| !ok(x.into()))
        }
    }
    let ok_logit = |x: f64| x.abs() <= MAX_ABS_LOGIT;
    let ok_prob = |x: f64| (0.0..=1.0).contains(&x);
    let bad = match (scores, kind) {
        (ScoreValues::F32(a), ScoreKind::Logits) => {
            first_bad(a.values(), ok_logit).map(|i| (i, f64::from(a.values()[i])))
        }
        (ScoreValues::F64(a), ScoreKind::Logits) => {
            first_bad(a.values(), ok_logit).map(|i| (i, a.values()[i]))
        }
        (ScoreValues::F32(a), ScoreKind::Probs) => {
            first_bad(a.values(), ok_prob).map(|i| (i, f64::from(a.values()[i])))
        }
        (ScoreValues::F64(a), ScoreKind::Probs) => first_bad(a.values(), ok_prob).map(|i| (i, a.values()[i])),
    };
    let Some((i, v)) = bad else { return Ok(()) };
    let (row, class) = (i / width, i % width);
    let at = if width > 1 { format!(" at class {class}") } else { String::new() };
    Err(match kind {
        ScoreKind::Logits if !v.is_finite() => ctx.err(
            col,
            row,
            format!("non-finite logit {v}{at}"),
            "hardmine needs finite logits: look for diverged training or fp16 overflow in the dumping code, or drop those images",
        ),
        ScoreKind::Logits => ctx.err(
            col,
            row,
            format!("logit {v}{at} exceeds the supported magnitude {MAX_ABS_LOGIT:e}"),
            "check that the column holds logits (not e.g. box coordinates); real detectors stay within a few hundred",
        ),
        ScoreKind::Probs => ctx.err(
            col,
            row,
            format!("probability {v}{at} is outside [0, 1]"),
            "dump probabilities after the sigmoid/softmax, or dump the logits instead (preferred)",
        ),
    })
}

fn check_softmax_sums(
    ctx: &Ctx<'_>,
    col: &Resolved,
    scores: &ScoreValues,
    width: usize,
) -> Result<(), InputError> {
    fn rows<T: Copy + Into<f64>>(v: &[T], width: usize) -> Option<(usize, f64)> {
        v.chunks_exact(width).enumerate().find_map(|(i, r)| {
            let s: f64 = r.iter().map(|&x| x.into()).sum();
            ((s - 1.0).abs() > 1e-3).then_some((i, s))
        })
    }
    let bad = match scores {
        ScoreValues::F32(a) => rows(a.values(), width),
        ScoreValues::F64(a) => rows(a.values(), width),
    };
    match bad {
        Some((row, s)) => Err(ctx.err(
            col,
            row,
            format!("softmax probabilities sum to {s:.6}, not 1"),
            "dump the softmax output over all K classes (including background), or the logits",
        )),
        None => Ok(()),
    }
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
    if let Some(i) = labels.iter().position(|&l| !valid(l)) {
        let l = labels[i];
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
        return Err(ctx.err(col, i, format!("label {l} is outside the valid set for {width} classes"), fix));
    }
    Ok(labels.iter().map(|&l| l as i32).collect())
}

fn binary_targets(
    ctx: &Ctx<'_>,
    col: &Resolved,
    arr: Option<ArrayRef>,
    rows: usize,
) -> Result<Vec<f64>, InputError> {
    let values: Vec<f64> = match &arr {
        Some(a) if matches!(a.dtype(), ArrowDataType::Boolean) => {
            let b = a.as_any().downcast_ref::<BooleanArray>().expect("dtype checked");
            b.values().iter().map(|v| if v { 1.0 } else { 0.0 }).collect()
        }
        _ => {
            let is_int = matches!(col.ty, ColumnType::Int);
            let v = number_column(ctx, col, arr, rows)?;
            if is_int {
                if let Some(i) = v.iter().position(|&t| t != 0.0 && t != 1.0) {
                    return Err(ctx.err(
                        col,
                        i,
                        format!("integer target {} is not 0 or 1", v[i]),
                        "write 0/1 targets (or floats in [0,1] for soft targets)",
                    ));
                }
            }
            v
        }
    };
    if let Some(i) = values.iter().position(|t| !(0.0..=1.0).contains(t)) {
        return Err(ctx.err(
            col,
            i,
            format!("target {} is outside [0, 1]", values[i]),
            "write 0/1 targets, or soft targets (IoU quality) in [0, 1]",
        ));
    }
    Ok(values)
}
