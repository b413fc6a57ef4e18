//! The fault suite: real `pinpipe run` processes against real servers on 127.0.0.1 while a
//! driver SIGKILLs them, breaks the store under them or races them on one table. Each test
//! checks the tables at the end on the lineage key: every record sent is in exactly one row
//! (clean or dead letter), none twice.
//!
//! CI runs the short versions. The long ones (RELIABILITY.md has the sizes and the last
//! results) are `cargo test --release --test faults -- --ignored --test-threads 1`.
//! `PINPIPE_FAULT_SEED` replays a run's kill times and data (each run prints its seed).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use pinpipe::clean::Kind;
use support::free_port;
use support::kafka::{emulated, Broker};
use support::kinesis::{Flavor, KinesisServer};
use support::proc::{assert_unique_lineage_from, metric_sum, scrape, wait_until_rows, Proc, Setup, BIN};
use support::proxy::{Answer, FaultProxy, Request};
use support::s3::S3Server;

type Key = (String, String, String);

/// The fault tests load both cores; run one at a time so none starves another's timeouts.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn seed() -> u64 {
    let seed = std::env::var("PINPIPE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (PINPIPE_FAULT_SEED={seed} replays it)");
    seed
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Panics with the process's log if it exited on its own.
fn assert_alive(procs: &mut [Proc], what: &str) {
    for p in procs.iter_mut() {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("{} exited with {status} during {what}:\n{}", p.name, p.tail());
        }
    }
}

/// Waits (bounded) until the tables hold `n` rows, gives a duplicate time to show, stops
/// every process with SIGTERM (each must exit 0) and checks exactly-once on the lineage
/// key; returns the keys.
fn settle_and_check(setup: &Setup, n: usize, procs: &mut [Proc], source: &str, within: Duration) -> HashSet<Key> {
    wait_until_rows(n, within, ms(500), procs, || setup.count());
    std::thread::sleep(ms(2000));
    for p in procs.iter_mut() {
        let status = p.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM:\n{}",
            p.name,
            p.tail()
        );
    }
    let rows = setup.rows();
    let total: usize = rows.values().map(Vec::len).sum();
    assert_eq!(total, n, "clean + dead-letter rows = records sent");
    // The raw tables too (on by default): nine tables, each record once in two of them.
    let raw = setup.raw_rows();
    assert_eq!(raw.values().map(Vec::len).sum::<usize>(), n, "raw rows = records sent");
    let raw_keys = assert_unique_lineage_from(&raw, source);
    let keys = assert_unique_lineage_from(&rows, source);
    assert_eq!(
        raw_keys, keys,
        "the raw tables hold exactly the records the cleaned tables do"
    );
    keys
}

/// Kills a random process of `procs` at random times (`gap_ms` apart) and restarts it
/// under a new name at once, as a rescheduled pod would be; `tick` is called between kills.
struct KillDriver {
    rng: StdRng,
    gap_ms: std::ops::Range<u64>,
    next: Instant,
    kills: usize,
    /// Rows in the tables at each kill.
    at_rows: Vec<usize>,
}

impl KillDriver {
    fn new(seed: u64, gap_ms: std::ops::Range<u64>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let next = Instant::now() + ms(rng.random_range(gap_ms.clone()));
        KillDriver {
            rng,
            gap_ms,
            next,
            kills: 0,
            at_rows: Vec::new(),
        }
    }

    /// One turn of a kill loop: a kill if fewer than `kills` were made and its time has
    /// come, then checks that no process died on its own and that `deadline` holds.
    fn step(
        &mut self,
        kills: usize,
        deadline: Instant,
        procs: &mut [Proc],
        rows: impl FnOnce() -> usize,
        restart: impl FnOnce(usize, usize) -> Proc,
    ) {
        if self.kills < kills {
            self.tick(procs, rows, restart);
        }
        assert_alive(procs, "the kill loop");
        assert!(
            Instant::now() < deadline,
            "kill loop did not finish: {} kills",
            self.kills
        );
        std::thread::sleep(ms(50));
    }

    /// Kills and restarts one process if its time has come. One kill at most lands before
    /// the first commit: a seed whose first gaps are short otherwise killed every process
    /// again and again while the group formed (5 of 8 kills at 0 rows, seed
    /// 1796287695140961867), and the loop proved nothing about committed records.
    fn tick(&mut self, procs: &mut [Proc], rows: impl FnOnce() -> usize, restart: impl FnOnce(usize, usize) -> Proc) {
        if Instant::now() < self.next {
            return;
        }
        let at = rows();
        if at == 0 && self.at_rows.contains(&0) {
            self.next = Instant::now() + ms(500);
            return;
        }
        let i = self.rng.random_range(0..procs.len());
        procs[i].kill(); // SIGKILL
        self.at_rows.push(at);
        self.kills += 1;
        eprintln!(
            "kill {}: {} at {} rows",
            self.kills,
            procs[i].name,
            self.at_rows.last().unwrap()
        );
        procs[i] = restart(i, self.kills);
        self.next = Instant::now() + ms(self.rng.random_range(self.gap_ms.clone()));
    }

