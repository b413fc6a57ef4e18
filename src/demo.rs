//! `pinpipe run` and `pinpipe demo`: the Kafka source driving the table writers.
//!
//! The demo is the embedded default: librdkafka's mock cluster (a Kafka-protocol broker
//! inside this process), the three topics with several partitions, the emulator producing
//! into them and the processor consuming them into local Delta tables, all in one process.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::mocking::MockCluster;

use crate::clean::Kind;
use crate::config::Config;
use crate::metrics::{self, Health};
use crate::sink::Writers;
use crate::sources::kafka::{self, RunStats};
use crate::sources::kinesis;

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub rows: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
}

impl RunSummary {
    pub fn line(&self) -> String {
        let dead: u64 = self
            .rows
            .iter()
            .filter(|(t, _)| t.ends_with("_dead_letter"))
            .map(|(_, n)| n)
            .sum();
        let rows: Vec<String> = self
            .rows
            .iter()
            .filter(|(t, _)| !t.ends_with("_dead_letter"))
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        format!(
            "run: {} records in {:.2}s ({:.0} records/s); rows {}; dead letters {}",
            self.records,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            rows.join(" "),
            dead
        )
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Consumes until a signal, or until this process committed `stop_after` rows (clean and
/// dead-letter together; then drains, commits and leaves the group). Shows live progress
/// when `progress`.
pub async fn run(cfg: &Config, stop_after: Option<u64>, progress: bool) -> anyhow::Result<RunSummary> {
    // Before the tables open (which can take a while on S3): liveness answers at once,
    // readiness says what it waits for.
    let health = Health::new();
    let server = metrics::serve(&cfg.metrics, health.clone())?;
    let r = run_with(cfg, stop_after, progress, Arc::new(RunStats::default()), health).await;
    if let Some(s) = server {
        s.stop().await;
    }
    r
}

async fn run_with(
    cfg: &Config,
    stop_after: Option<u64>,
    progress: bool,
    stats: Arc<RunStats>,
    health: Arc<Health>,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let writers = Arc::new(Writers::start(&cfg.tables, &cfg.writer, &Kind::ALL, None).await?);
    health.set_tables_open();
    let bar = if progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("static template"));
    let stop = {
        let stats = stats.clone();
        let writers = writers.clone();
        let bar = bar.clone();
        async move {
            let reached = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let n = stats.records.load(Ordering::Relaxed);
                    let committed = writers.stats().await;
                    let dead: u64 = committed
                        .iter()
                        .filter(|(t, _)| t.ends_with("_dead_letter"))
                        .map(|(_, n)| n)
                        .sum();
                    let total: u64 = committed.values().sum();
                    bar.set_message(format!(
                        "records in {n}, rows committed {}, dead letters {dead}",
                        total - dead
                    ));
                    if stop_after.is_some_and(|s| total >= s) {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = reached => {}
                _ = shutdown_signal() => {}
            }
        }
    };
    // One stop for both sources; each drains and commits on its own. A source that fails
    // stops the other one too.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let wait = || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let failed = |r: anyhow::Result<()>| {
        if r.is_err() {
            let _ = stopping.send(true);
        }
        r
    };
    let kafka = async {
        if !cfg.kafka.enabled {
            return Ok(());
        }
        let (w, s, h) = (writers.clone(), stats.clone(), health.clone());
        let r = kafka::run(&cfg.kafka, cfg.clean.max_record_bytes, w, s, h, wait()).await;
        failed(r.map_err(Into::into))
    };
    let kinesis = async {
        if !cfg.kinesis.enabled {
            return Ok(());
        }
        let (w, s, h) = (writers.clone(), stats.clone(), health.clone());
        let r = kinesis::run(&cfg.kinesis, &cfg.tables, cfg.clean.max_record_bytes, w, s, h, wait()).await;
        failed(r.map_err(Into::into))
    };
    let sources = async {
        let (a, b) = tokio::join!(kafka, kinesis);
        a.and(b)
    };
    let mut sources = std::pin::pin!(sources);
    tokio::select! {
        r = &mut sources => r?,
        _ = stop => {
            let _ = stopping.send(true);
            sources.await?
        }
    }
    bar.finish_and_clear();
    Ok(RunSummary {
        records: stats.records.load(Ordering::Relaxed),
        rows: writers.stats().await,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The embedded demo: mock broker, topics, emulator and processor in one process.
pub async fn demo(cfg: &mut Config, count: u64, partitions: i32) -> anyhow::Result<RunSummary> {
    let mock = MockCluster::new(1)?;
    cfg.kafka.brokers = mock.bootstrap_servers();
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
        let (e, k, st) = (cfg.emulate.clone(), cfg.kafka.clone(), stats.clone());
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
    let summary = run_with(cfg, Some(count * 3), true, stats, health).await;
    if let Some(s) = server {
        s.stop().await;
    }
    let summary = summary?;
    if producer.is_finished() {
        producer.await??;
    } else {
        // Stopped by a signal before everything was produced.
        producer.abort();
    }
    drop(mock);
    Ok(summary)
}
