//! kafka-delta-ingest (KDI, github.com/delta-io/kafka-delta-ingest) beside `pinpipe run`:
//! same broker, same pre-produced records, same run, when `PINPIPE_BENCH_KDI` names a KDI
//! binary.
//!
//! KDI is not published on crates.io, and this repository carries neither its code nor
//! anything that builds it (BENCHMARKS.md names the commit that was measured). KDI writes
//! into Delta tables that exist already and cannot clean, so each topic gets a table whose
//! schema is the raw record's: one nullable string column per top-level key seen in the
//! topic's records (KDI turns numbers into strings for string columns), plus
//! `_kafka_partition` and `_kafka_offset` from KDI's Kafka transforms (the lineage pinpipe
//! keeps too). One KDI process per topic, as KDI requires.
//!
//! KDI's dead-letter table commits once per bad record: here that made a run of 20 000
//! posts (about 0.1 % bad) take minutes, so by default KDI runs without it and the records
//! it rejects are counted from its log (one warning per record, or one with the count for
//! a Parquet write). `PINPIPE_BENCH_KDI_DLQ=1` gives it the dead-letter tables.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Flush settings given to KDI, as close to the bench's pinpipe config as its flags allow:
/// `--allowed_latency` is whole seconds (pinpipe: `writer.max_age_ms = 1000`),
/// `--max_messages_per_batch` is its Arrow batch (pinpipe: `kafka.batch_rows = 8192`), and
/// `--min_bytes_per_file` counts Parquet bytes where pinpipe's `writer.max_bytes` (32 MiB)
/// counts buffered Arrow bytes.
pub const FLAGS: [&str; 6] = [
    "--allowed_latency",
    "1",
    "--max_messages_per_batch",
    "8192",
    "--min_bytes_per_file",
    "33554432",
];

pub struct Kdi {
    bin: PathBuf,
    /// Dead letters into Delta tables (`<name>_dlq`) rather than counted from the log.
    dlq: bool,
}

/// What KDI's processes did, summed over them.
pub struct Figures {
    pub cpu: f64,
    pub peak_rss_mb: f64,
}

/// A process's CPU seconds and its peak RSS in kB (VmHWM), from /proc; None once reaped.
fn sample(pid: u32) -> Option<(String, f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| after.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some((after.first()?.to_string(), (field(11) + field(12)) / 100.0, hwm))
}

impl Kdi {
    pub fn from_env() -> Option<Self> {
        let bin = PathBuf::from(std::env::var_os("PINPIPE_BENCH_KDI")?);
        assert!(bin.is_file(), "PINPIPE_BENCH_KDI={} is not a file", bin.display());
        let dlq = std::env::var("PINPIPE_BENCH_KDI_DLQ").is_ok_and(|v| v == "1");
        Some(Self { bin, dlq })
    }

    /// Creates `dir/<name>` and `dir/<name>_dlq` for a topic whose records have `keys`.
    pub fn create_tables(dir: &Path, name: &str, keys: &BTreeSet<String>) {
        let mut fields: Vec<(String, &str)> = keys.iter().map(|k| (k.clone(), "string")).collect();
        fields.push(("_kafka_partition".into(), "integer"));
        fields.push(("_kafka_offset".into(), "long"));
        create_table(&dir.join(name), &fields);
        let dlq = ["base64_bytes", "json_string", "error"]
            .map(|c| (c.to_string(), "string"))
            .into_iter()
            .chain([("timestamp".to_string(), "timestamp")])
            .collect::<Vec<_>>();
        create_table(&dir.join(format!("{name}_dlq")), &dlq);
    }

    /// Starts one KDI process reading `topic` into `dir/<name>`. It runs until killed:
    /// its `--ends_at_latest_offsets` did not end it here once everything was written, so
    /// the bench stops it when the tables hold every record.
    pub fn spawn(&self, dir: &Path, name: &str, topic: &str, brokers: &str) -> Child {
        let table = dir.join(name);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("kdi log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("ingest")
            .arg(topic)
            .arg(&table)
            .args(["--kafka", brokers])
            .args(["--consumer_group", &format!("kdi-{name}")])
            .args(["--app_id", &format!("kdi-{name}")])
            .args(["--auto_offset_reset", "earliest"])
            .args(FLAGS)
            .args(["-t", "_kafka_partition: kafka.partition"])
            .args(["-t", "_kafka_offset: kafka.offset"]);
        if self.dlq {
            cmd.arg("--dlq_table_location").arg(dir.join(format!("{name}_dlq")));
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()))
    }
}