    /// Half the kills at least must land between the first and the last row, while
    /// records were being committed, or the loop proved little.
    fn assert_mid_run(&self, n: usize) {
        let mid = self.at_rows.iter().filter(|r| **r > 0 && **r < n).count();
        assert!(
            mid * 2 >= self.at_rows.len(),
            "only {mid} of {} kills before the last row: {:?}",
            self.at_rows.len(),
            self.at_rows
        );
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// 1. Kill loop
// ---------------------------------------------------------------------------------------

/// `records` through a Kafka-protocol broker (`partitions` per topic) into local tables
/// while 3 `pinpipe run` processes of one consumer group are SIGKILLed `kills` times and
/// restarted. Records are produced in slices while the kills go on, so kills land
/// mid-flush, mid-rebalance and mid-produce. The mock broker keeps at most 5 MiB per
/// partition: a trimmed record would show as a missing key, never pass.
fn kafka_kill_loop(records: usize, kills: usize, partitions: i32) {
    const PROCESSES: usize = 3;
    let seed = seed();
    let broker = Broker::start(1);
    broker.create_topics("kl", partitions);
    let setup = support::kafka::setup(&broker, "kl", 5_000);
    let all = emulated("kl", records.div_ceil(3) as u64, partitions, seed);
    let n = all.len();
    let mut procs: Vec<Proc> = (0..PROCESSES).map(|i| setup.run(&format!("p{i}.0"))).collect();
    // A kill costs the group a rebalance now and another when the dead member's session
    // (6 s) ends; gaps of 2 to 8 s leave time to commit between them.
    let mut driver = KillDriver::new(seed, 2_000..8_000);
    // The slices are spread over the time the kills take (5 s each on average).
    let slices: Vec<_> = all.chunks(n.div_ceil(40)).collect();
    let pace = ms(kills as u64 * 5_000 / slices.len() as u64);
    let mut expected: HashSet<Key> = HashSet::with_capacity(n);
    let (mut slice, mut next_slice) = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60 + kills as u64 * 10);
    while slice < slices.len() || driver.kills < kills {
        if slice < slices.len() && Instant::now() >= next_slice {
            let offsets = broker.produce(slices[slice]);
            for ((topic, p, _), o) in slices[slice].iter().zip(offsets) {
                expected.insert((topic.clone(), p.to_string(), o.to_string()));
            }
            slice += 1;
            next_slice = Instant::now() + pace;
        }
        driver.step(
            kills,
            deadline,
            &mut procs,
            || setup.count(),
            |i, k| setup.run(&format!("p{i}.{k}")),
        );
    }
    let seen = settle_and_check(&setup, n, &mut procs, "kafka", Duration::from_secs(240));
    assert!(seen == expected, "the rows' lineage keys are not the produced offsets");
    driver.assert_mid_run(n);
    eprintln!(
        "kafka kill loop: {n} records, {kills} kills at rows {:?}: exactly once",
        driver.at_rows
    );
}

#[test]
fn kafka_kill_loop_short() {
    let _serial = serial();
    kafka_kill_loop(
        env_or("PINPIPE_FAULT_RECORDS", 100_000),
        env_or("PINPIPE_FAULT_KILLS", 8),
        6,
    );
}

#[test]
#[ignore = "long: 1M records, 24 kills (RELIABILITY.md)"]
fn kafka_kill_loop_long() {
    let _serial = serial();
    // ~150 MB of pin records over 48 partitions: about 3 MiB each.
    kafka_kill_loop(1_000_000, 24, 48);
}

/// The emulator's put rate in the Kinesis kill loops: 3 000 records/s. kinesalite is one
/// Node process: alone it takes about 12k puts/s or 20k reads/s, and at 14k puts/s with
/// three readers its event loop fell behind until GetRecords starved.
const KINESIS_POSTS_PER_SEC: u64 = 1_000;

/// `records` put to 4-shard Kinesis streams by `pinpipe emulate --to kinesis` (a child
/// process running alongside) while 3 `pinpipe run` processes sharing the shards by lease
/// are SIGKILLed `kills` times and restarted under new worker ids.
fn kinesis_kill_loop(records: usize, kills: usize) {
    const PROCESSES: usize = 3;
    let seed = seed();
    // kinesalite, not kinesis-local: the latter slows to ~80 records/s past ~20k records in
    // its shards (see `Flavor`). PINPIPE_FAULT_KINESIS_SERVER=kinesis-local picks it anyway.
    let flavor = match std::env::var("PINPIPE_FAULT_KINESIS_SERVER").as_deref() {
        Ok("kinesis-local") => Flavor::KinesisLocal,
        _ => Flavor::Kinesalite,
    };
    let server = KinesisServer::start_flavor(flavor);
    let setup = support::kinesis::setup(&server.endpoint(), "kl", "127.0.0.1:0");
    for stream in support::kinesis::streams("kl") {
        server.create_stream(&stream, 4);
    }
    let posts = records.div_ceil(3);
    let n = posts * 3;
    let mut emulate = Command::new(BIN)
        .args(["emulate", "--to", "kinesis", "--no-progress"])
        .args(["--count", &posts.to_string(), "--seed", &seed.to_string()])
        .env("PINPIPE_CONFIG", &setup.config)
        .args(["--rate", &KINESIS_POSTS_PER_SEC.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = |i: usize, k: usize| support::kinesis::run(&setup, &format!("p{i}.{k}"), &format!("p{i}.{k}"));
    let mut procs: Vec<Proc> = (0..PROCESSES).map(|i| run(i, 0)).collect();
    // Kills spread over the first 80 % of the puts, 0.3-1.7 times the mean gap apart; never
    // under 1 s, as a dead process's leases take 2 s (`lease_ms`) to expire.
    let mean_ms = (posts as u64 * 800 / KINESIS_POSTS_PER_SEC / kills as u64).max(2_000);
    let mut driver = KillDriver::new(seed, (mean_ms * 3 / 10).max(1_000)..mean_ms * 17 / 10);
    // Room for kinesis-local too, which takes about 600 records/s while serving reads.
    let deadline = Instant::now() + Duration::from_secs(120 + kills as u64 * 10 + n as u64 / 300);
    let mut emulated_ok = None;
    while emulated_ok.is_none() || driver.kills < kills {
        if emulated_ok.is_none() {
            emulated_ok = try_finish(&mut emulate);
        }
        driver.step(kills, deadline, &mut procs, || setup.count(), run);
    }
    let _ = emulate.wait(); // reaped by try_finish already; this only says so
    settle_and_check(&setup, n, &mut procs, "kinesis", Duration::from_secs(240));
    // Read back once the readers are gone: kinesis-local is one Node process.
    let sent: usize = support::kinesis::streams("kl")
        .iter()
        .map(|s| server.count_records(s))
        .sum();
    assert_eq!(sent, n, "records in the streams");
    driver.assert_mid_run(n);
    eprintln!(
        "kinesis kill loop: {n} records, {kills} kills at rows {:?}: exactly once",
        driver.at_rows
    );
}

/// `Some(())` once `child` exited 0; panics with its stderr if it failed.
fn try_finish(child: &mut Child) -> Option<()> {
    let status = child.try_wait().unwrap()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(status.success(), "emulate exited with {status}: {err}");
    Some(())
}

#[test]
fn kinesis_kill_loop_short() {
    let _serial = serial();
    kinesis_kill_loop(
        env_or("PINPIPE_FAULT_KINESIS_RECORDS", 100_000),
        env_or("PINPIPE_FAULT_KILLS", 8),
    );
}

#[test]
#[ignore = "long: 1M records, 24 kills (RELIABILITY.md)"]
fn kinesis_kill_loop_long() {
    let _serial = serial();
    kinesis_kill_loop(1_000_000, 24);
}

// ---------------------------------------------------------------------------------------
// 2. Store faults: the S3 server errs and stalls
// ---------------------------------------------------------------------------------------

/// The six tables' rows on S3.
fn s3_rows(s3: &S3Server, root: &str) -> BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut out = BTreeMap::new();
    for kind in Kind::ALL {
        for name in [kind.to_string(), format!("{kind}_dead_letter")] {
            let url = format!("{root}/{name}");
            let rows = pinpipe::block_on(async {
                match deltalake::open_table_with_storage_options(url::Url::parse(&url).unwrap(), s3.storage_options())
                    .await
                {
                    Ok(_) => support::rows::read_table(&url, s3.storage_options()).await,
                    Err(_) => Vec::new(),
                }
            });
            out.insert(name, rows);
        }
    }
    out
}

/// Each version in the `_delta_log` of the table at `bucket/path` on S3, with the
/// operation its commitInfo names (`WRITE`, `CREATE TABLE`, ...).
fn s3_versions(s3: &S3Server, bucket_path: &str) -> BTreeMap<u64, String> {
    use object_store::{ObjectStore, ObjectStoreExt};
    let url = url::Url::parse(&format!("s3://{bucket_path}")).unwrap();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_url(url.as_str())
        .with_endpoint(&s3.endpoint)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let prefix = object_store::path::Path::from(format!("{}/_delta_log", url.path().trim_start_matches('/')));
    pinpipe::block_on(async {
        use futures::TryStreamExt;
        let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for m in metas {
            let Some(version) = m
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json")?.parse().ok())
            else {
                continue;
            };
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let op = String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|a| a["commitInfo"]["operation"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.insert(version, op);
        }
        out
    })
}

/// `pinpipe run` on Kafka writing to S3 tables at `endpoint` (moto, or a proxy in front
/// of it); small fast flushes, its metrics on `metrics_port`.
fn kafka_to_s3(setup: &Setup, name: &str, endpoint: &str, metrics_port: u16, extra: &[(&str, String)]) -> Proc {
    let mut env = vec![
        ("PINPIPE__TABLES__LOCATION", "s3://tables/t".to_string()),
        ("PINPIPE__TABLES__ENDPOINT", endpoint.to_string()),
        ("PINPIPE__TABLES__REGION", "us-east-1".to_string()),
        ("PINPIPE__TABLES__ALLOW_HTTP", "true".to_string()),
        ("PINPIPE__TABLES__PATH_STYLE", "true".to_string()),
        ("PINPIPE__TABLES__ACCESS_KEY_ID", "test".to_string()),
        ("PINPIPE__TABLES__SECRET_ACCESS_KEY", "test".to_string()),
        ("PINPIPE__METRICS__LISTEN", format!("127.0.0.1:{metrics_port}")),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    setup.spawn_env(name, &["run", "--no-progress"], &env)
}

/// Polls until the S3 tables hold `n` rows (bounded).
fn wait_s3_rows(s3: &S3Server, n: usize, within: Duration, procs: &mut [Proc]) {
    wait_until_rows(n, within, ms(1000), procs, || {
        s3_rows(s3, "s3://tables/t").values().map(Vec::len).sum()
    });
}

/// Exactly-once on S3: `n` rows, no lineage key twice, each table's versions 0..=last with
/// no gap. Returns the versions per table.
fn check_s3_tables(s3: &S3Server, n: usize) -> BTreeMap<String, BTreeMap<u64, String>> {
    let rows = s3_rows(s3, "s3://tables/t");
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), n, "rows = records sent");
    assert_unique_lineage_from(&rows, "kafka");
    let mut out = BTreeMap::new();
    for name in rows.keys() {
        let versions = s3_versions(s3, &format!("tables/t/{name}"));
        if versions.is_empty() {
            continue;
        }
        let last = *versions.keys().last().unwrap();
        assert_eq!(
            versions.len() as u64,
            last + 1,
            "{name}: versions with a gap: {versions:?}"
        );
        out.insert(name.clone(), versions);
    }
    out
}

/// The proxy's fault phases.
const HEALTHY: u8 = 0;
const ERRORS: u8 = 1;
const STALLS: u8 = 2;
const RESETS: u8 = 3;

#[test]
fn s3_errors_stalls_and_resets_then_exactly_once() {
    let _serial = serial();
    let seed = seed();
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    let phase = Arc::new(AtomicU8::new(HEALTHY));
    let p = phase.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let coin: Vec<bool> = (0..100_000).map(|_| rng.random_bool(0.5)).collect();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Faults dealt per phase (stalls are forwarded late, so the proxy does not count them).
    let dealt: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let d = dealt.clone();
    let rule = move |_: &Request<'_>| -> Option<Answer> {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        let heads = coin[n % coin.len()];
        let phase = p.load(Ordering::Relaxed);
        if phase != HEALTHY && (heads || phase == ERRORS) {
            d[phase as usize].fetch_add(1, Ordering::Relaxed);
        }
        match phase {
            // Half of all requests get S3's throttle or an internal error.
            ERRORS if heads => Some((503, vec![], s3_error("SlowDown", "Please reduce your request rate."))),
            ERRORS => Some((
                500,
                vec![],
                s3_error("InternalError", "We encountered an internal error."),
            )),
            // Half of all requests wait longer than the client's request timeout.
            STALLS if heads => {
                std::thread::sleep(ms(3_000));
                None
            }
            // A quarter of all requests: the connection closes before the server sees the
            // request; another quarter: after the server acted, so the client cannot know
            // whether a commit landed (the retry then finds its own version taken).
            RESETS if heads => Some((if n.is_multiple_of(2) { 0 } else { 1 }, vec![], String::new())),
            _ => None,
        }
    };
    let proxy = FaultProxy::start(s3.port, Arc::new(rule));
    let broker = Broker::start(1);
    broker.create_topics("sf", 3);
    let setup = support::kafka::setup(&broker, "sf", 500);
    let port = free_port();
    // A 1 s request timeout and 3 retries: faults reach pinpipe's own flush retries (and
    // metrics) instead of hiding inside the client for minutes.
    let client = [
        ("PINPIPE__TABLES__REQUEST_TIMEOUT_MS", "1000".to_string()),
        ("PINPIPE__TABLES__MAX_RETRIES", "3".to_string()),
    ];
    let mut procs = vec![kafka_to_s3(&setup, "run", &proxy.endpoint(), port, &client)];
    let produce = |k: u64| broker.produce(&emulated("sf", 300, 3, seed + k)).len();
    let mut sent = produce(0);
    wait_s3_rows(&s3, sent, Duration::from_secs(60), &mut procs);
    for (k, fault) in [ERRORS, STALLS, RESETS].into_iter().enumerate() {
        phase.store(fault, Ordering::Relaxed);
        // Records arrive during the fault, so flushes must happen under it.
        for j in 0..4 {
            sent += produce(1 + k as u64 * 10 + j);
            std::thread::sleep(ms(1_000));
            assert_alive(&mut procs, "a store fault");
        }
        phase.store(HEALTHY, Ordering::Relaxed);
        wait_s3_rows(&s3, sent, Duration::from_secs(120), &mut procs);
    }
    let dealt: Vec<u64> = dealt.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        dealt[1..].iter().all(|n| *n > 0),
        "a fault phase saw no request: {dealt:?}"
    );
    let text = scrape(port);
    let retries = metric_sum(&text, "pinpipe_flush_retries_total");
    assert!(retries > 0.0, "no flush retry in the metrics:\n{text}");
    std::thread::sleep(ms(2000));
    let status = procs[0].terminate(Duration::from_secs(60));
    assert!(status.success(), "{}", procs[0].tail());
    check_s3_tables(&s3, sent);
    eprintln!(
        "store faults: {sent} records; requests failed with 5xx {}, stalled {}, reset {}; \
         {retries} flush retries: exactly once",
        dealt[1], dealt[2], dealt[3]
    );
}

