//! [`ShardActor`]: owns one leased shard, reads it with GetRecords, cleans the records and
//! hands rows to the table writers with the shard's sequence number as their position.
//!
//! - **Resume** from the tables: `AFTER_SEQUENCE_NUMBER` the lower of the clean and
//!   dead-letter tables' positions, filtering what one of them already holds; a shard
//!   without positions starts at `TRIM_HORIZON`, or `LATEST` when configured and the shard
//!   has no parent (a child's records must never be skipped).
//! - **Limits**: at most 5 GetRecords calls/s and 2 MB/s per shard (AWS's read limits,
//!   configurable), an idle pause when a call returns nothing, and on throttling
//!   (`ProvisionedThroughputExceededException`, `LimitExceededException`, KMS throttling,
//!   5xx, timeouts) an exponential backoff with jitter. SDK retries are off for this client,
//!   so every throttle is seen (and counted) here.
//! - **Lease**: before every call and every hand-over the actor checks its lease is still
//!   valid (renewed recently enough by the coordinator); if not, it stops without handing
//!   anything over: the next owner reads those records again.
//! - **Shard end** (a closed parent): the last rows are handed over and the writers flush,
//!   so the shard's final positions are committed before the coordinator marks the lease
//!   finished and lets the children start.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::KinesisConfig;
use crate::clean::{self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage};
use crate::metrics::metrics;
use crate::sink::{Append, Position, SourceKey, SourceKind, WriterError, Writers};
use crate::sources::kafka::RunStats;

/// The `source` label of this source's metrics and lineage.
pub(super) const SOURCE: &str = "kinesis";

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on this process's monotonic clock (lease deadlines).
pub(super) fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Orders two decimal sequence numbers (any length, leading zeros ignored).
pub fn seq_cmp(a: &str, b: &str) -> CmpOrdering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// What to read.
#[derive(Debug, Clone)]
pub(super) struct ShardSpec {
    pub stream: String,
    pub shard: String,
    pub kind: Kind,
    pub has_parent: bool,
    /// Positions in the (clean, dead-letter) tables when the lease was taken.
    pub positions: [Option<Position>; 2],
}

/// How a shard actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exit {
    /// The shard is closed and everything up to its end is committed.
    Finished,
    /// Stopped on request after handing over and flushing.
    Drained,
    /// Stopped on request, nothing handed over.
    Aborted,
    /// The lease was not renewed in time.
    LeaseLost,
    /// Another owner moved a position in the tables; resume from the tables.
    Fenced,
    /// The shard or stream is gone, or the writers failed.
    Failed(String),
}

/// Sent to the coordinator when an actor's loop ends.
#[derive(Debug)]
pub(super) struct ShardEvent {
    pub key: (String, String),
    pub exit: Exit,
}

/// How the coordinator stops an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Run,
    /// Hand over, flush, then stop (hand-over to another process, shutdown).
    Drain,
    /// Stop now (lease lost).
    Abort,
}

/// Stop the actor; answers once its loop has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Stop(pub Mode);

/// Owns one leased shard.
pub struct ShardActor {
    state: Option<ShardState>,
    mode: watch::Sender<Mode>,
    done: watch::Receiver<bool>,
    done_tx: Option<watch::Sender<bool>>,
}

