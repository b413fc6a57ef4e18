//! `pinpipe run`: the Kafka and Kinesis sources driving the table writers until SIGINT or
//! SIGTERM, `--stop-after`, or a source failing. One [`Shutdown`] stops both sources; each
//! hands over, commits and lets go of its partitions or shards within the grace period.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::clean::Kind;
use crate::metrics::{self, Health, MetricsConfig, MetricsError};
use crate::shutdown::{self, Shutdown};
use crate::sink::{RawConfig, RowCounts, TablesConfig, WriterConfig, WriterError, Writers};
use crate::sources::kafka::{self, KafkaConfig, KafkaSourceError};
use crate::sources::kinesis::{self, KinesisConfig, KinesisSourceError};
use crate::sources::{RunStats, SourceRun};

/// The config sections a run uses.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub tables: TablesConfig,
    pub writer: WriterConfig,
    pub raw: RawConfig,
    pub kafka: KafkaConfig,
    pub kinesis: KinesisConfig,
    pub metrics: MetricsConfig,
    pub max_record_bytes: usize,
}

impl RunConfig {
    /// The writers of every table a run writes: clean and dead-letter, and raw when on.
    pub async fn writers(&self) -> Result<Writers, WriterError> {
        start_writers(&self.tables, &self.raw, &self.writer).await
    }

    /// The grace period of the run: the shorter of the enabled sources' (both bound the
    /// same pod's termination).
    pub fn grace(&self) -> Duration {
        let kafka = self.kafka.enabled.then_some(self.kafka.shutdown_grace_ms);
        let kinesis = self.kinesis.enabled.then_some(self.kinesis.shutdown_grace_ms);
        Duration::from_millis(kafka.into_iter().chain(kinesis).min().unwrap_or(30_000))
    }
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    #[error(transparent)]
    Kinesis(#[from] KinesisSourceError),
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub rows: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl RunSummary {
    pub fn line(&self) -> String {
        let rows = RowCounts(&self.rows);
        format!(
            "run: {} records in {:.2}s ({:.0} records/s); rows {}; dead letters {}; raw {}",
            self.records,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            rows.clean(),
            rows.dead_letters(),
            rows.raw()
        )
    }
}

/// When a run stops on its own, besides a signal.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Once this process committed this many rows (clean and dead-letter together).
    pub stop_after: Option<u64>,
    /// Live progress on the terminal.
    pub progress: bool,
}

/// Consumes until a signal or `opts.stop_after`; serves `/metrics`, `/healthz`, `/readyz`
/// while it runs.
pub async fn run(cfg: &RunConfig, opts: RunOptions) -> Result<RunSummary, RunError> {
    // Before the tables open (which can take a while on S3): liveness answers at once,
    // readiness says what it waits for.
    let health = Health::new();
    let server = metrics::serve(&cfg.metrics, health.clone())?;
    let r = run_with(cfg, opts, Arc::new(RunStats::default()), health).await;
    if let Some(s) = server {
        s.stop().await;
    }
    r
}

/// The run itself, with the caller's stats and health (the demo shares them).
pub(crate) async fn run_with(
    cfg: &RunConfig,
    opts: RunOptions,
    stats: Arc<RunStats>,
    health: Arc<Health>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let writers = Arc::new(cfg.writers().await?);
    // A stalled table makes the process not ready, naming the table and the error.
    health.watch(writers.clone());
    health.set_tables_open();
    let shutdown = Shutdown::new(cfg.grace());
    let bar = progress_bar(opts.progress);
    // A task of its own: the Kafka dispatcher's thread blocks inside librdkafka's rebalance
    // callback, and a signal must still reach the shutdown then.
    let watch = tokio::spawn(watch(
        shutdown.clone(),
        writers.clone(),
        stats.clone(),
        bar.clone(),
        opts.stop_after,
    ));
    let r = sources(cfg, &writers, &stats, &health, &shutdown).await;
    watch.abort();
    bar.finish_and_clear();
    r?;
    Ok(RunSummary {
        records: stats.records.load(Ordering::Relaxed),
        rows: writers.stats().await,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The writers of the clean and dead-letter tables of every kind, and of the raw tables
/// when `raw.enabled` (shared by `run` and `batch`).
pub async fn start_writers(
    tables: &TablesConfig,
    raw: &RawConfig,
    writer: &WriterConfig,
) -> Result<Writers, WriterError> {
    if raw.enabled {
        Writers::start_with_raw(tables, raw, writer, &Kind::ALL, None).await
    } else {
        Writers::start(tables, writer, &Kind::ALL, None).await
    }
}

/// Both sources side by side; a source that fails stops the other one too.
async fn sources(
    cfg: &RunConfig,
    writers: &Arc<Writers>,
    stats: &Arc<RunStats>,
    health: &Arc<Health>,
    shutdown: &Shutdown,
) -> Result<(), RunError> {
    let stop_on_error = |r: Result<(), RunError>| {
        if r.is_err() {
            shutdown.trigger();
        }
        r
    };
    let run = SourceRun {
        writers: writers.clone(),
        stats: stats.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        max_record_bytes: cfg.max_record_bytes,
    };
    let kafka = async {
        if !cfg.kafka.enabled {
            return Ok(());
        }
        stop_on_error(kafka::run(&cfg.kafka, run.clone()).await.map_err(Into::into))
    };
    let kinesis = async {
        if !cfg.kinesis.enabled {
            return Ok(());
        }
        stop_on_error(
            kinesis::run(&cfg.kinesis, &cfg.tables, run.clone())
                .await
                .map_err(Into::into),
        )
    };
    let (a, b) = tokio::join!(kafka, kinesis);
    a.and(b)
}

fn progress_bar(show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("static template"));
    bar
}

/// Shows progress, and triggers the shutdown on a signal or once `stop_after` rows are
/// committed.
async fn watch(
    shutdown: Shutdown,
    writers: Arc<Writers>,
    stats: Arc<RunStats>,
    bar: ProgressBar,
    stop_after: Option<u64>,
) {
    let reached = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let committed = writers.stats().await;
            let dead = RowCounts(&committed).dead_letters();
            // Records committed: every record is in one clean or dead-letter table.
            let total: u64 = committed.values().sum::<u64>() - RowCounts(&committed).raw();
            bar.set_message(format!(
                "records in {}, rows committed {}, dead letters {dead}",
                stats.records.load(Ordering::Relaxed),
                total - dead
            ));
            if stop_after.is_some_and(|s| total >= s) {
                break;
            }
        }
    };
    tokio::select! {
        _ = reached => {}
        _ = shutdown::signal() => {}
        _ = shutdown.triggered() => {}
    }
    shutdown.trigger();
}
