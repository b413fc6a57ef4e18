//! `pinpipe run` and `pinpipe demo` against a Kafka-protocol broker on 127.0.0.1
//! (librdkafka's mock cluster in this process): exactly-once into the Delta tables across
//! bad records, SIGKILL, rebalances and broker outages.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use pinpipe::clean::Kind;
use support::kafka::{emulated, Broker};
use support::proc::{assert_unique_lineage, metric_sum, scrape, Setup, BIN};

const PARTITIONS: i32 = 3;

fn start(prefix: &str, max_rows: usize) -> (Broker, Setup) {
    let broker = Broker::start(1);
    broker.create_topics(prefix, PARTITIONS);
    let setup = support::kafka::setup(&broker, prefix, max_rows);
    (broker, setup)
}

#[test]
fn vectors_emulated_and_bad_records_land_exactly_once() {
    let (broker, setup) = start("t1", 50);
    // The shared cleaning vectors, each kind to its topic, spread over the partitions.
    let vectors = support::fixtures::vectors();
    let mut records: Vec<(String, i32, Vec<u8>)> = vectors
        .iter()
        .enumerate()
        .map(|(i, (kind, v))| {
            let raw = v["raw"].as_str().unwrap().as_bytes().to_vec();
            (format!("t1.{kind}"), i as i32 % PARTITIONS, raw)
        })
        .collect();
    let n_vectors = records.len();
    // Bad records: invalid JSON, binary garbage, a value over the 1 MiB record limit.
    let big = format!("{{\"index\": 1, \"title\": \"{}\"}}", "x".repeat(1 << 20));
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid json", b"{\"index\": 1, \"title\": ".to_vec(), ""),
        ("garbage", vec![0xff, 0x00, 0xfe, 0x80, 0x81, 0x1b, 0x7f], ""),
        ("1 MiB value", big.into_bytes(), "too large"),
    ];
    for (i, (_, payload, _)) in bad.iter().enumerate() {
        records.push(("t1.pin".into(), i as i32 % PARTITIONS, payload.clone()));
    }
    records.extend(emulated("t1", 400, PARTITIONS, 7));
    let offsets = broker.produce(&records);
    let n = records.len();

    let mut run = setup.spawn("run", &["run", "--no-progress", "--stop-after", &n.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = run.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "run did not finish:\n{}", run.tail());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "run failed:\n{}", run.tail());

    let rows = setup.rows();
    assert_eq!(
        rows.values().map(Vec::len).sum::<usize>(),
        n,
        "clean + dead-letter rows"
    );
    assert_unique_lineage(&rows);
    // Index every row by its lineage key.
    type Row = serde_json::Map<String, serde_json::Value>;
    let mut by_key: HashMap<(String, String, String), (&str, &Row)> = HashMap::new();
    for (table, rs) in &rows {
        for r in rs {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            by_key.insert((s("_stream"), s("_partition"), s("_position")), (table.as_str(), r));
        }
    }
    let key = |i: usize| {
        let (topic, p, _) = &records[i];
        (topic.clone(), p.to_string(), offsets[i].to_string())
    };
    for (i, (kind, v)) in vectors.iter().enumerate() {
        let (table, r) = by_key[&key(i)];
        support::fixtures::check_row(*kind, v, table, r);
    }
    for (j, (what, payload, reason)) in bad.iter().enumerate() {
        let (table, r) = by_key[&key(n_vectors + j)];
        assert_eq!(table, "pin_dead_letter", "{what}");
        assert!(
            r["error"].as_str().unwrap().starts_with(reason),
            "{what}: {}",
            r["error"]
        );
        assert_eq!(
            r["raw"],
            String::from_utf8_lossy(payload).as_ref(),
            "{what}: raw bytes kept"
        );
    }

    // The group's committed offsets follow the tables (for lag tools).
    let committed = support::kafka::committed(&broker, "t1-group", "t1", PARTITIONS);
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (i, (topic, p, _)) in records.iter().enumerate() {
        let e = ends.entry((topic.clone(), *p)).or_default();
        *e = (*e).max(offsets[i] + 1);
    }
    assert_eq!(committed, ends, "group offsets = end of each partition");

    // A restart reads from the tables' positions and adds nothing; SIGTERM exits 0.
    let mut again = setup.run("again");
    std::thread::sleep(Duration::from_secs(5));
    let status = again.terminate(Duration::from_secs(30));
    assert!(status.success(), "second run:\n{}", again.tail());
    assert!(
        again.log_text().contains("partition assigned"),
        "second run never joined:\n{}",
        again.tail()
    );
    assert_eq!(setup.total(), n, "a restart must not add rows");
}