/// An S3 XML error body.
fn s3_error(code: &str, message: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>")
}

// ---------------------------------------------------------------------------------------
// 3. Concurrent writers
// ---------------------------------------------------------------------------------------

/// 3 processes of one consumer group commit to the same six S3 tables as fast as small
/// flushes allow while records arrive for `seconds`: every commit lands as its own version
/// (contiguous, none lost), the tables read back exactly once.
fn three_writers(seconds: u64) {
    let seed = seed();
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    let broker = Broker::start(1);
    broker.create_topics("cw", 6);
    let setup = support::kafka::setup(&broker, "cw", 300);
    let fast = [("PINPIPE__WRITER__MAX_AGE_MS", "50".to_string())];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| kafka_to_s3(&setup, &format!("w{i}"), &s3.endpoint, *port, &fast))
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        sent += broker.produce(&emulated("cw", 100, 6, seed + k)).len();
        k += 1;
        assert_alive(&mut procs, "the race");
        std::thread::sleep(ms(100));
    }
    wait_s3_rows(&s3, sent, Duration::from_secs(120), &mut procs);
    std::thread::sleep(ms(2000));
    let mut commits: HashMap<String, f64> = HashMap::new();
    let (mut conflicts, mut active) = (0.0, 0);
    for port in &ports {
        let text = scrape(*port);
        conflicts += metric_sum(&text, "pinpipe_commit_conflicts_total");
        active += (metric_sum(&text, "pinpipe_commits_total") > 0.0) as usize;
        for kind in Kind::ALL {
            for table in [kind.to_string(), format!("{kind}_dead_letter")] {
                *commits.entry(table.clone()).or_default() +=
                    metric_sum(&text, &format!("pinpipe_commits_total{{table=\"{table}\"}}"));
            }
        }
    }
    // Versions now, while the processes are quiet: each commit they counted is one version
    // after the table's creation (version 0). SIGTERM below may add position-only commits.
    assert_eq!(active, 3, "every process committed");
    for (table, counted) in &commits {
        let v = s3_versions(&s3, &format!("tables/t/{table}"));
        let writes = v.values().filter(|op| *op == "WRITE").count();
        assert_eq!(*counted as usize, writes, "{table}: commits counted vs versions {v:?}");
        // Created once, by whichever process came first; every other version a write.
        assert_eq!(v.get(&0).map(String::as_str), Some("CREATE TABLE"), "{table}: {v:?}");
        assert_eq!(writes + 1, v.len(), "{table}: versions other than writes: {v:?}");
    }
    for p in procs.iter_mut() {
        let status = p.terminate(Duration::from_secs(60));
        assert!(status.success(), "{}: {status}\n{}", p.name, p.tail());
    }
    let versions = check_s3_tables(&s3, sent);
    let total: usize = versions.values().map(BTreeMap::len).sum();
    eprintln!("three writers, {seconds} s: {sent} records, {total} versions, {conflicts} conflicts retried");
}

