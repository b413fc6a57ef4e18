//! Kafka-side test harness: a Kafka-protocol broker on 127.0.0.1 (librdkafka's mock
//! cluster, running inside the test process; child `pinpipe` processes reach it over
//! TCP), a producer that reports offsets, `pinpipe run` child processes with their own
//! config and log, and readers of the resulting tables.

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{Map, Value};

use pinpipe::clean::Kind;

pub const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");

/// A Kafka-protocol broker (cluster of `n` mock brokers) with the three topics of `prefix`.
pub struct Broker {
    pub mock: MockCluster<'static, DefaultProducerContext>,
}

impl Broker {
    pub fn start(brokers: i32) -> Self {
        Broker {
            mock: MockCluster::new(brokers).expect("mock cluster"),
        }
    }

    pub fn bootstrap(&self) -> String {
        let b = self.mock.bootstrap_servers();
        assert!(b.starts_with("127.0.0.1:"), "broker must listen on loopback: {b}");
        b
    }

    /// Creates `<prefix>.pin|geo|user` with `partitions` partitions each.
    pub fn create_topics(&self, prefix: &str, partitions: i32) {
        for kind in Kind::ALL {
            self.mock
                .create_topic(&format!("{prefix}.{kind}"), partitions, 1)
                .expect("create topic");
        }
    }

    /// Produces every `(topic, partition, payload)` (acks=all, idempotent) and returns
    /// each record's offset, in input order.
    pub fn produce(&self, records: &[(String, i32, Vec<u8>)]) -> Vec<i64> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", "4000000")
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        let mut out = Vec::with_capacity(records.len());
        // Bounded in-flight window: the local queue never overflows.
        for chunk in records.chunks(5_000) {
            let futures: Vec<_> = chunk
                .iter()
                .map(|(topic, partition, payload)| {
                    let rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                        .partition(*partition)
                        .payload(payload.as_slice());
                    producer.send_result(rec).map_err(|(e, _)| e).expect("enqueue")
                })
                .collect();
            for f in futures {
                let delivery = futures::executor::block_on(f).expect("delivery future");
                let d = delivery.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
                out.push(d.offset);
            }
        }
        out
    }
}

/// The `[kafka]` section the tests share: small batches, quick group membership.
pub fn kafka_toml(broker: &Broker, prefix: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{prefix}-group"
topic_prefix = "{prefix}"
batch_rows = 200
batch_age_ms = 100
workers = 2

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"
"#,
        brokers = broker.bootstrap(),
    )
}

/// A test's tables folder and the config file every `pinpipe` child of the test uses.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub tables: PathBuf,
    pub prefix: String,
}

impl Setup {
    /// Small batches and flush thresholds (many commits: `max_rows` per flush), quick
    /// group membership.
    pub fn new(broker: &Broker, prefix: &str, max_rows: usize) -> Self {
        Self::with_source(prefix, max_rows, "127.0.0.1:0", &kafka_toml(broker, prefix))
    }

    /// Local tables with frequent flushes (`max_rows`, 300 ms), checkpoints every 5
    /// commits, metrics on `metrics`, and `source`: the config sections of the source.
    pub fn with_source(prefix: &str, max_rows: usize, metrics: &str, source: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tables = dir.path().join("tables");
        let config = dir.path().join("pinpipe.toml");
        let toml = format!(
            r#"
[tables]
location = "{tables}"
checkpoint_interval = 5

[writer]
max_rows = {max_rows}
max_age_ms = 300

[metrics]
listen = "{metrics}"

{source}"#,
            tables = tables.display(),
        );
        std::fs::write(&config, toml).unwrap();
        Setup {
            dir,
            config,
            tables,
            prefix: prefix.to_string(),
        }
    }

