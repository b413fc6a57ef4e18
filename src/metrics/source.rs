//! Pre-bound handles on the sources' series, next to [`super::TableMetrics`]: a source
//! names its events (`owned(n)`, `error(code)`, `lease("taken")`), never label arrays.
//! Bound once per source or partition, so the hot path does no label lookups.

use prometheus::core::Collector;
use prometheus::{Counter, IntCounter, IntGauge};

use super::metrics;

/// One source's series (`source` = `kafka` or `kinesis`).
#[derive(Clone)]
pub struct SourceMetrics {
    source: &'static str,
    owned: IntGauge,
    paused_seconds: Counter,
    pauses: IntCounter,
}

impl SourceMetrics {
    /// Binds (and creates at zero) the series of `source`.
    pub fn new(source: &'static str) -> Self {
        let m = metrics();
        m.init_source(source);
        Self {
            source,
            owned: m.owned_partitions.with_label_values(&[source]),
            paused_seconds: m.fetch_paused_seconds.with_label_values(&[source]),
            pauses: m.fetch_pauses.with_label_values(&[source]),
        }
    }

    /// Partitions (or shards) this process owns now.
    pub fn owned(&self, n: usize) {
        self.owned.set(n as i64);
    }

    /// The fetch loop waited `secs` for the actors and writers; `long` when longer than a
    /// batch age (a backpressure pause).
    pub fn fetch_paused(&self, secs: f64, long: bool) {
        self.paused_seconds.inc_by(secs);
        if long {
            self.pauses.inc();
        }
    }

    /// A source error, by its code (a librdkafka error name, an AWS error code).
    pub fn error(&self, code: &str) {
        metrics().source_errors.with_label_values(&[self.source, code]).inc();
    }

    /// The series of one owned partition or shard.
    pub fn partition(&self, stream: &str, partition: &str) -> PartitionMetrics {
        let m = metrics();
        PartitionMetrics {
            consumed: m.records_consumed.with_label_values(&[self.source, stream, partition]),
            consumed_bytes: m.consumed_bytes.with_label_values(&[self.source, stream]),
        }
    }

    /// Sets a partition's lag gauge (high watermark minus the position in the tables).
    pub fn lag(&self, stream: &str, partition: &str, records: i64) {
        metrics()
            .partition_lag
            .with_label_values(&[self.source, stream, partition])
            .set(records);
    }

    /// Drops a released partition's series, so long runs with rebalances do not
    /// accumulate stale ones.
    pub fn forget(&self, stream: &str, partition: &str) {
        let m = metrics();
        let _ = m.partition_lag.remove_label_values(&[self.source, stream, partition]);
        let _ = m
            .records_consumed
            .remove_label_values(&[self.source, stream, partition]);
    }

    /// The source stopped: it owns nothing and reports no lag.
    pub fn stopped(&self) {
        self.owned.set(0);
        let m = metrics();
        m.partition_lag.reset();
        m.lag.set(0);
    }
}

/// One owned partition's or shard's series.
#[derive(Clone)]
pub struct PartitionMetrics {
    consumed: IntCounter,
    consumed_bytes: IntCounter,
}

impl PartitionMetrics {
    /// `records` records of `bytes` payload bytes fetched.
    pub fn consumed(&self, records: u64, bytes: u64) {
        self.consumed.inc_by(records);
        self.consumed_bytes.inc_by(bytes);
    }
}

/// The Kinesis source's own series, besides its [`SourceMetrics`].
#[derive(Clone)]
pub struct KinesisMetrics;

impl KinesisMetrics {
    /// A shard lease transition: `taken`, `stolen`, `handed_over`, `lost`, `finished`,
    /// `released`.
    pub fn lease(&self, event: &'static str) {
        metrics().lease_events.with_label_values(&[event]).inc();
    }

    /// A GetRecords call the server throttled.
    pub fn throttled(&self, stream: &str) {
        metrics().kinesis_throttles.with_label_values(&[stream]).inc();
    }

    /// A SubscribeToShard subscription opened (enhanced fan-out).
    pub fn subscribed(&self, stream: &str) {
        metrics().kinesis_subscriptions.with_label_values(&[stream]).inc();
    }

    /// The lag handle of an owned shard.
    pub fn behind(&self, stream: &str, shard: &str) -> ShardLag {
        ShardLag(metrics().millis_behind.with_label_values(&[stream, shard]))
    }

    /// Drops a released shard's gauge; the process's sum no longer counts it.
    pub fn forget(&self, stream: &str, shard: &str) {
        let _ = metrics().millis_behind.remove_label_values(&[stream, shard]);
        sum_kinesis_lag();
    }

    /// The source stopped: no shard, no lag.
    pub fn stopped(&self) {
        metrics().millis_behind.reset();
        metrics().kinesis_lag.set(0.0);
    }
}

/// An owned shard's MillisBehindLatest, kept summed into `pinpipe_kinesis_lag_seconds`.
#[derive(Clone)]
pub struct ShardLag(IntGauge);

impl ShardLag {
    /// The shard's reader is `millis` behind the tip (from the last GetRecords or pushed
    /// event).
    pub fn set(&self, millis: i64) {
        // Recomputed from the per-shard series rather than kept by adding differences:
        // a shard released by another task (`forget`) cannot leave a stale part behind.
        // A process owns tens of shards at most, and this runs once per GetRecords.
        self.0.set(millis.max(0));
        sum_kinesis_lag();
    }
}

fn sum_kinesis_lag() {
    let m = metrics();
    let millis: f64 = m
        .millis_behind
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|series| series.get_gauge().get_value())
        .sum();
    m.kinesis_lag.set(millis / 1000.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_lag_is_the_sum_of_the_owned_shards() {
        let k = KinesisMetrics;
        let lag = || metrics().kinesis_lag.get();
        let a = k.behind("lag-test", "shard-a");
        let b = k.behind("lag-test", "shard-b");
        a.set(1_500);
        b.set(2_500);
        assert_eq!(lag(), 4.0);
        // A negative answer (clock skew on the server) counts as caught up.
        b.set(-20);
        assert_eq!(lag(), 1.5);
        b.set(500);
        k.forget("lag-test", "shard-a");
        assert_eq!(lag(), 0.5, "a released shard no longer counts");
        b.set(0);
        assert_eq!(lag(), 0.0, "caught up is zero");
        b.set(9_000);
        k.stopped();
        assert_eq!(lag(), 0.0);
        assert!(
            !metrics().render().contains("lag-test"),
            "stopped drops every shard's series"
        );
    }
}
