//! `pinpipe batch` on local folders: round trip through real Delta tables, idempotent
//! reruns, crash safety under SIGKILL, and clear errors for bad input.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pinpipe::clean::Kind;
use pinpipe::sink::{TablesConfig, WriterConfig, Writers};
use pinpipe::sources::batch::{self, BatchOptions, BatchSummary};
use serde_json::{Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");

fn run_batch(input: &Path, tables: &TablesConfig, writer: &WriterConfig) -> BatchSummary {
    let opts = BatchOptions {
        input: input.to_str().unwrap().to_string(),
        kind: None,
        concurrency: 2,
        batch_rows: 7,
        max_record_bytes: pinpipe::clean::DEFAULT_MAX_RECORD_BYTES,
        progress: false,
    };
    pinpipe::block_on(async {
        let writers = Writers::start(tables, writer, &Kind::ALL, None).await.unwrap();
        batch::run(&opts, tables, &writers).await.unwrap()
    })
}

fn read(tables: &TablesConfig, name: &str) -> Vec<Map<String, Value>> {
    let url = tables.table_url(name).unwrap().to_string();
    pinpipe::block_on(support::rows::read_table(&url, tables.storage_options()))
}

fn lineage(r: &Map<String, Value>) -> (String, String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap().to_string();
    (s("_source"), s("_stream"), s("_partition"), s("_position"))
}

#[test]
fn fixtures_round_trip_through_delta_and_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("raw");
    let vectors = support::fixtures::vectors();
    let mut by_kind: HashMap<Kind, Vec<&Value>> = HashMap::new();
    for (kind, v) in &vectors {
        by_kind.entry(*kind).or_default().push(v);
    }
    for (kind, vs) in &by_kind {
        let topic = format!("fx.{kind}");
        let folder = input.join(format!("topics/{topic}/partition=0"));
        std::fs::create_dir_all(&folder).unwrap();
        let body: String = vs.iter().map(|v| format!("{}\n", v["raw"].as_str().unwrap())).collect();
        std::fs::write(folder.join(format!("{topic}+0+0000000000.json")), body).unwrap();
    }
    let tables = TablesConfig {
        location: dir.path().join("tables").to_str().unwrap().into(),
        ..Default::default()
    };
    // Small thresholds: many commits, several files, rows from many flushes.
    let writer = WriterConfig {
        max_rows: 5,
        ..Default::default()
    };
    let first = run_batch(&input, &tables, &writer);
    // A blank line in JSON Lines is not a record (the empty message is covered by the
    // cleaning test); it still takes its line number, so lines map to vectors.
    let blank = |v: &Value| v["raw"].as_str().unwrap().trim().is_empty();
    let records = vectors.iter().filter(|(_, v)| !blank(v)).count();
    assert!(records >= vectors.len() - 1);
    assert_eq!(first.records as usize, records);
    assert_eq!(first.rows.values().sum::<u64>() as usize, records, "{}", first.line());

    for (kind, vs) in &by_kind {
        let key = format!("topics/fx.{kind}/partition=0/fx.{kind}+0+0000000000.json");
        let clean = read(&tables, kind.as_str());
        let dead = read(&tables, &format!("{kind}_dead_letter"));
        let in_file = vs.iter().filter(|v| !blank(v)).count();
        assert_eq!(
            clean.len() + dead.len(),
            in_file,
            "{kind}: every record in exactly one table"
        );
        let mut seen = HashSet::new();
        for r in clean.iter().chain(&dead) {
            assert!(seen.insert(lineage(r)), "{kind}: duplicate lineage {:?}", lineage(r));
            assert_eq!(r["_source"], "batch");
            assert_eq!(r["_stream"], format!("fx.{kind}"));
            assert_eq!(r["_partition"], key.as_str());
        }
        for r in &clean {
            let line: usize = r["_position"].as_str().unwrap().parse().unwrap();
            let v = vs[line - 1];
            let expect = v["expect"]
                .as_object()
                .unwrap_or_else(|| panic!("{kind} line {line} ({}) should be a dead letter", v["case"]));
            for (col, want) in expect {
                assert_eq!(&r[col], want, "{kind} {}: column {col}", v["case"]);
            }
        }
        for r in &dead {
            let line: usize = r["_position"].as_str().unwrap().parse().unwrap();
            let v = vs[line - 1];
            let want = v["reject"]
                .as_str()
                .unwrap_or_else(|| panic!("{kind} {} should be clean", v["case"]));
            assert!(
                r["error"].as_str().unwrap().starts_with(want),
                "{kind} {}: {}",
                v["case"],
                r["error"]
            );
            assert_eq!(r["raw"], v["raw"]);
        }
    }

    let second = run_batch(&input, &tables, &writer);
    assert_eq!(
        second.rows.values().sum::<u64>(),
        0,
        "rerun wrote rows: {}",
        second.line()
    );
    assert_eq!(second.skipped as usize, records);
    let total: usize = Kind::ALL
        .iter()
        .map(|k| read(&tables, k.as_str()).len() + read(&tables, &format!("{k}_dead_letter")).len())
        .sum();
    assert_eq!(total, records);
}

