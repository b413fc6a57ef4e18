//! Kinesis source: leased shards, each read by a [`ShardActor`](shard::ShardActor).
//!
//! - [`coordinator`]: lists the shards, takes, renews, balances and releases leases, and
//!   starts or stops one shard actor per owned shard. Children start only after their
//!   parents are finished.
//! - [`lease`]: the lease objects in the tables' object store (no DynamoDB).
//! - [`balance`]: the pure rules deciding which leases to take or ask for.
//! - [`shard`]: the shard actor (GetRecords loop, limits, backoff, hand-over).
//!
//! Positions are sequence numbers stored in the Delta commits (see `sink::checkpoint`);
//! the leases say who reads, the tables say how far.

pub mod balance;
mod coordinator;
pub mod lease;
pub mod shard;

use std::collections::BTreeMap;

use aws_config::BehaviorVersion;
use serde::{Deserialize, Serialize};

use crate::clean::Kind;
use crate::sink::WriterError;

pub use coordinator::run;
pub use shard::seq_cmp;

/// `[kinesis]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// Read the Kinesis streams in `pinpipe run`.
    pub enabled: bool,
    /// Streams are `streaming-<stream_prefix>-pin|geo|user` unless `streams` maps them.
    pub stream_prefix: String,
    /// Explicit stream -> kind map; empty: derived from `stream_prefix`.
    pub streams: BTreeMap<String, Kind>,
    /// The lease space: processes with the same application share the shards.
    pub application: String,
    /// This process's name in the leases; empty: `<hostname>-<pid>-<random>`.
    pub worker_id: String,
    /// AWS region; empty: the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: String,
    /// Endpoint of a non-AWS Kinesis API (a local server); empty: AWS.
    pub endpoint: String,
    /// Static credentials; empty: the standard AWS credential chain.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Where a shard without a position in the tables starts: `trim_horizon` or `latest`
    /// (a child shard always starts at its beginning).
    pub initial_position: String,
    /// Threads (actix arbiters) the shard actors are spread over.
    pub workers: usize,
    /// A lease not renewed for this long is taken over (milliseconds). Renewal runs every
    /// quarter of it; an owner stops reading after three quarters without a renewal.
    pub lease_ms: u64,
    /// How often the shard list is refreshed (new shards after a split or merge).
    pub shard_sync_ms: u64,
    /// GetRecords `Limit` (1..=10000).
    pub max_records_per_call: i32,
    /// Minimum gap between GetRecords calls on a shard (AWS allows 5 calls/s).
    pub min_call_interval_ms: u64,
    /// Read rate per shard (AWS allows 2 MB/s): a call returning N bytes waits N / rate.
    pub max_read_bytes_per_sec: u64,
    /// Pause after a call returned no records.
    pub idle_ms: u64,
    /// Records a shard actor collects before handing them to the writers.
    pub batch_rows: usize,
    /// A shard actor hands over a partial batch after this long (milliseconds).
    pub batch_age_ms: u64,
    /// Backoff after a throttled or failed call: exponential from base to max, jittered.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// After SIGTERM/SIGINT, how long draining, the last flush and releasing the leases may
    /// take; after it the leases simply expire.
    pub shutdown_grace_ms: u64,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            stream_prefix: "pinpipe".into(),
            streams: BTreeMap::new(),
            application: "pinpipe".into(),
            worker_id: String::new(),
            region: String::new(),
            endpoint: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            initial_position: "trim_horizon".into(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            lease_ms: 10_000,
            shard_sync_ms: 10_000,
            max_records_per_call: 10_000,
            min_call_interval_ms: 200,
            max_read_bytes_per_sec: 2 * 1024 * 1024,
            idle_ms: 500,
            batch_rows: 8192,
            batch_age_ms: 500,
            backoff_base_ms: 100,
            backoff_max_ms: 5_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl KinesisConfig {
    /// The stream -> kind map in effect.
    pub fn stream_map(&self) -> BTreeMap<String, Kind> {
        if !self.streams.is_empty() {
            return self.streams.clone();
        }
        Kind::ALL
            .iter()
            .map(|k| (format!("streaming-{}-{k}", self.stream_prefix), *k))
            .collect()
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !["trim_horizon", "latest"].contains(&self.initial_position.as_str()) {
            return Err((
                "kinesis.initial_position",
                format!("{:?} (allowed: trim_horizon, latest)", self.initial_position),
            ));
        }
        if !(1..=10_000).contains(&self.max_records_per_call) {
            return Err((
                "kinesis.max_records_per_call",
                format!(
                    "{} (allowed: 1..=10000, the GetRecords limit)",
                    self.max_records_per_call
                ),
            ));
        }
        if self.lease_ms < 1_000 {
            return Err((
                "kinesis.lease_ms",
                format!("{} (allowed: at least 1000)", self.lease_ms),
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(("kinesis.workers", format!("{} (allowed: 1..=256)", self.workers)));
        }
        if self.batch_rows == 0 || self.batch_age_ms == 0 {
            return Err((
                "kinesis.batch_rows",
                "kinesis.batch_rows and kinesis.batch_age_ms must be at least 1".into(),
            ));
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err((
                "kinesis.backoff_base_ms",
                "must be at least 1 and at most kinesis.backoff_max_ms".into(),
            ));
        }
        if self.max_read_bytes_per_sec == 0 {
            return Err(("kinesis.max_read_bytes_per_sec", "must be at least 1".into()));
        }
        if self.shard_sync_ms == 0 {
            return Err(("kinesis.shard_sync_ms", "must be at least 1".into()));
        }
        if self.shutdown_grace_ms < 1_000 {
            return Err((
                "kinesis.shutdown_grace_ms",
                format!("{} (allowed: at least 1000)", self.shutdown_grace_ms),
            ));
        }
        let http = self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        if !(self.endpoint.is_empty() || http) {
            return Err((
                "kinesis.endpoint",
                format!("{:?} is not an http:// or https:// URL", self.endpoint),
            ));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Err((
                "kinesis.access_key_id",
                "set both kinesis.access_key_id and kinesis.secret_access_key, or neither".into(),
            ));
        }
        let bad = |c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c));
        for name in self.stream_map().keys() {
            if name.is_empty() || name.len() > 128 || name.contains(bad) {
                return Err((
                    "kinesis.stream_prefix",
                    format!("stream name {name:?} is not a valid Kinesis name ([a-zA-Z0-9_.-]{{1,128}})"),
                ));
            }
        }
        if self.application.is_empty() || self.application.contains(bad) {
            return Err(("kinesis.application", "must be non-empty, of [a-zA-Z0-9_.-]".into()));
        }
        Ok(())
    }
}

/// A Kinesis client for `cfg`: its endpoint, region and credentials, else the standard AWS
/// chain. SDK retries are off: the shard actors back off themselves and count throttles.
pub async fn client(cfg: &KinesisConfig) -> aws_sdk_kinesis::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !cfg.region.is_empty() {
        loader = loader.region(aws_config::Region::new(cfg.region.clone()));
    }
    if !cfg.access_key_id.is_empty() {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            None,
            None,
            "pinpipe-config",
        ));
    }
    if !cfg.endpoint.is_empty() {
        loader = loader.endpoint_url(cfg.endpoint.clone());
    }
    let sdk = loader.load().await;
    let conf = aws_sdk_kinesis::config::Builder::from(&sdk)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Whether a PutRecords failure (a call's error code, or an entry's `ErrorCode`) is worth
/// putting again: throughput, throttling, the service's own trouble, or no connection.
pub fn put_retriable(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ThrottlingException"
            | "KMSThrottlingException"
            | "Dispatch"
            | "Timeout"
    )
}

/// The pause before put attempt `attempt` (1-based): uniform in [cap/2, cap] where cap
/// doubles from `base_ms` up to `max_ms`. The jitter keeps many writers from retrying in step.
pub fn put_backoff(attempt: u32, base_ms: u64, max_ms: u64) -> std::time::Duration {
    let cap = (base_ms << attempt.min(16)).min(max_ms).max(2);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        % (cap / 2 + 1);
    std::time::Duration::from_millis(cap / 2 + jitter)
}

/// Errors of the Kinesis source.
#[derive(Debug, thiserror::Error)]
pub enum KinesisSourceError {
    #[error("kinesis stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(
        "shutdown took longer than kinesis.shutdown_grace_ms = {0}: gave up; the leases expire and rows not \
         committed yet are read again by the next owner"
    )]
    GraceExceeded(u64),
}
