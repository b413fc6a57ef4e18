//! `pinpipe` child processes: a test's config and tables folder ([`Setup`]), the processes
//! started from it ([`Proc`]: spawn, signal, terminate, log tail), waits for rows to land,
//! and the exactly-once checks on what they wrote (lineage, metrics). Whatever the source,
//! a test drives pinpipe through this module; the source modules (`kafka`, `kinesis`) only
//! add their config section and their servers.

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use pinpipe::clean::Kind;

use super::http::http;
use super::log_tail;

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");

/// Rows of the six tables by table name (`pin`, `pin_dead_letter`, ...).
pub type TableRows = BTreeMap<String, Vec<Map<String, Value>>>;

/// A test's tables folder and the config file every `pinpipe` child of the test uses.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub tables: PathBuf,
    pub prefix: String,
}

impl Setup {
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
    /// `PINPIPE_LOG` defaults to the Kafka source at info, which is what most tests read.
    pub fn spawn_env(&self, name: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let filter = env
            .iter()
            .find(|(k, _)| *k == "PINPIPE_LOG")
            .map_or("warn,pinpipe::sources::kafka=info", |(_, v)| v.as_str());
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PINPIPE_CONFIG", &self.config)
            .env("PINPIPE_LOG", filter)
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

    /// The folders of the six tables that exist yet, by table name.
    fn existing_tables(&self) -> Vec<(String, PathBuf)> {
        Kind::ALL
            .iter()
            .flat_map(|kind| [kind.to_string(), format!("{kind}_dead_letter")])
            .map(|name| (name.clone(), self.tables.join(name)))
            .filter(|(_, path)| path.join("_delta_log").is_dir())
            .collect()
    }

    /// All rows of the six tables (missing tables are empty).
    pub fn rows(&self) -> TableRows {
        let mut out: TableRows = Kind::ALL
            .iter()
            .flat_map(|kind| [kind.to_string(), format!("{kind}_dead_letter")])
            .map(|name| (name, Vec::new()))
            .collect();
        for (name, path) in self.existing_tables() {
            let url = url::Url::from_directory_path(&path).unwrap().to_string();
            out.insert(name, pinpipe::block_on(super::rows::read_table(&url, HashMap::new())));
        }
        out
    }

    /// Total rows over all six tables from the Delta log's file statistics alone (no
    /// Parquet read): cheap enough to poll while 100k-row tables grow.
    pub fn count(&self) -> usize {
        let mut n = 0;
        for (_, path) in self.existing_tables() {
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
        n
    }

    /// All rows of the three raw tables, by table name (missing tables are empty). The
    /// partition column is not in the files; each row gets `ingest_date` from its file's
    /// partition folder.
    pub fn raw_rows(&self) -> TableRows {
        let mut out = TableRows::new();
        for kind in Kind::ALL {
            let name = format!("{kind}_raw");
            let path = self.tables.join(&name);
            let rows = if path.join("_delta_log").is_dir() {
                let url = url::Url::from_directory_path(&path).unwrap().to_string();
                pinpipe::block_on(super::rows::read_table(&url, HashMap::new()))
            } else {
                Vec::new()
            };
            out.insert(name, rows);
        }
        out
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
pub fn assert_unique_lineage(rows: &TableRows) -> HashSet<(String, String, String)> {
    assert_unique_lineage_from(rows, "kafka")
}

/// Every row came from `source` and no (stream, partition, position) appears twice.
pub fn assert_unique_lineage_from(rows: &TableRows, source: &str) -> HashSet<(String, String, String)> {
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

/// A `pinpipe` child process; killed on drop if still running.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn tail(&self) -> String {
        log_tail(&self.log, 30)
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

/// Sends `sig` (a name such as `TERM`, `STOP`) to `child` with kill(1): std only kills.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// The Prometheus text a pinpipe process serves on `127.0.0.1:port/metrics`.
pub fn scrape(port: u16) -> String {
    http(port, "GET", "/metrics", &[], b"").unwrap().1
}

/// The sum of every series of metric `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
