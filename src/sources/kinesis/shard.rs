//! [`ShardActor`]: owns one leased shard, reads it with GetRecords, routes the records
//! ([`Router`]) and hands rows to the table writers with the shard's sequence numbers as
//! their positions.
//!
//! Its work arrives as messages: [`Fetch`] is one step of the read loop (the actor sends
//! itself the next one after the pause the step asks for), [`Stop`] ends it. A step never
//! sleeps inside the actor, so a stop is handled as soon as the step in flight is done.
//!
//! - **Resume** from the tables: `AFTER_SEQUENCE_NUMBER` the lower of the clean and
//!   dead-letter tables' positions ([`resume`]); a shard without positions starts at
//!   `TRIM_HORIZON`, or `LATEST` when configured and the shard has no parent (a child's
//!   records must never be skipped).
//! - **Limits**: at most 5 GetRecords calls/s and 2 MB/s per shard (AWS's read limits,
//!   configurable), an idle pause when a call returns nothing, and on throttling or a
//!   transient failure an exponential backoff with jitter ([`Backoff`]). SDK retries are
//!   off for this client, so every throttle is seen (and counted) here.
//! - **Lease**: before every call and every hand-over the actor checks its lease is still
//!   valid (renewed recently enough by the coordinator); if not, it stops without handing
//!   anything over: the next owner reads those records again.
//! - **Shard end** (a closed parent): the last rows are handed over and the writers flush,
//!   so the shard's final positions are committed before the coordinator marks the lease
//!   finished and lets the children start.
//! - **Enhanced fan-out** (`kinesis.enhanced_fan_out`): the same steps, but each waits for
//!   the next event a SubscribeToShard subscription pushes instead of calling GetRecords.
//!   A subscription ends after 5 minutes (or on a dropped connection); the next one starts
//!   after the last record read, so nothing is skipped or read twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use aws_sdk_kinesis::primitives::event_stream::EventReceiver;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{Record, ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;

use super::client::{classify, classify_event, is_throttle, CallError};
use super::KinesisConfig;
use crate::actors::Shared;
use crate::backoff::Backoff;
use crate::clean::{Kind, RecordMeta};
use crate::metrics::{KinesisMetrics, PartitionMetrics, ShardLag, SourceMetrics};
use crate::shutdown::Shutdown;
use crate::sink::{PerTable, Position, SourceKey, SourceKind, WriterError, Writers};
use crate::sources::partition::{resume, Resume, Router, RunStats};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on this process's monotonic clock (lease deadlines).
pub(super) fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What to read.
#[derive(Debug, Clone)]
pub(super) struct ShardSpec {
    pub stream: String,
    pub shard: String,
    pub kind: Kind,
    pub has_parent: bool,
    /// Positions in the shard's tables when the lease was taken.
    pub stored: PerTable<Option<Position>>,
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

/// Sent to the coordinator when an actor ends.
#[derive(Debug)]
pub(super) struct ShardEvent {
    pub key: (String, String),
    pub exit: Exit,
}

/// How the coordinator stops an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Hand over, flush, then stop (hand-over to another process, shutdown).
    Drain,
    /// Stop now (lease lost).
    Abort,
}

/// Stop the actor; answered once it has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Stop(pub Mode);

/// One step of the read loop.
#[derive(Message)]
#[rtype(result = "()")]
struct Fetch;

/// What the actor needs besides its shard.
#[derive(Clone)]
pub(super) struct ShardEnv {
    pub client: Client,
    pub cfg: Arc<KinesisConfig>,
    pub max_record_bytes: usize,
    pub writers: Arc<Writers>,
    pub stats: Arc<RunStats>,
    pub events: mpsc::UnboundedSender<ShardEvent>,
    pub shutdown: Shutdown,
    pub source: SourceMetrics,
    /// Enhanced fan-out: each stream's consumer ARN; empty when polling.
    pub consumers: Arc<std::collections::BTreeMap<String, String>>,
}

/// A SubscribeToShard subscription's events.
type Subscription = EventReceiver<SubscribeToShardEventStream, SubscribeToShardEventStreamError>;

/// Where the read loop stands in the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// A new iterator is needed (at the start, or after one expired).
    Unknown,
    At(String),
    /// The shard is closed and read to its end.
    Closed,
}

/// What a step asks for next.
enum Next {
    /// The next step after this pause.
    After(Duration),
    /// No more steps until told (shutdown started: the coordinator drains the actor).
    Idle,
    Exit(Exit),
}