impl ShardActor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        spec: ShardSpec,
        client: Client,
        cfg: Arc<KinesisConfig>,
        max_record_bytes: usize,
        writers: Arc<Writers>,
        stats: Arc<RunStats>,
        valid_until: Arc<AtomicU64>,
        events: mpsc::UnboundedSender<ShardEvent>,
    ) -> Self {
        let (mode, _) = watch::channel(Mode::Run);
        let (done_tx, done) = watch::channel(false);
        let m = metrics();
        let key = SourceKey::new(SourceKind::Kinesis, &spec.stream, &spec.shard);
        let off = |p: &Option<Position>| match p {
            Some(Position::Sequence(s)) => Some(s.clone()),
            _ => None,
        };
        let state = ShardState {
            consumed: m
                .records_consumed
                .with_label_values(&[SOURCE, &spec.stream, &spec.shard]),
            consumed_bytes: m.consumed_bytes.with_label_values(&[SOURCE, &spec.stream]),
            behind: m.millis_behind.with_label_values(&[&spec.stream, &spec.shard]),
            dead_letter_table: crate::sink::table_name(spec.kind, true),
            done: [off(&spec.positions[0]), off(&spec.positions[1])],
            expect: spec.positions.clone(),
            clean: CleanBatchBuilder::new(spec.kind),
            dead: DeadLetterBatchBuilder::default(),
            last_seq: None,
            since: None,
            rng: StdRng::seed_from_u64(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(7, |d| d.as_nanos() as u64)
                    ^ std::process::id() as u64,
            ),
            key,
            spec,
            client,
            cfg,
            max_record_bytes,
            writers,
            stats,
            valid_until,
            events,
        };
        Self {
            state: Some(state),
            mode,
            done,
            done_tx: Some(done_tx),
        }
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(st), Some(done)) = (self.state.take(), self.done_tx.take()) else {
            return;
        };
        let mode = self.mode.subscribe();
        ctx.spawn(
            async move {
                let key = (st.spec.stream.clone(), st.spec.shard.clone());
                let events = st.events.clone();
                let exit = st.run(mode).await;
                tracing::info!(stream = %key.0, shard = %key.1, ?exit, "shard actor stopped");
                let _ = done.send(true);
                let _ = events.send(ShardEvent { key, exit });
            }
            .into_actor(self),
        );
    }
}

impl Handler<Stop> for ShardActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, m: Stop, _: &mut Context<Self>) -> Self::Result {
        let _ = self.mode.send(m.0);
        let mut done = self.done.clone();
        Box::pin(async move {
            let _ = done.wait_for(|d| *d).await;
        })
    }
}

struct ShardState {
    spec: ShardSpec,
    key: SourceKey,
    client: Client,
    cfg: Arc<KinesisConfig>,
    max_record_bytes: usize,
    writers: Arc<Writers>,
    stats: Arc<RunStats>,
    valid_until: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<ShardEvent>,
    /// Last sequence number in the (clean, dead-letter) table.
    done: [Option<String>; 2],
    /// What each table holds before our buffered appends (compare-and-set input).
    expect: [Option<Position>; 2],
    clean: CleanBatchBuilder,
    dead: DeadLetterBatchBuilder,
    /// Sequence number of the last record read.
    last_seq: Option<String>,
    since: Option<Instant>,
    rng: StdRng,
    consumed: prometheus::IntCounter,
    consumed_bytes: prometheus::IntCounter,
    behind: prometheus::IntGauge,
    dead_letter_table: String,
}

/// What a failed call means for the loop.
enum CallError {
    /// Throttled or a transient failure: back off and retry.
    Retry(String),
    /// The iterator expired: get a new one.
    Expired,
    /// The shard or stream is gone, or access is denied: stop.
    Fatal(String),
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: &aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> CallError {
    use aws_sdk_kinesis::error::SdkError;
    let code = e.code().unwrap_or("").to_string();
    let label = if code.is_empty() {
        match e {
            SdkError::TimeoutError(_) => "Timeout".to_string(),
            SdkError::DispatchFailure(_) => "Dispatch".to_string(),
            SdkError::ResponseError(_) => "Response".to_string(),
            _ => "Other".to_string(),
        }
    } else {
        code.clone()
    };
    metrics().source_errors.with_label_values(&[SOURCE, &label]).inc();
    let status = match e {
        SdkError::ServiceError(s) => s.raw().status().as_u16(),
        _ => 0,
    };
    match code.as_str() {
        "ExpiredIteratorException" => CallError::Expired,
        "ResourceNotFoundException" | "AccessDeniedException" | "InvalidArgumentException" => {
            CallError::Fatal(format!("{label}: {}", e.message().unwrap_or("")))
        }
        _ if status != 0 && status < 500 && !is_throttle(&code) => {
            CallError::Fatal(format!("{label} (HTTP {status}): {}", e.message().unwrap_or("")))
        }
        _ => CallError::Retry(label),
    }
}

fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
    )
}

impl ShardState {
    fn lease_valid(&self) -> bool {
        now_ms() < self.valid_until.load(Ordering::Acquire)
    }

