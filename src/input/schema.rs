//! Schema detection and validation: which layout a dump uses, which file column holds each
//! logical column, and whether its type is one hardmine can read. Parquet footers arrive as
//! polars schemas, in-memory Arrow sources as arrow-rs schemas; both resolve through the same
//! rules ([`resolve`], [`resolve_arrow`]).

use std::path::Path;

use polars_arrow::datatypes::{ArrowDataType, ArrowSchema};

use super::discover::{HiveValue, InputFile};
use crate::config::{Activation, DumpOptions, Layout, ScoreKind};
use crate::error::InputError;

/// The type classes hardmine distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Any signed or unsigned integer.
    Int,
    /// float32 or float64.
    Float,
    /// UTF-8 strings.
    Str,
    /// Booleans.
    Bool,
    /// A list of float32/float64; `Some(width)` for fixed-size lists.
    FloatList(Option<usize>),
    /// Anything else.
    Other,
}

impl ColumnType {
    /// Classifies an Arrow data type.
    pub fn of(dtype: &ArrowDataType) -> ColumnType {
        use ArrowDataType as D;
        match dtype {
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
                ColumnType::Int
            }
            D::Float32 | D::Float64 => ColumnType::Float,
            D::Utf8 | D::LargeUtf8 | D::Utf8View => ColumnType::Str,
            D::Boolean => ColumnType::Bool,
            D::List(f) | D::LargeList(f) if matches!(f.dtype, D::Float32 | D::Float64) => {
                ColumnType::FloatList(None)
            }
            D::FixedSizeList(f, n) if matches!(f.dtype, D::Float32 | D::Float64) => {
                ColumnType::FloatList(Some(*n))
            }
            _ => ColumnType::Other,
        }
    }

    /// Classifies an arrow-rs data type (an in-memory Arrow source), as [`ColumnType::of`].
    pub fn of_arrow(dtype: &arrow_schema::DataType) -> ColumnType {
        use arrow_schema::DataType as D;
        let float = |f: &arrow_schema::Field| matches!(f.data_type(), D::Float32 | D::Float64);
        match dtype {
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
                ColumnType::Int
            }
            D::Float32 | D::Float64 => ColumnType::Float,
            D::Utf8 | D::LargeUtf8 | D::Utf8View => ColumnType::Str,
            D::Boolean => ColumnType::Bool,
            D::List(f) | D::LargeList(f) if float(f) => ColumnType::FloatList(None),
            D::FixedSizeList(f, n) if float(f) => ColumnType::FloatList(Some(*n as usize)),
            _ => ColumnType::Other,
        }
    }
}

/// Where a logical column's values come from in one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A column of the file, by its physical name.
    Column(String),
    /// A constant from a hive partition directory (`key=value`).
    Hive(HiveValue),
}

/// A logical column resolved in one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// hardmine's name for the column (`label`, `logits`, ...).
    pub logical: &'static str,
    /// The physical column name (or hive key).
    pub name: String,
    /// Its type class.
    pub ty: ColumnType,
    /// Where its values come from.
    pub source: Source,
}

/// The logical columns of a dump, resolved for one file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileColumns {
    /// `image_id`.
    pub image_id: Resolved,
    /// `label` (dense) or `target` (binary).
    pub label: Resolved,
    /// `logits`/`probs` (dense) or `logit`/`prob` (binary).
    pub scores: Resolved,
    /// Binary: `class`.
    pub class: Option<Resolved>,
    /// Binary: `weight`.
    pub weight: Option<Resolved>,
    /// `anchor_id`.
    pub anchor_id: Option<Resolved>,
    /// `level`.
    pub level: Option<Resolved>,
    /// `iou`.
    pub iou: Option<Resolved>,
    /// `box_loss`: the anchor's (row's) box-regression loss.
    pub box_loss: Option<Resolved>,
    /// `x1, y1, x2, y2`, all four or none.
    pub boxes: Option<[Resolved; 4]>,
}

impl FileColumns {
    /// Every resolved column, for consistency checks.
    fn all(&self) -> Vec<(&'static str, &Resolved)> {
        let mut v = vec![("image_id", &self.image_id), ("label", &self.label), ("scores", &self.scores)];
        let opts = [
            ("class", &self.class),
            ("weight", &self.weight),
            ("anchor_id", &self.anchor_id),
            ("level", &self.level),
            ("iou", &self.iou),
            ("box_loss", &self.box_loss),
        ];
        for (n, c) in opts {
            if let Some(c) = c {
                v.push((n, c));
            }
        }
        if let Some(b) = &self.boxes {
            for (n, c) in ["x1", "y1", "x2", "y2"].into_iter().zip(b.iter()) {
                v.push((n, c));
            }
        }
        v
    }
}