struct ShardState {
    spec: ShardSpec,
    env: ShardEnv,
    router: Router,
    /// Read by the actor before every call: the lease's deadline on [`now_ms`]'s clock.
    valid_until: Arc<AtomicU64>,
    cursor: Cursor,
    /// Enhanced fan-out: the open subscription, if any.
    subscription: Option<Subscription>,
    /// Sequence number of the last record read.
    last_seq: Option<String>,
    backoff: Backoff,
    metrics: PartitionMetrics,
    behind: ShardLag,
}

/// Owns one leased shard.
pub struct ShardActor {
    state: Shared<ShardState>,
    key: (String, String),
    events: mpsc::UnboundedSender<ShardEvent>,
    /// Set once the actor reported how it ended.
    ended: bool,
}

impl ShardActor {
    pub(super) fn new(spec: ShardSpec, env: ShardEnv, valid_until: Arc<AtomicU64>) -> Self {
        let key = SourceKey::new(SourceKind::Kinesis, &spec.stream, &spec.shard);
        let cfg = &env.cfg;
        let state = ShardState {
            router: Router::new(
                spec.kind,
                key,
                spec.stored.clone(),
                env.writers.roles(),
                env.max_record_bytes,
            ),
            metrics: env.source.partition(&spec.stream, &spec.shard),
            behind: KinesisMetrics.behind(&spec.stream, &spec.shard),
            backoff: Backoff::new(
                Duration::from_millis(cfg.backoff_base_ms),
                Duration::from_millis(cfg.backoff_max_ms),
            ),
            valid_until,
            cursor: Cursor::Unknown,
            subscription: None,
            last_seq: None,
            spec,
            env,
        };
        Self {
            key: (state.spec.stream.clone(), state.spec.shard.clone()),
            events: state.env.events.clone(),
            state: Shared::new(state),
            ended: false,
        }
    }

    /// Reports how the actor ended and stops it.
    fn end(&mut self, exit: Exit, ctx: &mut Context<Self>) {
        if !self.ended {
            self.ended = true;
            tracing::info!(stream = %self.key.0, shard = %self.key.1, ?exit, "shard actor stopped");
            let _ = self.events.send(ShardEvent {
                key: self.key.clone(),
                exit,
            });
        }
        ctx.stop();
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Fetch);
    }
}

impl Handler<Fetch> for ShardActor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, _: Fetch, _: &mut Context<Self>) -> Self::Result {
        self.state.run_then(
            self,
            |st| Box::pin(st.step()),
            |next, act: &mut Self, ctx| match next {
                Next::After(d) if !act.ended => {
                    ctx.notify_later(Fetch, d);
                }
                Next::After(_) | Next::Idle => {}
                Next::Exit(exit) => act.end(exit, ctx),
            },
        )
    }
}

impl Handler<Stop> for ShardActor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, m: Stop, _: &mut Context<Self>) -> Self::Result {
        self.state.run_then(
            self,
            move |st| {
                Box::pin(async move {
                    match m.0 {
                        Mode::Abort => Exit::Aborted,
                        Mode::Drain => match st.finish().await {
                            Ok(()) => Exit::Drained,
                            Err(e) => writer_exit(e),
                        },
                    }
                })
            },
            |exit, act: &mut Self, ctx| act.end(exit, ctx),
        )
    }
}

fn writer_exit(e: WriterError) -> Exit {
    match e {
        WriterError::Fenced { .. } | WriterError::OutOfOrder { .. } => Exit::Fenced,
        e => Exit::Failed(e.to_string()),
    }
}

impl ShardState {
    fn lease_valid(&self) -> bool {
        now_ms() < self.valid_until.load(Ordering::Acquire)
    }

