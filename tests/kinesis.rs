//! The Kinesis source against a real Kinesis API server (kinesis-local, started by the
//! harness on 127.0.0.1): exactly-once across SIGKILL, leases shared and taken over by two
//! processes with no two readers of a shard at once, splits and merges mid-run with children
//! after parents, throttling that slows the reader without loss, and a process whose wall
//! clock is minutes off and then jumps (libfaketime) still never sharing a shard, and the
//! Kinesis lag signal rising under a paused reader and returning to 0 on a real Prometheus,
//! and enhanced fan-out (SubscribeToShard) reading exactly once across SIGKILL.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use support::kinesis::{emulate, run, setup, streams, KinesisServer, LOG};
use support::proc::{assert_unique_lineage_from, metric_sum, scrape, signal, Proc, Setup};
use support::prometheus::Prometheus;
use support::proxy::{aws_json_error, FaultProxy};

/// Waits until exactly `n` rows are committed, checks they stay `n` and carry no duplicate
/// lineage key; returns the rows.
fn exactly(s: &Setup, n: usize, procs: &mut [&mut Proc]) -> BTreeMap<String, Vec<Map<String, Value>>> {
    s.wait_rows(n, Duration::from_secs(120), procs);
    // Anything committed twice would show up within a couple of flushes.
    std::thread::sleep(Duration::from_millis(1500));
    let rows = s.rows();
    let total: usize = rows.values().map(Vec::len).sum();
    assert_eq!(total, n, "rows committed");
    assert_unique_lineage_from(&rows, "kinesis");
    rows
}

/// Owner of every lease file: `(stream, shard) -> (owner, finished)`.
fn leases(s: &Setup) -> BTreeMap<(String, String), (Option<String>, bool)> {
    let root = s.tables.join("_pinpipe/leases/pinpipe");
    let mut out = BTreeMap::new();
    for stream in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(stream.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(shard) = name.strip_suffix(".json") else {
                continue;
            };
            let v: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            out.insert(
                (stream.file_name().to_string_lossy().into_owned(), shard.to_string()),
                (
                    v["owner"].as_str().map(str::to_string),
                    v["finished"].as_bool().unwrap_or(false),
                ),
            );
        }
    }
    out
}

fn owned_by(s: &Setup) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (owner, finished) in leases(s).into_values() {
        if let (Some(o), false) = (owner, finished) {
            *counts.entry(o).or_default() += 1;
        }
    }
    counts
}

fn wait_for(what: &str, timeout: Duration, procs: &mut [&mut Proc], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        for p in procs.iter_mut() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("{} exited with {status} waiting for {what}:\n{}", p.name, p.tail());
            }
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = procs.iter().map(|p| format!("--- {}\n{}", p.name, p.tail())).collect();
            panic!("no {what} after {timeout:?}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn exactly_once_over_four_shards_across_sigkill() {
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "once", "127.0.0.1:0");
    for stream in streams("once") {
        server.create_stream(&stream, 4);
    }
    emulate(&s, 3000, 1);
    let mut a = run(&s, "a", "a");
    s.wait_rows(1500, Duration::from_secs(60), &mut [&mut a]);
    a.kill();
    let mut b = run(&s, "b", "b");
    let rows = exactly(&s, 9000, &mut [&mut b]);
    // Every shard was read, and positions are AWS-style sequence numbers beyond i64.
    let shards: std::collections::BTreeSet<(&str, &str)> = rows
        .values()
        .flatten()
        .map(|r| (r["_stream"].as_str().unwrap(), r["_partition"].as_str().unwrap()))
        .collect();
    assert_eq!(shards.len(), 12, "{shards:?}");
    let longest = rows
        .values()
        .flatten()
        .map(|r| r["_position"].as_str().unwrap().len())
        .max()
        .unwrap();
    assert!(
        longest > 19,
        "sequence numbers of {longest} digits fit an i64: not AWS-like"
    );
    // b took a's leases over after they expired.
    assert!(b.log_text().contains("from=Some(\"a\")"), "{}", b.tail());
    // SIGTERM: drained, committed, leases written free.
    assert!(b.terminate(Duration::from_secs(20)).success(), "{}", b.tail());
    assert!(
        owned_by(&s).is_empty(),
        "leases still held after a clean exit: {:?}",
        leases(&s)
    );
}