    /// `pinpipe <args>` with this setup's config; output to `<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        self.spawn_env(name, args, &[])
    }

    /// [`Setup::spawn`] with extra environment (e.g. `PINPIPE__SECTION__KEY` overrides).
    pub fn spawn_env(&self, name: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PINPIPE_CONFIG", &self.config)
            .env(
                "PINPIPE_LOG",
                env.iter()
                    .find(|(k, _)| *k == "PINPIPE_LOG")
                    .map_or("warn,pinpipe::sources::kafka=info", |(_, v)| v.as_str()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn pinpipe");
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// `pinpipe run --no-progress`.
    pub fn run(&self, name: &str) -> Proc {
        self.spawn(name, &["run", "--no-progress"])
    }

    /// All rows of the six tables (missing tables are empty).
    pub fn rows(&self) -> BTreeMap<String, Vec<Map<String, Value>>> {
        let mut out = BTreeMap::new();
        for kind in Kind::ALL {
            for name in [kind.to_string(), format!("{kind}_dead_letter")] {
                let path = self.tables.join(&name);
                let rows = if path.join("_delta_log").is_dir() {
                    let url = url::Url::from_directory_path(&path).unwrap().to_string();
                    pinpipe::block_on(super::rows::read_table(&url, HashMap::new()))
                } else {
                    Vec::new()
                };
                out.insert(name, rows);
            }
        }
        out
    }

    /// Total rows over all six tables from the Delta log's file statistics alone (no
    /// Parquet read): cheap enough to poll while 100k-row tables grow.
    pub fn count(&self) -> usize {
        let mut n = 0;
        for kind in Kind::ALL {
            for name in [kind.to_string(), format!("{kind}_dead_letter")] {
                let path = self.tables.join(&name);
                if !path.join("_delta_log").is_dir() {
                    continue;
                }
                let url = url::Url::from_directory_path(&path).unwrap();
                n += pinpipe::block_on(async {
                    let t = deltalake::open_table(url).await.expect("table opens");
                    let snapshot = t.snapshot().expect("snapshot");
                    let files = snapshot.log_data();
                    files
                        .iter()
                        .map(|f| f.num_records().expect("pinpipe writes numRecords"))
                        .sum::<usize>()
                });
            }
        }
        n
    }

    /// Total rows over all six tables.
    pub fn total(&self) -> usize {
        self.rows().values().map(Vec::len).sum()
    }

    /// Polls until the tables hold `n` rows (or more), reading every row; panics after
    /// `timeout` or as soon as one of `procs` exits.
    pub fn wait_rows(&self, n: usize, timeout: Duration, procs: &mut [&mut Proc]) {
        wait_until_rows(n, timeout, Duration::from_millis(300), procs, || self.total());
    }
}

/// Polls `count` every `every` until it reaches `n`; panics with every process's log tail
/// after `within`, or at once if one of `procs` exited.
pub fn wait_until_rows<P: BorrowMut<Proc>>(
    n: usize,
    within: Duration,
    every: Duration,
    procs: &mut [P],
    mut count: impl FnMut() -> usize,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = count();
        if got >= n {
            return;
        }
        for p in procs.iter_mut().map(BorrowMut::borrow_mut) {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("{} exited with {status} at {got}/{n} rows:\n{}", p.name, p.tail());
            }
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = procs
                .iter_mut()
                .map(|p| {
                    let p = p.borrow_mut();
                    format!("--- {}\n{}", p.name, p.tail())
                })
                .collect();
            panic!("{got}/{n} rows after {within:?}\n{}", tails.join("\n"));
        }
        std::thread::sleep(every);
    }
}

/// Every row's lineage key; panics on a duplicate.
pub fn assert_unique_lineage(rows: &BTreeMap<String, Vec<Map<String, Value>>>) -> HashSet<(String, String, String)> {
    assert_unique_lineage_from(rows, "kafka")
}

/// Every row came from `source` and no (stream, partition, position) appears twice.
pub fn assert_unique_lineage_from(
    rows: &BTreeMap<String, Vec<Map<String, Value>>>,
    source: &str,
) -> HashSet<(String, String, String)> {
    let mut seen = HashSet::new();
    for (table, rs) in rows {
        for r in rs {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            assert_eq!(r["_source"], source, "{table}");
            let key = (s("_stream"), s("_partition"), s("_position"));
            assert!(seen.insert(key.clone()), "duplicate lineage key {key:?} in {table}");
        }
    }
    seen
}

/// A `pinpipe` child process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn tail(&self) -> String {
        super::log_tail(&self.log, 30)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} did not exit within {within:?} of SIGTERM:\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// Posts from the emulator, as `(topic, partition, payload)` spread over `partitions`.
pub fn emulated(prefix: &str, posts: u64, partitions: i32, seed: u64) -> Vec<(String, i32, Vec<u8>)> {
    let mut gen = pinpipe::emulate::Generator::new(pinpipe::emulate::EmulateConfig {
        seed,
        ..Default::default()
    })
    .unwrap();
    let mut out = Vec::new();
    for n in 0..posts {
        let post = gen.next_post();
        for kind in Kind::ALL {
            let p = ((n as i32) + kind as i32) % partitions;
            out.push((format!("{prefix}.{kind}"), p, post.record(kind).to_vec()));
        }
    }
    out
}

/// The offsets group `group` committed for `<prefix>.*` partitions (those with one).
pub fn committed(broker: &Broker, group: &str, prefix: &str, partitions: i32) -> BTreeMap<(String, i32), i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for kind in Kind::ALL {
        for p in 0..partitions {
            tpl.add_partition(&format!("{prefix}.{kind}"), p);
        }
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}