#[test]
fn three_writers_race_on_the_same_s3_tables() {
    let _serial = serial();
    three_writers(env_or("PINPIPE_FAULT_SECONDS", 20) as u64);
}

#[test]
#[ignore = "long: one minute (RELIABILITY.md)"]
fn three_writers_race_for_a_minute() {
    let _serial = serial();
    three_writers(60);
}

/// SIGTERM, then the exit status and how long the exit took (bounded by `within`).
fn terminate_timed(p: &mut Proc, within: Duration) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    let status = p.terminate(within);
    (status, t.elapsed())
}

/// Waits (bounded) until `p`'s log has `line`.
fn wait_log(p: &mut Proc, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !p.log_text().contains(line) {
        assert_alive(std::slice::from_mut(p), &format!("waiting for {line:?}"));
        assert!(
            Instant::now() < deadline,
            "{line:?} not logged by {}:\n{}",
            p.name,
            p.tail()
        );
        std::thread::sleep(ms(20));
    }
}

/// Item 10 of issue 22: SIGTERM lands while a rebalance is under way (the revoke callback
/// drains and commits); the process exits within its grace period plus a small margin,
/// reporting success, and the records end exactly once.
#[test]
fn sigterm_in_the_middle_of_a_rebalance_exits_within_the_grace() {
    let _serial = serial();
    let seed = seed();
    let broker = Broker::start(1);
    broker.create_topics("sg", 6);
    let setup = support::kafka::setup(&broker, "sg", 2000);
    let grace = ms(5_000);
    let env = [("PINPIPE__KAFKA__SHUTDOWN_GRACE_MS", grace.as_millis().to_string())];
    let mut a = setup.spawn_env("a", &["run", "--no-progress"], &env);
    let mut sent = broker.produce(&emulated("sg", 3000, 6, seed)).len();
    wait_until_rows(
        sent,
        Duration::from_secs(60),
        ms(300),
        std::slice::from_mut(&mut a),
        || setup.count(),
    );
    sent += broker.produce(&emulated("sg", 3000, 6, seed + 1)).len();
    // A second member joins: `a` revokes partitions (its callback drains and commits them).
    let b = setup.spawn_env("b", &["run", "--no-progress"], &env);
    wait_log(&mut a, "partitions revoked", Duration::from_secs(60));
    let (status, took) = terminate_timed(&mut a, grace + ms(10_000));
    assert!(
        took <= grace + ms(3_000),
        "exit took {took:?}, grace {grace:?}:\n{}",
        a.tail()
    );
    assert!(
        status.success(),
        "nothing was stuck, so everything was committed: {status}\n{}",
        a.tail()
    );
    eprintln!("SIGTERM mid-rebalance: exited in {took:?} (grace {grace:?}), {status}");
    let mut procs = vec![b];
    settle_and_check(&setup, sent, &mut procs, "kafka", Duration::from_secs(120));
}

