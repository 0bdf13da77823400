//! Splitting an opened dump into groups (training steps, checkpoints) for `hardmine trend`.
//!
//! A group is a set of whole row groups: those whose group key (a column of the file, else a
//! hive partition `key=value` on its path) holds one value. Each group becomes a [`Dump`] of its
//! own over the same footers, so every row group is decoded by exactly one group's pass and the
//! dump is read once in all (plus one read of the key column, a few bytes per row, to learn each
//! row group's value). The Python capture writes one file per (rank, step) with a constant
//! `step` column, and hive trees put one value in each directory, so whole row groups are what
//! users' dumps give; a row group holding several values is refused with the fix.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::DataType;
use rayon::prelude::*;

use super::{decode_group, Dump, DumpFile, HiveValue, Unit, MAX_BATCH_ROWS};
use crate::error::InputError;

/// One group: its key's value and the row groups that hold it, as a dump.
#[derive(Debug)]
pub struct Group {
    /// The key's value in these rows.
    pub value: HiveValue,
    /// The group's row groups (in dump order) over the same footers.
    pub dump: Dump,
}

/// A dump split by a key.
#[derive(Debug)]
pub struct Grouping {
    /// The groups, by ascending value (integers numerically, strings lexically).
    pub groups: Vec<Group>,
    /// Rows that belong to no group, each entry a sentence saying which and why (a file without
    /// the key, a value of the other type).
    pub left_out: Vec<String>,
}

/// Where one row group's key value came from, or why it has none.
enum UnitKey {
    Value(HiveValue),
    Missing,
    Unsupported(String),
}

impl Dump {
    /// Splits the dump by `key`: a column of the files (whose value must be constant within
    /// each row group), else a hive partition key. Files without the key and row groups whose
    /// value has the minority type (integers and strings mixed) are left out and listed in
    /// [`Grouping::left_out`]; a row group with several values, a null, or no file with the key
    /// at all is an error naming the file and the fix.
    pub fn group_by(&self, key: &str) -> Result<Grouping, InputError> {
        let keys: Vec<UnitKey> = self
            .units
            .par_iter()
            .map(|&u| unit_key(&self.files[u.file], u, key))
            .collect::<Result<_, _>>()?;
        let mut left_out = Vec::new();
        let files_of = |pick: &dyn Fn(&UnitKey) -> bool| -> Vec<String> {
            let mut files: Vec<String> = Vec::new();
            for (u, k) in self.units.iter().zip(&keys) {
                let p = self.files[u.file].input.path.display().to_string();
                if pick(k) && files.last() != Some(&p) {
                    files.push(p);
                }
            }
            files
        };
        let some = |files: &[String]| match files {
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
            [] => String::new(),
        };
        let ints = keys.iter().filter(|k| matches!(k, UnitKey::Value(HiveValue::Int(_)))).count();
        let strs = keys.iter().filter(|k| matches!(k, UnitKey::Value(HiveValue::Str(_)))).count();
        if ints + strs == 0 {
            let f = &self.files[0];
            let mut names: Vec<String> = f.arrow_schema().fields().iter().map(|c| c.name().clone()).collect();
            names.extend(f.input.hive.iter().map(|(k, _)| format!("{k} (hive)")));
            return Err(InputError::NoFiles {
                spec: format!("--by {key}"),
                problem: format!(
                    "no file has a column or hive partition '{key}' holding integers or strings (the first file, {}, has: {})",
                    f.input.path.display(),
                    names.join(", ")
                ),
                fix: format!("name the column that holds the training step with --by <column>, write it when dumping (hardmine's Python DumpWriter writes 'step'), put each step in a '{key}=N' directory, or pass --by path for one group per argument"),
            });
        }
        let missing = files_of(&|k| matches!(k, UnitKey::Missing));
        if !missing.is_empty() {
            left_out.push(format!(
                "{} file(s) have no column or hive partition '{key}' and are left out: {}",
                missing.len(),
                some(&missing)
            ));
        }
        for (u, k) in self.units.iter().zip(&keys) {
            if let UnitKey::Unsupported(why) = k {
                left_out.push(format!(
                    "{}, row group {}: {why}; left out",
                    self.files[u.file].input.path.display(),
                    u.row_group
                ));
            }
        }
        // Integers and strings mixed: keep the type most row groups have (integers on a tie).
        let keep_ints = ints >= strs;
        if ints > 0 && strs > 0 {
            let (kept, other, n) =
                if keep_ints { ("an integer", "a string", strs) } else { ("a string", "an integer", ints) };
            let odd =
                files_of(&|k| matches!(k, UnitKey::Value(v) if matches!(v, HiveValue::Int(_)) != keep_ints));
            left_out.push(format!(
                "'{key}' is {other} in {n} row group(s) ({}) and {kept} in the others: one axis needs one type, so those are left out",
                some(&odd)
            ));
        }
        let mut by_value: BTreeMap<HiveValue, Vec<Unit>> = BTreeMap::new();
        for (u, k) in self.units.iter().zip(keys) {
            if let UnitKey::Value(v) = k {
                if matches!(v, HiveValue::Int(_)) == keep_ints {
                    by_value.entry(v).or_default().push(*u);
                }
            }
        }
        let groups =
            by_value.into_iter().map(|(value, units)| Group { value, dump: self.subset(&units) }).collect();
        Ok(Grouping { groups, left_out })
    }

