//! The `[kinesis]` config section: the streams, the lease space, and how shards are read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clean::Kind;
use crate::validate::{ensure, Invalid};

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
    /// Read with enhanced fan-out: records pushed over SubscribeToShard to a consumer
    /// registered on each stream (2 MB/s per shard for this application alone) instead of
    /// polled with GetRecords (2 MB/s per shard shared by every reader).
    pub enhanced_fan_out: bool,
    /// The registered stream consumer's name for enhanced fan-out; empty: `application`.
    /// Every process of an application subscribes through the same consumer (the leases
    /// keep one reader per shard), so the stream's 20-consumer limit counts applications.
    pub consumer_name: String,
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
            enhanced_fan_out: false,
            consumer_name: String::new(),
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

    /// The enhanced fan-out consumer's name in effect.
    pub fn consumer(&self) -> &str {
        if self.consumer_name.is_empty() {
            &self.application
        } else {
            &self.consumer_name
        }
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(
            ["trim_horizon", "latest"].contains(&self.initial_position.as_str()),
            "kinesis.initial_position",
            format!("{:?} (allowed: trim_horizon, latest)", self.initial_position),
        )?;
        ensure(
            (1..=10_000).contains(&self.max_records_per_call),
            "kinesis.max_records_per_call",
            format!(
                "{} (allowed: 1..=10000, the GetRecords limit)",
                self.max_records_per_call
            ),
        )?;
        let at_least =
            |v: u64, min: u64, key: &'static str| ensure(v >= min, key, format!("{v} (allowed: at least {min})"));
        at_least(self.lease_ms, 1_000, "kinesis.lease_ms")?;
        at_least(self.shutdown_grace_ms, 1_000, "kinesis.shutdown_grace_ms")?;
        at_least(self.max_read_bytes_per_sec, 1, "kinesis.max_read_bytes_per_sec")?;
        at_least(self.shard_sync_ms, 1, "kinesis.shard_sync_ms")?;
        ensure(
            (1..=256).contains(&self.workers),
            "kinesis.workers",
            format!("{} (allowed: 1..=256)", self.workers),
        )?;
        ensure(
            self.batch_rows > 0 && self.batch_age_ms > 0,
            "kinesis.batch_rows",
            "kinesis.batch_rows and kinesis.batch_age_ms must be at least 1",
        )?;
        ensure(
            self.backoff_base_ms > 0 && self.backoff_max_ms >= self.backoff_base_ms,
            "kinesis.backoff_base_ms",
            "must be at least 1 and at most kinesis.backoff_max_ms",
        )?;
        let http = self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        ensure(
            self.endpoint.is_empty() || http,
            "kinesis.endpoint",
            format!("{:?} is not an http:// or https:// URL", self.endpoint),
        )?;
        ensure(
            self.access_key_id.is_empty() == self.secret_access_key.is_empty(),
            "kinesis.access_key_id",
            "set both kinesis.access_key_id and kinesis.secret_access_key, or neither",
        )?;
        let bad = |c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c));
        for name in self.stream_map().keys() {
            ensure(
                !(name.is_empty() || name.len() > 128 || name.contains(bad)),
                "kinesis.stream_prefix",
                format!("stream name {name:?} is not a valid Kinesis name ([a-zA-Z0-9_.-]{{1,128}})"),
            )?;
        }
        ensure(
            !(self.application.is_empty() || self.application.contains(bad)),
            "kinesis.application",
            "must be non-empty, of [a-zA-Z0-9_.-]",
        )?;
        ensure(
            self.consumer_name.len() <= 128 && !self.consumer_name.contains(bad),
            "kinesis.consumer_name",
            format!(
                "{:?} is not a valid consumer name ([a-zA-Z0-9_.-]{{1,128}})",
                self.consumer_name
            ),
        )
    }
}
