//! Prometheus metrics of a pinpipe process, and the server that exposes them.
//!
//! One process-wide registry ([`metrics()`]): the sources and the table writers update it
//! from any thread, [`server`] renders it on `/metrics` next to `/healthz` and `/readyz`.
//!
//! Naming follows Prometheus conventions: a `pinpipe_` prefix, `_total` on counters, base
//! units (`_seconds`, `_bytes`). Label values are bounded: `table` is one of the six table
//! names, `source` is `kafka` or `kinesis`, `stream`/`partition` are the assigned
//! topics' partitions, `reason` is a cleaning rule or a field name (never an error text),
//! `error` is a librdkafka error code. Gauges of a released partition are removed, so a
//! long run with rebalances does not accumulate stale series.

pub mod server;
mod source;

use std::sync::LazyLock;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub use server::{health_routes, serve, Health, MetricsConfig, MetricsError, MetricsServer, Readiness};
pub use source::{KinesisMetrics, PartitionMetrics, ShardLag, SourceMetrics};

/// Buckets of the flush and commit histograms (seconds): a local commit takes
/// milliseconds, an S3 commit under contention seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric pinpipe exports.
pub struct Metrics {
    pub registry: Registry,
    pub build_info: IntGaugeVec,
    /// `source`, `stream`, `partition`.
    pub records_consumed: IntCounterVec,
    /// `source`, `stream`.
    pub consumed_bytes: IntCounterVec,
    /// `table`.
    pub rows_committed: IntCounterVec,
    /// `table` (a dead-letter table), `reason`.
    pub dead_letters: IntCounterVec,
    pub commits: IntCounterVec,
    pub commit_conflicts: IntCounterVec,
    pub flush_retries: IntCounterVec,
    pub flush_failures: IntCounterVec,
    pub flush_duration: HistogramVec,
    pub commit_duration: HistogramVec,
    pub written_bytes: IntCounterVec,
    pub written_files: IntCounterVec,
    pub buffered_rows: IntGaugeVec,
    /// `table`: 1 while the table is stalled (its flushes keep failing; rows kept).
    pub table_stalled: IntGaugeVec,
    /// `source`, `stream`, `partition`.
    pub partition_lag: IntGaugeVec,
    /// The sum of this process's partition lags: the autoscaling signal.
    pub lag: IntGauge,
    /// `source`.
    pub owned_partitions: IntGaugeVec,
    pub fetch_paused_seconds: prometheus::CounterVec,
    pub fetch_pauses: IntCounterVec,
    /// `source`, `error`.
    pub source_errors: IntCounterVec,
    pub ready: IntGauge,
    /// `stream`, `shard`: GetRecords' MillisBehindLatest (Kinesis lag).
    pub millis_behind: IntGaugeVec,
    /// The sum of this process's shards' MillisBehindLatest, in seconds: the Kinesis
    /// autoscaling signal, next to `lag` (Kafka's, in records).
    pub kinesis_lag: Gauge,
    /// `stream`: GetRecords calls the server throttled.
    pub kinesis_throttles: IntCounterVec,
    pub kinesis_subscriptions: IntCounterVec,
    /// `event`: shard lease transitions of this process.
    pub lease_events: IntCounterVec,
    /// `route` (a route pattern), `status` (the HTTP code): requests the gateway answered.
    pub gateway_requests: IntCounterVec,
    /// `sink` (`kafka`, `kinesis`): from a request's first send to its last acknowledgement.
    pub gateway_produce_duration: HistogramVec,
    /// `sink`, `outcome` (`acked`, `failed`): records the gateway tried to produce.
    pub gateway_records: IntCounterVec,
    /// Records sent by the gateway and not acknowledged yet (bounded by
    /// `gateway.max_inflight_records`).
    pub gateway_inflight: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registered once");
        let build_info = gauge(&r, "pinpipe_build_info", "pinpipe build; always 1", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let lag = IntGauge::new(
            "pinpipe_lag_records",
            "Records behind: the sum of this process's partition lags (the autoscaling signal)",
        )
        .expect("valid metric");
        r.register(Box::new(lag.clone())).expect("metric registered once");
        // Seconds, not records: Kinesis says how far behind the tip a reader is in time
        // (MillisBehindLatest, free with every GetRecords) and never in records.
        let kinesis_lag = Gauge::new(
            "pinpipe_kinesis_lag_seconds",
            "Seconds behind: the sum over this process's owned shards of GetRecords' MillisBehindLatest \
             (the Kinesis autoscaling signal; 0 when caught up)",
        )
        .expect("valid metric");
        r.register(Box::new(kinesis_lag.clone()))
            .expect("metric registered once");
        let ready = IntGauge::new("pinpipe_ready", "1 when /readyz answers 200").expect("valid metric");
        r.register(Box::new(ready.clone())).expect("metric registered once");
        let paused = prometheus::CounterVec::new(
            Opts::new(
                "pinpipe_fetch_paused_seconds_total",
                "Seconds the fetch loop waited for the writers instead of polling (backpressure)",
            ),
            &["source"],
        )
        .expect("valid metric");
        r.register(Box::new(paused.clone())).expect("metric registered once");
        let src = &["source", "stream", "partition"][..];
        Self {
            build_info,
            records_consumed: counter(
                &r,
                "pinpipe_records_consumed_total",
                "Records fetched from a source",
                src,
            ),
            consumed_bytes: counter(
                &r,
                "pinpipe_consumed_bytes_total",
                "Payload bytes fetched from a source",
                &["source", "stream"],
            ),
            rows_committed: counter(
                &r,
                "pinpipe_rows_committed_total",
                "Rows committed to a table",
                &["table"],
            ),
            dead_letters: counter(
                &r,
                "pinpipe_dead_letters_total",
                "Records routed to a dead-letter table, by the rule they broke",
                &["table", "reason"],
            ),
            commits: counter(&r, "pinpipe_commits_total", "Delta commits made", &["table"]),
            commit_conflicts: counter(
                &r,
                "pinpipe_commit_conflicts_total",
                "Versions other writers committed between a commit's read and its write (each one retried past)",
                &["table"],
            ),
            flush_retries: counter(
                &r,
                "pinpipe_flush_retries_total",
                "Failed flush attempts that were retried",
                &["table"],
            ),
            flush_failures: counter(
                &r,
                "pinpipe_flush_failures_total",
                "Stalls: flushes that failed writer.commit_attempts times in a row, or met a schema another tool changed",
                &["table"],
            ),
            flush_duration: histogram(
                &r,
                "pinpipe_flush_duration_seconds",
                "Duration of a flush: Parquet files plus the Delta commit",
                &["table"],
            ),
            commit_duration: histogram(
                &r,
                "pinpipe_commit_duration_seconds",
                "Duration of the Delta commit step of a flush",
                &["table"],
            ),
            written_bytes: counter(&r, "pinpipe_written_bytes_total", "Parquet bytes committed", &["table"]),
            written_files: counter(&r, "pinpipe_written_files_total", "Parquet files committed", &["table"]),
            buffered_rows: gauge(
                &r,
                "pinpipe_buffered_rows",
                "Rows buffered in a writer, not committed yet",
                &["table"],
            ),
            table_stalled: gauge(
                &r,
                "pinpipe_table_stalled",
                "1 while a table is stalled: its flushes failed writer.commit_attempts times in a row (or its \
                 schema was changed by another tool); rows are kept, the kind's sources pause, /readyz says why",
                &["table"],
            ),
            partition_lag: gauge(
                &r,
                "pinpipe_partition_lag_records",
                "Records between a partition's high watermark and the position committed in the tables",
                src,
            ),
            lag,
            owned_partitions: gauge(
                &r,
                "pinpipe_owned_partitions",
                "Partitions (or shards) this process owns",
                &["source"],
            ),
            fetch_paused_seconds: paused,
            fetch_pauses: counter(
                &r,
                "pinpipe_fetch_pauses_total",
                "Times the fetch loop waited longer than kafka.batch_age_ms for the writers",
                &["source"],
            ),
            source_errors: counter(
                &r,
                "pinpipe_source_errors_total",
                "Source errors by code",
                &["source", "error"],
            ),
            ready,
            millis_behind: gauge(
                &r,
                "pinpipe_kinesis_millis_behind_latest",
                "How far an owned shard's reader is behind the tip of the shard (GetRecords' MillisBehindLatest)",
                &["stream", "shard"],
            ),
            kinesis_lag,
            kinesis_throttles: counter(
                &r,
                "pinpipe_kinesis_throttled_calls_total",
                "GetRecords calls refused for throughput (ProvisionedThroughputExceeded and other throttling); \
                 each is retried after a backoff",
                &["stream"],
            ),
            kinesis_subscriptions: counter(
                &r,
                "pinpipe_kinesis_subscriptions_total",
                "SubscribeToShard subscriptions opened (enhanced fan-out); each lasts up to 5 minutes, \
                 then the shard's reader subscribes again",
                &["stream"],
            ),
            lease_events: counter(
                &r,
                "pinpipe_kinesis_lease_events_total",
                "Shard lease transitions: taken (free or expired), stolen (asked for), handed_over, lost, \
                 finished, released",
                &["event"],
            ),
            gateway_requests: counter(
                &r,
                "pinpipe_gateway_requests_total",
                "Requests the gateway answered, by route pattern and HTTP status",
                &["route", "status"],
            ),
            gateway_produce_duration: histogram(
                &r,
                "pinpipe_gateway_produce_duration_seconds",
                "Gateway: from a request's first send to the broker's last acknowledgement",
                &["sink"],
            ),
            gateway_records: counter(
                &r,
                "pinpipe_gateway_records_total",
                "Records the gateway produced (acked) or could not (failed)",
                &["sink", "outcome"],
            ),
            gateway_inflight: {
                let g = IntGauge::new(
                    "pinpipe_gateway_inflight_records",
                    "Records the gateway sent and the broker has not acknowledged yet",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("metric registered once");
                g
            },
            registry: r,
        }
    }

    /// Creates the per-table series at zero, so dashboards and alerts see every table
    /// (and a `rate()` has a start) before the first event.
    pub fn init_table(&self, table: &str) {
        for c in [
            &self.rows_committed,
            &self.commits,
            &self.commit_conflicts,
            &self.flush_retries,
            &self.flush_failures,
            &self.written_bytes,
            &self.written_files,
        ] {
            c.with_label_values(&[table]);
        }
        self.buffered_rows.with_label_values(&[table]).set(0);
        self.table_stalled.with_label_values(&[table]).set(0);
        self.flush_duration.with_label_values(&[table]);
        self.commit_duration.with_label_values(&[table]);
    }

    /// Creates the per-source series at zero.
    pub fn init_source(&self, source: &str) {
        self.owned_partitions.with_label_values(&[source]).set(0);
        self.fetch_paused_seconds.with_label_values(&[source]);
        self.fetch_pauses.with_label_values(&[source]);
        if source == "kinesis" {
            for e in ["taken", "stolen", "handed_over", "lost", "finished", "released"] {
                self.lease_events.with_label_values(&[e]);
            }
        }
    }

    /// Handles on one table's series, looked up once instead of per flush.
    pub fn table(&self, table: &str) -> TableMetrics {
        self.init_table(table);
        TableMetrics {
            rows_committed: self.rows_committed.with_label_values(&[table]),
            commits: self.commits.with_label_values(&[table]),
            commit_conflicts: self.commit_conflicts.with_label_values(&[table]),
            flush_retries: self.flush_retries.with_label_values(&[table]),
            flush_failures: self.flush_failures.with_label_values(&[table]),
            flush_duration: self.flush_duration.with_label_values(&[table]),
            commit_duration: self.commit_duration.with_label_values(&[table]),
            written_bytes: self.written_bytes.with_label_values(&[table]),
            written_files: self.written_files.with_label_values(&[table]),
            buffered_rows: self.buffered_rows.with_label_values(&[table]),
            stalled: self.table_stalled.with_label_values(&[table]),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails on invalid metric families, which `new` rules out.
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// One table's series.
#[derive(Clone)]
pub struct TableMetrics {
    pub rows_committed: IntCounter,
    pub commits: IntCounter,
    pub commit_conflicts: IntCounter,
    pub flush_retries: IntCounter,
    pub flush_failures: IntCounter,
    pub flush_duration: Histogram,
    pub commit_duration: Histogram,
    pub written_bytes: IntCounter,
    pub written_files: IntCounter,
    pub buffered_rows: IntGauge,
    pub stalled: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_units_and_help() {
        let m = metrics();
        m.init_table("pin");
        m.init_source("kafka");
        m.table("pin").flush_duration.observe(0.02);
        let text = m.render();
        for name in [
            "pinpipe_build_info{version=",
            "pinpipe_rows_committed_total{table=\"pin\"} ",
            "pinpipe_flush_duration_seconds_bucket{table=\"pin\",le=\"0.025\"} ",
            "pinpipe_owned_partitions{source=\"kafka\"} 0",
            "pinpipe_lag_records 0",
            // (its value is another test's: `kinesis_lag_is_the_sum_of_the_owned_shards`)
            "# TYPE pinpipe_kinesis_lag_seconds gauge",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        // Every family has HELP and TYPE lines.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split_whitespace().nth(2).unwrap();
            assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes "), "no process metrics");
    }
}
