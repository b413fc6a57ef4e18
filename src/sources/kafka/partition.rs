//! [`PartitionActor`]: owns one assigned partition. The dispatcher hands it each poll's
//! records of its partition ([`Records`]); it routes them ([`Router`]) and hands rows over
//! to the writers every `kafka.batch_rows` rows or `kafka.batch_age_ms`. [`Drain`] hands
//! everything over now (a revoke, the end of the run); the actor stops once the
//! dispatcher drops its address.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::Shared;
use crate::clean::{Kind, RecordMeta};
use crate::metrics::PartitionMetrics;
use crate::sink::{PerTable, Position, SourceKey, SourceKind, WriterError, Writers};
use crate::sources::partition::{Router, RunStats, Tally};

/// A message as fetched: what the tables keep of it. Its payload and key are ranges of
/// its [`Fetched`] buffer.
pub(super) struct FetchedRecord {
    pub offset: i64,
    pub payload: Option<Range<usize>>,
    pub key: Option<Range<usize>>,
    pub timestamp_ms: Option<i64>,
}

/// One poll's records of one partition, in offset order. The payloads and keys are copied
/// once out of librdkafka's buffers (which the consumer owns) into one buffer per poll:
/// one allocation per partition and poll instead of one or two per message.
#[derive(Default)]
pub(super) struct Fetched {
    bytes: Vec<u8>,
    records: Vec<FetchedRecord>,
}

impl Fetched {
    pub fn push(&mut self, offset: i64, payload: Option<&[u8]>, key: Option<&[u8]>, timestamp_ms: Option<i64>) {
        let mut keep = |b: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            start..self.bytes.len()
        };
        let payload = payload.map(&mut keep);
        let key = key.map(&mut keep);
        self.records.push(FetchedRecord {
            offset,
            payload,
            key,
            timestamp_ms,
        });
    }
}

/// Records of one partition, in offset order. The reply says whether the actor still
/// holds records it has not handed over (the dispatcher then visits it again by age).
#[derive(Message)]
#[rtype(result = "Result<bool, WriterError>")]
pub(super) struct Records(pub Fetched);

/// Hand everything buffered to the writers now.
#[derive(Message)]
#[rtype(result = "Result<(), WriterError>")]
pub(super) struct Drain;

/// What a partition actor needs besides its partition.
#[derive(Clone)]
pub(super) struct PartitionEnv {
    pub writers: Arc<Writers>,
    pub stats: Arc<RunStats>,
    pub max_record_bytes: usize,
    pub batch_rows: usize,
    pub batch_age: Duration,
    /// Records the process's partition actors hold, together, and the bound past which
    /// each hands over at its next poll (`kafka.held_records`).
    pub held: Arc<AtomicUsize>,
    pub held_records: usize,
}

struct PartitionState {
    router: Router,
    env: PartitionEnv,
    metrics: PartitionMetrics,
    /// Records read and not handed over yet (this actor's share of `env.held`).
    held: usize,
    offset_text: itoa::Buffer,
}

impl PartitionState {
    fn ingest(&mut self, fetched: Fetched) {
        if fetched.records.is_empty() {
            return;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let (mut n, mut bytes) = (0u64, 0u64);
        let buf = &fetched.bytes;
        // Counted once per poll: the run's counters are shared by every worker thread.
        let mut tally = Tally::default();
        for r in fetched.records {
            let raw = r.payload.map_or(&b""[..], |p| &buf[p]);
            n += 1;
            bytes += raw.len() as u64;
            let meta = RecordMeta {
                key: r.key.map(|k| &buf[k]),
                timestamp_us: r.timestamp_ms.map(|ms| ms * 1000),
            };
            // A Kafka record's mark is the next offset: what the table stores once it is in.
            let position = self.offset_text.format(r.offset);
            let routed = self
                .router
                .route(raw, meta, Position::Offset(r.offset + 1), position, now);
            tally.add(routed);
        }
        self.env.stats.count_tally(tally);
        self.metrics.consumed(n, bytes);
        self.held += n as usize;
        self.env.held.fetch_add(n as usize, Ordering::Relaxed);
    }

    /// Time to hand over: enough rows or old enough, and the kind's tables are not stalled
    /// (until they recover the rows wait here; the dispatcher paused the partition).
    fn due(&self) -> bool {
        let ready = self.router.buffered() >= self.env.batch_rows
            || self.router.read_at().is_some_and(|t| t.elapsed() >= self.env.batch_age)
            || (self.held > 0 && self.env.held.load(Ordering::Relaxed) >= self.env.held_records);
        ready && !self.env.writers.stalled(self.router.kind())
    }

    /// Records read and not handed over yet.
    fn holding(&self) -> bool {
        self.router.read_at().is_some()
    }

    async fn hand_over(&mut self) -> Result<(), WriterError> {
        let sent = self.router.send(&self.env.writers).await;
        // Handed over (the router's read time with them), also to a stalled table (which
        // keeps them).
        self.release();
        sent
    }

    fn release(&mut self) {
        self.env.held.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for PartitionState {
    /// A revoked actor's records are read again by the next owner: no longer held here.
    fn drop(&mut self) {
        self.release();
    }
}

/// Owns one assigned partition.
pub struct PartitionActor {
    state: Shared<PartitionState>,
    topic: String,
    partition: i32,
}

impl PartitionActor {
    /// An actor for `topic`'s `partition` of `kind`, whose tables store `stored`.
    pub(super) fn new(
        kind: Kind,
        topic: &str,
        partition: i32,
        stored: PerTable<Option<Position>>,
        env: PartitionEnv,
        metrics: PartitionMetrics,
    ) -> Self {
        tracing::info!(%topic, partition, ?stored, "partition actor started");
        let key = SourceKey::new(SourceKind::Kafka, topic, partition.to_string());
        let state = PartitionState {
            router: Router::new(kind, key, stored, env.writers.roles(), env.max_record_bytes),
            env,
            metrics,
            held: 0,
            offset_text: itoa::Buffer::new(),
        };
        Self {
            state: Shared::new(state),
            topic: topic.to_string(),
            partition,
        }
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(topic = %self.topic, partition = self.partition, "partition actor stopped");
    }
}

impl Handler<Records> for PartitionActor {
    type Result = AtomicResponse<Self, Result<bool, WriterError>>;
    fn handle(&mut self, m: Records, _: &mut Context<Self>) -> Self::Result {
        self.state.run(self, move |st| {
            Box::pin(async move {
                st.ingest(m.0);
                if st.due() {
                    match st.hand_over().await {
                        // A table stalled meanwhile: it kept the rows; no more until it recovers.
                        Ok(()) | Err(WriterError::Stalled { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(st.holding())
            })
        })
    }
}

impl Handler<Drain> for PartitionActor {
    type Result = AtomicResponse<Self, Result<(), WriterError>>;
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.state.run(self, |st| Box::pin(st.hand_over()))
    }
}
