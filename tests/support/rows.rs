//! Counting rows in and out: Arrow rows as JSON values (for comparing with the fixtures'
//! `expect` objects), a Delta table read back through deltalake, and the records of input
//! files.

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Value};

/// Column `c` of row `i` as JSON (timestamps as RFC 3339 with microseconds and `Z`).
pub fn cell(batch: &RecordBatch, c: usize, i: usize) -> Value {
    let col = batch.column(c);
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(i).into(),
        DataType::Utf8 => col.as_string::<i32>().value(i).into(),
        // Files rewritten by DataFusion (`pinpipe maintain`'s compaction) carry view types.
        DataType::Utf8View => col.as_string_view().value(i).into(),
        DataType::Binary => Value::String(String::from_utf8_lossy(col.as_binary::<i32>().value(i)).into_owned()),
        DataType::BinaryView => Value::String(String::from_utf8_lossy(col.as_binary_view().value(i)).into_owned()),
        DataType::Timestamp(_, _) => {
            let us = col.as_primitive::<TimestampMicrosecondType>().value(i);
            let t = chrono::DateTime::from_timestamp_micros(us).expect("valid timestamp");
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().into()
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>().value(i);
            let f = l.as_primitive::<Float64Type>();
            Value::Array(
                (0..f.len())
                    .map(|j| if f.is_null(j) { Value::Null } else { f.value(j).into() })
                    .collect(),
            )
        }
        other => panic!("unexpected column type {other}"),
    }
}

/// Row `i` as a JSON object of every column.
pub fn row(batch: &RecordBatch, i: usize) -> Map<String, Value> {
    let schema = batch.schema();
    (0..batch.num_columns())
        .map(|c| (schema.field(c).name().clone(), cell(batch, c, i)))
        .collect()
}

/// Every row of a Delta table (all files of its newest version), as JSON objects.
pub async fn read_table(url: &str, options: HashMap<String, String>) -> Vec<Map<String, Value>> {
    use deltalake::DeltaTable;
    use object_store::ObjectStoreExt;
    let table = DeltaTable::try_from_url_with_storage_options(url::Url::parse(url).unwrap(), options)
        .await
        .unwrap();
    assert!(table.version().is_some(), "table {url} does not exist");
    let store = table.object_store();
    let snapshot = table.snapshot().unwrap();
    let mut out = Vec::new();
    let files: Vec<String> = snapshot.log_data().iter().map(|f| f.path().to_string()).collect();
    for f in files {
        // A partitioned table's files sit in `<column>=<value>` folders; the column is
        // not inside the file.
        let partition: Vec<(String, String)> = f
            .split('/')
            .filter_map(|part| part.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bytes = store
            .get(&object_store::path::Path::from(f))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192).unwrap();
        for b in reader {
            let b = b.unwrap();
            for i in 0..b.num_rows() {
                let mut r = row(&b, i);
                for (k, v) in &partition {
                    r.insert(k.clone(), Value::String(v.clone()));
                }
                out.push(r);
            }
        }
    }
    out
}

/// Non-blank lines (records) of the files under `dir` whose path contains `name_part`
/// ("" for every file): the input side of an exactly-once count.
pub fn count_records(dir: &Path, name_part: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(name_part) {
                n += std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count();
            }
        }
    }
    n
}
