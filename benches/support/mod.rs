//! Shared by the bench binaries: pinpipe's routing of records held in memory, the same
//! rule the sources run (`pinpipe::sources::partition::Router`), and the size of what a
//! run wrote.
// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use pinpipe::clean::{self, Kind};
use pinpipe::sink::{PerTable, Position, SourceKey, SourceKind};
use pinpipe::sources::partition::Router;

/// Routes every record into Arrow batches of 8 192 rows on this thread, as a partition
/// actor does; returns (clean rows, dead letters).
pub fn clean_all(records: &[(Kind, Vec<u8>)]) -> (usize, usize) {
    let mut routers = Kind::ALL.map(|k| {
        let key = SourceKey::new(SourceKind::Batch, "bench", "0");
        let roles = &pinpipe::sink::TableRole::CLEANED;
        Router::new(k, key, PerTable::default(), roles, clean::DEFAULT_MAX_RECORD_BYTES)
    });
    let mut pos = itoa::Buffer::new();
    let (mut rows, mut dead) = (0usize, 0usize);
    let mut count = |appends: Vec<(pinpipe::sink::TableRole, pinpipe::sink::Append)>| {
        for (role, a) in appends {
            let n = a.batch.map_or(0, |b| b.num_rows());
            match role {
                pinpipe::sink::TableRole::Clean => rows += n,
                pinpipe::sink::TableRole::DeadLetter => dead += n,
                pinpipe::sink::TableRole::Raw => {}
            }
        }
    };
    for (i, (k, r)) in records.iter().enumerate() {
        let router = &mut routers[*k as usize];
        router.route(
            r,
            clean::RecordMeta::default(),
            Position::Offset(i as i64 + 1),
            pos.format(i),
            0,
        );
        if router.buffered() >= 8192 {
            count(router.hand_over());
        }
    }
    for router in &mut routers {
        count(router.hand_over());
    }
    (rows, dead)
}

/// Bytes under a folder (the tables a run wrote), for the raw layer's cost.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// The named columns of a Parquet file (each must exist), as read batches.
pub fn read_columns(file: &Path, columns: &[&str]) -> Vec<RecordBatch> {
    let f = std::fs::File::open(file).expect("parquet file");
    let b = ParquetRecordBatchReaderBuilder::try_new(f).expect("parquet");
    let schema = b.parquet_schema();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == *c)
                .unwrap_or_else(|| panic!("no column {c} in {}", file.display()))
        })
        .collect();
    let mask = ProjectionMask::leaves(schema, idx);
    b.with_projection(mask)
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}
