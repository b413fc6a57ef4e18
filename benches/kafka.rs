//! Kafka -> Delta end to end: `pinpipe run` (a child process, as deployed) consuming
//! pre-produced records from a Kafka-protocol broker on 127.0.0.1 into local Delta tables.
//!
//! `cargo bench --bench kafka`. Environment:
//! - `PINPIPE_BENCH_POSTS` posts to pre-produce (default 333 334 = ~1M records);
//! - `PINPIPE_BENCH_PARTITIONS` partitions per topic (default 48: librdkafka's mock broker
//!   keeps at most 5 MiB per partition, and the bench checks nothing was trimmed);
//! - `PINPIPE_BENCH_RATE` records/s and `PINPIPE_BENCH_SECONDS` for the latency phase
//!   (default 20 000 for 10 s), and `PINPIPE_BENCH_FETCH_WAIT_MS` (default 10) the
//!   consumer's `fetch.wait.max.ms` there: librdkafka's mock broker holds a fetch that
//!   found nothing for that whole time, even when records arrive meanwhile (a real broker
//!   answers as soon as `fetch.min.bytes` is there), so at librdkafka's default of 500 ms
//!   the mock alone adds up to half a second to a paced record's latency.
//!
//! Prints, each with a ratio to a baseline measured in the same run (a single-threaded
//! `serde_json::Value` parse of the same payloads): records/s by wall clock and per CPU
//! second of the `pinpipe run` process with 1 and 2 worker threads, its peak RSS, and at a
//! fixed produce rate the latency from the producer's send to the Delta commit holding
//! the row (p50, p99, max). The broker runs in this process and competes for the same two
//! cores; the figures are a floor, not a ceiling.
//!
//! With `PINPIPE_BENCH_KDI=<kafka-delta-ingest binary>`, kafka-delta-ingest reads the same
//! topics on the same broker in the same run (one process per topic) and the same figures
//! are printed for it, with pinpipe's as ratios to KDI's ([`kdi`]). Each side's row count
//! must equal the records produced, or the bench fails. KDI's latency at the fixed rate
//! runs only with `PINPIPE_BENCH_KDI_LATENCY=1`.
//!
//! To compare CPU, `PINPIPE_BENCH_REPEAT=N` runs the picked runs (`PINPIPE_BENCH_RUNS`) N
//! times, rotating their order each round, and prints each run's median with its ratio to
//! the first run listed. One pair is not enough here: the run that came first measured up to
//! 30 % fewer records per CPU s than the same binary run second, and on these machines a page
//! touched for the first time costs a host fault (BENCHMARKS.md, "fresh pages").
//! `PINPIPE_BENCH_SECONDS=0` skips the latency phase.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

mod kdi;
mod support;

use pinpipe::clean::Kind;
use pinpipe::emulate::{EmulateConfig, Generator};

const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");
type Record = (String, i32, Vec<u8>);
/// `(topic, partition, offset)`: a row's lineage key.
type Key = (String, String, String);