#[test]
fn sigkill_at_several_points_then_exactly_n() {
    let (broker, setup) = start("t2", 150);
    let records = emulated("t2", 3_000, PARTITIONS, 11);
    let n = records.len();
    broker.produce(&records);
    let mut mid_run_kills = 0;
    for (i, share) in [0.15, 0.4, 0.65].into_iter().enumerate() {
        let mut run = setup.run(&format!("killed-{i}"));
        let target = (n as f64 * share) as usize;
        let deadline = Instant::now() + Duration::from_secs(90);
        let at = loop {
            let total = setup.total();
            if total >= target || Instant::now() > deadline {
                break total;
            }
            if let Some(s) = run.child.try_wait().unwrap() {
                panic!("run exited with {s}:\n{}", run.tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        run.kill(); // SIGKILL
        if at > 0 && at < n {
            mid_run_kills += 1;
        }
        eprintln!("SIGKILL {i} at {at}/{n} rows");
    }
    assert!(mid_run_kills >= 2, "the kills must land mid-run");
    let mut last = setup.run("last");
    setup.wait_rows(n, Duration::from_secs(120), &mut [&mut last]);
    std::thread::sleep(Duration::from_secs(2)); // time for a duplicate to show up
    let status = last.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", last.tail());
    let rows = setup.rows();
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), n);
    assert_unique_lineage(&rows);
}

/// `(timestamp, event)` lines of one process about one partition.
fn ownership(log: &str) -> Vec<(String, String, String)> {
    log.lines()
        .filter(|l| l.contains("partition actor started") || l.contains("partition released"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            let ts = l.split_whitespace().next().unwrap_or_default().to_string();
            let what = if l.contains("started") { "start" } else { "release" };
            (
                format!("{}/{}", field("topic"), field("partition")),
                ts,
                what.to_string(),
            )
        })
        .collect()
}

#[test]
fn rebalance_two_then_three_then_two_processes() {
    let (broker, setup) = start("t3", 100);
    let records = emulated("t3", 3_000, PARTITIONS, 13);
    let n = records.len();
    // Produced while the group changes: a tenth up front, the rest in paced chunks.
    let (first, rest) = records.split_at(n / 10);
    broker.produce(first);
    let mut a = setup.run("a");
    let mut b = setup.run("b");
    let mut produced = first.len();
    let mut c = None;
    let mut a_stopped = false;
    for chunk in rest.chunks(n / 10) {
        std::thread::sleep(Duration::from_millis(1_500));
        broker.produce(chunk);
        produced += chunk.len();
        if c.is_none() && produced >= n * 3 / 10 {
            c = Some(setup.run("c")); // a third joins
        } else if c.is_some() && !a_stopped && produced >= n * 6 / 10 {
            let status = a.terminate(Duration::from_secs(60)); // one leaves
            assert!(status.success(), "a:\n{}", a.tail());
            a_stopped = true;
        }
    }
    let mut c = c.expect("c started");
    assert!(a_stopped);
    setup.wait_rows(n, Duration::from_secs(120), &mut [&mut b, &mut c]);
    std::thread::sleep(Duration::from_secs(2));
    for p in [&mut b, &mut c] {
        let status = p.terminate(Duration::from_secs(60));
        assert!(status.success(), "{}:\n{}", p.name, p.tail());
    }
    let rows = setup.rows();
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), n);
    assert_unique_lineage(&rows);

    // Each partition was owned by one actor at a time: per partition, the owners'
    // [start, release] intervals from the three logs never overlap.
    let mut spans: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for p in [&a, &b, &c] {
        let mut open: HashMap<String, String> = HashMap::new();
        for (part, ts, what) in ownership(&p.log_text()) {
            if what == "start" {
                assert!(
                    open.insert(part.clone(), ts).is_none(),
                    "{}: {part} started twice",
                    p.name
                );
            } else {
                let from = open
                    .remove(&part)
                    .unwrap_or_else(|| panic!("{}: {part} released unowned", p.name));
                spans.entry(part).or_default().push((from, ts, p.name.clone()));
            }
        }
        assert!(open.is_empty(), "{}: partitions never released: {open:?}", p.name);
    }
    assert_eq!(spans.len(), 3 * PARTITIONS as usize, "{spans:?}");
    let mut moved = 0;
    for (part, mut s) in spans {
        s.sort();
        eprintln!("{part} owners: {s:?}");
        for w in s.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{part}: {} owned it until {} but {} from {}",
                w[0].2,
                w[0].1,
                w[1].2,
                w[1].0
            );
        }
        if s.iter().any(|x| x.2 != s[0].2) {
            moved += 1;
        }
    }
    assert!(moved > 0, "no partition changed owner: the rebalance did not happen");
}