/// `[start, end]` of each shard actor's life in a process log; an actor still running when
/// the process died ends at `died`.
type Interval = ((String, String), DateTime<Utc>, DateTime<Utc>);

fn reading_intervals(log: &str, died: DateTime<Utc>) -> Vec<Interval> {
    let field = |line: &str, name: &str| {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        Some(line[at..].split_whitespace().next()?.to_string())
    };
    let mut open = HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(ts) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(ts) = DateTime::parse_from_rfc3339(ts) else {
            continue;
        };
        let ts = ts.with_timezone(&Utc);
        let (Some(stream), Some(shard)) = (field(line, "stream"), field(line, "shard")) else {
            continue;
        };
        if line.contains("shard actor starting") {
            open.insert((stream, shard), ts);
        } else if line.contains("shard actor stopped") {
            let key = (stream, shard);
            let start = open.remove(&key).unwrap_or_else(|| {
                let related: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(&format!("shard={}", key.1)))
                    .collect();
                panic!("{key:?} stopped before it started:\n{}", related.join("\n"))
            });
            out.push((key, start, ts));
        }
    }
    out.extend(open.into_iter().map(|(k, start)| (k, start, died)));
    out
}

#[test]
fn two_processes_share_shards_and_take_over_a_dead_one() {
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "share", "127.0.0.1:0");
    for stream in streams("share") {
        server.create_stream(&stream, 4);
    }
    emulate(&s, 2000, 1);
    let mut a = run(&s, "a", "a");
    let mut b = run(&s, "b", "b");
    // The 12 leases split evenly (b asks a for shards until 6/6).
    wait_for("an even split", Duration::from_secs(60), &mut [&mut a, &mut b], || {
        owned_by(&s) == BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 6)])
    });
    emulate(&s, 2000, 2);
    b.kill();
    let b_died = Utc::now();
    emulate(&s, 1000, 3);
    exactly(&s, 15_000, &mut [&mut a]);
    assert_eq!(owned_by(&s), BTreeMap::from([("a".to_string(), 12)]));
    let a_log = a.log_text();
    assert!(
        a_log.contains("from=Some(\"b\")"),
        "a never took b's expired leases:\n{}",
        a.tail()
    );
    assert!(a.terminate(Duration::from_secs(20)).success(), "{}", a.tail());
    let a_end = Utc::now();
    // Never two readers of one shard at once.
    let ia = reading_intervals(&a_log, a_end);
    let ib = reading_intervals(&b.log_text(), b_died);
    assert!(ib.len() >= 6, "b read {} shards", ib.len());
    for (ka, sa, ea) in &ia {
        for (kb, sb, eb) in ib.iter().filter(|(kb, _, _)| kb == ka) {
            assert!(
                ea <= sb || eb <= sa,
                "{ka:?} read by a {sa}..{ea} and by b {sb}..{eb} at once"
            );
            let _ = kb;
        }
    }
}

fn micros(r: &Map<String, Value>) -> i64 {
    match &r["_ingested_at"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(t) => DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros(),
        other => panic!("_ingested_at {other:?}"),
    }
}

