//! A real Kinesis API server for the tests, started on a free port of 127.0.0.1 with its own
//! empty state: `kinesis-local` (npm; etspaceman's kinesis-mock built for Node) for most
//! tests, `kinesalite` (npm) where the record count outgrows it (see [`Flavor`]).
//!
//! kinesis-local, as checked on this machine:
//! - It reads `server.json` (its TLS key) from the working directory, so it is started from
//!   its package folder. Plain HTTP on `KINESIS_MOCK_PLAIN_PORT`.
//! - A request with an `Authorization` header must also carry `X-Amz-Date`; signatures are
//!   not checked. Any region works.
//! - Stream operations take `*_DURATION` (default 500 ms) before the stream is ACTIVE
//!   again; the harness sets them to 10 ms and still polls DescribeStreamSummary.
//! - Sequence numbers are realistic 56-digit decimals (beyond i64), shard ids
//!   `shardId-000000000000`, and SplitShard/MergeShards give children with
//!   `ParentShardId`/`AdjacentParentShardId`. A closed parent's GetRecords ends with a null
//!   `NextShardIterator` and `ChildShards`. Its `EndingSequenceNumber` reads
//!   `9223372036854775807`, not a real sequence number (pinpipe does not use it).
//! - It never throttles: 30 GetRecords calls on one shard within a second all succeed.
//!   Throttling is injected with [`super::proxy::FaultProxy`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The `[kinesis]` section the tests share: short leases, quick shard sync and polling.
pub fn kinesis_toml(endpoint: &str, prefix: &str) -> String {
    format!(
        r#"
[kinesis]
enabled = true
stream_prefix = "{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
lease_ms = 2000
shard_sync_ms = 1000
idle_ms = 100
min_call_interval_ms = 50
batch_rows = 500
batch_age_ms = 200
workers = 2
backoff_base_ms = 50
backoff_max_ms = 1000
"#
    )
}

/// The log filter of Kinesis test processes.
pub const LOG: &str = "warn,pinpipe::sources::kinesis=info";

/// A config reading `streaming-<prefix>-*` at `endpoint` into local tables; Kafka off.
pub fn setup(endpoint: &str, prefix: &str, metrics: &str) -> super::proc::Setup {
    let source = format!("[kafka]\nenabled = false\n{}", kinesis_toml(endpoint, prefix));
    super::proc::Setup::with_source(prefix, 2000, metrics, &source)
}

pub fn streams(prefix: &str) -> Vec<String> {
    ["pin", "geo", "user"]
        .iter()
        .map(|k| format!("streaming-{prefix}-{k}"))
        .collect()
}