    /// The dump restricted to `units` (in dump order), over the same footers.
    fn subset(&self, units: &[Unit]) -> Dump {
        let mut files: Vec<DumpFile> = Vec::new();
        let mut index: BTreeMap<usize, usize> = BTreeMap::new();
        let units = units
            .iter()
            .map(|u| {
                let i = *index.entry(u.file).or_insert_with(|| {
                    let f = &self.files[u.file];
                    files.push(DumpFile {
                        input: f.input.clone(),
                        rows: f.rows,
                        columns: f.columns.clone(),
                        data: f.data.clone(),
                    });
                    files.len() - 1
                });
                Unit { file: i, ..*u }
            })
            .collect();
        Dump {
            files,
            shape: self.shape,
            width: self.width,
            background_class: self.background_class,
            units,
            extras: self.extras,
            on_invalid: self.on_invalid,
        }
    }
}

/// The key's value in one row group: a column wins over a hive key of the same name (as for
/// every logical column).
fn unit_key(file: &DumpFile, unit: Unit, key: &str) -> Result<UnitKey, InputError> {
    let Ok(field) = file.arrow_schema().field_with_name(key) else {
        return Ok(match file.input.hive.iter().find(|(k, _)| k == key) {
            Some((_, v)) => UnitKey::Value(v.clone()),
            None => UnitKey::Missing,
        });
    };
    let ty = field.data_type().clone();
    let integer = ty.is_integer();
    let string = matches!(ty, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !integer && !string {
        return Ok(UnitKey::Unsupported(format!("column '{key}' holds {ty}, not integers or strings")));
    }
    let path = &file.input.path;
    let mut seen: Option<HiveValue> = None;
    let several = |a: &HiveValue, b: &HiveValue| {
        InputError::Schema {
        path: path.clone(),
        problem: format!(
            "row group {} holds several values of '{key}' ({} and {}): hardmine trend groups whole row groups",
            unit.row_group,
            show(a),
            show(b)
        ),
        fix: format!("write one '{key}' per row group or file (hardmine's Python DumpWriter writes one file per step), e.g. with polars: df.partition_by('{key}') and one write_parquet per part"),
    }
    };
    decode_group(file, unit, &[key.to_string()], MAX_BATCH_ROWS, None, &mut |batch| {
        let arr = batch.column_by_name(key).ok_or_else(|| InputError::Parquet {
            path: path.clone(),
            detail: format!("column '{key}' decoded no data"),
        })?;
        if arr.null_count() > 0 {
            return Err(InputError::Schema {
                path: path.clone(),
                problem: format!("row group {}: column '{key}' has null values", unit.row_group),
                fix: format!("write the '{key}' of every row"),
            });
        }
        for v in values(arr.as_ref()) {
            match &seen {
                None => seen = Some(v),
                Some(s) if *s == v => {}
                Some(s) => return Err(several(s, &v)),
            }
        }
        Ok(())
    })?;
    Ok(seen.map_or(UnitKey::Missing, UnitKey::Value))
}

/// The distinct-in-a-row values of an integer or string array (a run of equal values once).
fn values(arr: &dyn Array) -> Vec<HiveValue> {
    fn ints<T: ArrowPrimitiveType>(arr: &dyn Array) -> Vec<HiveValue>
    where
        T::Native: TryInto<i64>,
    {
        let mut out: Vec<HiveValue> = Vec::new();
        for &v in arr.as_primitive::<T>().values().iter() {
            // u64 above i64::MAX: kept as text, still one value.
            let v = match v.try_into() {
                Ok(i) => HiveValue::Int(i),
                Err(_) => HiveValue::Str("(out of range)".into()),
            };
            if out.last() != Some(&v) {
                out.push(v);
            }
        }
        out
    }
    fn strs<'a>(it: impl Iterator<Item = Option<&'a str>>) -> Vec<HiveValue> {
        let mut out: Vec<HiveValue> = Vec::new();
        for s in it.flatten() {
            if !matches!(out.last(), Some(HiveValue::Str(l)) if l == s) {
                out.push(HiveValue::Str(s.to_string()));
            }
        }
        out
    }
    use DataType as D;
    match arr.data_type() {
        D::Int8 => ints::<Int8Type>(arr),
        D::Int16 => ints::<Int16Type>(arr),
        D::Int32 => ints::<Int32Type>(arr),
        D::Int64 => ints::<Int64Type>(arr),
        D::UInt8 => ints::<UInt8Type>(arr),
        D::UInt16 => ints::<UInt16Type>(arr),
        D::UInt32 => ints::<UInt32Type>(arr),
        D::UInt64 => ints::<UInt64Type>(arr),
        D::Utf8 => strs(arr.as_string::<i32>().iter()),
        D::LargeUtf8 => strs(arr.as_string::<i64>().iter()),
        D::Utf8View => strs(arr.as_string_view().iter()),
        _ => Vec::new(),
    }
}