#[test]
fn broker_down_and_back_mid_run() {
    let (broker, setup) = start("t4", 100);
    let records = emulated("t4", 2_000, PARTITIONS, 17);
    let n = records.len();
    let (first, second) = records.split_at(n / 2);
    broker.produce(first);
    let port = support::free_port();
    let listen = [("PINPIPE__METRICS__LISTEN", format!("127.0.0.1:{port}"))];
    let mut run = setup.spawn_env("run", &["run", "--no-progress"], &listen);
    setup.wait_rows(n / 4, Duration::from_secs(60), &mut [&mut run]);
    let errors = |text: &str| metric_sum(text, "pinpipe_source_errors_total");
    let before = errors(&scrape(port));
    broker.mock.broker_down(1).unwrap();
    // The outage shows in the metrics while it lasts. Usually within 1-250 ms, but one CI
    // run in eight saw nothing by 4 s (cause not found), so it is polled for up to 20 s.
    // The broker stays down at least 4 s either way.
    let down = Instant::now();
    let mut during = scrape(port);
    while errors(&during) <= before && down.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        during = scrape(port);
    }
    let waited = down.elapsed();
    std::thread::sleep(Duration::from_secs(4).saturating_sub(waited));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "run died with the broker:\n{}",
        run.tail()
    );
    assert!(
        errors(&during) > before,
        "no source error counted in {waited:?} with the broker down:\n{during}\n{}",
        run.tail()
    );
    eprintln!("source errors counted {waited:?} into the outage");
    broker.mock.broker_up(1).unwrap();
    broker.produce(second);
    setup.wait_rows(n, Duration::from_secs(120), &mut [&mut run]);
    std::thread::sleep(Duration::from_secs(2));
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", run.tail());
    let rows = setup.rows();
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), n);
    assert_unique_lineage(&rows);
}

#[test]
fn demo_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("data");
    let out = std::process::Command::new(BIN)
        .args(["demo", "--count", "300", "--tables", tables.to_str().unwrap()])
        .current_dir(dir.path()) // no config/pinpipe.toml here: the built-in defaults
        .env_remove("PINPIPE_CONFIG")
        .env("PINPIPE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("run: 900 records"), "{stdout}");
    assert!(stdout.contains("tables under"), "{stdout}");
    // The rate is not read as pinpipe's speed: the summary says what limited it, and ends
    // with the next commands, which work on the tables the demo wrote.
    assert!(stdout.contains("what limited the rate:"), "{stdout}");
    let t = tables.to_str().unwrap();
    for next in ["report", "status"] {
        assert!(stdout.contains(&format!("pinpipe {next} --tables {t}")), "{stdout}");
    }
    let status = std::process::Command::new(BIN)
        .args(["status", "--format", "json", "--tables", t])
        .current_dir(dir.path())
        .env_remove("PINPIPE_CONFIG")
        .env("PINPIPE_LOG", "warn")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status.status.success(), "{v:#}");
    // Each record once in its clean or dead-letter table, and once in its raw table.
    let rows = |raw: bool| -> u64 {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().ends_with("_raw") == raw)
            .map(|t| t["rows"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((rows(false), rows(true)), (900, 900), "{v:#}");
    let mut total = 0;
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            let url = url::Url::from_directory_path(tables.join(&name)).unwrap().to_string();
            total += pinpipe::block_on(support::rows::read_table(&url, HashMap::new())).len();
        }
    }
    assert_eq!(total, 900, "every emulated record in exactly one table");
}

/// Issue #28: a broker address with nothing listening. `pinpipe run` says so once, with the
/// address, and then only as a periodic reminder (it wrote ~40 lines a second); `emulate
/// --to kafka` gives up within `message.timeout.ms` with an error naming the brokers
/// instead of waiting librdkafka's default 300 s.
#[test]
fn a_dead_broker_is_said_once_and_emulate_gives_up_in_time() {
    let dead = format!("127.0.0.1:{}", support::free_port());
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PINPIPE__KAFKA__BROKERS", dead.clone()),
        (
            "PINPIPE__TABLES__LOCATION",
            dir.path().join("t").to_string_lossy().into_owned(),
        ),
        ("PINPIPE__METRICS__LISTEN", "127.0.0.1:0".to_string()),
    ];
    let log = dir.path().join("run.log");
    let mut run = std::process::Command::new(support::proc::BIN)
        .args(["run", "--no-progress"])
        .env_remove("PINPIPE_LOG")
        .env_remove("PINPIPE_CONFIG")
        .envs(env.iter().cloned())
        .current_dir(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(15));
    support::proc::signal(&run, "TERM");
    let deadline = Instant::now() + Duration::from_secs(40);
    while run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    eprintln!("{lines} log lines in 15 s of a dead broker:\n{text}");
    assert!(text.contains(&dead), "the address is named: {text}");
    assert!((1..=6).contains(&lines), "{lines} lines in 15 s:\n{text}");

    let started = Instant::now();
    let out = std::process::Command::new(support::proc::BIN)
        .args(["emulate", "--to", "kafka", "--count", "10", "--no-progress"])
        .env_remove("PINPIPE_CONFIG")
        .envs(env.iter().cloned())
        .env("PINPIPE__KAFKA__PROPERTIES__message__timeout__ms", "3000")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&dead) && err.contains("3000 ms"), "{err}");
    assert!(took < Duration::from_secs(20), "emulate took {took:?}: {err}");
}
