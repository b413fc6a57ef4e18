//! The raw layer (issue #23): every record a source reads lands once in its kind's raw
//! table with its exact bytes, and `pinpipe replay` rebuilds the clean and dead-letter
//! tables from the raw tables, row for row by lineage, idempotently, for a range of ingest
//! dates; `pinpipe maintain` drops old raw partitions. Real Kafka-protocol and Kinesis API
//! servers on 127.0.0.1, real Delta tables.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Map, Value};

use support::kafka::{emulated, Broker};
use support::kinesis::KinesisServer;
use support::proc::{assert_unique_lineage_from, TableRows, BIN};

type Row = Map<String, Value>;
/// (source, stream, partition, position).
type Lineage = (String, String, String, String);

fn lineage(r: &Row) -> Lineage {
    let s = |k: &str| r[k].as_str().unwrap().to_string();
    (s("_source"), s("_stream"), s("_partition"), s("_position"))
}

/// Every row of `rows` by lineage; a lineage twice fails.
fn by_lineage(rows: &TableRows) -> HashMap<Lineage, (String, Row)> {
    let mut out = HashMap::new();
    for (table, rs) in rows {
        for r in rs {
            let prev = out.insert(lineage(r), (table.clone(), r.clone()));
            assert!(prev.is_none(), "{table}: lineage {:?} twice", lineage(r));
        }
    }
    out
}

fn pinpipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PINPIPE_CONFIG")
        .env("PINPIPE_LOG", "warn")
        .env("PINPIPE__METRICS__LISTEN", "");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The tables `names` of a folder (missing ones are empty).
fn read_tables(dir: &Path, names: impl IntoIterator<Item = String>) -> TableRows {
    let mut rows = TableRows::new();
    for name in names {
        let path = dir.join(&name);
        let rs = if path.join("_delta_log").is_dir() {
            let url = url::Url::from_directory_path(&path).unwrap().to_string();
            pinpipe::block_on(support::rows::read_table(&url, HashMap::new()))
        } else {
            Vec::new()
        };
        rows.insert(name, rs);
    }
    rows
}

/// The six clean and dead-letter tables of a folder.
fn cleaned(dir: &Path) -> TableRows {
    read_tables(
        dir,
        ["pin", "geo", "user"]
            .iter()
            .flat_map(|k| [k.to_string(), format!("{k}_dead_letter")]),
    )
}

/// The raw tables of a folder.
fn raw(dir: &Path) -> TableRows {
    read_tables(dir, ["pin", "geo", "user"].iter().map(|k| format!("{k}_raw")))
}

/// Kafka: N records (vectors, emulated posts, garbage) through `pinpipe run`: the raw
/// tables hold exactly N rows, each with the bytes produced, its timestamp and its ingest
/// date; the clean and dead-letter tables still hold N.
#[test]
fn kafka_records_land_once_in_the_raw_tables_with_their_bytes() {
    let broker = Broker::start(1);
    broker.create_topics("rw", 3);
    let setup = support::kafka::setup(&broker, "rw", 200);
    let mut records: Vec<(String, i32, Vec<u8>)> = support::fixtures::vectors()
        .iter()
        .enumerate()
        .map(|(i, (kind, v))| {
            (
                format!("rw.{kind}"),
                i as i32 % 3,
                v["raw"].as_str().unwrap().as_bytes().to_vec(),
            )
        })
        .collect();
    records.push(("rw.pin".into(), 0, vec![0xff, 0x00, 0xfe]));
    records.extend(emulated("rw", 500, 3, 3));
    let offsets = broker.produce(&records);
    let n = records.len();
    let mut run = setup.spawn("run", &["run", "--no-progress", "--stop-after", &n.to_string()]);
    setup.wait_rows(n, Duration::from_secs(120), &mut [&mut run]);
    assert!(run.terminate(Duration::from_secs(60)).success(), "{}", run.tail());

    let raw = setup.raw_rows();
    assert_eq!(
        raw.values().map(Vec::len).sum::<usize>(),
        n,
        "raw rows = records produced"
    );
    let keys = assert_unique_lineage_from(&raw, "kafka");
    assert_eq!(keys.len(), n);
    let rows = by_lineage(&raw);
    for (i, (topic, partition, payload)) in records.iter().enumerate() {
        let key = (
            "kafka".to_string(),
            topic.clone(),
            partition.to_string(),
            offsets[i].to_string(),
        );
        let (table, r) = &rows[&key];
        assert_eq!(table, &format!("{}_raw", topic.trim_start_matches("rw.")), "{key:?}");
        assert_eq!(
            r["raw"],
            String::from_utf8_lossy(payload).as_ref(),
            "{key:?}: bytes as produced"
        );
        assert!(r["source_timestamp"].is_string(), "{key:?}: the message timestamp");
        assert!(
            r["ingest_date"].as_str().is_some_and(|d| d.len() == 10),
            "{key:?}: {r:?}"
        );
    }
    let cleaned = setup.rows();
    assert_eq!(cleaned.values().map(Vec::len).sum::<usize>(), n, "clean + dead letters");
}