/// Waits for every child (killing them all once `stop()` says so), sampling their CPU and
/// peak RSS; the CPU is read while each is a zombie, before it is reaped. Panics if one
/// exits with an error (unless it was killed) or past `limit`.
pub fn watch(children: &mut [Child], limit: Duration, mut stop: impl FnMut() -> bool) -> Figures {
    let t = Instant::now();
    let n = children.len();
    let (mut cpu, mut hwm) = (vec![0.0; n], vec![0u64; n]);
    let mut done = vec![false; n];
    let mut killed = false;
    while done.iter().any(|d| !d) {
        assert!(
            t.elapsed() < limit,
            "kafka-delta-ingest did not finish within {limit:?}"
        );
        if !killed && stop() {
            for c in children.iter_mut() {
                let _ = c.kill();
            }
            killed = true;
        }
        for (i, c) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            match sample(c.id()) {
                Some((state, seconds, kb)) => {
                    cpu[i] = seconds;
                    hwm[i] = hwm[i].max(kb);
                    if state == "Z" {
                        let status = c.wait().expect("wait");
                        assert!(killed || status.success(), "kafka-delta-ingest exited with {status}");
                        done[i] = true;
                    }
                }
                None => done[i] = true,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Figures {
        cpu: cpu.iter().sum(),
        peak_rss_mb: hwm.iter().sum::<u64>() as f64 / 1024.0,
    }
}

/// Writes version 0 of a Delta table: the protocol and the schema, no files.
fn create_table(path: &Path, fields: &[(String, &str)]) {
    let log = path.join("_delta_log");
    std::fs::create_dir_all(&log).expect("table dir");
    let schema = serde_json::json!({
        "type": "struct",
        "fields": fields.iter().map(|(name, ty)| serde_json::json!({
            "name": name, "type": ty, "nullable": true, "metadata": {}
        })).collect::<Vec<_>>(),
    });
    let protocol = serde_json::json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}});
    let meta = serde_json::json!({"metaData": {
        "id": format!("00000000-0000-4000-8000-{:012x}", fields.len() as u64 * 7919 + path.as_os_str().len() as u64),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.to_string(),
        "partitionColumns": [],
        "configuration": {},
        "createdTime": 0,
    }});
    std::fs::write(log.join(format!("{:020}.json", 0)), format!("{protocol}\n{meta}\n")).expect("version 0");
}

/// A Delta table's commits after its creation and the files they added, each with its
/// commit's `commitInfo.timestamp` (ms).
pub struct Log {
    pub commits: usize,
    pub files: Vec<(PathBuf, i64)>,
}

pub fn read_log(table: &Path) -> Log {
    let mut log = Log {
        commits: 0,
        files: Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) else {
        return log;
    };
    for e in entries.flatten() {
        let path = e.path();
        let version = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if path.extension().and_then(|x| x.to_str()) != Some("json") || version.is_none_or(|v| v == 0) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("commit");
        let mut ts = 0;
        let mut added = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("commit line");
            if let Some(t) = v["commitInfo"]["timestamp"].as_i64() {
                ts = t;
            }
            if let Some(p) = v["add"]["path"].as_str() {
                added.push(table.join(p));
            }
        }
        log.commits += 1;
        log.files.extend(added.into_iter().map(|f| (f, ts)));
    }
    log
}

impl Kdi {
    /// (rows, rejected records) of the topic KDI read into `dir/<name>`.
    pub fn counts(&self, dir: &Path, name: &str) -> (usize, usize) {
        let written = rows(&read_log(&dir.join(name)));
        let rejected = if self.dlq {
            rows(&read_log(&dir.join(format!("{name}_dlq"))))
        } else {
            rejected_in_log(&dir.join(format!("{name}.log")))
        };
        (written, rejected)
    }

    /// Rows and rejected records over `names`.
    pub fn total(&self, dir: &Path, names: &[String]) -> usize {
        names
            .iter()
            .map(|n| {
                let (r, d) = self.counts(dir, n);
                r + d
            })
            .sum()
    }
}

/// Records KDI's log says it did not write: one warning per record it could not parse or
/// transform or that was empty, and one per Parquet write with the count it skipped.
fn rejected_in_log(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let one = [
        "Deserialization failed - ",
        "Transform failed - ",
        "Empty payload for message",
    ];
    text.lines()
        .map(|l| {
            if one.iter().any(|m| l.contains(m)) {
                1
            } else if let Some(rest) = l.split("Partial parquet write, skipped ").nth(1) {
                rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// The latest commit time (ms) in a table's log.
pub fn last_commit(log: &Log) -> Option<i64> {
    log.files.iter().map(|f| f.1).max()
}

/// Rows in the files a table's log added.
pub fn rows(log: &Log) -> usize {
    log.files
        .iter()
        .map(|(f, _)| {
            let file = std::fs::File::open(f).expect("parquet file");
            let b = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
            b.metadata().file_metadata().num_rows() as usize
        })
        .sum()
}

/// `(partition, offset)` of every row of a KDI table, with the time of the commit that
/// added it.
pub fn committed(log: &Log) -> HashMap<(i32, i64), i64> {
    let mut out = HashMap::new();
    for (f, ts) in &log.files {
        for batch in crate::support::read_columns(f, &["_kafka_partition", "_kafka_offset"]) {
            let p = batch.column_by_name("_kafka_partition").expect("partition");
            let o = batch.column_by_name("_kafka_offset").expect("offset");
            let (p, o) = (p.as_primitive::<Int32Type>(), o.as_primitive::<Int64Type>());
            for i in 0..batch.num_rows() {
                if p.is_valid(i) && o.is_valid(i) {
                    out.insert((p.value(i), o.value(i)), *ts);
                }
            }
        }
    }
    out
}
