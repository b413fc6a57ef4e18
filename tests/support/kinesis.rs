//! A real Kinesis API server for the tests, started on a free port of 127.0.0.1 with its own
//! empty state: `kinesis-local` (npm; etspaceman's kinesis-mock built for Node) for most
//! tests, `kinesalite` (npm) where the record count outgrows it, and moto, which only
//! `tests/harness_kinesis.rs` uses so far (see [`Flavor`]). The harness sends its requests
//! with `aws-sdk-kinesis`, the client pinpipe itself uses, not hand-written awsJson; faults
//! that need raw HTTP are injected by [`super::proxy::FaultProxy`].
//!
//! kinesis-local, as checked on this machine:
//! - It reads `server.json` (its TLS key) from the working directory, so it is started from
//!   its package folder. Plain HTTP on `KINESIS_MOCK_PLAIN_PORT`.
//! - Signatures are not checked (but must be present: the SDK signs). Any region works.
//! - Stream operations take `*_DURATION` (default 500 ms) before the stream is ACTIVE
//!   again; the harness sets them to 10 ms and still polls DescribeStreamSummary.
//! - Sequence numbers are realistic 56-digit decimals (beyond i64), shard ids
//!   `shardId-000000000000`, and SplitShard/MergeShards give children with
//!   `ParentShardId`/`AdjacentParentShardId`. A closed parent's GetRecords ends with a null
//!   `NextShardIterator` and `ChildShards`. Its `EndingSequenceNumber` reads
//!   `9223372036854775807`, not a real sequence number (pinpipe does not use it).
//! - It never throttles: 30 GetRecords calls on one shard within a second all succeed.
//!   Throttling is injected with [`super::proxy::FaultProxy`].

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_kinesis::error::{BoxError, DisplayErrorContext};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;

use super::proc::{Proc, Setup, BIN};
use super::s3::S3Server;
use super::{free_port, log_tail, tool};

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
pub fn setup(endpoint: &str, prefix: &str, metrics: &str) -> Setup {
    let source = format!("[kafka]\nenabled = false\n{}", kinesis_toml(endpoint, prefix));
    Setup::with_source(prefix, 2000, metrics, &source)
}

/// The three streams of `prefix`, as `pinpipe` names them: `streaming-<prefix>-<kind>`.
pub fn streams(prefix: &str) -> Vec<String> {
    ["pin", "geo", "user"]
        .iter()
        .map(|k| format!("streaming-{prefix}-{k}"))
        .collect()
}