/// The layout-level facts shared by every file of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpShape {
    /// Dense or binary.
    pub layout: Layout,
    /// Logits or probabilities.
    pub scores: ScoreKind,
    /// Sigmoid or softmax.
    pub activation: Activation,
}

/// Finds the layout and columns of one file.
pub fn resolve(
    file: &InputFile,
    schema: &ArrowSchema,
    options: &DumpOptions,
) -> Result<(DumpShape, FileColumns), InputError> {
    let fields: Vec<(&str, ColumnType)> =
        schema.iter().map(|(name, field)| (name.as_str(), ColumnType::of(&field.dtype))).collect();
    resolve_fields(file, &fields, options)
}

/// Finds the layout and columns of an in-memory Arrow source (`source.path` is its name), with
/// the same rules and errors as [`resolve`].
pub fn resolve_arrow(
    source: &InputFile,
    schema: &arrow_schema::Schema,
    options: &DumpOptions,
) -> Result<(DumpShape, FileColumns), InputError> {
    let fields: Vec<(&str, ColumnType)> =
        schema.fields().iter().map(|f| (f.name().as_str(), ColumnType::of_arrow(f.data_type()))).collect();
    resolve_fields(source, &fields, options)
}

/// [`resolve`] over the columns' names and type classes, in schema order.
fn resolve_fields(
    file: &InputFile,
    fields: &[(&str, ColumnType)],
    options: &DumpOptions,
) -> Result<(DumpShape, FileColumns), InputError> {
    let path = file.path.as_path();
    let map = options.columns();
    let lookup = |logical: &'static str| -> Option<Resolved> {
        let name = map.physical(logical);
        if let Some(&(_, ty)) = fields.iter().find(|(n, _)| *n == name) {
            return Some(Resolved {
                logical,
                name: name.to_string(),
                ty,
                source: Source::Column(name.to_string()),
            });
        }
        file.hive.iter().find(|(k, _)| k == name).map(|(k, v)| Resolved {
            logical,
            name: k.clone(),
            ty: match v {
                HiveValue::Int(_) => ColumnType::Int,
                HiveValue::Str(_) => ColumnType::Str,
            },
            source: Source::Hive(v.clone()),
        })
    };
    let found = || {
        let mut names: Vec<String> = fields.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(file.hive.iter().map(|(k, _)| format!("{k} (hive)")));
        names.join(", ")
    };

    let dense_scores = (lookup("logits"), lookup("probs"));
    let binary_scores = (lookup("logit"), lookup("prob"));
    let has_dense = dense_scores.0.is_some() || dense_scores.1.is_some();
    let has_binary = binary_scores.0.is_some() || binary_scores.1.is_some();
    let layout = match (options.layout(), has_dense, has_binary) {
        (Some(l), _, _) => l,
        (None, true, false) => Layout::Dense,
        (None, false, true) => Layout::Binary,
        (None, true, true) => {
            return Err(schema_error(
                path,
                "the file has both dense (logits/probs) and binary (logit/prob) score columns",
                "choose one with --layout dense or --layout binary",
            ))
        }
        (None, false, false) => {
            return Err(schema_error(
                path,
                format!("no score column found (columns: {})", found()),
                "a dense dump needs a 'logits' or 'probs' list column, a binary dump a 'logit' or 'prob' column; map yours with e.g. --col logits=cls_scores",
            ))
        }
    };
    if layout == Layout::Binary && options.activation() == Activation::Softmax {
        return Err(schema_error(
            path,
            "--activation softmax needs a dense dump (one row per anchor with all K scores)",
            "drop --activation softmax, or dump one row per anchor with a 'logits' list",
        ));
    }

    let (names, (logits, probs)) = match layout {
        Layout::Dense => (("logits", "probs"), dense_scores),
        Layout::Binary => (("logit", "prob"), binary_scores),
    };
    let (kind, scores) = match (options.scores(), logits, probs) {
        (Some(ScoreKind::Logits), Some(l), _) => (ScoreKind::Logits, l),
        (Some(ScoreKind::Probs), _, Some(p)) => (ScoreKind::Probs, p),
        (Some(k), _, _) => {
            let name = if k == ScoreKind::Logits { names.0 } else { names.1 };
            return Err(missing(path, name, &found(), "the column chosen by --scores"));
        }
        (None, Some(l), None) => (ScoreKind::Logits, l),
        (None, None, Some(p)) => (ScoreKind::Probs, p),
        (None, Some(_), Some(_)) => {
            return Err(schema_error(
                path,
                format!("both '{}' and '{}' are present", names.0, names.1),
                "choose one with --scores logits (preferred: exact, stable losses) or --scores probs",
            ))
        }
        (None, None, None) => {
            return Err(missing(path, names.0, &found(), "the scores (or their probabilities)"));
        }
    };

    let required = |logical: &'static str, what: &str| {
        lookup(logical).ok_or_else(|| missing(path, logical, &found(), what))
    };
    let image_id = required("image_id", "the image each row belongs to")?;
    expect(path, &image_id, &[ColumnType::Int, ColumnType::Str], "an integer or string")?;

    let label = match layout {
        Layout::Dense => {
            let l = required("label", "the matched class per anchor (-1 background, -2 ignored)")?;
            expect(path, &l, &[ColumnType::Int], "an integer class index")?;
            l
        }
        Layout::Binary => {
            let t = required("target", "the 0/1 (or soft) target per decision")?;
            expect(
                path,
                &t,
                &[ColumnType::Bool, ColumnType::Int, ColumnType::Float],
                "bool, 0/1 integer or float in [0,1]",
            )?;
            t
        }
    };
    match layout {
        Layout::Dense => {
            if !matches!(scores.ty, ColumnType::FloatList(_)) {
                return Err(dtype_error(
                    path,
                    &scores,
                    "a list of float32/float64 (pyarrow: pa.list_(pa.float32()))",
                ));
            }
        }
        Layout::Binary => expect(path, &scores, &[ColumnType::Float], "float32/float64")?,
    }

    let optional =
        |logical: &'static str, types: &[ColumnType], what: &str| -> Result<Option<Resolved>, InputError> {
            match lookup(logical) {
                Some(r) => {
                    expect(path, &r, types, what)?;
                    Ok(Some(r))
                }
                None => Ok(None),
            }
        };
    let ints = [ColumnType::Int];
    let floats = [ColumnType::Float];
    let (class, weight) = match layout {
        Layout::Binary => (
            optional("class", &ints, "an integer class index")?,
            optional("weight", &[ColumnType::Float, ColumnType::Int], "a non-negative number")?,
        ),
        Layout::Dense => (None, None),
    };
    let anchor_id = optional("anchor_id", &ints, "an integer anchor index")?;
    let level = optional("level", &ints, "an integer FPN level (e.g. 3 for P3)")?;
    let iou = optional("iou", &floats, "a float IoU in [0,1]")?;
    let box_loss = optional("box_loss", &floats, "a float box-regression loss >= 0")?;
    let corners = ["x1", "y1", "x2", "y2"].map(lookup);
    let present = corners.iter().filter(|c| c.is_some()).count();
    let boxes = match present {
        0 => None,
        4 => {
            let [a, b, c, d] = corners.map(Option::unwrap);
            for r in [&a, &b, &c, &d] {
                expect(path, r, &floats, "a float box coordinate")?;
            }
            Some([a, b, c, d])
        }
        _ => {
            return Err(schema_error(
                path,
                "only some of the box columns x1, y1, x2, y2 are present",
                "write all four box columns or none",
            ))
        }
    };
    Ok((
        DumpShape { layout, scores: kind, activation: options.activation() },
        FileColumns { image_id, label, scores, class, weight, anchor_id, level, iou, box_loss, boxes },
    ))
}