    fn start(&self) -> (ShardIteratorType, Option<String>) {
        if let Some(seq) = &self.last_seq {
            return (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()));
        }
        match &self.done {
            [Some(a), Some(b)] => {
                let low = if seq_cmp(a, b).is_le() { a } else { b };
                (ShardIteratorType::AfterSequenceNumber, Some(low.clone()))
            }
            [None, None] if self.cfg.initial_position == "latest" && !self.spec.has_parent => {
                (ShardIteratorType::Latest, None)
            }
            _ => (ShardIteratorType::TrimHorizon, None),
        }
    }

    async fn iterator(&mut self, mode: &mut watch::Receiver<Mode>) -> Result<Option<String>, Exit> {
        let mut attempt = 0u32;
        loop {
            let (kind, seq) = self.start();
            let r = self
                .client
                .get_shard_iterator()
                .stream_name(&self.spec.stream)
                .shard_id(&self.spec.shard)
                .shard_iterator_type(kind)
                .set_starting_sequence_number(seq)
                .send()
                .await;
            match r {
                Ok(o) => return Ok(o.shard_iterator().map(str::to_string)),
                Err(e) => match classify(&e) {
                    CallError::Fatal(m) => return Err(Exit::Failed(m)),
                    CallError::Retry(_) | CallError::Expired => {
                        attempt += 1;
                        self.backoff(attempt, mode).await?;
                    }
                },
            }
        }
    }

    /// Sleeps the backoff of `attempt` (full jitter over an exponential cap); returns
    /// early with the exit a stop request asks for.
    async fn backoff(&mut self, attempt: u32, mode: &mut watch::Receiver<Mode>) -> Result<(), Exit> {
        let cap = (self.cfg.backoff_base_ms << attempt.min(16)).min(self.cfg.backoff_max_ms);
        let ms = self.rng.random_range(cap / 2..=cap.max(1));
        self.pause(Duration::from_millis(ms), mode).await
    }

    /// Sleeps, waking for a stop request.
    async fn pause(&mut self, d: Duration, mode: &mut watch::Receiver<Mode>) -> Result<(), Exit> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = mode.changed() => self.stop_requested(*mode.borrow()).await,
        }
    }

    async fn stop_requested(&mut self, m: Mode) -> Result<(), Exit> {
        match m {
            Mode::Run => Ok(()),
            Mode::Abort => Err(Exit::Aborted),
            Mode::Drain => {
                if let Err(e) = self.finish().await {
                    return Err(self.writer_exit(e));
                }
                Err(Exit::Drained)
            }
        }
    }

    fn writer_exit(&self, e: WriterError) -> Exit {
        match e {
            WriterError::Fenced { .. } | WriterError::OutOfOrder { .. } => Exit::Fenced,
            e => Exit::Failed(e.to_string()),
        }
    }

    /// Hands everything over and flushes the writers: the positions are committed.
    async fn finish(&mut self) -> Result<(), WriterError> {
        if !self.lease_valid() {
            return Ok(());
        }
        self.hand_over().await?;
        self.writers.flush_all().await?;
        Ok(())
    }

    async fn run(mut self, mut mode: watch::Receiver<Mode>) -> Exit {
        match self.read(&mut mode).await {
            Ok(()) => Exit::Finished,
            Err(exit) => exit,
        }
    }

    async fn read(&mut self, mode: &mut watch::Receiver<Mode>) -> Result<(), Exit> {
        let cfg = self.cfg.clone();
        let min_interval = Duration::from_millis(cfg.min_call_interval_ms);
        let mut iterator = self.iterator(mode).await?;
        let mut next_call = Instant::now();
        let mut attempt = 0u32;
        loop {
            let m = *mode.borrow_and_update();
            self.stop_requested(m).await?;
            if !self.lease_valid() {
                return Err(Exit::LeaseLost);
            }
            let Some(it) = iterator.clone() else {
                // A closed shard read to its end: commit, then the children may start.
                if let Err(e) = self.finish().await {
                    return Err(self.writer_exit(e));
                }
                if !self.lease_valid() {
                    return Err(Exit::LeaseLost);
                }
                return Ok(());
            };
            let wait = next_call.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                self.pause(wait, mode).await?;
            }
            if self.due() {
                self.hand_over().await.map_err(|e| self.writer_exit(e))?;
            }
            let r = self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(cfg.max_records_per_call)
                .send()
                .await;
            let out = match r {
                Ok(o) => o,
                Err(e) => {
                    match classify(&e) {
                        CallError::Fatal(m) => return Err(Exit::Failed(m)),
                        CallError::Expired => iterator = self.iterator(mode).await?,
                        CallError::Retry(code) => {
                            attempt += 1;
                            if is_throttle(&code) {
                                metrics()
                                    .kinesis_throttles
                                    .with_label_values(&[&self.spec.stream])
                                    .inc();
                            }
                            tracing::debug!(shard = %self.spec.shard, %code, attempt, "GetRecords failed; backing off");
                            self.backoff(attempt, mode).await?;
                        }
                    }
                    continue;
                }
            };
            attempt = 0;
            if !self.lease_valid() {
                // The records of this call may already belong to the next owner.
                return Err(Exit::LeaseLost);
            }
            if let Some(ms) = out.millis_behind_latest() {
                self.behind.set(ms);
            }
            let bytes = self.ingest(out.records());
            // AWS allows 5 calls/s and 2 MB/s per shard: space the calls accordingly.
            let mut gap = min_interval.max(Duration::from_secs_f64(
                bytes as f64 / cfg.max_read_bytes_per_sec.max(1) as f64,
            ));
            if out.records().is_empty() {
                gap = gap.max(Duration::from_millis(cfg.idle_ms));
            }
            next_call = Instant::now() + gap;
            iterator = out.next_shard_iterator().map(str::to_string);
            if self.clean.len() + self.dead.len() >= cfg.batch_rows {
                self.hand_over().await.map_err(|e| self.writer_exit(e))?;
            }
        }
    }

    fn due(&self) -> bool {
        self.since
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.cfg.batch_age_ms))
    }

    /// Cleans records into the builders; returns their payload bytes.
    fn ingest(&mut self, records: &[aws_sdk_kinesis::types::Record]) -> u64 {
        if records.is_empty() {
            return 0;
        }
        let lineage = Lineage {
            source: SOURCE,
            stream: &self.spec.stream,
            partition: &self.spec.shard,
            ingested_at: chrono::Utc::now().timestamp_micros(),
        };
        let (mut n, mut bytes) = (0u64, 0u64);
        for r in records {
            let seq = r.sequence_number();
            let raw = r.data().as_ref();
            n += 1;
            bytes += raw.len() as u64;
            let after = |d: &Option<String>| d.as_deref().is_none_or(|d| seq_cmp(seq, d).is_gt());
            match clean::clean(self.spec.kind, raw, self.max_record_bytes) {
                Ok(row) if after(&self.done[0]) => {
                    self.clean.append(&row, &lineage, seq);
                }
                Err(reject) if after(&self.done[1]) => {
                    metrics()
                        .dead_letters
                        .with_label_values(&[self.dead_letter_table.as_str(), reject.rule()])
                        .inc();
                    self.dead.append(&lineage, seq, &reject.to_string(), raw);
                }
                _ => {
                    self.stats.filtered.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.stats.records.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(last) = records.last() {
            self.last_seq = Some(last.sequence_number().to_string());
        }
        self.consumed.inc_by(n);
        self.consumed_bytes.inc_by(bytes);
        self.since.get_or_insert_with(Instant::now);
        bytes
    }

    /// Sends buffered rows (and the shard's position) to both tables' writers.
    async fn hand_over(&mut self) -> Result<(), WriterError> {
        let Some(last) = self.last_seq.clone() else {
            return Ok(());
        };
        if !self.lease_valid() {
            // Not ours to commit any more; the next owner reads these records again.
            return Ok(());
        }
        let batches = [
            (!self.clean.is_empty()).then(|| self.clean.finish()),
            (!self.dead.is_empty()).then(|| self.dead.finish()),
        ];
        for (i, batch) in batches.into_iter().enumerate() {
            let end = Position::Sequence(last.clone());
            let behind = self.done[i].as_deref().is_some_and(|d| seq_cmp(&last, d).is_le());
            if self.expect[i].as_ref() == Some(&end) || behind {
                continue;
            }
            let msg = Append {
                key: self.key.clone(),
                expect: self.expect[i].clone(),
                end: end.clone(),
                batch,
            };
            self.writers
                .get(self.spec.kind, i == 1)
                .send(msg)
                .await
                .map_err(|_| WriterError::Stopped)??;
            self.expect[i] = Some(end);
        }
        self.since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically() {
        let a = "49590338271490256608559692538361571095921575989136588898";
        let b = "49590338271490256608559692538361571095921575989136588899";
        assert_eq!(seq_cmp(a, b), CmpOrdering::Less);
        assert_eq!(seq_cmp("9", "10"), CmpOrdering::Less);
        assert_eq!(seq_cmp("0010", "10"), CmpOrdering::Equal);
        assert_eq!(seq_cmp(b, "9"), CmpOrdering::Greater);
    }
}
