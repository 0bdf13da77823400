//! Writes Parquet fixtures with polars, column by column.

use std::path::Path;

use polars_arrow::array::{Array, FixedSizeListArray, ListArray, PrimitiveArray};
use polars_arrow::bitmap::Bitmap;
use polars_arrow::datatypes::{ArrowDataType, Field};
use polars_arrow::offset::Offsets;
use polars_core::prelude::*;
use polars_io::parquet::write::ParquetWriter;

/// A column of a fixture.
pub enum Col {
    I64(Vec<i64>),
    I32(Vec<i32>),
    OptI32(Vec<Option<i32>>),
    OptI64(Vec<Option<i64>>),
    OptF32(Vec<Option<f32>>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
    /// Variable-length list<float32>.
    ListF32(Vec<Vec<f32>>),
    /// Variable-length list<float64>.
    ListF64(Vec<Vec<f64>>),
    /// fixed_size_list<float32, n> from row-major values.
    Fixed(usize, Vec<f32>),
    /// list<float32> with null rows and null entries.
    OptListF32(Vec<Option<Vec<Option<f32>>>>),
}

fn list_array<T: polars_arrow::types::NativeType>(rows: Vec<Vec<T>>, inner: ArrowDataType) -> Box<dyn Array> {
    let offsets = Offsets::<i64>::try_from_lengths(rows.iter().map(Vec::len)).unwrap();
    let values = PrimitiveArray::<T>::from_vec(rows.into_iter().flatten().collect());
    let dtype = ArrowDataType::LargeList(Box::new(Field::new("item".into(), inner, true)));
    ListArray::<i64>::new(dtype, offsets.into(), values.boxed(), None).boxed()
}

fn opt_list_array(rows: Vec<Option<Vec<Option<f32>>>>) -> Box<dyn Array> {
    let offsets =
        Offsets::<i64>::try_from_lengths(rows.iter().map(|r| r.as_ref().map_or(0, Vec::len))).unwrap();
    let outer: Bitmap = rows.iter().map(Option::is_some).collect();
    let flat: Vec<Option<f32>> = rows.into_iter().flatten().flatten().collect();
    let values = PrimitiveArray::<f32>::from(flat);
    let dtype = ArrowDataType::LargeList(Box::new(Field::new("item".into(), ArrowDataType::Float32, true)));
    ListArray::<i64>::new(dtype, offsets.into(), values.boxed(), Some(outer)).boxed()
}

impl Col {
    fn into_column(self, name: &str) -> Column {
        let name: PlSmallStr = name.into();
        let s = match self {
            Col::I64(v) => Series::new(name, v),
            Col::I32(v) => Series::new(name, v),
            Col::OptI32(v) => Series::new(name, v),
            Col::OptI64(v) => Series::new(name, v),
            Col::OptF32(v) => Series::new(name, v),
            Col::OptListF32(v) => Series::from_arrow(name, opt_list_array(v)).unwrap(),
            Col::F32(v) => Series::new(name, v),
            Col::F64(v) => Series::new(name, v),
            Col::Str(v) => Series::new(name, v),
            Col::Bool(v) => Series::new(name, v),
            Col::ListF32(v) => Series::from_arrow(name, list_array(v, ArrowDataType::Float32)).unwrap(),
            Col::ListF64(v) => Series::from_arrow(name, list_array(v, ArrowDataType::Float64)).unwrap(),
            Col::Fixed(n, v) => {
                let rows = v.len() / n;
                let dtype = ArrowDataType::FixedSizeList(
                    Box::new(Field::new("item".into(), ArrowDataType::Float32, true)),
                    n,
                );
                let arr = FixedSizeListArray::new(dtype, rows, PrimitiveArray::from_vec(v).boxed(), None);
                Series::from_arrow(name, arr.boxed()).unwrap()
            }
        };
        s.into()
    }
}

/// Writes the columns to `path` with at most `rows_per_group` rows per row group.
pub fn write(path: &Path, cols: Vec<(&str, Col)>, rows_per_group: usize) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let columns: Vec<Column> = cols.into_iter().map(|(n, c)| c.into_column(n)).collect();
    let mut df = DataFrame::new_infer_height(columns).unwrap();
    let f = std::fs::File::create(path).unwrap();
    ParquetWriter::new(f).with_row_group_size(Some(rows_per_group)).finish(&mut df).unwrap();
}