/// Item 10 of issue 22: SIGTERM while every request to the store hangs. The last flush
/// cannot commit; the process gives up at the grace deadline, exits non-zero (not
/// everything was committed), and a restart once the store is back commits every record
/// exactly once.
#[test]
fn sigterm_while_the_store_stalls_exits_within_the_grace() {
    let _serial = serial();
    let seed = seed();
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stalled.clone();
    let rule = move |_: &Request<'_>| -> Option<Answer> {
        if st.load(Ordering::Relaxed) {
            // Longer than any grace period here; the request is forwarded afterwards.
            std::thread::sleep(ms(40_000));
        }
        None
    };
    let proxy = FaultProxy::start(s3.port, Arc::new(rule));
    let broker = Broker::start(1);
    broker.create_topics("ss", 3);
    let setup = support::kafka::setup(&broker, "ss", 100_000);
    let grace = ms(4_000);
    let extra = [
        ("PINPIPE__KAFKA__SHUTDOWN_GRACE_MS", grace.as_millis().to_string()),
        // Flushes only on demand here: the last one is the one that hangs.
        ("PINPIPE__WRITER__MAX_AGE_MS", "600000".to_string()),
    ];
    let mut p = kafka_to_s3(&setup, "run", &proxy.endpoint(), free_port(), &extra);
    let mut sent = broker.produce(&emulated("ss", 500, 3, seed)).len();
    // The records are read (not committed: the age is ten minutes) before the store stalls.
    wait_log(&mut p, "partition actor started", Duration::from_secs(60));
    std::thread::sleep(ms(3_000));
    stalled.store(true, Ordering::Relaxed);
    let (status, took) = terminate_timed(&mut p, grace + ms(20_000));
    assert!(
        took <= grace + ms(3_000),
        "exit took {took:?}, grace {grace:?}:\n{}",
        p.tail()
    );
    assert!(
        !status.success(),
        "the last flush cannot have committed: {status}\n{}",
        p.tail()
    );
    eprintln!("SIGTERM on a stalled store: exited in {took:?} (grace {grace:?}), {status}");
    stalled.store(false, Ordering::Relaxed);
    sent += broker.produce(&emulated("ss", 200, 3, seed + 1)).len();
    let mut procs = vec![kafka_to_s3(&setup, "again", &proxy.endpoint(), free_port(), &[])];
    wait_s3_rows(&s3, sent, Duration::from_secs(120), &mut procs);
    std::thread::sleep(ms(2000));
    assert!(
        procs[0].terminate(Duration::from_secs(60)).success(),
        "{}",
        procs[0].tail()
    );
    check_s3_tables(&s3, sent);
}

// ---------------------------------------------------------------------------------------
// 4. The long haul (issue 27): a local disk that fills up and turns read-only, a foreign
//    writer changing a table's schema. Both end with every record exactly once.
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted by the test (as root) at a folder; unmounted on drop.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`32m`) at `dir`; `None`, said on stderr, where mount(8) is
    /// not permitted (not root, no CAP_SYS_ADMIN).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: dir.to_path_buf() }),
            Ok(o) => {
                let said = String::from_utf8_lossy(&o.stderr);
                eprintln!(
                    "SKIPPED: mount -t tmpfs was refused ({}); this test needs root",
                    said.trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: mount(8) could not run ({e}); this test needs root and util-linux");
                None
            }
        }
    }

    /// `mount -o remount,<how>`; a read-only remount is refused while a file is open for
    /// writing, so it is tried again (bounded).
    fn remount(&self, how: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new("mount")
                .args(["-o", &format!("remount,{how}")])
                .arg(&self.dir)
                .output()
                .unwrap();
            if o.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "remount,{how}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(ms(50));
        }
    }

    /// Fills the file system with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// User plus system CPU seconds of a live process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// `/readyz` of a process: (status, body).
fn readyz(port: u16) -> (u16, String) {
    support::http::http(port, "GET", "/readyz", &[], b"").unwrap_or((0, String::new()))
}

/// Waits (bounded) until `ok` holds for the metrics `p` serves on `port`.
fn wait_metrics(p: &mut Proc, port: u16, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(port);
        if ok(&text) {
            return text;
        }
        assert_alive(std::slice::from_mut(p), what);
        assert!(Instant::now() < deadline, "no {what} within {within:?}:\n{}", p.tail());
        std::thread::sleep(ms(200));
    }
}

/// What a stalled process looks like from outside, measured over a window.
struct Blocked {
    cpu: f64,
    /// Lines pinpipe logged itself, and the lines of everything else (deltalake,
    /// object_store, the panic hook) in the process's output.
    own_lines: usize,
    other_lines: usize,
    /// Flush attempts retried in the window (`pinpipe_flush_retries_total`).
    retries: f64,
    rows_before: usize,
    rows_after: usize,
}

/// While `p` is blocked: its CPU time, the lines it logs, its retried flushes and the rows
/// in the tables over `window` (it must neither spin nor crash-loop nor commit).
fn measure_blocked(setup: &Setup, p: &mut Proc, port: u16, window: Duration) -> Blocked {
    let pid = p.child.id();
    let own = |log: &str| log.lines().filter(|l| l.contains(" pinpipe::")).count();
    let (cpu0, log0, rows_before) = (cpu_seconds(pid), p.log_text(), setup.count());
    let retries0 = metric_sum(&scrape(port), "pinpipe_flush_retries_total");
    std::thread::sleep(window);
    assert_alive(std::slice::from_mut(p), "the stall");
    let log = p.log_text();
    let own_lines = own(&log) - own(&log0);
    Blocked {
        cpu: cpu_seconds(pid) - cpu0,
        own_lines,
        other_lines: log.lines().count() - log0.lines().count() - own_lines,
        retries: metric_sum(&scrape(port), "pinpipe_flush_retries_total") - retries0,
        rows_before,
        rows_after: setup.count(),
    }
}