/// Checks that a later file resolves to the same columns and types as the first.
pub fn check_consistent(
    first: (&Path, &DumpShape, &FileColumns),
    other: (&Path, &DumpShape, &FileColumns),
) -> Result<(), InputError> {
    let (p0, s0, c0) = first;
    let (p1, s1, c1) = other;
    let fix = "write every file of a dump with the same columns and types (or analyse them separately)";
    if s0 != s1 {
        return Err(schema_error(
            p1,
            format!(
                "layout {}/{} differs from {} ({}/{})",
                s1.layout,
                s1.scores,
                p0.display(),
                s0.layout,
                s0.scores
            ),
            fix,
        ));
    }
    let a = c0.all();
    let b = c1.all();
    for (name, r0) in &a {
        match b.iter().find(|(n, _)| n == name) {
            None => {
                return Err(schema_error(
                    p1,
                    format!("column '{}' is missing here but present in {}", r0.name, p0.display()),
                    fix,
                ))
            }
            Some((_, r1))
                if r1.ty != r0.ty
                    && !(matches!(r0.ty, ColumnType::FloatList(_))
                        && matches!(r1.ty, ColumnType::FloatList(_))) =>
            {
                return Err(schema_error(
                    p1,
                    format!(
                        "column '{}' has type {:?} here but {:?} in {}",
                        r1.name,
                        r1.ty,
                        r0.ty,
                        p0.display()
                    ),
                    fix,
                ))
            }
            _ => {}
        }
    }
    for (name, r1) in &b {
        if !a.iter().any(|(n, _)| n == name) {
            return Err(schema_error(
                p1,
                format!("column '{}' is present here but missing in {}", r1.name, p0.display()),
                fix,
            ));
        }
    }
    Ok(())
}