/// `pinpipe emulate --to kinesis`: `posts` posts (3 records each) with `seed`.
pub fn emulate(s: &super::proc::Setup, posts: u64, seed: u64) {
    let out = Command::new(super::proc::BIN)
        .args(["emulate", "--to", "kinesis", "--no-progress"])
        .args(["--count", &posts.to_string(), "--seed", &seed.to_string()])
        .env("PINPIPE_CONFIG", &s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "emulate failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn run(s: &super::proc::Setup, name: &str, worker: &str) -> super::proc::Proc {
    s.spawn_env(
        name,
        &["run", "--no-progress"],
        &[
            ("PINPIPE_LOG", LOG.to_string()),
            ("PINPIPE__KINESIS__WORKER_ID", worker.to_string()),
        ],
    )
}

pub struct KinesisServer {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Which Kinesis API server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `kinesis-local` (TESTING.md's first choice): the fullest API (ChildShards, a real
    /// `MillisBehindLatest`), but one Node process whose in-memory shards slow down as
    /// they grow: about 600 records/s with three readers on 12 shards, and GetRecords
    /// answers time out past roughly 50k records (measured in the fault suite).
    KinesisLocal,
    /// `kinesalite` (npm, TESTING.md's fallback): LevelDB-ordered shards (in memory), so
    /// GetRecords is a range read whatever the shard's length. Also 56-digit sequence
    /// numbers and ParentShardId on split children, but `MillisBehindLatest` is always 0
    /// on open shards and there is no `ChildShards`. The fault suite's kill loops run on it.
    Kinesalite,
}

impl KinesisServer {
    pub fn start() -> Self {
        Self::start_flavor(Flavor::KinesisLocal)
    }

    pub fn start_flavor(flavor: Flavor) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kinesis.log");
        let port = super::free_port();
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("node");
        match flavor {
            Flavor::KinesisLocal => {
                let main = super::tool("PINPIPE_KINESIS_LOCAL", "npm/node_modules/kinesis-local/main.js");
                let pkg = main.parent().expect("main.js has a folder").to_path_buf();
                cmd.arg("main.js")
                    .current_dir(&pkg)
                    .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
                    .env("KINESIS_MOCK_TLS_PORT", super::free_port().to_string())
                    .env("LOG_LEVEL", "WARN")
                    .envs(
                        [
                            "CREATE_STREAM_DURATION",
                            "DELETE_STREAM_DURATION",
                            "SPLIT_SHARD_DURATION",
                            "MERGE_SHARDS_DURATION",
                            "UPDATE_SHARD_COUNT_DURATION",
                        ]
                        .map(|k| (k, "10ms")),
                    );
            }
            Flavor::Kinesalite => {
                let index = super::tool("PINPIPE_KINESALITE", "npm/node_modules/kinesalite/index.js");
                // Its CLI listens on every interface; the tests keep to 127.0.0.1.
                cmd.arg("-e")
                    .arg(
                        "const [index, port] = process.argv.slice(1); \
                         require(index)({ createStreamMs: 10, deleteStreamMs: 10, updateStreamMs: 10, \
                         shardLimit: 1000 }).listen(+port, '127.0.0.1')",
                    )
                    .arg(&index)
                    .arg(port.to_string());
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {flavor:?} with node: {e}"));
        let server = KinesisServer {
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.call("ListStreams", json!({})).is_err() {
            assert!(
                Instant::now() < deadline,
                "{flavor:?} on port {port} did not answer within 30 s:\n{}",
                super::log_tail(&server.log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One awsJson1.1 call; `Err((status, body))` on an error answer or no answer.
    pub fn call(&self, op: &str, body: Value) -> Result<Value, (u16, String)> {
        let target = format!("Kinesis_20131202.{op}");
        let headers = [
            ("X-Amz-Target", target.as_str()),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Date", "20260101T000000Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00",
            ),
        ];
        let body = body.to_string();
        match super::http::http(self.port, "POST", "/", &headers, body.as_bytes()) {
            Ok((200, text)) if text.is_empty() => Ok(json!({})),
            Ok((200, text)) => serde_json::from_str(&text).map_err(|e| (200, format!("{e}: {text}"))),
            Ok((code, text)) => Err((code, text)),
            Err(e) => Err((0, e.to_string())),
        }
    }

    fn must(&self, op: &str, body: Value) -> Value {
        self.call(op, body.clone())
            .unwrap_or_else(|e| panic!("{op} {body}: {e:?}\n{}", super::log_tail(&self.log, 20)))
    }

    pub fn wait_active(&self, stream: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.must("DescribeStreamSummary", json!({ "StreamName": stream }));
            if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                return;
            }
            assert!(Instant::now() < deadline, "{stream} not ACTIVE within 30 s: {d}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn create_stream(&self, stream: &str, shards: u32) {
        self.must("CreateStream", json!({ "StreamName": stream, "ShardCount": shards }));
        self.wait_active(stream);
    }

    /// Every shard of `stream`, open and closed (ListShards, following NextToken).
    pub fn shards(&self, stream: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut body = json!({ "StreamName": stream });
        for _ in 0..100 {
            let r = self.must("ListShards", body);
            out.extend(r["Shards"].as_array().cloned().unwrap_or_default());
            match r["NextToken"].as_str() {
                Some(t) => body = json!({ "NextToken": t }),
                None => return out,
            }
        }
        panic!("ListShards of {stream} did not end within 100 pages")
    }

    fn hash_range(&self, stream: &str, shard: &str) -> (u128, u128) {
        let s = self
            .shards(stream)
            .into_iter()
            .find(|s| s["ShardId"] == shard)
            .unwrap_or_else(|| panic!("no shard {shard} in {stream}"));
        let n = |k: &str| s["HashKeyRange"][k].as_str().unwrap().parse::<u128>().unwrap();
        (n("StartingHashKey"), n("EndingHashKey"))
    }

    /// Splits `shard` at the middle of its hash range, then waits until ACTIVE.
    pub fn split_shard(&self, stream: &str, shard: &str) {
        let (lo, hi) = self.hash_range(stream, shard);
        let mid = lo + (hi - lo) / 2 + 1;
        self.must(
            "SplitShard",
            json!({ "StreamName": stream, "ShardToSplit": shard, "NewStartingHashKey": mid.to_string() }),
        );
        self.wait_active(stream);
    }

    /// Merges two adjacent shards, then waits until ACTIVE.
    pub fn merge_shards(&self, stream: &str, a: &str, b: &str) {
        self.must(
            "MergeShards",
            json!({ "StreamName": stream, "ShardToMerge": a, "AdjacentShardToMerge": b }),
        );
        self.wait_active(stream);
    }

    /// Records in `stream`, read from every shard's TRIM_HORIZON to its current end.
    pub fn count_records(&self, stream: &str) -> usize {
        let mut n = 0;
        for s in self.shards(stream) {
            let it = self.must(
                "GetShardIterator",
                json!({ "StreamName": stream, "ShardId": s["ShardId"], "ShardIteratorType": "TRIM_HORIZON" }),
            );
            let mut it = it["ShardIterator"].as_str().map(str::to_string);
            for _ in 0..10_000 {
                let Some(i) = it else { break };
                let r = self.must("GetRecords", json!({ "ShardIterator": i, "Limit": 10000 }));
                let got = r["Records"].as_array().map_or(0, Vec::len);
                n += got;
                it = r["NextShardIterator"].as_str().map(str::to_string);
                if got == 0 && r["MillisBehindLatest"].as_i64() == Some(0) {
                    break;
                }
            }
        }
        n
    }
}

impl Drop for KinesisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