    /// Where a new iterator starts.
    fn start(&self) -> (ShardIteratorType, Option<String>) {
        if let Some(seq) = &self.last_seq {
            return (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()));
        }
        match resume(&self.spec.stored, self.env.writers.roles()) {
            Resume::From(Position::Sequence(low)) => (ShardIteratorType::AfterSequenceNumber, Some(low)),
            Resume::New if self.env.cfg.initial_position == "latest" && !self.spec.has_parent => {
                (ShardIteratorType::Latest, None)
            }
            _ => (ShardIteratorType::TrimHorizon, None),
        }
    }

    /// One step: a GetRecords call (or what must come first), its records routed.
    async fn step(&mut self) -> Next {
        if self.env.shutdown.is_triggered() {
            return Next::Idle;
        }
        if !self.lease_valid() {
            return Next::Exit(Exit::LeaseLost);
        }
        if self.env.writers.stalled(self.spec.kind) {
            // A table of this kind is stalled: read nothing more until it recovers
            // (backpressure); the lease stays ours and what was read waits here.
            return Next::After(Duration::from_millis(self.env.cfg.idle_ms.max(100)));
        }
        if let Some(consumer) = self.env.consumers.get(&self.spec.stream).cloned() {
            return self.push_step(consumer).await;
        }
        let it = match self.cursor.clone() {
            Cursor::Unknown => return self.new_iterator().await,
            Cursor::Closed => return self.shard_end().await,
            Cursor::At(it) => it,
        };
        if self.due() {
            if let Err(e) = self.hand_over().await {
                return Next::Exit(writer_exit(e));
            }
        }
        let cfg = self.env.cfg.clone();
        let r = self
            .env
            .client
            .get_records()
            .shard_iterator(it)
            .limit(cfg.max_records_per_call)
            .send()
            .await;
        let out = match r {
            Ok(o) => o,
            Err(e) => return self.failed(classify(&e, &self.env.source)),
        };
        self.backoff.reset();
        if !self.lease_valid() {
            // The records of this call may already belong to the next owner.
            return Next::Exit(Exit::LeaseLost);
        }
        if let Some(ms) = out.millis_behind_latest() {
            self.behind.set(ms);
        }
        let bytes = self.ingest(out.records());
        self.cursor = match out.next_shard_iterator() {
            Some(next) => Cursor::At(next.to_string()),
            None => Cursor::Closed,
        };
        if self.router.buffered() >= cfg.batch_rows {
            if let Err(e) = self.hand_over().await {
                return Next::Exit(writer_exit(e));
            }
        }
        // AWS allows 5 calls/s and 2 MB/s per shard: space the calls accordingly.
        let mut gap = Duration::from_millis(cfg.min_call_interval_ms).max(Duration::from_secs_f64(
            bytes as f64 / cfg.max_read_bytes_per_sec.max(1) as f64,
        ));
        if out.records().is_empty() {
            gap = gap.max(Duration::from_millis(cfg.idle_ms));
        }
        Next::After(gap)
    }

    /// One step with enhanced fan-out: subscribe when no subscription is open, else wait
    /// (briefly, so a stop or a due hand-over is not held up) for its next event.
    async fn push_step(&mut self, consumer: String) -> Next {
        if self.cursor == Cursor::Closed {
            return self.shard_end().await;
        }
        if self.due() {
            if let Err(e) = self.hand_over().await {
                return Next::Exit(writer_exit(e));
            }
        }
        let Some(sub) = self.subscription.as_mut() else {
            return self.subscribe(consumer).await;
        };
        let wait = Duration::from_millis(self.env.cfg.batch_age_ms.clamp(50, 1_000));
        let event = match tokio::time::timeout(wait, sub.recv()).await {
            // Nothing pushed yet.
            Err(_) => return Next::After(Duration::ZERO),
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev)))) => ev,
            // An event type this build does not know: nothing to read in it.
            Ok(Ok(Some(_))) => return Next::After(Duration::ZERO),
            // The subscription's 5 minutes are up: the next step subscribes again.
            Ok(Ok(None)) => {
                self.subscription = None;
                return Next::After(Duration::ZERO);
            }
            Ok(Err(e)) => {
                self.subscription = None;
                return self.failed(classify_event(&e, &self.env.source));
            }
        };
        self.backoff.reset();
        if !self.lease_valid() {
            // The records of this event may already belong to the next owner.
            return Next::Exit(Exit::LeaseLost);
        }
        self.behind.set(event.millis_behind_latest());
        self.ingest(event.records());
        // No continuation: the shard is closed and this was its last event.
        if event.continuation_sequence_number().is_empty() {
            self.subscription = None;
            self.cursor = Cursor::Closed;
        }
        if self.router.buffered() >= self.env.cfg.batch_rows {
            if let Err(e) = self.hand_over().await {
                return Next::Exit(writer_exit(e));
            }
        }
        Next::After(Duration::ZERO)
    }

    /// Opens a subscription after the last record read (or where the tables say), not at
    /// the events' continuation number: that number may point past a record not pushed yet
    /// in some servers' reading, and starting after a record already held can never skip.
    async fn subscribe(&mut self, consumer: String) -> Next {
        let (kind, seq) = self.start();
        let position = match StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(seq)
            .build()
        {
            Ok(p) => p,
            Err(e) => return Next::Exit(Exit::Failed(format!("SubscribeToShard starting position: {e}"))),
        };
        let r = self
            .env
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer)
            .shard_id(&self.spec.shard)
            .starting_position(position)
            .send()
            .await;
        match r {
            Ok(out) => {
                KinesisMetrics.subscribed(&self.spec.stream);
                tracing::debug!(stream = %self.spec.stream, shard = %self.spec.shard, after = ?self.last_seq, "subscribed to shard");
                self.subscription = Some(out.event_stream);
                Next::After(Duration::ZERO)
            }
            Err(e) => self.failed(classify(&e, &self.env.source)),
        }
    }

    async fn new_iterator(&mut self) -> Next {
        let (kind, seq) = self.start();
        let r = self
            .env
            .client
            .get_shard_iterator()
            .stream_name(&self.spec.stream)
            .shard_id(&self.spec.shard)
            .shard_iterator_type(kind)
            .set_starting_sequence_number(seq)
            .send()
            .await;
        match r {
            Ok(o) => {
                self.backoff.reset();
                self.cursor = o.shard_iterator().map_or(Cursor::Closed, |i| Cursor::At(i.to_string()));
                Next::After(Duration::ZERO)
            }
            Err(e) => self.failed(classify(&e, &self.env.source)),
        }
    }

    /// A failed GetRecords, SubscribeToShard or subscription event stream.
    fn failed(&mut self, e: CallError) -> Next {
        match e {
            CallError::Fatal(m) => Next::Exit(Exit::Failed(m)),
            CallError::Expired => {
                self.cursor = Cursor::Unknown;
                Next::After(Duration::ZERO)
            }
            CallError::Retry(code) => {
                if is_throttle(&code) {
                    KinesisMetrics.throttled(&self.spec.stream);
                }
                let pause = self.backoff.next_pause();
                tracing::debug!(stream = %self.spec.stream, shard = %self.spec.shard, error = %code, attempt = self.backoff.attempts(), "read failed; backing off");
                Next::After(pause)
            }
        }
    }

    /// A closed shard read to its end: commit, then the children may start.
    async fn shard_end(&mut self) -> Next {
        if let Err(e) = self.finish().await {
            return Next::Exit(writer_exit(e));
        }
        if !self.lease_valid() {
            return Next::Exit(Exit::LeaseLost);
        }
        Next::Exit(Exit::Finished)
    }

    fn due(&self) -> bool {
        self.router
            .read_at()
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.env.cfg.batch_age_ms))
    }

    /// Routes records into the rows of their tables; returns their payload bytes.
    fn ingest(&mut self, records: &[Record]) -> u64 {
        let Some(last) = records.last() else { return 0 };
        let now = chrono::Utc::now().timestamp_micros();
        let mut bytes = 0u64;
        for r in records {
            let seq = r.sequence_number();
            let raw = r.data().as_ref();
            bytes += raw.len() as u64;
            let meta = RecordMeta {
                key: r.partition_key().map(str::as_bytes),
                timestamp_us: r
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .map(|ms| ms * 1000),
            };
            // Kinesis positions are the last sequence number a table holds; a KPL aggregate
            // is split into its user records here.
            let tally = self.router.route_kinesis(raw, meta, seq, now);
            self.env.stats.count_tally(tally);
        }
        self.last_seq = Some(last.sequence_number().to_string());
        self.metrics.consumed(records.len() as u64, bytes);
        bytes
    }

    /// Sends routed rows (and the shard's position) to the writers, while the lease is
    /// ours; after it lapsed, the next owner reads these records again.
    async fn hand_over(&mut self) -> Result<(), WriterError> {
        if !self.lease_valid() {
            return Ok(());
        }
        match self.router.send(&self.env.writers).await {
            // A stalled table kept the rows; `step` reads no more until it recovers.
            Ok(()) | Err(WriterError::Stalled { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Hands everything over and flushes the writers of the shard's kind: the positions
    /// are committed (or the error says why not).
    async fn finish(&mut self) -> Result<(), WriterError> {
        if !self.lease_valid() {
            return Ok(());
        }
        self.hand_over().await?;
        self.env.writers.flush_kind(self.spec.kind).await?;
        Ok(())
    }
}