/// One disk fault: `sent` records are waiting while `p`'s tables cannot be written. The
/// table stalls (metric, readiness, one log line naming `cause`), the process stays up
/// without spinning and commits nothing; after `fix` every record lands.
fn disk_fault(setup: &Setup, p: &mut Proc, port: u16, sent: usize, cause: &str, fix: impl FnOnce()) {
    let t = Instant::now();
    wait_metrics(p, port, "stalled table", Duration::from_secs(60), |m| {
        metric_sum(m, "pinpipe_table_stalled") >= 1.0
    });
    let stalled_after = t.elapsed();
    let (code, why) = readyz(port);
    assert_eq!(code, 503, "a stalled process is not ready: {why}");
    assert!(why.contains("commits stopped") && why.contains(cause), "/readyz: {why}");
    let log = p.log_text();
    assert!(
        log.contains("table stalled") && log.contains(cause),
        "no error line naming {cause:?}:\n{}",
        p.tail()
    );
    // The other tables stall too as their flushes come due; then it is quiet.
    std::thread::sleep(ms(3_000));
    let b = measure_blocked(setup, p, port, Duration::from_secs(5));
    eprintln!(
        "{cause}: stalled after {stalled_after:?}; over 5 s blocked: {:.2} CPU s, {} retried flushes, \
         {} pinpipe log lines and {} from its libraries, rows {} -> {}",
        b.cpu, b.retries, b.own_lines, b.other_lines, b.rows_before, b.rows_after
    );
    assert!(b.cpu < 1.0, "{:.2} CPU seconds in 5 s while blocked: spinning", b.cpu);
    // Each table retries 1 s, 2 s, 4 s ... apart (at most about 3 times each in 5 s).
    assert!(b.retries <= 24.0, "{} retried flushes in 5 s: no backoff", b.retries);
    // pinpipe says a stall once (then once a minute). What its libraries say comes with a
    // retry (each failed Parquet upload: deltalake's warning, and the panic message of
    // object_store's `BufWriter::abort`, which deltalake catches on purpose; about 4 lines),
    // so it thins out with the backoff.
    assert!(
        b.own_lines <= 3,
        "{} pinpipe log lines in 5 s while blocked:\n{}",
        b.own_lines,
        p.tail()
    );
    assert!(
        b.other_lines as f64 <= 6.0 * b.retries,
        "{} library log lines for {} retries:\n{}",
        b.other_lines,
        b.retries,
        p.tail()
    );
    assert_eq!(b.rows_before, b.rows_after, "nothing can be committed while blocked");
    assert!(b.rows_after < sent, "the records sent during the fault are not all in");
    fix();
    wait_until_rows(sent, Duration::from_secs(90), ms(500), std::slice::from_mut(p), || {
        setup.count()
    });
    wait_metrics(p, port, "recovery", Duration::from_secs(30), |m| {
        metric_sum(m, "pinpipe_table_stalled") == 0.0
    });
    assert_eq!(readyz(port).0, 200, "ready again once the tables recovered");
    assert!(p.log_text().contains("table recovered"), "{}", p.tail());
}

/// Issue 27, item 2: the tables' folder is a small tmpfs; it fills up, then turns
/// read-only, while records arrive. `pinpipe run` stalls the tables (rows kept, sources
/// paused) instead of exiting, says so on its metrics, readiness and log, does not spin,
/// and once the space returns commits every record exactly once without a restart.
#[test]
fn local_disk_fills_up_and_turns_read_only_then_exactly_once() {
    let _serial = serial();
    let seed = seed();
    let broker = Broker::start(1);
    broker.create_topics("df", 3);
    let port = free_port();
    let toml = support::kafka::kafka_toml(&broker, "df");
    let setup = Setup::with_source("df", 2000, &format!("127.0.0.1:{port}"), &toml);
    let Some(disk) = Tmpfs::mount(&setup.tables, "48m") else {
        return;
    };
    // Three quick attempts, then the stall (the default ten take about 16 s).
    let env = [
        ("PINPIPE__WRITER__COMMIT_ATTEMPTS", "3".to_string()),
        ("PINPIPE_LOG", "warn,pinpipe=info".to_string()),
        // A caught panic's message stays two lines (the count below assumes it).
        ("RUST_BACKTRACE", "0".to_string()),
    ];
    let mut p = setup.spawn_env("run", &["run", "--no-progress"], &env);
    let mut sent = broker.produce(&emulated("df", 1000, 3, seed)).len();
    wait_until_rows(
        sent,
        Duration::from_secs(60),
        ms(300),
        std::slice::from_mut(&mut p),
        || setup.count(),
    );
    let pid = p.child.id();

    let filler = disk.fill();
    sent += broker.produce(&emulated("df", 1000, 3, seed + 1)).len();
    disk_fault(&setup, &mut p, port, sent, "No space left on device", || {
        std::fs::remove_file(&filler).unwrap()
    });

    disk.remount("ro");
    sent += broker.produce(&emulated("df", 1000, 3, seed + 2)).len();
    disk_fault(&setup, &mut p, port, sent, "Read-only file system", || {
        disk.remount("rw")
    });

    let text = scrape(port);
    assert!(metric_sum(&text, "pinpipe_flush_failures_total") >= 2.0, "{text}");
    assert!(metric_sum(&text, "pinpipe_flush_retries_total") >= 2.0, "{text}");
    assert_eq!(p.child.id(), pid);
    assert!(
        !p.log_text().contains("partitions revoked"),
        "positions kept: no restart, no rebalance"
    );
    settle_and_check(&setup, sent, &mut [p], "kafka", Duration::from_secs(60));
    drop(disk);
}

/// Rows of one table from the Delta log's statistics; 0 before it exists.
fn table_count(setup: &Setup, name: &str) -> usize {
    let path = setup.tables.join(name);
    if !path.join("_delta_log").is_dir() {
        return 0;
    }
    let url = url::Url::from_directory_path(&path).unwrap();
    pinpipe::block_on_tokio(async {
        let t = deltalake::open_table(url).await.expect("table opens");
        let files = t.snapshot().expect("snapshot").log_data();
        files.iter().map(|f| f.num_records().unwrap_or(0)).sum()
    })
}

/// What the foreign writer does to a pinpipe table.
#[derive(Debug, Clone, Copy)]
enum Foreign {
    /// ALTER TABLE ADD COLUMN: a metadata-only commit.
    AddColumn,
    /// An overwrite whose files give `follower_count` another type (schema overwritten).
    Retype,
    /// An append of files with an extra column (schema merged).
    MergeFiles,
}

/// One row of `schema`: nulls where allowed, placeholders in the rest.
fn foreign_row(schema: arrow_schema::SchemaRef) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::DataType;
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                _ if f.is_nullable() => arrow_array::new_null_array(f.data_type(), 1),
                DataType::Utf8 => Arc::new(StringArray::from(vec!["foreign"])),
                DataType::Int64 => Arc::new(Int64Array::from(vec![-1])),
                DataType::Timestamp(_, tz) => {
                    Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone_opt(tz.clone()))
                }
                other => panic!("no placeholder for {other}"),
            }
        })
        .collect();
    arrow_array::RecordBatch::try_new(schema, cols).unwrap()
}