fn expect(path: &Path, r: &Resolved, types: &[ColumnType], what: &str) -> Result<(), InputError> {
    if types.contains(&r.ty) {
        Ok(())
    } else {
        Err(dtype_error(path, r, what))
    }
}

fn dtype_error(path: &Path, r: &Resolved, what: &str) -> InputError {
    let ty = match r.ty {
        ColumnType::Int => "integer".to_string(),
        ColumnType::Float => "float".to_string(),
        ColumnType::Str => "string".to_string(),
        ColumnType::Bool => "bool".to_string(),
        ColumnType::FloatList(_) => "list of floats".to_string(),
        ColumnType::Other => "an unsupported type".to_string(),
    };
    schema_error(
        path,
        format!("column '{}' is {ty}; expected {what}", r.name),
        format!(
            "write '{}' as {what} (cast float16/decimal to float32 when dumping), or map the right column with --col {}=<column>",
            r.name, r.logical
        ),
    )
}

fn missing(path: &Path, logical: &str, found: &str, what: &str) -> InputError {
    schema_error(
        path,
        format!("missing required column '{logical}' ({what}); columns found: {found}"),
        format!("add it to the dump, or map an existing column with --col {logical}=<column>"),
    )
}

fn schema_error(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> InputError {
    InputError::Schema { path: path.to_path_buf(), problem: problem.into(), fix: fix.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DumpParams;
    use polars_arrow::datatypes::Field;

    fn schema(fields: &[(&str, ArrowDataType)]) -> ArrowSchema {
        fields
            .iter()
            .map(|(n, t)| Field::new((*n).into(), t.clone(), true))
            .map(|f| (f.name.clone(), f))
            .collect()
    }

    fn list(t: ArrowDataType) -> ArrowDataType {
        ArrowDataType::LargeList(Box::new(Field::new("item".into(), t, true)))
    }

    fn file(hive: &[(&str, HiveValue)]) -> InputFile {
        InputFile {
            path: "d/part.parquet".into(),
            hive: hive.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    fn options(p: DumpParams) -> DumpOptions {
        p.check().unwrap()
    }

    fn dense(extra: &[(&str, ArrowDataType)]) -> ArrowSchema {
        let mut f = vec![
            ("image_id", ArrowDataType::Int64),
            ("label", ArrowDataType::Int32),
            ("logits", list(ArrowDataType::Float32)),
        ];
        f.extend(extra.iter().cloned());
        schema(&f)
    }

    fn error(r: Result<(DumpShape, FileColumns), InputError>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn detects_dense_and_binary_layouts_and_score_kinds() {
        let (shape, cols) = resolve(&file(&[]), &dense(&[]), &options(DumpParams::default())).unwrap();
        assert_eq!(
            (shape.layout, shape.scores, shape.activation),
            (Layout::Dense, ScoreKind::Logits, Activation::Sigmoid)
        );
        assert_eq!(cols.scores.name, "logits");
        let binary = schema(&[
            ("image_id", ArrowDataType::Utf8View),
            ("target", ArrowDataType::Boolean),
            ("prob", ArrowDataType::Float64),
            ("class", ArrowDataType::Int16),
        ]);
        let (shape, cols) = resolve(&file(&[]), &binary, &options(DumpParams::default())).unwrap();
        assert_eq!((shape.layout, shape.scores), (Layout::Binary, ScoreKind::Probs));
        assert_eq!(cols.class.unwrap().ty, ColumnType::Int);
    }

    #[test]
    fn a_hive_key_stands_in_for_a_missing_column() {
        let s = schema(&[("label", ArrowDataType::Int32), ("logits", list(ArrowDataType::Float32))]);
        let (_, cols) =
            resolve(&file(&[("image_id", HiveValue::Int(7))]), &s, &options(DumpParams::default())).unwrap();
        assert_eq!(cols.image_id.source, Source::Hive(HiveValue::Int(7)));
        // A column of the file wins over a hive key of the same name.
        let (_, cols) =
            resolve(&file(&[("image_id", HiveValue::Int(7))]), &dense(&[]), &options(DumpParams::default()))
                .unwrap();
        assert_eq!(cols.image_id.source, Source::Column("image_id".into()));
    }

    #[test]
    fn schema_errors_name_the_file_the_column_and_a_fix() {
        let o = options(DumpParams::default());
        // Both score kinds.
        let e = error(resolve(&file(&[]), &dense(&[("probs", list(ArrowDataType::Float32))]), &o));
        assert!(
            e.contains("d/part.parquet") && e.contains("both 'logits' and 'probs'") && e.contains("--scores"),
            "{e}"
        );
        // No scores at all: the columns found are listed, hive keys marked.
        let s = schema(&[("image_id", ArrowDataType::Int64), ("label", ArrowDataType::Int32)]);
        let e = error(resolve(&file(&[("step", HiveValue::Int(3))]), &s, &o));
        assert!(
            e.contains("no score column") && e.contains("step (hive)") && e.contains("--col logits="),
            "{e}"
        );
        // Dense and binary scores together.
        let e = error(resolve(&file(&[]), &dense(&[("logit", ArrowDataType::Float32)]), &o));
        assert!(e.contains("--layout dense or --layout binary"), "{e}");
        // Wrong types.
        let s = schema(&[
            ("image_id", ArrowDataType::Int64),
            ("label", ArrowDataType::Float32),
            ("logits", list(ArrowDataType::Float32)),
        ]);
        let e = error(resolve(&file(&[]), &s, &o));
        assert!(e.contains("label") && e.contains("integer class index"), "{e}");
        let s = schema(&[
            ("image_id", ArrowDataType::Int64),
            ("label", ArrowDataType::Int32),
            ("logits", list(ArrowDataType::Utf8View)),
        ]);
        let e = error(resolve(&file(&[]), &s, &o));
        assert!(e.contains("logits") && e.contains("list of float32/float64"), "{e}");
        // Some box corners only.
        let e = error(resolve(
            &file(&[]),
            &dense(&[("x1", ArrowDataType::Float32), ("y1", ArrowDataType::Float32)]),
            &o,
        ));
        assert!(e.contains("x1, y1, x2, y2") && e.contains("all four"), "{e}");
        // Scores cannot come from a hive key (a constant per directory is not a score list).
        let s = schema(&[("image_id", ArrowDataType::Int64), ("label", ArrowDataType::Int32)]);
        let e = error(resolve(&file(&[("logits", HiveValue::Int(1))]), &s, &o));
        assert!(e.contains("logits") && e.contains("list of float32/float64"), "{e}");
        // Softmax needs the dense layout.
        let binary = schema(&[
            ("image_id", ArrowDataType::Int64),
            ("target", ArrowDataType::Float32),
            ("logit", ArrowDataType::Float32),
        ]);
        let softmax = options(DumpParams { activation: Activation::Softmax, ..Default::default() });
        let e = error(resolve(&file(&[]), &binary, &softmax));
        assert!(e.contains("--activation softmax needs a dense dump"), "{e}");
    }

    #[test]
    fn renamed_columns_resolve_under_their_physical_names() {
        let s = schema(&[
            ("img", ArrowDataType::Int64),
            ("label", ArrowDataType::Int32),
            ("cls_scores", list(ArrowDataType::Float64)),
        ]);
        let o = options(DumpParams {
            columns: vec!["image_id=img".into(), "logits=cls_scores".into()],
            ..Default::default()
        });
        let (_, cols) = resolve(&file(&[]), &s, &o).unwrap();
        assert_eq!((cols.image_id.name.as_str(), cols.scores.name.as_str()), ("img", "cls_scores"));
        assert_eq!(cols.scores.logical, "logits");
    }
}
