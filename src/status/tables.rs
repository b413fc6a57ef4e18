//! The tables' side of `pinpipe status`: size, version, last commit, stored positions, and
//! dead letters by reason. Reads the Delta log only (plus, for dead letters, the `error`
//! column of the files committed in the window).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use arrow_array::{Array, StringArray};
use deltalake::DeltaTable;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{DeadLetterCount, TableStatus};
use crate::sink::checkpoint::CheckpointIndex;
use crate::sink::{SourceKind, TablesConfig};

/// Every table in `names`, in that order; one that cannot be read says why.
pub async fn read_all(tables: &TablesConfig, names: &[String]) -> Vec<TableStatus> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(match read(tables, name).await {
            Ok(Some(t)) => t,
            Ok(None) => TableStatus {
                name: name.clone(),
                state: "missing",
                error: Some(format!(
                    "no Delta table at {} (nothing committed yet, or a wrong tables.location)",
                    tables.table_url(name).map_or_else(|e| e.to_string(), |u| u.to_string())
                )),
                ..Default::default()
            },
            Err(e) => TableStatus {
                name: name.clone(),
                state: "error",
                error: Some(e),
                ..Default::default()
            },
        });
    }
    out
}

/// One table: `None` when there is no table at its location.
async fn read(tables: &TablesConfig, name: &str) -> Result<Option<TableStatus>, String> {
    let Some(table) = tables.open_existing(name).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let version = table.version().map_or(-1, |v| v as i64);
    let snapshot = table.snapshot().map_err(|e| format!("table {name}: {e}"))?;
    let (mut rows, mut files, mut bytes) = (0u64, 0u64, 0u64);
    for f in snapshot.log_data().iter() {
        files += 1;
        bytes += u64::try_from(f.size()).unwrap_or(0);
        rows += f.num_records().unwrap_or(0) as u64;
    }
    let store = table.log_store().object_store(None);
    let commit = Path::from(format!("_delta_log/{version:020}.json"));
    let modified = store
        .head(&commit)
        .await
        .map_err(|e| format!("table {name}: reading its last commit {commit}: {e}"))?
        .last_modified;
    let mut index = CheckpointIndex::new();
    index
        .advance(store.as_ref(), version)
        .await
        .map_err(|e| format!("table {name}: reading its positions: {e}"))?;
    let all = index.all(name);
    let batch_objects = all.keys().filter(|k| k.source == SourceKind::Batch).count();
    let positions = all.into_iter().filter(|(k, _)| k.source != SourceKind::Batch).collect();
    Ok(Some(TableStatus {
        name: name.to_string(),
        state: "ok",
        error: None,
        version: Some(version),
        rows: Some(rows),
        files: Some(files),
        bytes: Some(bytes),
        last_commit_age_s: Some(age_s(SystemTime::from(modified))),
        batch_objects,
        positions,
    }))
}

/// Seconds since `t` (0 for a time in the future: clocks of store and reader differ).
pub fn age_s(t: SystemTime) -> f64 {
    SystemTime::now().duration_since(t).map_or(0.0, |d| d.as_secs_f64())
}

/// The reason of a dead letter: its `error` text up to the first `:` (`invalid json`,
/// `too large`, a field name), so messages that quote the record group together.
pub fn reason(error: &str) -> &str {
    error.split(':').next().unwrap_or("").trim()
}

/// Dead letters by reason in the dead-letter tables' files committed within `window`.
/// A table that cannot be read is an error line; the other tables are still counted.
pub async fn dead_letters(
    tables: &TablesConfig,
    read: &[TableStatus],
    window: Duration,
) -> (Vec<DeadLetterCount>, Vec<String>) {
    let since_ms = SystemTime::now()
        .checked_sub(window)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut counts = Vec::new();
    let mut errors = Vec::new();
    for t in read
        .iter()
        .filter(|t| t.name.ends_with("_dead_letter") && t.state == "ok")
    {
        match count_reasons(tables, &t.name, since_ms).await {
            Ok(by) => counts.extend(by.into_iter().map(|(reason, count)| DeadLetterCount {
                table: t.name.clone(),
                reason,
                count,
            })),
            Err(e) => errors.push(format!("table {}: counting dead letters: {e}", t.name)),
        }
    }
    (counts, errors)
}

async fn count_reasons(tables: &TablesConfig, name: &str, since_ms: i64) -> Result<BTreeMap<String, u64>, String> {
    let Some(table) = tables.open_existing(name).await.map_err(|e| e.to_string())? else {
        return Ok(BTreeMap::new());
    };
    let recent: Vec<Path> = files_since(&table, since_ms)?;
    let store = table.log_store().object_store(None);
    let mut by = BTreeMap::new();
    for path in recent {
        let bytes = store
            .get(&path)
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        for error in error_column(bytes).map_err(|e| format!("{path}: {e}"))? {
            *by.entry(reason(&error).to_string()).or_insert(0) += 1;
        }
    }
    Ok(by)
}

/// The table's files added at or after `since_ms` (their add action's modification time).
fn files_since(table: &DeltaTable, since_ms: i64) -> Result<Vec<Path>, String> {
    let snapshot = table.snapshot().map_err(|e| e.to_string())?;
    Ok(snapshot
        .log_data()
        .iter()
        .filter(|f| f.modification_time() >= since_ms)
        .map(|f| f.object_store_path())
        .collect())
}

/// The `error` column of one dead-letter Parquet file.
fn error_column(bytes: bytes::Bytes) -> Result<Vec<String>, String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let descr = builder.parquet_schema();
    let root = descr
        .root_schema()
        .get_fields()
        .iter()
        .position(|f| f.name() == "error")
        .ok_or("no `error` column")?;
    let mask = ProjectionMask::roots(descr, [root]);
    let reader = builder.with_projection(mask).build().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let col = batch.column(0);
        let strings = col
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("`error` is not a string column")?;
        out.extend(
            (0..strings.len())
                .filter(|i| strings.is_valid(*i))
                .map(|i| strings.value(i).to_string()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_part_before_the_colon() {
        assert_eq!(reason("invalid json: expected value at line 1"), "invalid json");
        assert_eq!(reason("follower_count: not a number: \"12k\""), "follower_count");
        assert_eq!(reason("too large"), "too large");
        assert_eq!(reason(""), "");
    }
}