/// CPU seconds (user + system) of this process: the mock broker's share while a run is on.
fn self_cpu() -> f64 {
    support::proc_stat("self").map_or(0.0, |(_, cpu)| cpu)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Posts as records of `<prefix>.<kind>`, round robin over the partitions.
fn records(prefix: &str, posts: u64, partitions: i32, seed: u64) -> Vec<Record> {
    let mut gen = Generator::new(EmulateConfig {
        seed,
        // Every post distinct: no repeated strings flattering compression.
        index_pool: 1 << 40,
        ..Default::default()
    })
    .expect("generator");
    let mut out = Vec::with_capacity(posts as usize * 3);
    for n in 0..posts {
        let post = gen.next_post();
        for kind in Kind::ALL {
            let p = ((n % partitions as u64) as i32 + kind as i32) % partitions;
            out.push((format!("{prefix}.{kind}"), p, post.record(kind).to_vec()));
        }
    }
    out
}

fn producer(mock: &MockCluster<'static, DefaultProducerContext>) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Large producer batches: the mock broker answers a fetch with one batch per
        // partition, so small batches would make fetch round trips the bottleneck.
        .set("linger.ms", "100")
        .set("batch.size", "1000000")
        .create()
        .expect("producer")
}

/// Produces everything (bounded in-flight window); returns each record's offset.
fn produce_all(p: &FutureProducer, recs: &[Record]) -> Vec<i64> {
    let mut out = Vec::with_capacity(recs.len());
    for chunk in recs.chunks(20_000) {
        let futures: Vec<_> = chunk
            .iter()
            .map(|(t, part, payload)| {
                let r: FutureRecord<'_, (), [u8]> = FutureRecord::to(t).partition(*part).payload(payload.as_slice());
                p.send_result(r).map_err(|(e, _)| e).expect("enqueue")
            })
            .collect();
        for f in futures {
            let (_, offset) = futures::executor::block_on(f)
                .expect("delivery")
                .map(|d| (d.partition, d.offset))
                .unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
            out.push(offset);
        }
    }
    out
}

/// Panics unless every partition of the prefix still starts at offset 0: the mock broker
/// drops the oldest data past 5 MiB per partition, which would silently shrink the input.
fn assert_untrimmed(mock: &MockCluster<'static, DefaultProducerContext>, prefix: &str, partitions: i32) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .expect("consumer");
    for kind in Kind::ALL {
        for p in 0..partitions {
            let (low, _) = c
                .fetch_watermarks(&format!("{prefix}.{kind}"), p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "{prefix}.{kind}/{p} was trimmed by the mock broker: raise PINPIPE_BENCH_PARTITIONS"
            );
        }
    }
}

struct RunFigures {
    /// From the first partition assignment to exit: without the group join.
    steady: f64,
    /// From spawn to exit.
    wall: f64,
    cpu: f64,
    peak_rss_mb: f64,
}

/// Runs `pinpipe run --stop-after n` to its end; samples its peak RSS and reads its CPU
/// time from /proc while it is a zombie (before it is reaped).
///
/// `bin` is this build's binary or another one (`PINPIPE_BENCH_BEFORE`); `env` adds config
/// overrides (`PINPIPE_BENCH_VARIANT`).
fn run_bin(
    bin: &str,
    env: &[(String, String)],
    dir: &Path,
    name: &str,
    toml: &str,
    n: usize,
    during: impl FnOnce(&Path),
) -> RunFigures {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).expect("config");
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log");
    let t = Instant::now();
    let spawned = now_ms();
    let mut child = Command::new(bin)
        .args(["run", "--no-progress", "--stop-after", &n.to_string()])
        .env("PINPIPE_CONFIG", &config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "PINPIPE_LOG",
            std::env::var("PINPIPE_BENCH_LOG").unwrap_or("warn,pinpipe::sources::kafka=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn pinpipe run");
    during(&log_path);
    let usage = support::watch(&mut child, name, Duration::from_secs(900));
    let wall = t.elapsed().as_secs_f64();
    let ended = now_ms();
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let assigned = text
        .lines()
        .find(|l| l.contains("partition assigned"))
        .and_then(log_time_ms)
        .map(|at| spawned + (at - day_ms(spawned)).rem_euclid(86_400_000));
    let steady = assigned.map_or(wall, |a| (ended - a) as f64 / 1000.0);
    assert!(
        usage.status.success(),
        "{name} failed: see {}",
        dir.join(format!("{name}.log")).display()
    );
    RunFigures {
        steady,
        wall,
        cpu: usage.cpu,
        peak_rss_mb: usage.peak_rss_mb,
    }
}

/// Milliseconds since midnight (UTC) of a Unix time in ms.
fn day_ms(unix_ms: i64) -> i64 {
    unix_ms.rem_euclid(86_400_000)
}

/// Milliseconds since midnight of a log line's RFC 3339 timestamp (`...THH:MM:SS.ffffffZ`).
fn log_time_ms(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    let (_, time) = ts.split_once('T')?;
    let time = time.trim_end_matches('Z');
    let mut it = time.split(':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    let secs: f64 = s.parse().ok()?;
    Some(h.parse::<i64>().ok()? * 3_600_000 + m.parse::<i64>().ok()? * 60_000 + (secs * 1000.0) as i64)
}

fn config(tables: &Path, brokers: &str, prefix: &str, workers: usize, max_age_ms: u64, batch_age_ms: u64) -> String {
    format!(
        r#"
[tables]
location = "{tables}"
checkpoint_interval = 1000000

[writer]
max_age_ms = {max_age_ms}

[metrics]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
group_id = "{prefix}-group"
topic_prefix = "{prefix}"
workers = {workers}
batch_age_ms = {batch_age_ms}

[kafka.properties]
{props}
"#,
        tables = tables.display(),
        props = std::env::var("PINPIPE_BENCH_KAFKA_PROPS").unwrap_or_default(),
    )
}

/// Commit time of every row: each Delta commit's `commitInfo.timestamp`, joined with the
/// lineage columns of the files it added.
fn commit_times(tables: &Path) -> HashMap<Key, i64> {
    let mut out = HashMap::new();
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            let table = tables.join(&name);
            let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some("json") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("commit");
                let mut ts = None;
                let mut files = Vec::new();
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).expect("commit line");
                    if let Some(t) = v["commitInfo"]["timestamp"].as_i64() {
                        ts = Some(t);
                    }
                    if let Some(p) = v["add"]["path"].as_str() {
                        files.push(table.join(p));
                    }
                }
                let ts = ts.expect("commitInfo.timestamp");
                for f in files {
                    for key in lineage(&f) {
                        out.insert(key, ts);
                    }
                }
            }
        }
    }
    out
}

