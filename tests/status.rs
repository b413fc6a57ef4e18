//! `pinpipe status` against the real servers: a live `pinpipe run` on the Kafka mock
//! broker and on kinesis-local with tables on moto's S3. The lag falls to 0, a paused
//! reader (SIGSTOP) turns the exit status to 2 after `--stale-after`, the JSON names every
//! table and partition, and a missing table or a dead broker is shown as unknown while the
//! rest is still printed.
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::kafka::{self as kafka_support, Broker};
use support::kinesis::{self as kinesis_support, KinesisServer};
use support::proc::{signal, Proc, Setup, BIN};
use support::s3::S3Server;

const TABLES: [&str; 6] = [
    "pin",
    "pin_dead_letter",
    "geo",
    "geo_dead_letter",
    "user",
    "user_dead_letter",
];

/// `pinpipe status <args>` with the setup's config and `env`; bounded by the command's own
/// timeouts, checked here too.
fn status(s: &Setup, args: &[&str], env: &[(&str, String)]) -> Output {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("status")
        .args(args)
        .env("PINPIPE_CONFIG", &s.config)
        .env("PINPIPE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "status took {:?}",
        started.elapsed()
    );
    out
}

/// `status --format json` parsed, with its exit code.
fn status_json(s: &Setup, args: &[&str], env: &[(&str, String)]) -> (Value, i32) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = status(s, &all, env);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status JSON does not parse ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().expect("status exited by a signal"))
}

fn table<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {v:#}"))
}

/// `(stream, partition)` of every source row of `source`.
fn partitions(v: &Value, source: &str) -> BTreeSet<(String, String)> {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == source)
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["partition"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn total_lag(v: &Value) -> i64 {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["lag_records"].as_i64().expect("a Kafka lag is known"))
        .sum()
}

fn any_waiting(v: &Value) -> bool {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["waiting"].as_bool().expect("waiting is known"))
}

