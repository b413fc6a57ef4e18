//! `pinpipe demo`, the embedded default: librdkafka's mock cluster (a Kafka-protocol broker
//! inside this process), the three topics with several partitions, the emulator producing
//! into them and `pinpipe run` consuming them into local Delta tables, all in one process.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::emulate::EmulateConfig;
use crate::metrics::{self, Health};
use crate::run::{run_with, RunConfig, RunOptions, RunSummary};
use crate::sources::RunStats;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the embedded broker: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("the emulator: {0}")]
    Emulator(#[from] crate::emulate::kafka::ProduceError),
}

/// How far the producer may run ahead of the consumer, in posts: the mock broker keeps
/// only ~5 MiB per partition, so an unthrottled producer would lose records to it.
pub const AHEAD_POSTS: u64 = 5_000;

/// The run's totals and where its time went, so the rate is not read as pinpipe's speed.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub run: RunSummary,
    /// From the start until the first record was read: broker, topics, group join.
    pub first_record_s: f64,
    /// From the first record read to the last one.
    pub reading_s: f64,
    /// The flush age the demo runs with (rows wait up to this long for their commit).
    pub flush_age_ms: u64,
}

impl DemoSummary {
    /// The run line, what limited its rate, and the commands to try next on `tables`.
    pub fn text(&self, tables: &str) -> String {
        let r = &self.run;
        let rest = (r.seconds - self.first_record_s - self.reading_s).max(0.0);
        let rate = r.records as f64 / self.reading_s.max(1e-3);
        format!(
            "{}\n\
             where the time went: {:.1}s starting the broker and joining the consumer group, \
             {:.1}s reading all {} records ({:.0} records/s), {:.1}s for the last flush and \
             commit (writer.max_age_ms = {}).\n\
             what limited the rate: {}, not pinpipe's reading; `cargo bench --bench kafka` \
             measures its ceiling (BENCHMARKS.md).\n\
             try next:\n  \
             pinpipe report --tables {tables}    # the analytics questions over these tables\n  \
             pinpipe status --tables {tables}    # versions, rows, stored positions, dead letters",
            r.line(),
            self.first_record_s,
            self.reading_s,
            r.records,
            rate,
            rest,
            self.flush_age_ms,
            self.limit(rest),
        )
    }

    /// The largest of the three parts, said as what it is.
    fn limit(&self, rest: f64) -> String {
        if self.first_record_s >= self.reading_s && self.first_record_s >= rest {
            "mostly starting the embedded broker and joining the group".into()
        } else if rest >= self.reading_s {
            format!(
                "mostly the wait for the last flush (up to writer.max_age_ms = {} ms)",
                self.flush_age_ms
            )
        } else {
            format!(
                "mostly the emulator, held at most {AHEAD_POSTS} posts ahead of the consumer in this \
                 process (the embedded broker keeps only ~5 MiB per partition)"
            )
        }
    }
}

/// Runs the demo: `count` posts (three records each) over `partitions` per topic.
pub async fn demo(
    mut cfg: RunConfig,
    emulate: &EmulateConfig,
    count: u64,
    partitions: i32,
) -> Result<DemoSummary, DemoError> {
    let mock = MockCluster::new(1)?;
    cfg.kafka.brokers = mock.bootstrap_servers();
    cfg.kafka.enabled = true;
    cfg.kinesis.enabled = false;
    // The mock broker is new on every run, its offsets start at 0 again: new topic names
    // make them new source partitions, so rows append to existing tables instead of being
    // taken for what an earlier demo already committed.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cfg.kafka.topic_prefix = format!("{}-demo-{started}", cfg.kafka.topic_prefix);
    cfg.kafka.topics.clear();
    for topic in cfg.kafka.topic_map().keys() {
        mock.create_topic(topic, partitions, 1)?;
    }
    // Rows show up in the tables within seconds, not the production default's flush age.
    cfg.writer.max_age_ms = cfg.writer.max_age_ms.min(2_000);
    let stats = Arc::new(RunStats::default());
    let producer = {
        let (e, k, st) = (emulate.clone(), cfg.kafka.clone(), stats.clone());
        tokio::spawn(async move {
            // The mock broker keeps ~5 MiB per partition: stay close to the consumer.
            let r = crate::emulate::kafka::produce(&e, &k, count, None, false, Some((&st, AHEAD_POSTS))).await;
            tracing::info!(result = ?r.as_ref().map_err(|e| e.to_string()), "emulator finished");
            r
        })
    };
    // The demo's metrics are a bonus: a taken port (say, a `pinpipe run` next to it) only
    // costs a warning.
    let health = Health::new();
    let server = match metrics::serve(&cfg.metrics, health.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no metrics server for the demo");
            None
        }
    };
    let opts = RunOptions {
        stop_after: Some(count * 3),
        progress: true,
    };
    let started = Instant::now();
    let marks = Arc::new(ReadMarks::default());
    let clock = tokio::spawn(reading_clock(stats.clone(), count * 3, marks.clone()));
    let summary = run_with(&cfg, opts, stats, health).await;
    clock.abort();
    let (first, last) = (marks.first.get().copied(), marks.last.get().copied());
    if let Some(s) = server {
        s.stop().await;
    }
    let summary = summary?;
    if producer.is_finished() {
        producer.await.expect("the emulator task never panics")?;
    } else {
        // Stopped by a signal before everything was produced.
        producer.abort();
    }
    drop(mock);
    let at = |t: Option<Instant>| t.map_or(summary.seconds, |t| t.duration_since(started).as_secs_f64());
    let (first_record_s, last_record_s) = (at(first), at(last));
    Ok(DemoSummary {
        run: summary,
        first_record_s,
        reading_s: last_record_s - first_record_s,
        flush_age_ms: cfg.writer.max_age_ms,
    })
}

/// When the first and the last record were read.
#[derive(Default)]
struct ReadMarks {
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
}

/// Stamps `marks` as the records come in (polled every 10 ms); aborted when the run ends.
async fn reading_clock(stats: Arc<RunStats>, total: u64, marks: Arc<ReadMarks>) {
    loop {
        let n = stats.records.load(Ordering::Relaxed);
        if n > 0 {
            marks.first.get_or_init(Instant::now);
        }
        if n >= total {
            marks.last.get_or_init(Instant::now);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