fn lineage(file: &Path) -> Vec<Key> {
    let mut out = Vec::new();
    for batch in support::read_columns(file, &["_stream", "_partition", "_position"]) {
        // The lineage columns are Utf8 (src/clean/batch.rs).
        let s = |c: &str| batch.column_by_name(c).expect("column").as_string::<i32>().clone();
        let (st, pa, po) = (s("_stream"), s("_partition"), s("_position"));
        for i in 0..batch.num_rows() {
            if st.is_valid(i) {
                out.push((
                    st.value(i).to_string(),
                    pa.value(i).to_string(),
                    po.value(i).to_string(),
                ));
            }
        }
    }
    out
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let posts: u64 = support::env_or("PINPIPE_BENCH_POSTS", 333_334);
    let partitions: i32 = support::env_or("PINPIPE_BENCH_PARTITIONS", 48);
    let rate: f64 = support::env_or("PINPIPE_BENCH_RATE", 20_000.0);
    let seconds: f64 = support::env_or("PINPIPE_BENCH_SECONDS", 10.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock broker");
    let brokers = mock.bootstrap_servers();
    assert!(brokers.starts_with("127.0.0.1:"), "{brokers}");

    // Input, and the floor: parse every payload into a serde_json::Value.
    let recs = records("bench", posts, partitions, 42);
    let n = recs.len();
    let bytes: usize = recs.iter().map(|r| r.2.len()).sum();
    let t = Instant::now();
    let mut parsed = 0usize;
    for (_, _, payload) in &recs {
        parsed += serde_json::from_slice::<serde_json::Value>(payload).is_ok() as usize;
    }
    let parse_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "input: {n} records ({:.1} MB) over 3 topics x {partitions} partitions; {parsed} parse as JSON",
        bytes as f64 / 1e6
    );

    for kind in Kind::ALL {
        mock.create_topic(&format!("bench.{kind}"), partitions, 1)
            .expect("topic");
    }
    let p = producer(&mock);
    let t = Instant::now();
    produce_all(&p, &recs);
    let produce_s = t.elapsed().as_secs_f64();
    assert_untrimmed(&mock, "bench", partitions);
    let keys = top_level_keys(&recs);
    drop(recs);
    println!(
        "pre-produced in {produce_s:.1}s ({:.0} records/s)",
        n as f64 / produce_s
    );

    println!();
    println!("{:<44} {:>14} {:>9}", "figure", "value", "ratio");
    println!(
        "{:<44} {:>14} {:>9}",
        "serde_json::Value parse, 1 thread (rec/s)",
        format!("{parse_rate:.0}"),
        "1.00x"
    );
    // The raw tables (on by default) are measured against the same run without them, and
    // with `PINPIPE_BENCH_BEFORE=<an older pinpipe binary>` this build against that one.
    // `PINPIPE_BENCH_RUNS` picks runs by name (default: w1,w2,w2-noraw), and
    // `PINPIPE_BENCH_VARIANT="PINPIPE__WRITER__ZSTD_LEVEL=1 ..."` adds run w2-variant: this
    // build with those config overrides.
    let mut pinpipe_w2 = None;
    let before = std::env::var("PINPIPE_BENCH_BEFORE").ok();
    let picked = std::env::var("PINPIPE_BENCH_RUNS").unwrap_or("w1,w2,w2-noraw".into());
    let variant: Vec<(String, String)> = std::env::var("PINPIPE_BENCH_VARIANT")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let mut runs = vec![
        (1usize, true, None, false),
        (2, true, None, false),
        (2, false, None, false),
    ];
    if let Some(b) = &before {
        runs.insert(1, (2, true, Some(b.clone()), false));
    }
    if !variant.is_empty() {
        runs.insert(1, (2, true, None, true));
    }
    let runs: Vec<_> = runs
        .into_iter()
        .map(|(workers, raw, bin, with_variant)| {
            let name = format!(
                "w{workers}{}{}{}",
                if raw { "" } else { "-noraw" },
                if bin.is_some() { "-before" } else { "" },
                if with_variant { "-variant" } else { "" }
            );
            (name, workers, raw, bin, with_variant)
        })
        .filter(|(name, ..)| {
            let base = name.trim_end_matches("-before").trim_end_matches("-variant");
            picked.split(',').any(|p| p.trim() == base)
        })
        .collect();
    // Whichever run comes first in a process measured 4-30 % fewer records per CPU s than
    // the same binary run second (BENCHMARKS.md), so a CPU comparison takes
    // `PINPIPE_BENCH_REPEAT` rounds, each round's order rotated by one, and compares medians.
    let repeat: usize = support::env_or("PINPIPE_BENCH_REPEAT", 1usize).max(1);
    // Per run name, each round's (records per CPU s, records/s by wall clock, peak RSS MiB).
    let mut rounds: HashMap<String, Vec<(f64, f64, f64)>> = HashMap::new();
    for round in 0..repeat {
        for i in 0..runs.len() {
            let (name, workers, raw, bin, with_variant) = &runs[(i + round) % runs.len()];
            let (workers, raw, with_variant) = (*workers, *raw, *with_variant);
            let label = format!(
                "{workers} worker(s){}{}{}{}",
                if raw { "" } else { ", raw off" },
                if bin.is_some() { ", before" } else { "" },
                if with_variant { ", variant" } else { "" },
                if repeat > 1 {
                    format!(" #{}", round + 1)
                } else {
                    String::new()
                }
            );
            let run = if round == 0 {
                name.clone()
            } else {
                format!("{name}-r{round}")
            };
            let tables = dir.path().join(format!("tables-{run}"));
            let mut toml = config(&tables, &brokers, "bench", workers, 1_000, 500);
            if !raw {
                toml.push_str("\n[raw]\nenabled = false\n");
            }
            // Each run is its own group, reading the same pre-produced topics from the start.
            let toml = toml.replace("bench-group", &format!("bench-{run}"));
            let broker_cpu = self_cpu();
            let env = if with_variant { &variant[..] } else { &[] };
            let f = run_bin(
                bin.as_deref().unwrap_or(BIN),
                env,
                dir.path(),
                &format!("run-{run}"),
                &toml,
                n,
                |_| {},
            );
            let broker_cpu = self_cpu() - broker_cpu;
            let wall = n as f64 / f.steady;
            let per_cpu = n as f64 / f.cpu.max(1e-9);
            rounds
                .entry(name.clone())
                .or_default()
                .push((per_cpu, wall, f.peak_rss_mb));
            println!(
                "{:<44} {:>14} {:>8.2}x",
                format!("Kafka->Delta, {label}, wall* (rec/s)"),
                format!("{wall:.0}"),
                wall / parse_rate
            );
            println!(
                "{:<44} {:>14} {:>8.2}x",
                format!("Kafka->Delta, {label}, per CPU-s"),
                format!("{per_cpu:.0}"),
                per_cpu / parse_rate
            );
            println!(
                "{:<44} {:>14} {:>9}",
                format!("  pinpipe run peak RSS, {label} (MiB)"),
                format!("{:.0}", f.peak_rss_mb),
                ""
            );
            let written = support::dir_bytes(&tables);
            println!(
                "{:<44} {:>14} {:>8.2}x",
                format!("  bytes written, {label} (MB)"),
                format!("{:.1}", written as f64 / 1e6),
                written as f64 / bytes as f64
            );
            println!(
                "{:<44} {:>14} {:>9}",
                "  CPU-s: pinpipe run / mock broker, wall s",
                format!("{:.1} / {:.1}, {:.1}", f.cpu, broker_cpu, f.steady),
                ""
            );
            if round == 0 && workers == 2 && raw && bin.is_none() && !with_variant {
                pinpipe_w2 = Some((f.wall, f.cpu, f.peak_rss_mb, tables.clone()));
            } else if round > 0 {
                // Only the first round's tables are read later (KDI's side by side).
                let _ = std::fs::remove_dir_all(&tables);
            }
        }
    }
    if repeat > 1 && !runs.is_empty() {
        print_medians(&runs.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), &rounds);
    }

    // Latency at a fixed rate: the consumer runs first, the producer paces sends.
    let total = (rate * seconds) as usize;
    let fetch_wait_ms: u64 = support::env_or("PINPIPE_BENCH_FETCH_WAIT_MS", 10);
    let mut lives = vec![(BIN, "live")];
    if let Some(b) = &before {
        lives.push((b.as_str(), "livebefore"));
    }
    if total == 0 {
        lives.clear();
    }
    for (bin, prefix) in lives {
        let live = records(prefix, total.div_ceil(3) as u64, partitions, 7);
        let live = &live[..total.min(live.len())];
        for kind in Kind::ALL {
            mock.create_topic(&format!("{prefix}.{kind}"), partitions, 1)
                .expect("topic");
        }
        let tables = dir.path().join(format!("tables-{prefix}"));
        let (max_age_ms, batch_age_ms) = (1_000, 100);
        let mut toml = config(&tables, &brokers, prefix, 2, max_age_ms, batch_age_ms);
        if !toml.contains("fetch.wait.max.ms") {
            // `[kafka.properties]` is the config's last table.
            toml.push_str(&format!("\"fetch.wait.max.ms\" = \"{fetch_wait_ms}\"\n"));
        }
        let mut sent = HashMap::new();
        run_bin(
            bin,
            &[],
            dir.path(),
            &format!("run-{prefix}"),
            &toml,
            live.len(),
            |log| {
                // Produce once the group has formed (the mock delays the first join by ~3 s).
                wait_for_line(&[log.to_path_buf()], "partition actor started");
                sent = produce_paced(&p, live, rate);
            },
        );
        let committed = commit_times(&tables);
        let mut lat: Vec<i64> = sent
            .iter()
            .map(|(k, at)| committed.get(k).expect("every sent record committed") - at)
            .collect();
        let who = if bin == BIN { "pinpipe" } else { "pinpipe before" };
        print_latency(who, &mut lat, rate, max_age_ms, Some(batch_age_ms));
    }
    println!("(consumer fetch.wait.max.ms = {fetch_wait_ms} in the latency phase: PINPIPE_BENCH_FETCH_WAIT_MS)");
    println!("(latency ratios are to the flush age; the aim is p99 <= flush age + 500 ms)");
    println!("(* wall: from the first partition assignment to exit, i.e. without the group join)");

    if let Some(k) = kdi::Kdi::from_env() {
        let pinpipe = pinpipe_w2.expect("the 2-worker run");
        kdi_side_by_side(&k, dir.path(), &mock, &keys, posts as usize, parse_rate, pinpipe);
        // Opt-in: here KDI fell behind a paced producer (a commit every ~11 s holding a few
        // hundred rows, BENCHMARKS.md), so this phase runs into its time limit.
        if std::env::var("PINPIPE_BENCH_KDI_LATENCY").is_ok_and(|v| v == "1") {
            let live = records("kdilive", total.div_ceil(3) as u64, partitions, 7);
            let live = &live[..total.min(live.len())];
            kdi_latency(&k, dir.path(), &mock, &p, live, partitions, rate);
        } else {
            println!("(KDI's latency at a fixed rate: PINPIPE_BENCH_KDI_LATENCY=1)");
        }
    }
    if std::env::var_os("PINPIPE_BENCH_KEEP").is_some() {
        println!("kept: {}", dir.keep().display());
    }
}