fn pinpipe(args: &[&str], envs: &[(&str, String)]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("PINPIPE_CONFIG").env("PINPIPE_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn sigkill_at_several_points_then_rerun_gives_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("raw");
    let tables_dir = dir.path().join("tables");
    let out = pinpipe(
        &[
            "emulate",
            "--count",
            "67000",
            "--seed",
            "7",
            "--no-progress",
            "--out",
            input.to_str().unwrap(),
        ],
        &[("PINPIPE__EMULATE__RECORDS_PER_FILE", "5000".into())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = support::rows::count_records(&input, "");
    assert_eq!(expected, 201_000);

    let envs = [
        ("PINPIPE__WRITER__MAX_ROWS", "4000".to_string()),
        ("PINPIPE__BATCH__BATCH_ROWS", "1000".to_string()),
        // Delta checkpoints every few commits, so resumes also replay positions from them.
        ("PINPIPE__TABLES__CHECKPOINT_INTERVAL", "3".to_string()),
    ];
    let args = [
        "batch",
        "--no-progress",
        "--input",
        input.to_str().unwrap(),
        "--tables",
        tables_dir.to_str().unwrap(),
    ];
    let log = tables_dir.join("pin/_delta_log");
    let mut kills = 0;
    // Kill as soon as the pin table has grown by a few commits, several times over.
    for round in 0..4 {
        let before = std::fs::read_dir(&log).map(|d| d.count()).unwrap_or(0);
        let mut child = Command::new(BIN)
            .args(args)
            .envs(envs.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut finished = false;
        loop {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            let now = std::fs::read_dir(&log).map(|d| d.count()).unwrap_or(0);
            if now >= before + 2 + round || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 2, "the run finished before it could be killed twice");
    let out = pinpipe(&args, &envs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let tables = TablesConfig {
        location: tables_dir.to_str().unwrap().into(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut total = 0;
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            for r in read(&tables, &name) {
                total += 1;
                assert!(
                    seen.insert((name.clone(), lineage(&r))),
                    "duplicate in {name}: {:?}",
                    lineage(&r)
                );
            }
        }
    }
    assert_eq!(total, expected, "clean + dead-letter rows must equal the input records");
    // The run after the kills found rows the killed runs had committed.
    let line = String::from_utf8_lossy(&out.stdout);
    let present: u64 = line
        .split("already present ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("no 'already present' count in {line}"));
    assert!(present > 0 && present < expected as u64, "{line}");
    let checkpoints = std::fs::read_dir(&log)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    assert!(
        checkpoints > 0,
        "the test should exercise resuming from Delta checkpoints"
    );
}

#[test]
fn bad_config_and_bad_input_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[writer]\nzstd_level = 99\n").unwrap();
    let out = pinpipe(&["--config", cfg.to_str().unwrap(), "check-config"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("writer.zstd_level") && err.contains("1..=22"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = pinpipe(&["check-config"], &[("PINPIPE__TABLES__LOCATION", "ftp://x/y".into())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tables.location"), "{err}");

    let missing = dir.path().join("nope");
    let out = pinpipe(
        &[
            "batch",
            "--no-progress",
            "--input",
            missing.to_str().unwrap(),
            "--tables",
            dir.path().join("t").to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a folder"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Files outside the Kafka Connect layout and no --kind: refused before anything is written.
    let raw = dir.path().join("plain");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("a.json"), "{\"ind\":1,\"age\":30}\n").unwrap();
    let t = dir.path().join("t2");
    let out = pinpipe(
        &[
            "batch",
            "--no-progress",
            "--input",
            raw.to_str().unwrap(),
            "--tables",
            t.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--kind"), "{err}");
    // With --kind it works, and the folder becomes the stream.
    let out = pinpipe(
        &[
            "batch",
            "--no-progress",
            "--kind",
            "user",
            "--input",
            raw.to_str().unwrap(),
            "--tables",
            t.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = TablesConfig {
        location: t.to_str().unwrap().into(),
        ..Default::default()
    };
    let rows = read(&tables, "user");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["_partition"], "a.json");
    assert_eq!(rows[0]["_stream"], ".");
}

#[test]
fn nasty_records_end_as_rows_or_dead_letters_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("raw");
    // Whitespace-only lines are not records in JSON Lines; the rest is one record a line.
    let corpus: Vec<(&str, Vec<u8>)> = support::nasty::records()
        .into_iter()
        .filter(|(_, b)| !b.iter().all(u8::is_ascii_whitespace))
        .collect();
    for kind in Kind::ALL {
        let topic = format!("nasty.{kind}");
        let folder = input.join(format!("topics/{topic}/partition=0"));
        std::fs::create_dir_all(&folder).unwrap();
        let mut body = Vec::new();
        for (_, bytes) in &corpus {
            body.extend_from_slice(bytes);
            body.push(b'\n');
        }
        std::fs::write(folder.join(format!("{topic}+0+0000000000.json")), body).unwrap();
    }
    let tables = TablesConfig {
        location: dir.path().join("tables").to_str().unwrap().into(),
        ..Default::default()
    };
    let summary = run_batch(&input, &tables, &WriterConfig::default());
    assert_eq!(summary.records as usize, corpus.len() * 3, "{}", summary.line());
    for kind in Kind::ALL {
        let clean = read(&tables, kind.as_str());
        let dead = read(&tables, &format!("{kind}_dead_letter"));
        let mut lines = HashSet::new();
        for r in clean.iter().chain(&dead) {
            let line: usize = r["_position"].as_str().unwrap().parse().unwrap();
            assert!(lines.insert(line), "{kind}: line {line} twice");
        }
        assert_eq!(lines.len(), corpus.len(), "{kind}: every record in exactly one table");
        assert!(
            !dead.is_empty() && dead.len() < corpus.len(),
            "{kind}: {} dead",
            dead.len()
        );
        for r in &dead {
            let line: usize = r["_position"].as_str().unwrap().parse().unwrap();
            let (what, bytes) = &corpus[line - 1];
            // A line's `\r` is its CRLF ending, not part of the record.
            let record = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            assert_eq!(
                r["raw"],
                String::from_utf8_lossy(record).as_ref(),
                "{kind} {what}: raw bytes kept"
            );
            assert!(!r["error"].as_str().unwrap().is_empty(), "{kind} {what}: a reason");
        }
    }
}

/// Rows of every table keyed by lineage (object key without `.gz`, line), data columns only.
fn rows_by_line(tables: &TablesConfig) -> HashMap<(String, String, String), Map<String, Value>> {
    let mut out = HashMap::new();
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            for mut r in read(tables, &name) {
                let key = (
                    name.clone(),
                    r["_partition"].as_str().unwrap().trim_end_matches(".gz").to_string(),
                    r["_position"].as_str().unwrap().to_string(),
                );
                r.retain(|k, _| !k.starts_with('_'));
                assert!(out.insert(key.clone(), r).is_none(), "{key:?} twice");
            }
        }
    }
    out
}

fn gzip_file(from: &Path, to: &Path) {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&std::fs::read(from).unwrap()).unwrap();
    std::fs::write(to, e.finish().unwrap()).unwrap();
}

#[test]
fn sink_output_gzip_markers_stray_files_and_a_corrupt_object() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let out = pinpipe(
        &[
            "emulate",
            "--count",
            "3000",
            "--seed",
            "11",
            "--no-progress",
            "--out",
            plain.to_str().unwrap(),
        ],
        &[("PINPIPE__EMULATE__RECORDS_PER_FILE", "700".into())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The same objects as the sink writes them with s3.compression.type=gzip, plus what
    // else lands under a sink's prefix: markers, a stray file, another folder.
    let gz = dir.path().join("gz");
    let mut objects = Vec::new();
    for e in walk(&plain) {
        let rel = e.strip_prefix(&plain).unwrap().to_path_buf();
        let to = gz.join(format!("{}.gz", rel.display()));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        gzip_file(&e, &to);
        objects.push(to);
    }
    objects.sort();
    let part = objects[0].parent().unwrap().to_path_buf();
    std::fs::write(gz.join("_SUCCESS"), "").unwrap();
    std::fs::write(part.join("notes.txt"), "{\"index\": 1, \"title\": \"not a record\"}\n").unwrap();
    std::fs::write(part.join("blob.bin"), [0u8, 159, 146, 150]).unwrap();
    std::fs::create_dir_all(gz.join("other")).unwrap();
    std::fs::write(gz.join("other/readme.json"), "{\"ind\": 1, \"age\": 3}\n").unwrap();

    let batch = |input: &Path, tables: &Path| {
        pinpipe(
            &[
                "batch",
                "--no-progress",
                "--input",
                input.to_str().unwrap(),
                "--tables",
                tables.to_str().unwrap(),
            ],
            &[],
        )
    };
    let (t_plain, t_gz) = (dir.path().join("t_plain"), dir.path().join("t_gz"));
    let a = batch(&plain, &t_plain);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = batch(&gz, &t_gz);
    let said = String::from_utf8_lossy(&b.stdout);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(said.contains("objects skipped (outside the layout) 4"), "{said}");
    let tables = |p: &Path| TablesConfig {
        location: p.to_str().unwrap().into(),
        ..Default::default()
    };
    let (rows_plain, rows_gz) = (rows_by_line(&tables(&t_plain)), rows_by_line(&tables(&t_gz)));
    assert_eq!(rows_plain.len(), 9000, "every record of the plain objects");
    assert!(rows_plain == rows_gz, "the gzip twins give other rows");

    // A truncated gzip object: an error naming it, non-zero, and nothing from it committed.
    let victim = &objects[objects.len() / 2];
    let good = std::fs::read(victim).unwrap();
    std::fs::write(victim, &good[..good.len() * 2 / 3]).unwrap();
    let t = dir.path().join("t_fix");
    let c = batch(&gz, &t);
    let err = String::from_utf8_lossy(&c.stderr);
    let victim_key = victim.strip_prefix(&gz).unwrap().to_str().unwrap().to_string();
    assert!(!c.status.success(), "a corrupt object must fail the run");
    assert!(err.contains(&victim_key) && err.contains("gzip"), "{err}");
    let after_error = rows_by_line(&tables(&t));
    let plain_key = victim_key.trim_end_matches(".gz");
    assert!(
        !after_error.keys().any(|(_, k, _)| k == plain_key),
        "rows of the corrupt object were committed"
    );
    // Fixed: the rerun commits every record exactly once.
    std::fs::write(victim, &good).unwrap();
    let d = batch(&gz, &t);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    assert!(
        rows_by_line(&tables(&t)) == rows_plain,
        "after the fix: exactly the plain rows"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