#[test]
fn split_and_merge_mid_run_children_after_parents() {
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "reshard", "127.0.0.1:0");
    let [pin, geo, user] = <[String; 3]>::try_from(streams("reshard")).unwrap();
    server.create_stream(&pin, 4);
    server.create_stream(&geo, 1);
    server.create_stream(&user, 1);
    emulate(&s, 1500, 1);
    let mut a = run(&s, "a", "a");
    s.wait_rows(4500, Duration::from_secs(60), &mut [&mut a]);
    let before: Vec<String> = server.shards(&pin).iter().map(|s| s.shard_id().to_string()).collect();
    assert_eq!(before.len(), 4);
    // Records put between the reshards land in parents and then in children.
    emulate(&s, 500, 2);
    server.split_shard(&pin, &before[0]);
    emulate(&s, 500, 3);
    server.merge_shards(&pin, &before[2], &before[3]);
    emulate(&s, 1000, 4);
    let rows = exactly(&s, 10_500, &mut [&mut a]);
    // Children: every shard with a parent. Each child's first row was ingested after the
    // last row of each of its parents.
    let shards = server.shards(&pin);
    let children: Vec<(String, Vec<String>)> = shards
        .iter()
        .filter_map(|sh| {
            let parents: Vec<String> = [sh.parent_shard_id(), sh.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect();
            (!parents.is_empty()).then(|| (sh.shard_id().to_string(), parents))
        })
        .collect();
    assert_eq!(children.len(), 3, "2 from the split, 1 from the merge: {shards:?}");
    let by_shard = |id: &str| -> Vec<i64> {
        rows["pin"]
            .iter()
            .chain(&rows["pin_dead_letter"])
            .filter(|r| r["_partition"] == id)
            .map(micros)
            .collect()
    };
    for (child, parents) in &children {
        let c = by_shard(child);
        assert!(!c.is_empty(), "child {child} got no rows");
        let first = *c.iter().min().unwrap();
        for p in parents {
            let last = by_shard(p).into_iter().max().expect("parent rows");
            assert!(
                first >= last,
                "child {child} started ({first}) before parent {p} ended ({last})"
            );
        }
    }
    let l = leases(&s);
    for p in [&before[0], &before[2], &before[3]] {
        assert!(l[&(pin.clone(), p.clone())].1, "parent {p} not finished: {l:?}");
    }
    assert!(a.terminate(Duration::from_secs(20)).success(), "{}", a.tail());
}

#[test]
fn throttling_slows_the_reader_without_loss() {
    let server = KinesisServer::start();
    // Two of every three GetRecords calls are refused, as AWS does past 5 calls/s/shard.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let proxy = FaultProxy::start(
        server.port,
        Arc::new(move |r| {
            if r.header("x-amz-target") != Some("Kinesis_20131202.GetRecords") {
                return None;
            }
            (!c.fetch_add(1, Ordering::Relaxed).is_multiple_of(3)).then(|| {
                aws_json_error(
                    400,
                    "ProvisionedThroughputExceededException",
                    "Rate exceeded for shard in stream under account 000000000000.",
                )
            })
        }),
    );
    let port = support::free_port();
    let s = setup(&proxy.endpoint(), "throttle", &format!("127.0.0.1:{port}"));
    for stream in streams("throttle") {
        server.create_stream(&stream, 2);
    }
    emulate(&s, 1000, 1);
    let mut a = run(&s, "a", "a");
    exactly(&s, 3000, &mut [&mut a]);
    let text = scrape(port);
    let throttled = metric_sum(&text, "pinpipe_kinesis_throttled_calls_total");
    let injected = proxy.injected.load(Ordering::Relaxed) as f64;
    assert!(injected >= 10.0, "only {injected} throttles injected");
    assert!(
        throttled >= 1.0 && throttled <= injected,
        "pinpipe counted {throttled} throttled calls, the proxy refused {injected}"
    );
    assert!(
        text.contains(
            "pinpipe_source_errors_total{error=\"ProvisionedThroughputExceededException\",source=\"kinesis\"}"
        ),
        "{text}"
    );
    assert!(metric_sum(&text, "pinpipe_kinesis_millis_behind_latest") >= 0.0);
    assert!(
        text.contains("pinpipe_owned_partitions{source=\"kinesis\"} 6"),
        "{text}"
    );
    // Every Kinesis metric the dashboard plots exists on a live Kinesis run (tests/ops.rs
    // runs the dashboard's queries against a Kafka-only run, where they cannot).
    let dashboard = std::fs::read_to_string("grafana/dashboards/pinpipe.json").unwrap();
    let names: std::collections::BTreeSet<&str> = dashboard
        .match_indices("pinpipe_kinesis_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            &rest[..rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())]
        })
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    for n in names {
        assert!(
            text.contains(&format!("\n{n}{{")) || text.contains(&format!("\n{n} ")),
            "{n} plotted but not exported:\n{text}"
        );
    }
    assert!(a.terminate(Duration::from_secs(20)).success(), "{}", a.tail());
}

