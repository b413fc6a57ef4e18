//! Shared by the bench binaries: pinpipe's routing of records held in memory, the same
//! rule the sources run (`pinpipe::sources::partition::Router`), the size of what a run
//! wrote, and the CPU and peak memory of a `pinpipe` process the bench spawned.
// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

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

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A process's state letter and CPU seconds (user + system) from `/proc/<pid>/stat`
/// (`"self"`: this process); None once it is gone.
pub fn proc_stat(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is the 1st, utime the 12th, stime the 13th
    // (in USER_HZ = 100 ticks per second on Linux).
    let after: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| after.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some((after.first()?.to_string(), (field(11) + field(12)) / 100.0))
}

/// What a spawned process used: read from `/proc` until it exits.
pub struct Usage {
    /// CPU seconds, user + system.
    pub cpu: f64,
    /// Its high-water mark of resident memory (`VmHWM`).
    pub peak_rss_mb: f64,
    pub status: ExitStatus,
}

/// Watches `child` every 50 ms until it exits (a zombie still has its final CPU time and
/// high-water mark), then reaps it. Panics past `limit`, naming `what`.
pub fn watch(child: &mut Child, what: &str, limit: Duration) -> Usage {
    let pid = child.id().to_string();
    let (mut hwm_kb, mut cpu) = (0u64, 0.0);
    let deadline = Instant::now() + limit;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            hwm_kb = hwm_kb.max(kb);
        }
        match proc_stat(&pid) {
            Some((state, seconds)) => {
                cpu = seconds;
                if state == "Z" {
                    break;
                }
            }
            None => break,
        }
        assert!(Instant::now() < deadline, "{what} did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Usage {
        cpu,
        peak_rss_mb: hwm_kb as f64 / 1024.0,
        status: child.wait().expect("wait"),
    }
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n.is_multiple_of(2) => (v[m - 1] + v[m]) / 2.0,
        _ => v[m],
    }
}