/// Medians over the rounds of `PINPIPE_BENCH_REPEAT`, each a ratio to the first run listed
/// (`w2` against `w2-noraw` gives the raw tables' cost).
fn print_medians(names: &[String], rounds: &HashMap<String, Vec<(f64, f64, f64)>>) {
    let median =
        |name: &str, pick: fn(&(f64, f64, f64)) -> f64| support::median(rounds[name].iter().map(pick).collect());
    let (cpu_base, wall_base) = (median(&names[0], |r| r.0), median(&names[0], |r| r.1));
    println!();
    println!(
        "medians over {} rounds, each round's order rotated by one",
        rounds[&names[0]].len()
    );
    println!(
        "{:<44} {:>14} {:>9}",
        "run (peak RSS MiB): records per CPU s, wall*", "median", "ratio"
    );
    for name in names {
        let (cpu, wall) = (median(name, |r| r.0), median(name, |r| r.1));
        println!(
            "{:<44} {:>14} {:>8.2}x",
            format!("{name} ({:.0}), per CPU-s", median(name, |r| r.2)),
            format!("{cpu:.0}"),
            cpu / cpu_base
        );
        println!(
            "{:<44} {:>14} {:>8.2}x",
            format!("{name}, wall* (rec/s)"),
            format!("{wall:.0}"),
            wall / wall_base
        );
        let each: Vec<String> = rounds[name].iter().map(|r| format!("{:.0}", r.0)).collect();
        println!("    per CPU-s in each round: {}", each.join(", "));
    }
}