#[test]
fn a_missing_stream_is_a_clear_error() {
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "absent", "127.0.0.1:0");
    let mut a = run(&s, "a", "a");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = a.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "run did not fail:\n{}", a.tail());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = a.log_text();
    assert!(
        log.contains("kinesis stream streaming-absent-") && log.contains("ResourceNotFoundException"),
        "{log}"
    );
}

/// libfaketime's multithreaded build (Debian's `libfaketime`, which
/// `.ci/install-servers.sh` installs), or `PINPIPE_LIBFAKETIME`; `None` where it is absent.
fn libfaketime() -> Option<std::path::PathBuf> {
    let given = std::env::var_os("PINPIPE_LIBFAKETIME").map(std::path::PathBuf::from);
    let debian = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| std::path::PathBuf::from(format!("/usr/lib/{a}/faketime/libfaketimeMT.so.1")));
    given.into_iter().chain(debian).find(|p| p.is_file())
}

/// `pinpipe run` whose wall clock is off by what `clock` says (libfaketime's offset syntax,
/// `-5m`), read again every second so the test can make it jump. The monotonic clock is
/// left alone: a wall clock is what NTP steps and what differs between machines.
fn run_skewed(s: &Setup, name: &str, faketime: &std::path::Path, clock: &std::path::Path) -> Proc {
    s.spawn_env(
        name,
        &["run", "--no-progress"],
        &[
            ("PINPIPE_LOG", LOG.to_string()),
            ("PINPIPE__KINESIS__WORKER_ID", name.to_string()),
            ("LD_PRELOAD", faketime.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", clock.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ],
    )
}

/// No shard read by two processes at once, over every pair of interval lists.
fn assert_no_overlap(named: &[(&str, &[Interval])]) {
    for (i, (na, ia)) in named.iter().enumerate() {
        for (nb, ib) in &named[i + 1..] {
            for (ka, sa, ea) in ia.iter() {
                for (_, sb, eb) in ib.iter().filter(|(kb, _, _)| kb == ka) {
                    assert!(
                        ea <= sb || eb <= sa,
                        "{ka:?} read by {na} {sa}..{ea} and by {nb} {sb}..{eb} at once"
                    );
                }
            }
        }
    }
}

/// Issue 27, item 5: process `b`'s wall clock is 5 minutes behind the others', then jumps
/// 12 minutes forward mid-run (as an NTP step would). Leases expire on each process's own
/// monotonic clock, so: the shards still split evenly, `b` hands shards over cleanly to a
/// third process after its jump and at its SIGTERM, no shard is ever read by two processes
/// at once (intervals from the logs, `b`'s put back on the true clock), and every record is
/// in exactly once.
#[test]
fn skewed_and_jumping_wall_clocks_never_make_two_owners() {
    let Some(faketime) = libfaketime() else {
        eprintln!("SKIPPED: libfaketime not installed (apt-get install libfaketime, or run .ci/install-servers.sh)");
        return;
    };
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "skew", "127.0.0.1:0");
    for stream in streams("skew") {
        server.create_stream(&stream, 4);
    }
    emulate(&s, 1000, 1);
    let clock = s.dir.path().join("b.faketime");
    std::fs::write(&clock, "-5m").unwrap();
    let mut a = run(&s, "a", "a");
    let mut b = run_skewed(&s, "b", &faketime, &clock);
    wait_for("an even split", Duration::from_secs(60), &mut [&mut a, &mut b], || {
        owned_by(&s) == BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 6)])
    });
    emulate(&s, 1000, 2);
    let jump = Utc::now();
    std::fs::write(&clock, "+7m").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut c = run(&s, "c", "c");
    wait_for(
        "three owners",
        Duration::from_secs(60),
        &mut [&mut a, &mut b, &mut c],
        || owned_by(&s).values().copied().collect::<Vec<_>>() == [4, 4, 4],
    );
    emulate(&s, 1000, 3);
    assert!(b.terminate(Duration::from_secs(20)).success(), "{}", b.tail());
    let b_end = Utc::now();
    // Its leases go on to the others: freed at its exit, or (one asked for meanwhile)
    // expired and taken.
    wait_for(
        "b's leases taken over",
        Duration::from_secs(30),
        &mut [&mut a, &mut c],
        || !owned_by(&s).contains_key("b"),
    );
    exactly(&s, 9000, &mut [&mut a, &mut c]);
    for p in [&mut a, &mut c] {
        assert!(p.terminate(Duration::from_secs(20)).success(), "{}", p.tail());
    }
    let end = Utc::now();
    // b's log is on its own clock: 5 minutes behind before the jump, 7 ahead after.
    let unskew = |t: DateTime<Utc>| {
        if t < jump {
            t + chrono::Duration::minutes(5)
        } else {
            t - chrono::Duration::minutes(7)
        }
    };
    let b_log = b.log_text();
    let ib: Vec<Interval> = reading_intervals(&b_log, b_end + chrono::Duration::minutes(7))
        .into_iter()
        .map(|(k, s, e)| (k, unskew(s), unskew(e)))
        .collect();
    let (ia, ic) = (
        reading_intervals(&a.log_text(), end),
        reading_intervals(&c.log_text(), end),
    );
    assert!(
        ib.len() >= 6 && !ic.is_empty(),
        "b read {} shards, c {}",
        ib.len(),
        ic.len()
    );
    assert_no_overlap(&[("a", &ia), ("b", &ib), ("c", &ic)]);
    // b handed shards over after its jump (to c, asked for them) and at its SIGTERM.
    let after_jump =
        |l: &&str| DateTime::parse_from_rfc3339(l.split_whitespace().next().unwrap_or("")).is_ok_and(|t| t > jump);
    let handed: Vec<&str> = b_log
        .lines()
        .filter(|l| l.contains("shard handed over"))
        .filter(after_jump)
        .collect();
    assert!(
        !handed.is_empty(),
        "b handed nothing over after its clock jumped:\n{}",
        b.tail()
    );
    let events = |log: &str| -> Vec<(&'static str, usize)> {
        [
            "shard lease taken",
            "asked for shard",
            "shard handed over",
            "shard lease lost",
            "expired before renewal",
        ]
        .into_iter()
        .map(|e| (e, log.matches(e).count()))
        .collect()
    };
    eprintln!(
        "skewed clocks: b -5m then +7m; {} hand-overs by b after the jump; reading intervals a {}, b {}, c {}: \
         no overlap; lease events a {:?}, b {:?}, c {:?}",
        handed.len(),
        ia.len(),
        ib.len(),
        ic.len(),
        events(&a.log_text()),
        events(&b_log),
        events(&c.log_text())
    );
}