/// Polls `status` until `ok`; panics with the last answer and the run's log after `within`.
fn wait_status(
    s: &Setup,
    args: &[&str],
    env: &[(&str, String)],
    within: Duration,
    run: &mut Proc,
    ok: impl Fn(&Value, i32) -> bool,
) -> (Value, i32) {
    let deadline = Instant::now() + within;
    loop {
        let (v, code) = status_json(s, args, env);
        if ok(&v, code) {
            return (v, code);
        }
        if let Some(st) = run.child.try_wait().unwrap() {
            panic!("{} exited with {st}:\n{}", run.name, run.tail());
        }
        assert!(
            Instant::now() < deadline,
            "status not as expected within {within:?} (exit {code}):\n{v:#}\n--- {}\n{}",
            run.name,
            run.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn kafka_lag_falls_to_zero_and_a_paused_reader_is_stale() {
    let broker = Broker::start(1);
    let prefix = "st";
    broker.create_topics(prefix, 3);
    let s = kafka_support::setup(&broker, prefix, 500);
    broker.produce(&kafka_support::emulated(prefix, 2000, 3, 1));

    // Before any run: no tables, every record waiting, nothing called stale.
    let (v, code) = status_json(&s, &[], &[]);
    assert_eq!(code, 0, "{v:#}");
    for name in TABLES {
        assert_eq!(table(&v, name)["state"], "missing", "{v:#}");
        assert!(table(&v, name)["error"].as_str().unwrap().contains("no Delta table"));
    }
    let expected: BTreeSet<(String, String)> = ["pin", "geo", "user"]
        .iter()
        .flat_map(|k| (0..3).map(move |p| (format!("{prefix}.{k}"), p.to_string())))
        .collect();
    assert_eq!(partitions(&v, "kafka"), expected);
    assert_eq!(total_lag(&v), 6000, "{v:#}");

    // A live run: the lag falls to 0 and the positions equal the high watermarks.
    let mut run = s.run("run");
    let (v, code) = wait_status(&s, &[], &[], Duration::from_secs(90), &mut run, |v, _| {
        total_lag(v) == 0
    });
    assert_eq!(code, 0);
    for name in TABLES {
        let t = table(&v, name);
        assert_eq!(t["state"], "ok", "{v:#}");
        assert!(
            t["version"].as_i64().unwrap() >= 1 && t["files"].as_u64().unwrap() >= 1,
            "{t:#}"
        );
    }
    let rows: u64 = TABLES.iter().map(|n| table(&v, n)["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 6000, "rows from the log's statistics");
    for src in v["sources"].as_array().unwrap() {
        let high = src["end"]["high"].as_i64().unwrap();
        for (t, pos) in src["positions"].as_object().unwrap() {
            assert_eq!(pos.as_str().unwrap(), high.to_string(), "{t}: {src:#}");
        }
    }
    // The emulator's broken records are counted by reason.
    let dead: u64 = v["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    let dead_rows: u64 = TABLES
        .iter()
        .filter(|n| n.ends_with("_dead_letter"))
        .map(|n| table(&v, n)["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(dead, dead_rows, "{v:#}");

    // Idle (nothing waiting) is not stale however old the last commit.
    std::thread::sleep(Duration::from_millis(1500));
    let (v, code) = status_json(&s, &["--stale-after", "1s"], &[]);
    assert_eq!(code, 0, "idle tables called stale: {v:#}");

    // Paused with records waiting: stale once the last commit is older than the bound.
    signal(&run.child, "STOP");
    broker.produce(&kafka_support::emulated(prefix, 300, 3, 2));
    std::thread::sleep(Duration::from_millis(1500));
    let (v, code) = status_json(&s, &["--stale-after", "1s"], &[]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(total_lag(&v), 900);
    let stale: BTreeSet<&str> = v["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(["pin", "geo", "user"].iter().all(|t| stale.contains(t)), "{v:#}");
    let text = String::from_utf8_lossy(&status(&s, &["--stale-after", "1s"], &[]).stdout).to_string();
    assert!(text.contains("STALE"), "{text}");
    // A generous bound is not crossed yet.
    let (_, code) = status_json(&s, &["--stale-after", "10m"], &[]);
    assert_eq!(code, 0);

    // Resumed: caught up again.
    signal(&run.child, "CONT");
    wait_status(
        &s,
        &["--stale-after", "1s"],
        &[],
        Duration::from_secs(60),
        &mut run,
        |v, code| total_lag(v) == 0 && code == 0,
    );
    assert!(run.terminate(Duration::from_secs(30)).success(), "{}", run.tail());

    // A missing table and a dead broker: unknown, and the rest still printed.
    std::fs::remove_dir_all(s.tables.join("geo_dead_letter")).unwrap();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let started = Instant::now();
    let (v, code) = status_json(&s, &["--timeout", "1s"], &[("PINPIPE__KAFKA__BROKERS", dead.clone())]);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(table(&v, "geo_dead_letter")["state"], "missing");
    assert_eq!(table(&v, "pin")["state"], "ok");
    let kafka = &v["endpoints"][0];
    assert_eq!(kafka["state"], "unknown", "{v:#}");
    assert!(kafka["error"].as_str().unwrap().contains(&dead), "{kafka:#}");
    assert_eq!(
        partitions(&v, "kafka"),
        expected,
        "partitions still listed from the tables"
    );
    for src in v["sources"].as_array().unwrap() {
        assert_eq!(src["end"]["kind"], "unknown");
        assert!(src["lag_records"].is_null() && src["waiting"].is_null(), "{src:#}");
        // The stored positions are still shown (the geo dead-letter table's are gone).
        let kind = src["stream"].as_str().unwrap().trim_start_matches("st.");
        assert!(src["positions"][kind].is_string(), "{src:#}");
    }
    let text = String::from_utf8_lossy(&status(&s, &["--timeout", "1s"], &[("PINPIPE__KAFKA__BROKERS", dead)]).stdout)
        .to_string();
    assert!(
        text.contains("unknown") && text.contains("missing") && text.contains("pin "),
        "{text}"
    );
}

#[test]
fn kinesis_on_s3_shows_positions_leases_and_catching_up() {
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    let server = KinesisServer::start();
    let prefix = "kst";
    let s = kinesis_support::setup(&server.endpoint(), prefix, "127.0.0.1:0");
    for stream in kinesis_support::streams(prefix) {
        server.create_stream(&stream, 2);
    }
    let env: Vec<(&str, String)> = vec![
        ("PINPIPE__TABLES__LOCATION", "s3://tables/status".into()),
        ("PINPIPE__TABLES__ENDPOINT", s3.endpoint.clone()),
        ("PINPIPE__TABLES__REGION", "us-east-1".into()),
        ("PINPIPE__TABLES__ALLOW_HTTP", "true".into()),
        ("PINPIPE__TABLES__PATH_STYLE", "true".into()),
        ("PINPIPE__TABLES__ACCESS_KEY_ID", "test".into()),
        ("PINPIPE__TABLES__SECRET_ACCESS_KEY", "test".into()),
    ];
    kinesis_support::emulate(&s, 500, 3);

    // Before the run: every shard has records waiting after TRIM_HORIZON, no lease yet.
    let (v, _) = status_json(&s, &[], &env);
    let expected: BTreeSet<(String, String)> = kinesis_support::streams(prefix)
        .into_iter()
        .flat_map(|st| (0..2).map(move |i| (st.clone(), format!("shardId-{i:012}"))))
        .collect();
    assert_eq!(partitions(&v, "kinesis"), expected, "{v:#}");
    assert!(
        v["sources"].as_array().unwrap().iter().all(|s| s["waiting"] == true),
        "{v:#}"
    );

    let mut run_env = env.clone();
    run_env.push(("PINPIPE_LOG", kinesis_support::LOG.to_string()));
    run_env.push(("PINPIPE__KINESIS__WORKER_ID", "w1".to_string()));
    let mut run = s.spawn_env("run", &["run", "--no-progress"], &run_env);
    let (v, code) = wait_status(&s, &[], &env, Duration::from_secs(120), &mut run, |v, _| {
        !any_waiting(v)
            && v["sources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["lease"]["owner"] == "w1")
    });
    assert_eq!(code, 0);
    for src in v["sources"].as_array().unwrap() {
        for (t, pos) in src["positions"].as_object().unwrap() {
            let p = pos.as_str().unwrap_or_else(|| panic!("{t}: no position in {src:#}"));
            assert!(p.len() > 19, "a kinesis-local sequence number: {p}");
        }
        let age = src["lease"]["age_s"].as_f64().unwrap();
        assert!(age < 30.0, "a renewed lease is young: {src:#}");
    }
    let rows: u64 = TABLES.iter().map(|n| table(&v, n)["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 1500);

    // Paused: new records wait and the tables stop committing.
    signal(&run.child, "STOP");
    kinesis_support::emulate(&s, 50, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let (v, code) = status_json(&s, &["--stale-after", "1s"], &env);
    assert_eq!(code, 2, "{v:#}");
    assert!(any_waiting(&v));
    signal(&run.child, "CONT");
    wait_status(
        &s,
        &["--stale-after", "1s"],
        &env,
        Duration::from_secs(60),
        &mut run,
        |v, code| !any_waiting(v) && code == 0,
    );
    assert!(run.terminate(Duration::from_secs(30)).success(), "{}", run.tail());

    // The stream endpoint gone: the shards are unknown, the S3 tables still read.
    drop(server);
    let (v, code) = status_json(&s, &["--timeout", "1s"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["endpoints"][0]["state"], "unknown", "{v:#}");
    assert_eq!(
        partitions(&v, "kinesis"),
        expected,
        "shards still listed from the tables"
    );
    assert!(TABLES.iter().all(|n| table(&v, n)["state"] == "ok"), "{v:#}");
}