/// `pin`'s schema with `name` turned into `to` (or added, when absent).
fn pin_schema_with(name: &str, to: arrow_schema::DataType) -> arrow_schema::SchemaRef {
    use arrow_schema::{Field, Schema};
    let base = pinpipe::clean::schema(Kind::Pin);
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    match fields.iter_mut().find(|f| f.name() == name) {
        Some(f) => *f = Field::new(name, to, true),
        None => fields.push(Field::new(name, to, true)),
    }
    Arc::new(Schema::new(fields))
}

/// Another tool (deltalake, as a Python or Spark job would be) changes table `path`; returns
/// the version it committed. Retried: it races pinpipe's own commits.
fn foreign_write(path: &std::path::Path, what: Foreign) -> u64 {
    use arrow_schema::DataType as Arrow;
    use deltalake::kernel::{DataType, StructField};
    use deltalake::operations::write::SchemaMode;
    use deltalake::protocol::SaveMode;
    let url = url::Url::from_directory_path(path).unwrap();
    for attempt in 0.. {
        let r = pinpipe::block_on_tokio(async {
            let t = deltalake::open_table(url.clone()).await?;
            let t = match what {
                Foreign::AddColumn => {
                    let f = StructField::new("foreign_flag", DataType::BOOLEAN, true);
                    t.add_columns().with_fields([f]).await?
                }
                Foreign::Retype => {
                    let batch = foreign_row(pin_schema_with("follower_count", Arrow::Utf8));
                    let w = t.write([batch]).with_save_mode(SaveMode::Overwrite);
                    w.with_schema_mode(SchemaMode::Overwrite).await?
                }
                Foreign::MergeFiles => {
                    let batch = foreign_row(pin_schema_with("foreign_note", Arrow::Utf8));
                    let w = t.write([batch]).with_save_mode(SaveMode::Append);
                    w.with_schema_mode(SchemaMode::Merge).await?
                }
            };
            Ok::<u64, deltalake::DeltaTableError>(t.version().expect("a version"))
        });
        match r {
            Ok(v) => return v,
            Err(e) if attempt < 10 => eprintln!("foreign {what:?} lost a race ({e}); again"),
            Err(e) => panic!("foreign {what:?}: {e}"),
        }
    }
    unreachable!()
}

/// What an operator does about it: RESTORE the table to `version` (pinpipe's schema and
/// files back; the positions in the log are untouched).
fn restore(path: &std::path::Path, version: u64) {
    let url = url::Url::from_directory_path(path).unwrap();
    for attempt in 0.. {
        let r = pinpipe::block_on_tokio(async {
            let t = deltalake::open_table(url.clone()).await?;
            t.restore().with_version_to_restore(version).await.map(|_| ())
        });
        match r {
            Ok(()) => return,
            Err(e) if attempt < 10 => eprintln!("restore lost a race ({e}); again"),
            Err(e) => panic!("restore to {version}: {e}"),
        }
    }
}

/// Issue 27, item 3: another tool changes the `pin` table's schema three ways (a column
/// added; a column's type changed by an overwrite; files with an extra column appended)
/// while records of all kinds arrive. Each time pinpipe stops committing to `pin` with an
/// error naming the table and the difference, stops reading pin records (no loss), keeps
/// geo and user going, and says so on /readyz and `pinpipe_table_stalled`; after the
/// operator restores the table, every record is in exactly once.
#[test]
fn a_foreign_writer_changes_a_tables_schema_then_exactly_once() {
    let _serial = serial();
    let seed = seed();
    let broker = Broker::start(1);
    broker.create_topics("fw", 3);
    let port = free_port();
    let toml = support::kafka::kafka_toml(&broker, "fw");
    let setup = Setup::with_source("fw", 2000, &format!("127.0.0.1:{port}"), &toml);
    let env = [("PINPIPE_LOG", "warn,pinpipe=info".to_string())];
    let mut p = setup.spawn_env("run", &["run", "--no-progress"], &env);
    let mut sent = broker.produce(&emulated("fw", 500, 3, seed)).len();
    wait_until_rows(
        sent,
        Duration::from_secs(60),
        ms(300),
        std::slice::from_mut(&mut p),
        || setup.count(),
    );
    let pin = setup.tables.join("pin");
    let cases = [
        (Foreign::AddColumn, "column foreign_flag (boolean) added"),
        (Foreign::Retype, "column follower_count is string, pinpipe writes long"),
        (Foreign::MergeFiles, "column foreign_note (string) added"),
    ];
    for (i, (what, difference)) in cases.into_iter().enumerate() {
        let version = foreign_write(&pin, what);
        let others = |s: &Setup| -> usize {
            ["geo", "geo_dead_letter", "user", "user_dead_letter"]
                .iter()
                .map(|t| table_count(s, t))
                .sum()
        };
        let others_before = others(&setup);
        let records = emulated("fw", 500, 3, seed + 1 + i as u64);
        let other_records = records.iter().filter(|(t, _, _)| !t.ends_with(".pin")).count();
        sent += broker.produce(&records).len();
        let text = wait_metrics(&mut p, port, "pin stalled", Duration::from_secs(30), |m| {
            m.contains("pinpipe_table_stalled{table=\"pin\"} 1")
        });
        let (code, why) = readyz(port);
        assert_eq!(code, 503, "{what:?}: {why}");
        assert!(
            why.contains("table pin: commits stopped") && why.contains(difference),
            "{what:?}: /readyz {why}"
        );
        assert!(
            p.log_text().contains(difference),
            "{what:?}: no log line with {difference:?}:\n{}",
            p.tail()
        );
        // The other kinds go on: all their records are in while pin waits.
        wait_until_rows(
            others_before + other_records,
            Duration::from_secs(60),
            ms(300),
            std::slice::from_mut(&mut p),
            || others(&setup),
        );
        let v = deltalake_version(&pin);
        assert_eq!(
            v, version,
            "{what:?}: pinpipe committed to pin after the foreign change"
        );
        assert!(
            metric_sum(&text, "pinpipe_flush_failures_total") >= (i + 1) as f64,
            "{text}"
        );
        eprintln!("{what:?}: pin stalled at version {version} ({difference}); geo and user went on");
        restore(&pin, version - 1);
        wait_until_rows(
            sent,
            Duration::from_secs(90),
            ms(500),
            std::slice::from_mut(&mut p),
            || setup.count(),
        );
        wait_metrics(&mut p, port, "pin recovered", Duration::from_secs(30), |m| {
            m.contains("pinpipe_table_stalled{table=\"pin\"} 0")
        });
        assert_eq!(readyz(port).0, 200);
    }
    settle_and_check(&setup, sent, &mut [p], "kafka", Duration::from_secs(60));
}