#[test]
fn kinesis_lag_rises_under_a_paused_reader_and_returns_to_zero() {
    // kinesis-local: kinesalite answers MillisBehindLatest 0 on open shards, always.
    let server = KinesisServer::start();
    let port = support::free_port();
    let s = setup(&server.endpoint(), "klag", &format!("127.0.0.1:{port}"));
    for stream in streams("klag") {
        server.create_stream(&stream, 1);
    }
    emulate(&s, 50, 31);
    // Small reads, so that catching up takes several GetRecords calls, each reporting how
    // far behind the tip it still is (one large read would catch up in a single call).
    let slow = |name: &str| {
        s.spawn_env(
            name,
            &["run", "--no-progress"],
            &[
                ("PINPIPE_LOG", LOG.to_string()),
                ("PINPIPE__KINESIS__WORKER_ID", name.to_string()),
                ("PINPIPE__KINESIS__MAX_RECORDS_PER_CALL", "20".to_string()),
                ("PINPIPE__KINESIS__MIN_CALL_INTERVAL_MS", "250".to_string()),
            ],
        )
    };
    let mut a = slow("a");
    exactly(&s, 150, &mut [&mut a]);
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts/pinpipe.rules.yml");
    let prom = Prometheus::start(&[port], &[std::path::Path::new(rules)]);
    prom.wait_for("pinpipe:kinesis_lag_seconds:sum", Duration::from_secs(30), |v| v == 0.0);

    // Pause the reader and put a backlog in two parts 3 s apart: kinesis-local's
    // MillisBehindLatest is the arrival time of the shard's last record minus that of the
    // last record returned, so the first reads after the pause are seconds behind.
    signal(&a.child, "STOP");
    emulate(&s, 150, 32);
    std::thread::sleep(Duration::from_secs(3));
    emulate(&s, 150, 33);
    signal(&a.child, "CONT");
    let peak = prom.wait_for(
        "max_over_time(pinpipe:kinesis_lag_seconds:sum[2m])",
        Duration::from_secs(30),
        |v| v >= 2.0,
    );
    // Seconds behind, summed over 3 shards: no more than the backlog's age on each.
    assert!(peak < 3.0 * 120.0, "peak {peak} s");
    let per_shard = prom
        .scalar("max(max_over_time(pinpipe_kinesis_millis_behind_latest[2m]))")
        .unwrap();
    assert!(
        per_shard >= 1000.0 * peak / 3.0,
        "shards' peak {per_shard} ms, sum {peak} s"
    );
    prom.wait_for("pinpipe_kinesis_lag_seconds", Duration::from_secs(60), |v| v == 0.0);
    exactly(&s, 1050, &mut [&mut a]);
    assert!(a.terminate(Duration::from_secs(20)).success(), "{}", a.tail());
}