/// Waits (up to 60 s) until each log has the line.
fn wait_for_line(logs: &[PathBuf], line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for log in logs {
        while !std::fs::read_to_string(log).unwrap_or_default().contains(line) {
            assert!(
                Instant::now() < deadline,
                "no {line:?} in {} within 60 s",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends the records at `rate` per second; returns each one's send time (ms) by lineage.
fn produce_paced(p: &FutureProducer, live: &[Record], rate: f64) -> HashMap<Key, i64> {
    let t = Instant::now();
    let mut pending = Vec::new();
    for (i, (topic, part, payload)) in live.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
        let r: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).partition(*part).payload(payload.as_slice());
        pending.push((
            topic.clone(),
            now_ms(),
            p.send_result(r).map_err(|(e, _)| e).expect("enqueue"),
        ));
    }
    let mut sent = HashMap::with_capacity(pending.len());
    for (topic, at, f) in pending {
        let d = futures::executor::block_on(f)
            .expect("delivery")
            .unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
        sent.insert((topic, d.partition.to_string(), d.offset.to_string()), at);
    }
    sent
}

fn print_latency(who: &str, lat: &mut [i64], rate: f64, max_age_ms: u64, batch_age_ms: Option<u64>) {
    lat.sort_unstable();
    let batch = batch_age_ms.map_or(String::new(), |b| format!(", batch age {b} ms"));
    println!(
        "{:<44} {:>14} {:>9}",
        format!("{who} latency at {rate:.0} rec/s, flush age {max_age_ms} ms{batch}"),
        format!("{} rows", lat.len()),
        ""
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "{:<44} {:>14} {:>8.2}x",
            format!("  send -> Delta commit {label} (ms)"),
            percentile(lat, q),
            percentile(lat, q) as f64 / max_age_ms as f64
        );
    }
}

/// Each topic's top-level JSON keys (KDI's table schema is the raw record's).
fn top_level_keys(recs: &[Record]) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (topic, _, payload) in recs {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(payload) {
            out.entry(topic.clone()).or_default().extend(m.keys().cloned());
        }
    }
    out
}