/// Kinesis: the raw rows keep the partition key and the arrival time.
#[test]
fn kinesis_records_land_once_in_the_raw_tables_with_their_keys() {
    let server = KinesisServer::start();
    let stream = "streaming-rk-user";
    for kind in ["pin", "geo", "user"] {
        server.create_stream(&format!("streaming-rk-{kind}"), 2);
    }
    let setup = support::kinesis::setup(&server.endpoint(), "rk", "127.0.0.1:0");
    let bodies: Vec<Vec<u8>> = (0..300)
        .map(|i| match i % 10 {
            0 => b"{\"ind\": 1, \"age\": \"old\"}".to_vec(),
            _ => format!("{{\"ind\": {i}, \"first_name\": \"A\", \"age\": {}}}", 20 + i % 40).into_bytes(),
        })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let seqs = server.put_records(stream, &refs);
    let mut run = support::kinesis::run(&setup, "run", "w1");
    setup.wait_rows(bodies.len(), Duration::from_secs(120), &mut [&mut run]);
    assert!(run.terminate(Duration::from_secs(60)).success(), "{}", run.tail());
    let raw = setup.raw_rows();
    assert_eq!(raw["user_raw"].len(), bodies.len());
    let by_seq: HashMap<String, &Row> = raw["user_raw"]
        .iter()
        .map(|r| (r["_position"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(by_seq.len(), bodies.len(), "a sequence number twice");
    for (i, seq) in seqs.iter().enumerate() {
        let r = by_seq[seq];
        assert_eq!(r["raw"], String::from_utf8_lossy(&bodies[i]).as_ref());
        // support::kinesis puts each record with its index as the partition key.
        assert_eq!(r["source_key"], i.to_string(), "{r:?}");
        assert!(r["source_timestamp"].is_string(), "{r:?}");
    }
}

fn emulate_files(dir: &Path, posts: &str, seed: &str) -> usize {
    let out = pinpipe(
        &[
            "emulate",
            "--count",
            posts,
            "--seed",
            seed,
            "--no-progress",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[
            ("PINPIPE__EMULATE__RECORDS_PER_FILE", "900"),
            ("PINPIPE__EMULATE__TOPIC_PREFIX", &format!("s{seed}")),
        ],
    );
    ok(out, "emulate");
    support::rows::count_records(dir, "")
}

/// `posts` emulated posts in `dir/raw-in`, through `pinpipe batch` into `dir/live`:
/// (the tables, the records, what batch said).
fn batch_emulated(dir: &Path, posts: &str, seed: &str) -> (PathBuf, usize, String) {
    let input = dir.join("raw-in");
    let live = dir.join("live");
    let n = emulate_files(&input, posts, seed);
    let batch = [
        "batch",
        "--no-progress",
        "--input",
        input.to_str().unwrap(),
        "--tables",
        live.to_str().unwrap(),
    ];
    let said = ok(pinpipe(&batch, &[]), "batch");
    (live, n, said)
}

/// Batch, then replay into a new folder: the same clean and dead-letter rows, column for
/// column, by lineage; replaying again adds nothing; one kind alone writes only its tables.
#[test]
fn replay_rebuilds_the_same_rows_and_twice_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (live, n, said) = batch_emulated(dir.path(), "2000", "4");
    assert!(said.contains(&format!("raw {n};")), "{said}");
    assert_eq!(raw(&live).values().map(Vec::len).sum::<usize>(), n);

    let dest = dir.path().join("replayed");
    let replay = ["replay", "--no-progress", "--tables", dest.to_str().unwrap()];
    let env = [("PINPIPE__TABLES__LOCATION", live.to_str().unwrap())];
    let said = ok(pinpipe(&replay, &env), "replay");
    assert!(
        said.contains(&format!("replay: {n} raw records")) && said.contains("already present 0"),
        "{said}"
    );
    let (want, got) = (by_lineage(&cleaned(&live)), by_lineage(&cleaned(&dest)));
    assert_eq!(got.len(), n);
    assert!(got == want, "replayed rows differ from the live tables' rows");
    assert!(!dest.join("pin_raw").exists(), "replay writes no raw tables");

    let again = ok(pinpipe(&replay, &env), "replay again");
    assert!(again.contains(&format!("already present {n}")), "{again}");
    assert_eq!(by_lineage(&cleaned(&dest)).len(), n, "a second replay added rows");

    let geo = dir.path().join("geo-only");
    ok(
        pinpipe(
            &[
                "replay",
                "--no-progress",
                "--kind",
                "geo",
                "--tables",
                geo.to_str().unwrap(),
            ],
            &env,
        ),
        "replay --kind geo",
    );
    assert!(geo.join("geo").is_dir() && !geo.join("pin").exists());
    // The live tables themselves only with --in-place.
    let e = pinpipe(&["replay", "--tables", live.to_str().unwrap()], &env);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--in-place"));
}

/// A replay whose sort does not fit its memory limit spills and still finishes: 80 000
/// posts (about 20 MB of JSON per kind) at the smallest limit, 64 MiB shared by the three
/// kinds. Reading each raw table in two sorted partitions once failed here, in the merge of
/// the two, whose buffers cannot spill.
#[test]
fn a_replay_larger_than_its_memory_limit_spills_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (live, n, _) = batch_emulated(dir.path(), "80000", "6");
    let dest = dir.path().join("replayed");
    let replay = [
        "replay",
        "--no-progress",
        "--memory-limit-mb",
        "64",
        "--tables",
        dest.to_str().unwrap(),
    ];
    let env = [("PINPIPE__TABLES__LOCATION", live.to_str().unwrap())];
    let said = ok(pinpipe(&replay, &env), "replay at 64 MiB");
    assert!(said.contains(&format!("replay: {n} raw records")), "{said}");
    let counts = |d: &Path| -> usize { cleaned(d).values().map(Vec::len).sum() };
    assert_eq!(counts(&dest), n, "replayed rows");
}

/// libfaketime from Debian (installed by .ci/install-servers.sh): a process that believes
/// it is `at`; monotonic time stays real, so timers behave.
fn at(when: &str) -> Vec<(&'static str, String)> {
    let lib = [
        format!(
            "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
            std::env::consts::ARCH
        ),
        "/usr/lib/faketime/libfaketime.so.1".to_string(),
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime (apt install libfaketime, as .ci/install-servers.sh does)");
    vec![
        ("LD_PRELOAD", lib),
        ("FAKETIME", format!("@{when}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_DONT_RESET", "1".to_string()),
    ]
}

fn pinpipe_at(when: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all: Vec<(&str, String)> = at(when);
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pinpipe(args, &refs)
}

/// Two days of raw records: replay one day's range; maintain's retention drops the older
/// partition and keeps the newer rows readable.
#[test]
fn replay_a_date_range_and_retention_drops_old_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (na, nb) = (emulate_files(&a, "300", "5"), emulate_files(&b, "200", "6"));
    for (input, day) in [(&a, "2026-01-01 10:00:00"), (&b, "2026-01-03 10:00:00")] {
        let args = [
            "batch",
            "--no-progress",
            "--input",
            input.to_str().unwrap(),
            "--tables",
            live.to_str().unwrap(),
        ];
        ok(pinpipe_at(day, &args, &[]), "batch");
    }
    let dates: BTreeMap<String, usize> = raw(&live).values().flatten().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["ingest_date"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(
        dates,
        BTreeMap::from([("2026-01-01".into(), na), ("2026-01-03".into(), nb)])
    );

    let env = [("PINPIPE__TABLES__LOCATION", live.to_str().unwrap())];
    let dest = dir.path().join("later");
    let args = [
        "replay",
        "--no-progress",
        "--from",
        "2026-01-02",
        "--tables",
        dest.to_str().unwrap(),
    ];
    let said = ok(pinpipe(&args, &env), "replay --from");
    assert!(said.contains(&format!("replay: {nb} raw records")), "{said}");
    let rows = by_lineage(&cleaned(&dest));
    assert_eq!(rows.len(), nb);
    assert!(
        rows.keys().all(|(_, stream, _, _)| stream.starts_with("s6.")),
        "only the second day's records"
    );

    // On 2026-01-04 with 2 days of retention the cutoff is 2026-01-02.
    let env = [
        ("PINPIPE__TABLES__LOCATION", live.to_str().unwrap()),
        ("PINPIPE__RAW__RETENTION_DAYS", "2"),
    ];
    let said = ok(pinpipe_at("2026-01-04 12:00:00", &["maintain"], &env), "maintain");
    assert!(said.contains("retention dropped"), "{said}");
    let left = raw(&live);
    assert_eq!(left.values().map(Vec::len).sum::<usize>(), nb, "{said}");
    assert!(left.values().flatten().all(|r| r["ingest_date"] == "2026-01-03"));
    assert_eq!(
        by_lineage(&cleaned(&live)).len(),
        na + nb,
        "the clean tables keep every row"
    );
}

/// A replay with nothing trustworthy to read writes nothing: raw tables missing (raw was
/// off), or a raw table whose schema another tool changed.
#[test]
fn replay_refuses_missing_or_foreign_raw_tables_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let live = dir.path().join("live");
    emulate_files(&input, "100", "7");
    let args = [
        "batch",
        "--no-progress",
        "--input",
        input.to_str().unwrap(),
        "--tables",
        live.to_str().unwrap(),
    ];
    ok(
        pinpipe(&args, &[("PINPIPE__RAW__ENABLED", "false")]),
        "batch without raw",
    );
    assert!(!live.join("pin_raw").exists());
    let env = [("PINPIPE__TABLES__LOCATION", live.to_str().unwrap())];
    let dest = dir.path().join("dest");
    let e = pinpipe(&["replay", "--tables", dest.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && err.contains("raw table pin_raw does not exist"),
        "{err}"
    );
    assert!(!dest.exists(), "nothing written for a refused replay");

    // Another tool's table where pin_raw should be: other columns.
    let foreign = live.join("pin_raw");
    pinpipe::block_on(async {
        use deltalake::kernel::{DataType, PrimitiveType, StructField};
        std::fs::create_dir_all(&foreign).unwrap();
        let url = url::Url::from_directory_path(&foreign).unwrap();
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        table
            .create()
            .with_columns([StructField::new(
                "payload",
                DataType::Primitive(PrimitiveType::String),
                true,
            )])
            .await
            .unwrap();
    });
    let e = pinpipe(&["replay", "--kind", "pin", "--tables", dest.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && err.contains("pin_raw") && err.contains("schema"),
        "{err}"
    );
    assert!(!dest.exists(), "nothing written for a refused replay");
}