#[test]
fn enhanced_fan_out_reads_pushed_records_exactly_once_across_sigkill() {
    // kinesis-local serves SubscribeToShard (over HTTP/1.1, an event every second).
    let server = KinesisServer::start();
    let port = support::free_port();
    let s = setup(&server.endpoint(), "efo", &format!("127.0.0.1:{port}"));
    for stream in streams("efo") {
        server.create_stream(&stream, 2);
    }
    emulate(&s, 600, 41);
    let pushed = |name: &str| {
        s.spawn_env(
            name,
            &["run", "--no-progress"],
            &[
                ("PINPIPE_LOG", LOG.to_string()),
                ("PINPIPE__KINESIS__WORKER_ID", name.to_string()),
                ("PINPIPE__KINESIS__ENHANCED_FAN_OUT", "true".to_string()),
            ],
        )
    };
    let mut a = pushed("a");
    s.wait_rows(600, Duration::from_secs(90), &mut [&mut a]);
    a.kill();
    // b subscribes through the consumer a registered, after what the tables hold.
    let mut b = pushed("b");
    exactly(&s, 1800, &mut [&mut b]);
    // Records put while b is subscribed arrive by push too.
    emulate(&s, 200, 42);
    exactly(&s, 2400, &mut [&mut b]);

    // One consumer per stream, the application's, registered once and ACTIVE.
    for stream in streams("efo") {
        let arn = server
            .block_on(server.client().describe_stream_summary().stream_name(&stream).send())
            .unwrap()
            .stream_description_summary
            .unwrap()
            .stream_arn;
        let consumers = server
            .block_on(server.client().list_stream_consumers().stream_arn(arn).send())
            .unwrap()
            .consumers
            .unwrap_or_default();
        let names: Vec<&str> = consumers.iter().map(|c| c.consumer_name()).collect();
        assert_eq!(names, ["pinpipe"], "{stream}");
    }
    // Read by subscriptions, not by polling: every one of the 6 shards was subscribed to.
    let text = scrape(port);
    let subscriptions = metric_sum(&text, "pinpipe_kinesis_subscriptions_total");
    assert!(subscriptions >= 6.0, "{subscriptions} subscriptions\n{text}");
    assert!(
        b.log_text().contains("enhanced fan-out: reading by SubscribeToShard"),
        "{}",
        b.tail()
    );
    assert!(b.terminate(Duration::from_secs(20)).success(), "{}", b.tail());
}