/// (commits that added files, files) over the Delta tables under `dir`.
fn commits_and_files(dir: &Path) -> (usize, usize) {
    let (mut commits, mut files) = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().join("_delta_log").is_dir() {
            let log = kdi::read_log(&e.path());
            commits += log.commits;
            files += log.files.len();
        }
    }
    (commits, files)
}

/// kafka-delta-ingest on the pre-produced topics: one process per topic to the end of
/// its partitions; prints its figures and pinpipe's (2 workers, raw tables on) beside them.
#[allow(clippy::too_many_arguments)]
fn kdi_side_by_side(
    k: &kdi::Kdi,
    dir: &Path,
    mock: &MockCluster<'static, DefaultProducerContext>,
    keys: &HashMap<String, BTreeSet<String>>,
    posts: usize,
    parse_rate: f64,
    pinpipe: (f64, f64, f64, PathBuf),
) {
    let root = dir.join("kdi");
    let kinds: Vec<String> = Kind::ALL.iter().map(|k| k.to_string()).collect();
    let mut children = Vec::new();
    let spawned = now_ms();
    for kind in Kind::ALL {
        let topic = format!("bench.{kind}");
        kdi::Kdi::create_tables(&root, &kind.to_string(), &keys[&topic]);
        children.push(k.spawn(&root, &kind.to_string(), &topic, &mock.bootstrap_servers()));
    }
    let broker_cpu = self_cpu();
    // Stopped once its tables hold every record (or at the time limit, which fails).
    let want = posts * Kind::ALL.len();
    let mut last_check = Instant::now();
    let f = kdi::watch(&mut children, Duration::from_secs(900), || {
        if last_check.elapsed() < Duration::from_millis(200) {
            return false;
        }
        last_check = Instant::now();
        k.total(&root, &kinds) >= want
    });
    let broker_cpu = self_cpu() - broker_cpu;
    // Its wall clock ends at its last commit, not at the poll that noticed it.
    let last = Kind::ALL
        .iter()
        .flat_map(|k| [k.to_string(), format!("{k}_dlq")])
        .filter_map(|t| kdi::last_commit(&kdi::read_log(&root.join(t))))
        .max()
        .expect("kafka-delta-ingest committed nothing");
    let kdi_wall = (last - spawned) as f64 / 1000.0;
    let (mut commits, mut files, mut total) = (0, 0, 0);
    for kind in Kind::ALL {
        let (main, dlq) = (
            kdi::read_log(&root.join(kind.to_string())),
            kdi::read_log(&root.join(format!("{kind}_dlq"))),
        );
        let (rows, dead) = k.counts(&root, &kind.to_string());
        assert_eq!(
            rows + dead,
            posts,
            "kafka-delta-ingest wrote {rows} rows + {dead} rejected for bench.{kind}, {posts} were produced"
        );
        println!("  kafka-delta-ingest bench.{kind}: {rows} rows + {dead} rejected = {posts} records");
        commits += main.commits + dlq.commits;
        files += main.files.len() + dlq.files.len();
        total += rows + dead;
    }
    let (p_wall, p_cpu, p_rss, p_tables) = pinpipe;
    let (p_commits, p_files) = commits_and_files(&p_tables);
    let n = total as f64;
    println!();
    println!(
        "{:<44} {:>14} {:>9}",
        "side by side (3 topics, same records)", "KDI", "pinpipe/KDI"
    );
    println!(
        "{:<44} {:>14} {:>8.2}x",
        "records/s, spawn to exit (incl. group join)",
        format!("{:.0}", n / kdi_wall),
        (n / p_wall) / (n / kdi_wall)
    );
    println!(
        "{:<44} {:>14} {:>8.2}x",
        "records per CPU-s of the consumer processes",
        format!("{:.0}", n / f.cpu),
        (n / p_cpu) / (n / f.cpu)
    );
    println!(
        "{:<44} {:>14} {:>9}",
        "  KDI per CPU-s vs serde_json parse floor",
        format!("{:.2}x", (n / f.cpu) / parse_rate),
        ""
    );
    println!(
        "{:<44} {:>14} {:>8.2}x",
        "peak RSS, summed over processes (MiB)",
        format!("{:.0}", f.peak_rss_mb),
        p_rss / f.peak_rss_mb
    );
    println!(
        "{:<44} {:>14} {:>9}",
        "commits / files written (pinpipe: 9 tables)",
        format!("{commits} / {files}"),
        format!("{p_commits} / {p_files}")
    );
    println!(
        "{:<44} {:>14} {:>9}",
        "  CPU-s: KDI / mock broker, wall s",
        format!("{:.1} / {:.1}, {:.1}", f.cpu, broker_cpu, kdi_wall),
        ""
    );
}