/// The newest version of the table at `path`.
fn deltalake_version(path: &std::path::Path) -> u64 {
    let url = url::Url::from_directory_path(path).unwrap();
    pinpipe::block_on_tokio(async { deltalake::open_table(url).await.unwrap().version().expect("a version") })
}

// ---------------------------------------------------------------------------------------
// 5. Damaged logs (issue 27, item 4)
// ---------------------------------------------------------------------------------------

/// Every file under `dir` with its size: what "nothing written" compares.
fn listing(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                out.insert(e.path(), m.len());
            }
        }
    }
    out
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A damage done to `pin`'s log (folder `log`), and the words the error must contain.
type Damage = fn(&std::path::Path) -> String;

/// The newest commit file of a log and its version.
fn newest_commit(log: &std::path::Path) -> (std::path::PathBuf, u64) {
    let newest = listing(log)
        .into_keys()
        .filter_map(|p| {
            let v = p.file_name()?.to_str()?.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((p, v))
        })
        .max_by_key(|(_, v)| *v)
        .unwrap();
    let checkpoint = log.join(format!("{:020}.checkpoint.parquet", newest.1));
    assert!(!checkpoint.exists(), "the newest commit must be after the checkpoint");
    newest
}

fn truncate_newest_commit(log: &std::path::Path) -> String {
    let (path, v) = newest_commit(log);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    format!("damaged Delta log: version {v} (")
}

fn garble_newest_commit(log: &std::path::Path) -> String {
    let (path, v) = newest_commit(log);
    std::fs::write(&path, "{\"commitInfo\":{}}\nthis is not JSON\n").unwrap();
    format!("damaged Delta log: version {v} (")
}

fn remove_the_checkpoint(log: &std::path::Path) -> String {
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).unwrap()).unwrap();
    let v = last["version"].as_u64().unwrap();
    std::fs::remove_file(log.join(format!("{v:020}.checkpoint.parquet"))).unwrap();
    format!("names the checkpoint of version {v}, but")
}

/// Issue 27, item 4: `pin`'s Delta log is damaged three ways (its newest commit truncated,
/// a commit that is not JSON, `_last_checkpoint` naming a checkpoint that is gone).
/// `pinpipe batch` and `pinpipe run` each fail with an error naming the table, the version
/// and the file, do not panic, and write nothing to any table.
#[test]
fn damaged_delta_logs_are_clear_errors_and_nothing_is_written() {
    let broker = Broker::start(1);
    broker.create_topics("dl", 3);
    let setup = support::kafka::setup(&broker, "dl", 300);
    let quiet = ("RUST_BACKTRACE", "0".to_string());
    let raw = |name: &str| setup.dir.path().join(name).to_string_lossy().into_owned();
    for (out, prefix, seed) in [(raw("raw1"), "first", "1"), (raw("raw2"), "second", "2")] {
        let args = [
            "emulate",
            "--count",
            "1000",
            "--seed",
            seed,
            "--out",
            &out,
            "--no-progress",
        ];
        let e = [("PINPIPE__EMULATE__TOPIC_PREFIX", prefix.to_string())];
        let mut e = setup.spawn_env(&format!("emulate-{prefix}"), &args, &e);
        assert!(e.child.wait().unwrap().success(), "{}", e.tail());
    }
    let batch = |name: &str, input: &str| {
        let e = [("PINPIPE__TABLES__CHECKPOINT_INTERVAL", "3".to_string()), quiet.clone()];
        let mut b = setup.spawn_env(name, &["batch", "--input", input, "--no-progress"], &e);
        let status = b.child.wait().unwrap();
        (status, b.log_text())
    };
    std::fs::create_dir_all(&setup.tables).unwrap();
    let (status, log) = batch("batch-first", &raw("raw1"));
    assert!(status.success(), "{log}");
    let good = setup.dir.path().join("good");
    copy_dir(&setup.tables, &good);
    broker.produce(&emulated("dl", 300, 3, 7));
    let damages: [(&str, Damage); 3] = [
        ("a truncated commit", truncate_newest_commit),
        ("a commit that is not JSON", garble_newest_commit),
        ("a checkpoint that is gone", remove_the_checkpoint),
    ];
    for (what, damage) in damages {
        copy_dir(&good, &setup.tables);
        let said = damage(&setup.tables.join("pin/_delta_log"));
        let before = listing(&setup.tables);
        let (status, log) = batch("batch", &raw("raw2"));
        assert!(!status.success(), "{what}: batch succeeded:\n{log}");
        let run = run_until_exit(&setup, Duration::from_secs(60));
        for (cmd, (status, log)) in [("batch", (status, log)), ("run", run)] {
            assert!(!status.success(), "{what}: {cmd} succeeded:\n{log}");
            assert!(!log.contains("panicked"), "{what}: {cmd} panicked:\n{log}");
            let error = log
                .lines()
                .find(|l| l.starts_with("pinpipe: error:"))
                .unwrap_or_default();
            assert!(
                error.contains("table pin: ") && error.contains(&said),
                "{what}: {cmd} said {error:?}, not {said:?}:\n{log}"
            );
            eprintln!("{what}: {cmd}: {error}");
        }
        assert_eq!(listing(&setup.tables), before, "{what}: something was written");
    }
}

/// `pinpipe run` until it exits on its own (bounded): its status and log.
fn run_until_exit(setup: &Setup, within: Duration) -> (std::process::ExitStatus, String) {
    let mut p = setup.spawn_env("run", &["run", "--no-progress"], &[("RUST_BACKTRACE", "0".to_string())]);
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return (status, p.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "run did not exit within {within:?}:\n{}",
            p.tail()
        );
        std::thread::sleep(ms(100));
    }
}

// ---------------------------------------------------------------------------------------
// 6. The soak's quick mode (issue 27, item 1)
// ---------------------------------------------------------------------------------------

/// `benches/soak --quick --check`: 3 minutes at 3 000 records/s through the mock broker
/// with `pinpipe maintain` every minute; exactly once, the lag back to 0 once the producer
/// stops and within a few flushes' worth while it runs, RSS after the warm-up within
/// +50 %. About 3.5 minutes, past CI's budget for new tests, hence ignored. Needs Python 3
/// (the script makes its virtualenv under $PINPIPE_TOOLS on first use).
#[test]
#[ignore = "3.5 min: the soak's quick mode (benches/soak --quick --check)"]
fn soak_quick_mode_within_bounds() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak"))
        .args(["--quick", "--check", "--bin", BIN, "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    let summary = std::fs::read_to_string(out.path().join("summary.json")).unwrap_or_default();
    assert!(status.success(), "the soak's quick mode broke its bounds:\n{summary}");
}