/// Puts user records to `stream` through boto3 in the order given, each item either one
/// plain record or a KPL aggregate made by `aws-kinesis-agg` (PyPI; installed beside boto3
/// by .ci/install-servers.sh); a "corrupt" item is an aggregate with a byte of its protobuf
/// flipped. Prints the hex of each record put.
const KPL_PUT: &str = r#"
import binascii, json, sys
import boto3
from aws_kinesis_agg.aggregator import RecordAggregator
endpoint, stream, plan = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
out = []
for item in plan:
    records = [r.encode() for r in item["records"]]
    if item["how"] == "plain":
        data, key = records[0], "pk-plain"
    else:
        agg = RecordAggregator()
        for i, r in enumerate(records):
            assert agg.add_user_record("pk-%d" % (i % 3), r) is None, "aggregate full"
        key, _, data = agg.clear_and_get().get_contents()
        if item["how"] == "corrupt":
            data = bytearray(data)
            data[12] ^= 0x20
            data = bytes(data)
    kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
    out.append(binascii.hexlify(data).decode())
print(json.dumps(out))
"#;

/// A valid pin record with index `i`, or (every 7th) one that fails cleaning.
fn pin_record(i: usize) -> String {
    if i % 7 == 3 {
        return format!(r#"{{"index": {i}, "follower_count": "lots"}}"#);
    }
    format!(
        r#"{{"index": {i}, "unique_id": "{i:08}-3442-4773-b19e-d3ec6f54dddf", "title": "t{i}", "description": "d", "poster_name": "p", "follower_count": "{i}k", "tag_list": "a,b", "is_image_or_video": "image", "image_src": "https://i.pinimg.com/{i}.jpg", "downloaded": 1, "save_location": "Local save in /data/x", "category": "c"}}"#
    )
}

/// Puts `plan` ((how, user records)) to `stream` with the KPL library; returns the bytes
/// of each Kinesis record put.
fn kpl_put(server: &KinesisServer, stream: &str, plan: &[(&str, Vec<String>)]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    let items: Vec<Value> = plan
        .iter()
        .map(|(how, records)| serde_json::json!({"how": how, "records": records}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
    let python = support::tool("PINPIPE_MOTO_SERVER", "venv/bin/moto_server").with_file_name("python");
    let out = std::process::Command::new(&python)
        .args(["-c", KPL_PUT, &server.endpoint(), stream])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the KPL put script failed (aws-kinesis-agg is installed by .ci/install-servers.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    hex.iter().map(|h| hex::decode(h).unwrap()).collect()
}

#[test]
fn kpl_aggregates_split_into_user_records_exactly_once_across_sigkill() {
    let server = KinesisServer::start();
    let s = setup(&server.endpoint(), "kpl", "127.0.0.1:0");
    for stream in streams("kpl") {
        server.create_stream(&stream, 1);
    }
    let pin = &streams("kpl")[0];
    // Plain records and aggregates of 1..=40 user records, mixed on one shard.
    let mut next = 0usize;
    let mut plan = |items: usize, corrupt_at: Option<usize>| -> Vec<(&'static str, Vec<String>)> {
        (0..items)
            .map(|j| {
                let n = if j % 3 == 0 { 1 } else { 1 + (j * 13) % 40 };
                let records: Vec<String> = (next..next + n).map(pin_record).collect();
                next += n;
                let how = match (Some(j) == corrupt_at, j % 3) {
                    (true, _) => "corrupt",
                    (false, 0) => "plain",
                    _ => "aggregate",
                };
                (how, records)
            })
            .collect()
    };
    let first = plan(30, Some(7));
    let second = plan(30, None);
    let user_records = |p: &[(&str, Vec<String>)]| -> usize {
        p.iter()
            .map(|(how, r)| if *how == "corrupt" { 1 } else { r.len() })
            .sum()
    };
    let expected = user_records(&first) + user_records(&second);
    let put_first = kpl_put(&server, pin, &first);

    let mut a = run(&s, "a", "a");
    s.wait_rows(user_records(&first), Duration::from_secs(90), &mut [&mut a]);
    // The second half goes in while a reads; a dies mid-way, b resumes from the tables.
    let put_second = kpl_put(&server, pin, &second);
    std::thread::sleep(Duration::from_millis(700));
    a.kill();
    let mut b = run(&s, "b", "b");
    let rows = exactly(&s, expected, &mut [&mut b]);

    // Every user record once, by index; an aggregate's rows say which sub-record they are.
    let mut indexes: Vec<u64> = Vec::new();
    let mut sub_positions = 0;
    for (table, rs) in &rows {
        for r in rs {
            let position = r["_position"].as_str().unwrap();
            sub_positions += usize::from(position.contains(':'));
            if table == "pin" {
                indexes.push(r["ind"].as_u64().unwrap());
            }
        }
    }
    indexes.sort_unstable();
    let valid: Vec<u64> = (0..next).filter(|i| i % 7 != 3).map(|i| i as u64).collect();
    let corrupt = &first[7].1;
    // The corrupt aggregate's user records are not in the clean table.
    let corrupt_first: usize = first[..7].iter().map(|(_, r)| r.len()).sum();
    let corrupt_range = corrupt_first as u64..(corrupt_first + corrupt.len()) as u64;
    let want: Vec<u64> = valid.into_iter().filter(|i| !corrupt_range.contains(i)).collect();
    assert_eq!(indexes, want, "clean pin rows by index");
    let aggregated: usize = first
        .iter()
        .chain(&second)
        .filter(|(how, _)| *how == "aggregate")
        .map(|(_, r)| r.len())
        .sum();
    assert_eq!(sub_positions, aggregated, "rows positioned <seq>:<sub>");

    // The corrupt aggregate: one dead letter, its reason, all its bytes.
    let dead: Vec<&Map<String, Value>> = rows["pin_dead_letter"]
        .iter()
        .filter(|r| r["error"].as_str().unwrap().starts_with("corrupt KPL aggregate"))
        .collect();
    assert_eq!(dead.len(), 1, "{:?}", rows["pin_dead_letter"]);
    assert_eq!(dead[0]["error"], "corrupt KPL aggregate: MD5 checksum mismatch");
    assert_eq!(dead[0]["raw"], String::from_utf8_lossy(&put_first[7]).as_ref());

    // The raw table keeps each Kinesis record once, as received (aggregates whole).
    let raw = &s.raw_rows()["pin_raw"];
    assert_eq!(raw.len(), put_first.len() + put_second.len(), "raw rows");
    let mut kept: Vec<String> = raw.iter().map(|r| r["raw"].as_str().unwrap().to_string()).collect();
    let mut put: Vec<String> = put_first
        .iter()
        .chain(&put_second)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    kept.sort();
    put.sort();
    assert_eq!(kept, put, "raw bytes as put");
    assert!(b.terminate(Duration::from_secs(20)).success(), "{}", b.tail());
}