/// kafka-delta-ingest at the fixed rate: send -> commit latency of the rows it wrote
/// (its dead letters carry no offset and are left out of the percentiles).
fn kdi_latency(
    k: &kdi::Kdi,
    dir: &Path,
    mock: &MockCluster<'static, DefaultProducerContext>,
    p: &FutureProducer,
    live: &[Record],
    partitions: i32,
    rate: f64,
) {
    let root = dir.join("kdi-live");
    let keys = top_level_keys(live);
    let mut children = Vec::new();
    let mut logs = Vec::new();
    for kind in Kind::ALL {
        let topic = format!("kdilive.{kind}");
        mock.create_topic(&topic, partitions, 1).expect("topic");
        kdi::Kdi::create_tables(&root, &kind.to_string(), &keys[&topic]);
        children.push(k.spawn(&root, &kind.to_string(), &topic, &mock.bootstrap_servers()));
        logs.push(root.join(format!("{kind}.log")));
    }
    wait_for_line(&logs, "POST_REBALANCE - Assign");
    let sent = produce_paced(p, live, rate);
    let want = live.len();
    let mut last_check = Instant::now();
    let kinds: Vec<String> = Kind::ALL.iter().map(|k| k.to_string()).collect();
    kdi::watch(&mut children, Duration::from_secs(300), || {
        if last_check.elapsed() < Duration::from_millis(500) {
            return false;
        }
        last_check = Instant::now();
        k.total(&root, &kinds) >= want
    });
    assert_eq!(
        k.total(&root, &kinds),
        want,
        "kafka-delta-ingest rows + dead letters at the fixed rate"
    );
    let mut lat = Vec::new();
    for kind in Kind::ALL {
        let topic = format!("kdilive.{kind}");
        for ((part, offset), ts) in kdi::committed(&kdi::read_log(&root.join(kind.to_string()))) {
            if let Some(at) = sent.get(&(topic.clone(), part.to_string(), offset.to_string())) {
                lat.push(ts - at);
            }
        }
    }
    print_latency("KDI", &mut lat, rate, 1_000, None);
}