/// `pinpipe emulate --to kinesis`: `posts` posts (3 records each) with `seed`.
pub fn emulate(s: &Setup, posts: u64, seed: u64) {
    let out = Command::new(BIN)
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

/// `pinpipe run` reading Kinesis as worker `worker`, logging the Kinesis source at info.
pub fn run(s: &Setup, name: &str, worker: &str) -> Proc {
    s.spawn_env(
        name,
        &["run", "--no-progress"],
        &[
            ("PINPIPE_LOG", LOG.to_string()),
            ("PINPIPE__KINESIS__WORKER_ID", worker.to_string()),
        ],
    )
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
    /// moto (PyPI, the tests' S3 server), which serves Kinesis on the same port: streams
    /// are ACTIVE at once, splits give children with `ParentShardId`, but sequence numbers
    /// are small integers ("1"), so it cannot stand in for the i64-overflow case.
    Moto,
}

/// A running Kinesis API server and an SDK client pointed at it; stopped on drop.
pub struct KinesisServer {
    pub port: u16,
    pub flavor: Flavor,
    /// Built as pinpipe builds its own (`sources::kinesis::client`): static credentials, a
    /// region, the endpoint, no SDK retries; plus a fresh connection per call.
    client: Client,
    /// The tests are synchronous and the SDK is async: every call runs to completion on
    /// this runtime. One thread is enough for one call at a time.
    runtime: tokio::runtime::Runtime,
    process: ServerProcess,
}

/// The process behind a [`KinesisServer`].
enum ServerProcess {
    /// kinesis-local or kinesalite, run by `node`; its output in `log`.
    Node {
        child: Child,
        log: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// moto serves every AWS API on one port; its S3 harness starts and stops it.
    Moto(S3Server),
}

impl ServerProcess {
    fn log_tail(&self) -> String {
        match self {
            ServerProcess::Node { log, .. } => log_tail(log, 30),
            ServerProcess::Moto(moto) => moto.log_tail(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let ServerProcess::Node { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl KinesisServer {
    /// The main server: kinesis-local (realistic 56-digit sequence numbers).
    pub fn start() -> Self {
        Self::start_flavor(Flavor::KinesisLocal)
    }

    /// Starts `flavor` on a free port; returns once it answers ListStreams.
    pub fn start_flavor(flavor: Flavor) -> Self {
        let (port, process) = match flavor {
            Flavor::KinesisLocal | Flavor::Kinesalite => spawn_node(flavor),
            Flavor::Moto => {
                let moto = S3Server::start();
                (moto.port, ServerProcess::Moto(moto))
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime for the Kinesis harness");
        let client = sdk_client(&format!("http://127.0.0.1:{port}"));
        let server = KinesisServer {
            port,
            flavor,
            client,
            runtime,
            process,
        };
        server.wait_answering();
        server
    }

    /// Polls ListStreams until the server answers; panics after 30 s.
    fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.block_on(self.client.list_streams().send()) {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{:?} on port {} did not answer within 30 s: {}\n{}",
                    self.flavor,
                    self.port,
                    DisplayErrorContext(&e),
                    self.process.log_tail()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The SDK client, for calls the harness does not wrap; run them with [`Self::block_on`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `fut` (an SDK call) to completion on the harness's runtime.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.runtime.block_on(fut)
    }

    /// The answer of one SDK call; panics with the error and the server's log tail.
    fn must<T, E>(&self, what: &str, call: impl Future<Output = Result<T, E>>) -> T
    where
        E: std::error::Error + 'static,
    {
        self.block_on(call).unwrap_or_else(|e| {
            panic!(
                "{what}: {}\n{:?} log:\n{}",
                DisplayErrorContext(&e),
                self.flavor,
                self.process.log_tail()
            )
        })
    }

    /// Polls DescribeStreamSummary until `stream` is ACTIVE (after a create or reshard).
    pub fn wait_active(&self, stream: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let call = self.client.describe_stream_summary().stream_name(stream).send();
            let d = self.must(&format!("DescribeStreamSummary {stream}"), call);
            let status = d.stream_description_summary().map(|s| s.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                return;
            }
            assert!(Instant::now() < deadline, "{stream} not ACTIVE within 30 s: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn create_stream(&self, stream: &str, shards: u32) {
        let call = self
            .client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards as i32);
        self.must(&format!("CreateStream {stream}"), call.send());
        self.wait_active(stream);
    }

    /// Every shard of `stream`, open and closed (ListShards, following NextToken).
    pub fn shards(&self, stream: &str) -> Vec<Shard> {
        let mut out = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..100 {
            // A page after the first names only its token: ListShards refuses both.
            let call = match &next_token {
                None => self.client.list_shards().stream_name(stream),
                Some(token) => self.client.list_shards().next_token(token),
            };
            let page = self.must(&format!("ListShards {stream}"), call.send());
            out.extend_from_slice(page.shards());
            match page.next_token() {
                Some(token) => next_token = Some(token.to_string()),
                None => return out,
            }
        }
        panic!("ListShards of {stream} did not end within 100 pages")
    }

    fn hash_range(&self, stream: &str, shard: &str) -> (u128, u128) {
        let s = self
            .shards(stream)
            .into_iter()
            .find(|s| s.shard_id() == shard)
            .unwrap_or_else(|| panic!("no shard {shard} in {stream}"));
        let range = s.hash_key_range().expect("a shard has a hash key range");
        let n = |key: &str| key.parse::<u128>().expect("hash keys are decimal");
        (n(range.starting_hash_key()), n(range.ending_hash_key()))
    }

    /// Splits `shard` at the middle of its hash range, then waits until ACTIVE.
    pub fn split_shard(&self, stream: &str, shard: &str) {
        let (lo, hi) = self.hash_range(stream, shard);
        let mid = lo + (hi - lo) / 2 + 1;
        let call = self
            .client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key(mid.to_string());
        self.must(&format!("SplitShard {stream} {shard}"), call.send());
        self.wait_active(stream);
    }

    /// Merges two adjacent shards, then waits until ACTIVE.
    pub fn merge_shards(&self, stream: &str, a: &str, b: &str) {
        let call = self
            .client
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(a)
            .adjacent_shard_to_merge(b);
        self.must(&format!("MergeShards {stream} {a} {b}"), call.send());
        self.wait_active(stream);
    }

    /// Puts each of `records` (partition key: its index) with one PutRecords call; returns
    /// their sequence numbers. Panics if any entry failed.
    pub fn put_records(&self, stream: &str, records: &[&[u8]]) -> Vec<String> {
        let entries = records.iter().enumerate().map(|(i, data)| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(*data))
                .partition_key(i.to_string())
                .build()
                .expect("data and partition key are set")
        });
        let call = self
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.collect()));
        let out = self.must(&format!("PutRecords {stream}"), call.send());
        assert_eq!(out.failed_record_count(), Some(0), "PutRecords {stream}: {out:?}");
        out.records()
            .iter()
            .map(|r| r.sequence_number().unwrap_or_default().to_string())
            .collect()
    }

    /// Records in `stream`, read from every shard's TRIM_HORIZON to its current end.
    pub fn count_records(&self, stream: &str) -> usize {
        self.shards(stream)
            .iter()
            .map(|s| self.count_shard(stream, s.shard_id()))
            .sum()
    }

    /// Records in one shard: GetRecords pages until an empty one that is not behind.
    fn count_shard(&self, stream: &str, shard: &str) -> usize {
        let call = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon);
        let first = self.must(&format!("GetShardIterator {stream} {shard}"), call.send());
        let mut iterator = first.shard_iterator().map(str::to_string);
        let mut n = 0;
        for _ in 0..10_000 {
            let Some(it) = iterator else { break };
            let call = self.client.get_records().shard_iterator(it).limit(10_000);
            let page = self.must(&format!("GetRecords {stream} {shard}"), call.send());
            n += page.records().len();
            if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
        n
    }
}

/// An SDK client for the server at `endpoint`: static test credentials, any region.
fn sdk_client(endpoint: &str) -> Client {
    Client::from_conf(sdk_config(endpoint, "test", "test").build())
}

/// The harness's SDK client settings with the access key `key_id` / `secret`: what a
/// producer pointed at `endpoint` (the gateway's Kinesis API) would use. Add a time source
/// or other settings to the builder before building it.
pub fn sdk_config(endpoint: &str, key_id: &str, secret: &str) -> aws_sdk_kinesis::config::Builder {
    aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "pinpipe-tests"))
        .endpoint_url(endpoint)
        // As in pinpipe: a failing call fails at once, with the server's answer.
        .retry_config(RetryConfig::disabled())
        .interceptor(ConnectionPerCall)
        // A stuck server fails the test instead of hanging it (GetRecords of a large
        // kinesis-local shard takes seconds).
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
}

/// Sends every call with `Connection: close`, so no connection outlives its call.
///
/// The harness's runtime runs only inside a call, so a pooled connection never sees the
/// server close it: Node servers drop a keep-alive connection idle for 5 s, and the next
/// call sent on it failed with "connection closed before message completed" (kinesalite,
/// after the fault suite's kill loop). A connection per call removes the race that SDK
/// retries would only hide; the harness makes few calls, so the cost is nil.
#[derive(Debug)]
struct ConnectionPerCall;

impl Intercept for ConnectionPerCall {
    fn name(&self) -> &'static str {
        "ConnectionPerCall"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().headers_mut().insert("connection", "close");
        Ok(())
    }
}

/// Starts kinesis-local or kinesalite with `node` on a free port; output to a log file.
fn spawn_node(flavor: Flavor) -> (u16, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kinesis.log");
    let out = std::fs::File::create(&log).unwrap();
    let port = free_port();
    let child = node_command(flavor, port)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {flavor:?} with node: {e}"));
    (port, ServerProcess::Node { child, log, _dir: dir })
}

/// The `node` command line of a Node flavour listening on 127.0.0.1:`port`, with stream
/// operations shortened to 10 ms (the default 500 ms would dominate reshard tests).
fn node_command(flavor: Flavor, port: u16) -> Command {
    let mut cmd = Command::new("node");
    match flavor {
        Flavor::KinesisLocal => {
            let main = tool("PINPIPE_KINESIS_LOCAL", "npm/node_modules/kinesis-local/main.js");
            let pkg = main.parent().expect("main.js has a folder").to_path_buf();
            cmd.arg("main.js")
                .current_dir(&pkg)
                .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
                .env("KINESIS_MOCK_TLS_PORT", free_port().to_string())
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
            let index = tool("PINPIPE_KINESALITE", "npm/node_modules/kinesalite/index.js");
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
        Flavor::Moto => unreachable!("moto is started by the S3 harness"),
    }
    cmd
}
