//! `pinpipe demo`, the embedded default: librdkafka's mock cluster (a Kafka-protocol broker
//! inside this process), the three topics with several partitions, the emulator producing
//! into them and `pinpipe run` consuming them into local Delta tables, all in one process.

use std::sync::Arc;

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

/// Runs the demo: `count` posts (three records each) over `partitions` per topic.
pub async fn demo(
    mut cfg: RunConfig,
    emulate: &EmulateConfig,
    count: u64,
    partitions: i32,
) -> Result<RunSummary, DemoError> {
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
            let r = crate::emulate::kafka::produce(&e, &k, count, None, false, Some((&st, 5_000))).await;
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
    let summary = run_with(&cfg, opts, stats, health).await;
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
    Ok(summary)
}