/// A value as the user wrote it.
pub fn show(v: &HiveValue) -> String {
    match v {
        HiveValue::Int(i) => i.to_string(),
        HiveValue::Str(s) => format!("'{s}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DumpParams;
    use crate::synth::{self, StepPartition, SynthConfig, Training};

    fn sequence(dir: &std::path::Path, partition: StepPartition) -> Dump {
        let cfg = SynthConfig {
            images: 2,
            anchors_per_image: 500,
            classes: 2,
            rows_per_group: 300,
            training: Some(Training { steps: 3, partition, ..Default::default() }),
            ..Default::default()
        };
        synth::generate(dir, &cfg).unwrap();
        Dump::open(&[dir.display().to_string()], &DumpParams::default().check().unwrap()).unwrap()
    }

    #[test]
    fn a_step_column_or_hive_key_splits_the_dump_into_whole_row_groups() {
        for partition in [StepPartition::Column, StepPartition::Hive] {
            let dir = tempfile::tempdir().unwrap();
            let dump = sequence(dir.path(), partition);
            let g = dump.group_by("step").unwrap();
            let values: Vec<&HiveValue> = g.groups.iter().map(|g| &g.value).collect();
            assert_eq!(values, [&HiveValue::Int(0), &HiveValue::Int(1000), &HiveValue::Int(2000)]);
            assert!(g.left_out.is_empty());
            // Every row group in exactly one group, each group a third of the rows.
            let units: usize = g.groups.iter().map(|g| g.dump.units().len()).sum();
            assert_eq!(units, dump.units().len());
            for grp in &g.groups {
                let rows: usize = grp.dump.units().iter().map(|u| u.rows).sum();
                assert_eq!(rows, 1000);
                assert_eq!(grp.dump.rows(), 1000);
                assert_eq!(grp.dump.files().len(), 1);
            }
        }
    }

    #[test]
    fn a_key_no_file_has_is_an_error_naming_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let dump = sequence(dir.path(), StepPartition::Column);
        let e = dump.group_by("epoch").unwrap_err().to_string();
        assert!(e.contains("'epoch'") && e.contains("step") && e.contains("--by path"), "{e}");
    }
}
