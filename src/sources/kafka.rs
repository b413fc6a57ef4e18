//! Kafka source: a consumer group whose assigned partitions each get a [`PartitionActor`].
//!
//! - The group's committed offsets are **not** trusted for correctness: on assignment a
//!   partition resumes from the positions stored in its kind's clean and dead-letter
//!   tables (the consumer is seeked there), and a record at offset `o` goes to a table
//!   only if `o` is at or beyond that table's position. Records fetched before the seek
//!   takes effect are therefore filtered, never duplicated.
//! - After a Delta commit, the committed offsets are stored to the group (lag tools only).
//! - On revoke, each revoked partition's actor hands its rows to the writers and the
//!   writers commit before the revoke returns; anything the new owner reads was either
//!   committed (its position moved) or not (it re-reads it). The writers' per-key
//!   compare-and-set fences a late commit of a previous owner in any case.
//! - Backpressure: actors reply only after the writers accepted their rows (writers flush
//!   inline when full), and the dispatcher awaits each reply before fetching more.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::client::OAuthToken;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::msk_iam::AuthContext;
use crate::clean::{self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage};
use crate::metrics::{metrics, Health};
use crate::sink::{Append, Position, SourceKey, SourceKind, WriterError, Writers};

/// The `source` label of this source's metrics and lineage.
const SOURCE: &str = "kafka";

/// `[kafka]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Consume the Kafka topics in `pinpipe run`.
    pub enabled: bool,
    pub brokers: String,
    pub group_id: String,
    /// Topics are `<topic_prefix>.pin|geo|user` unless `topics` maps them explicitly.
    pub topic_prefix: String,
    /// Explicit topic -> kind map; empty: derived from `topic_prefix`.
    pub topics: BTreeMap<String, Kind>,
    /// Where a partition with no position in the tables starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Records an actor collects before handing them to the writers.
    pub batch_rows: usize,
    /// An actor hands over a partial batch after this long (milliseconds).
    pub batch_age_ms: u64,
    /// Threads (actix arbiters) the partition actors are spread over.
    pub workers: usize,
    /// Bound of librdkafka's prefetch queue per consumer (`queued.max.messages.kbytes`):
    /// when the writers fall behind, the dispatcher stops polling and fetching stops
    /// once this much is buffered.
    pub fetch_queue_kbytes: usize,
    /// After SIGTERM/SIGINT (or `--stop-after`), how long draining, the last flush and the
    /// offset commit may take before the process gives up and exits non-zero; rows not
    /// committed by then are read again by the next owner. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds`.
    pub shutdown_grace_ms: u64,
    /// AWS region of an Amazon MSK cluster to authenticate to with IAM (SASL/OAUTHBEARER,
    /// a SigV4 token from the standard AWS credential chain); empty: off. Sets
    /// `security.protocol = SASL_SSL` and `sasl.mechanism = OAUTHBEARER`.
    pub msk_iam_region: String,
    /// Passed to librdkafka as is (`security.protocol`, `sasl.mechanism`, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            brokers: "127.0.0.1:9092".into(),
            group_id: "pinpipe".into(),
            topic_prefix: "pinpipe".into(),
            topics: BTreeMap::new(),
            auto_offset_reset: "earliest".into(),
            batch_rows: 8192,
            batch_age_ms: 500,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            fetch_queue_kbytes: 16 * 1024,
            shutdown_grace_ms: 30_000,
            msk_iam_region: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The topic -> kind map in effect.
    pub fn topic_map(&self) -> BTreeMap<String, Kind> {
        if !self.topics.is_empty() {
            return self.topics.clone();
        }
        Kind::ALL
            .iter()
            .map(|k| (format!("{}.{k}", self.topic_prefix), *k))
            .collect()
    }

    /// librdkafka settings shared by consumer and producer.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        super::msk_iam::apply(self, &mut c);
        c
    }
}

/// Errors of the Kafka source.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(
        "shutdown took longer than kafka.shutdown_grace_ms = {0}: gave up; rows not committed yet \
         are read again by the next owner of their partitions"
    )]
    GraceExceeded(u64),
}

/// Totals of a run, shared with progress displays.
#[derive(Debug, Default)]
pub struct RunStats {
    pub records: std::sync::atomic::AtomicU64,
    pub filtered: std::sync::atomic::AtomicU64,
}

// ------------------------------------------------------------------------ partition actor

/// Records of one partition, in offset order.
#[derive(Message)]
#[rtype(result = "Result<(), WriterError>")]
struct Records(Vec<(i64, Option<Vec<u8>>)>);

/// Hand everything buffered to the writers now.
#[derive(Message)]
#[rtype(result = "Result<(), WriterError>")]
struct Drain;

struct PartitionState {
    kind: Kind,
    key: SourceKey,
    partition_label: String,
    /// Positions stored in the clean / dead-letter table (next offset to write there).
    done: [Option<i64>; 2],
    /// What each table holds before our buffered appends (compare-and-set input).
    expect: [Option<Position>; 2],
    clean: CleanBatchBuilder,
    dead: DeadLetterBatchBuilder,
    /// Next offset after the last record seen.
    next: Option<i64>,
    max_bytes: usize,
    batch_rows: usize,
    batch_age: Duration,
    since: Option<Instant>,
    writers: Arc<Writers>,
    stats: Arc<RunStats>,
    consumed: prometheus::IntCounter,
    consumed_bytes: prometheus::IntCounter,
    dead_letter_table: String,
}

impl PartitionState {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        topic: &str,
        partition: i32,
        expect: [Option<Position>; 2],
        cfg: &KafkaConfig,
        max_bytes: usize,
        group: &GroupContext,
        stats: &Arc<RunStats>,
    ) -> Self {
        let off = |p: &Option<Position>| match p {
            Some(Position::Offset(o)) => Some(*o),
            _ => None,
        };
        tracing::info!(%topic, partition, ?expect, "partition actor started");
        let m = metrics();
        let partition_label = partition.to_string();
        Self {
            kind,
            key: SourceKey::new(SourceKind::Kafka, topic, partition.to_string()),
            consumed: m.records_consumed.with_label_values(&[SOURCE, topic, &partition_label]),
            consumed_bytes: m.consumed_bytes.with_label_values(&[SOURCE, topic]),
            dead_letter_table: crate::sink::table_name(kind, true),
            partition_label,
            done: [off(&expect[0]), off(&expect[1])],
            expect,
            clean: CleanBatchBuilder::new(kind),
            dead: DeadLetterBatchBuilder::default(),
            next: None,
            max_bytes,
            batch_rows: cfg.batch_rows,
            batch_age: Duration::from_millis(cfg.batch_age_ms),
            since: None,
            writers: group.writers.clone(),
            stats: stats.clone(),
        }
    }

    fn ingest(&mut self, records: Vec<(i64, Option<Vec<u8>>)>) {
        let lineage_now = chrono::Utc::now().timestamp_micros();
        let stream = self.key.stream.clone();
        let lineage = Lineage {
            source: "kafka",
            stream: &stream,
            partition: &self.partition_label,
            ingested_at: lineage_now,
        };
        let mut pos = itoa::Buffer::new();
        let (mut n, mut bytes) = (0u64, 0u64);
        for (offset, payload) in records {
            let raw = payload.as_deref().unwrap_or(b"");
            n += 1;
            bytes += raw.len() as u64;
            let p = pos.format(offset);
            match clean::clean(self.kind, raw, self.max_bytes) {
                Ok(row) if self.done[0].is_none_or(|d| offset >= d) => {
                    self.clean.append(&row, &lineage, p);
                }
                Err(reject) if self.done[1].is_none_or(|d| offset >= d) => {
                    metrics()
                        .dead_letters
                        .with_label_values(&[self.dead_letter_table.as_str(), reject.rule()])
                        .inc();
                    self.dead.append(&lineage, p, &reject.to_string(), raw)
                }
                _ => {
                    self.stats.filtered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.next = Some(offset + 1);
            self.stats.records.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.consumed.inc_by(n);
        self.consumed_bytes.inc_by(bytes);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Sends buffered rows (and the partition's position) to both tables' writers.
    async fn hand_over(&mut self) -> Result<(), WriterError> {
        let Some(next) = self.next else { return Ok(()) };
        let batches = [
            (!self.clean.is_empty()).then(|| self.clean.finish()),
            (!self.dead.is_empty()).then(|| self.dead.finish()),
        ];
        for (i, batch) in batches.into_iter().enumerate() {
            let end = Position::Offset(next);
            if self.expect[i].as_ref() == Some(&end) || self.done[i].is_some_and(|d| next <= d) {
                continue;
            }
            let msg = Append {
                key: self.key.clone(),
                expect: self.expect[i].clone(),
                end: end.clone(),
                batch,
            };
            self.writers
                .get(self.kind, i == 1)
                .send(msg)
                .await
                .map_err(|_| WriterError::Stopped)??;
            self.expect[i] = Some(end);
        }
        self.since = None;
        Ok(())
    }
}

/// Owns one assigned partition: cleans its records and hands rows to the writers.
pub struct PartitionActor {
    // Locked inside each handler's future (see `TableWriter` for why not take/put).
    state: Rc<tokio::sync::Mutex<PartitionState>>,
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Ok(st) = self.state.try_lock() {
            tracing::info!(topic = %st.key.stream, partition = %st.partition_label, "partition actor stopped");
        }
    }
}

impl PartitionActor {
    fn run<R: 'static>(
        &mut self,
        f: impl for<'a> FnOnce(&'a mut PartitionState) -> futures::future::LocalBoxFuture<'a, R> + 'static,
    ) -> AtomicResponse<Self, R> {
        let state = Rc::clone(&self.state);
        AtomicResponse::new(Box::pin(
            async move { f(&mut *state.lock().await).await }.into_actor(self),
        ))
    }
}

impl Handler<Records> for PartitionActor {
    type Result = AtomicResponse<Self, Result<(), WriterError>>;
    fn handle(&mut self, m: Records, _: &mut Context<Self>) -> Self::Result {
        self.run(move |st| {
            Box::pin(async move {
                st.ingest(m.0);
                let due = st.since.is_some_and(|t| t.elapsed() >= st.batch_age);
                if st.clean.len() + st.dead.len() >= st.batch_rows || due {
                    st.hand_over().await?;
                }
                Ok(())
            })
        })
    }
}

impl Handler<Drain> for PartitionActor {
    type Result = AtomicResponse<Self, Result<(), WriterError>>;
    // A drained actor is done (its partition was revoked or the run is stopping); it stops
    // once its last address is dropped, after this reply.
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.run(|st| Box::pin(st.hand_over()))
    }
}

// ------------------------------------------------------------------------------ the group

type TopicPartition = (String, i32);
type Actors = Mutex<HashMap<TopicPartition, Addr<PartitionActor>>>;
type Fetched = HashMap<TopicPartition, Vec<(i64, Option<Vec<u8>>)>>;

/// What the rebalance callback tells the dispatcher.
#[derive(Debug)]
enum GroupEvent {
    /// Assigned, with the positions stored in the (clean, dead-letter) tables; the
    /// consumer already starts each partition at the lower of the two.
    Assigned(Vec<(TopicPartition, [Option<Position>; 2])>),
    /// The tables could not be read at assignment: stop rather than guess a position.
    Failed(WriterError),
}

/// State shared by the dispatcher and librdkafka's rebalance callback.
struct GroupContext {
    auth: AuthContext,
    topics: BTreeMap<String, Kind>,
    latest_when_new: bool,
    writers: Arc<Writers>,
    actors: Actors,
    events: Mutex<Vec<GroupEvent>>,
    health: Arc<Health>,
    /// Each partition's (low, high) watermarks from librdkafka's statistics (lag gauges).
    watermarks: Mutex<HashMap<TopicPartition, (i64, i64)>>,
}

impl GroupContext {
    fn set_owned(&self, actors: &HashMap<TopicPartition, Addr<PartitionActor>>) {
        metrics()
            .owned_partitions
            .with_label_values(&[SOURCE])
            .set(actors.len() as i64);
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(config)
    }

    // librdkafka's client-wide errors (a broker down, all brokers down, auth failures)
    // arrive here, not at a fetch: counted, so an outage shows in the metrics while the
    // client reconnects on its own.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        count_error(&error);
    }

    // `statistics.interval.ms`: keep each partition's high watermark for the lag gauges.
    fn stats(&self, s: Statistics) {
        let mut marks = self.watermarks.lock().expect("lock");
        for (topic, t) in s.topics {
            for (partition, p) in t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; -1001 an unknown offset.
                if partition >= 0 && p.hi_offset >= 0 {
                    marks.insert((topic.clone(), partition), (p.lo_offset.max(0), p.hi_offset));
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    // Replaces rdkafka's default so that (1) an assignment starts at the positions stored
    // in the Delta tables, set in the assignment itself (no seek that could race the
    // first fetch), and (2) a revoke completes only after the revoked partitions' rows
    // are committed. The callback runs inside the dispatcher's poll; it blocks that
    // task only: partition actors and writers live on arbiters of their own.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = list(tpl);
                match futures::executor::block_on(self.writers.checkpoints()) {
                    Ok(cps) => {
                        let mut assigned = Vec::new();
                        for (topic, partition) in parts {
                            let Some(&kind) = self.topics.get(&topic) else { continue };
                            let key = SourceKey::new(SourceKind::Kafka, topic.clone(), partition.to_string());
                            let stored = |dl: bool| cps.get(&(kind, dl)).and_then(|m| m.get(&key)).cloned();
                            let positions = [stored(false), stored(true)];
                            let start = start_offset(&positions, self.latest_when_new);
                            if let Err(e) = tpl.set_partition_offset(&topic, partition, start) {
                                tracing::warn!(%topic, partition, error = %e, "setting the start offset failed");
                            }
                            tracing::info!(%topic, partition, ?start, "partition assigned");
                            assigned.push(((topic, partition), positions));
                        }
                        self.events.lock().expect("lock").push(GroupEvent::Assigned(assigned));
                        self.health.set_assigned();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading table positions at assignment failed");
                        self.events.lock().expect("lock").push(GroupEvent::Failed(e));
                        return;
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = list(tpl);
                tracing::info!(?parts, "partitions revoked");
                let drained: Vec<Addr<PartitionActor>> = {
                    let mut actors = self.actors.lock().expect("lock");
                    let drained = parts.iter().filter_map(|p| actors.remove(p)).collect();
                    self.set_owned(&actors);
                    drained
                };
                for (topic, partition) in &parts {
                    let _ = metrics()
                        .partition_lag
                        .remove_label_values(&[SOURCE, topic, &partition.to_string()]);
                }
                if !drained.is_empty() {
                    let r = futures::executor::block_on(async {
                        for a in &drained {
                            a.send(Drain).await.map_err(|_| WriterError::Stopped)??;
                        }
                        self.writers.flush_all().await.map(|_| ())
                    });
                    match r {
                        Ok(()) => {
                            for (topic, partition) in &parts {
                                tracing::info!(%topic, partition, "partition released");
                            }
                        }
                        // Nothing was committed past the table positions, so the next owner
                        // re-reads those rows; the writers' compare-and-set fences ours.
                        Err(e) => tracing::error!(error = %e, "flush on revoke failed"),
                    }
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Where a partition resumes: the lower of the two tables' positions; a table without one
/// means from the beginning (its records may be anywhere), or the end when both are new
/// and `auto_offset_reset = "latest"`.
fn start_offset(positions: &[Option<Position>; 2], latest_when_new: bool) -> Offset {
    let off = |p: &Option<Position>| match p {
        Some(Position::Offset(o)) => Some(*o),
        _ => None,
    };
    match [off(&positions[0]), off(&positions[1])] {
        [Some(a), Some(b)] => Offset::Offset(a.min(b)),
        [None, None] if latest_when_new => Offset::End,
        _ => Offset::Beginning,
    }
}

/// Consumes the configured topics until `stop` resolves, then flushes and leaves the group.
pub async fn run(
    cfg: &KafkaConfig,
    max_record_bytes: usize,
    writers: Arc<Writers>,
    stats: Arc<RunStats>,
    health: Arc<Health>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), KafkaSourceError> {
    metrics().init_source(SOURCE);
    let ctx = GroupContext {
        auth: AuthContext::new(cfg),
        topics: cfg.topic_map(),
        latest_when_new: cfg.auto_offset_reset == "latest",
        writers: writers.clone(),
        actors: Mutex::new(HashMap::new()),
        events: Mutex::new(Vec::new()),
        health,
        watermarks: Mutex::new(HashMap::new()),
    };
    let mut client = cfg.client_config();
    if !cfg.properties.contains_key("fetch.queue.backoff.ms") {
        // librdkafka pauses a partition's fetching for this long (default 1 s) whenever the
        // prefetch queue is full; pinpipe drains that queue within milliseconds, so the
        // default left the consumer idle most of the time (65k vs 240k records/s in
        // `cargo bench --bench kafka`).
        client.set("fetch.queue.backoff.ms", "20");
    }
    if !cfg.properties.contains_key("statistics.interval.ms") {
        // The high watermarks behind the lag gauges come from librdkafka's statistics.
        client.set("statistics.interval.ms", "1000");
    }
    let consumer: StreamConsumer<GroupContext> = client
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.auto_offset_reset)
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", cfg.fetch_queue_kbytes.to_string())
        .create_with_context(ctx)?;
    let names: Vec<&str> = consumer.context().topics.keys().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    // Partition actors run on a pool of arbiters (threads): cleaning runs in parallel and
    // never on the thread that blocks in the rebalance callback.
    let workers: Vec<Arbiter> = (0..cfg.workers.max(1)).map(|_| Arbiter::new()).collect();
    // The grace period starts when `stop` resolves and bounds the drain, the last flush
    // and the offset commit; nothing past it is needed for correctness (the next owner
    // resumes from the tables), so giving up only costs re-reading.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        stop.await;
        let _ = stopping.send(());
    };
    let grace = async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(cfg.shutdown_grace_ms)).await;
    };
    let r = tokio::select! {
        r = dispatch(&consumer, cfg, max_record_bytes, &workers, &stats, stop) => r,
        _ = grace => Err(KafkaSourceError::GraceExceeded(cfg.shutdown_grace_ms)),
    };
    // Whatever happened, the actors are gone now; the consumer's close (on drop) then
    // revokes nothing that still holds rows.
    let ctx = consumer.context();
    ctx.health.set_stopping();
    ctx.actors.lock().expect("lock").clear();
    ctx.set_owned(&HashMap::new());
    let m = metrics();
    m.partition_lag.reset();
    m.lag.set(0);
    for w in workers {
        w.stop();
    }
    r
}

async fn dispatch(
    consumer: &StreamConsumer<GroupContext>,
    cfg: &KafkaConfig,
    max_record_bytes: usize,
    workers: &[Arbiter],
    stats: &Arc<RunStats>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), KafkaSourceError> {
    let group = consumer.context();
    let mut stop = std::pin::pin!(stop);
    let mut last_commit = Instant::now();
    let mut started = 0usize;
    loop {
        let msg = tokio::select! {
            _ = &mut stop => break,
            m = tokio::time::timeout(Duration::from_millis(cfg.batch_age_ms.max(10)), consumer.recv()) => m,
        };
        let mut batch = Fetched::new();
        match msg {
            Ok(Ok(m)) => {
                push(&mut batch, &m);
                // Take what is already fetched without waiting, up to a bound.
                for _ in 0..cfg.batch_rows {
                    match futures::FutureExt::now_or_never(consumer.recv()) {
                        Some(Ok(m)) => push(&mut batch, &m),
                        Some(Err(e)) => {
                            count_error(&e);
                            tracing::warn!(error = %e, "kafka error");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Ok(Err(e)) => {
                count_error(&e);
                tracing::warn!(error = %e, "kafka error");
            }
            Err(_) => {}
        }
        // After the poll: assignments made during it get their actors before the
        // records fetched for them are handed out.
        let events: Vec<GroupEvent> = std::mem::take(&mut *group.events.lock().expect("lock"));
        for ev in events {
            match ev {
                GroupEvent::Failed(e) => return Err(e.into()),
                GroupEvent::Assigned(parts) => {
                    for ((topic, partition), positions) in parts {
                        let kind = group.topics[&topic];
                        let st = PartitionState::new(
                            kind,
                            &topic,
                            partition,
                            positions,
                            cfg,
                            max_record_bytes,
                            group,
                            stats,
                        );
                        let arbiter = &workers[started % workers.len()];
                        started += 1;
                        let addr = PartitionActor::start_in_arbiter(&arbiter.handle(), move |_| PartitionActor {
                            state: Rc::new(tokio::sync::Mutex::new(st)),
                        });
                        let mut actors = group.actors.lock().expect("lock");
                        actors.insert((topic, partition), addr);
                        group.set_owned(&actors);
                    }
                }
            }
        }
        let current: Vec<(TopicPartition, Addr<PartitionActor>)> = group
            .actors
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        // Records of a partition revoked since the fetch are dropped here: the new owner
        // reads them again from the table position.
        // An empty message lets an idle partition hand over by age.
        let sends = current
            .into_iter()
            .map(|(tp, a)| a.send(Records(batch.remove(&tp).unwrap_or_default())));
        let waiting = Instant::now();
        for r in futures::future::join_all(sends).await {
            r.map_err(|_| WriterError::Stopped)??;
        }
        // Time not spent polling: the actors' cleaning and, when the writers are full,
        // their inline flushes. A wait longer than a batch age is a backpressure pause.
        let waited = waiting.elapsed();
        let m = metrics();
        m.fetch_paused_seconds
            .with_label_values(&[SOURCE])
            .inc_by(waited.as_secs_f64());
        if waited > Duration::from_millis(cfg.batch_age_ms) {
            m.fetch_pauses.with_label_values(&[SOURCE]).inc();
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            commit_positions(consumer).await;
            last_commit = Instant::now();
        }
    }

    // Graceful stop: hand everything over, commit, then leave the group on drop.
    let current: Vec<(TopicPartition, Addr<PartitionActor>)> = group.actors.lock().expect("lock").drain().collect();
    for (_, a) in &current {
        a.send(Drain).await.map_err(|_| WriterError::Stopped)??;
    }
    group.writers.flush_all().await?;
    for ((topic, partition), _) in &current {
        tracing::info!(%topic, partition, "partition released");
    }
    commit_positions(consumer).await;
    Ok(())
}

fn count_error(e: &rdkafka::error::KafkaError) {
    let code = e
        .rdkafka_error_code()
        .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"));
    metrics().source_errors.with_label_values(&[SOURCE, &code]).inc();
}

fn push(batch: &mut Fetched, m: &BorrowedMessage<'_>) {
    batch
        .entry((m.topic().to_string(), m.partition()))
        .or_default()
        .push((m.offset(), m.payload().map(<[u8]>::to_vec)));
}

/// Stores the tables' positions as the group's offsets (for lag tools), and sets the lag
/// gauges: each partition's high watermark minus its position in the tables.
async fn commit_positions(consumer: &StreamConsumer<GroupContext>) {
    let group = consumer.context();
    let Ok(cps) = group.writers.checkpoints().await else {
        return;
    };
    let Ok(assigned) = consumer.assignment() else { return };
    let mut tpl = TopicPartitionList::new();
    let marks = group.watermarks.lock().expect("lock").clone();
    let m = metrics();
    let mut total = 0;
    for e in assigned.elements() {
        let Some(&kind) = group.topics.get(e.topic()) else {
            continue;
        };
        let key = SourceKey::new(SourceKind::Kafka, e.topic(), e.partition().to_string());
        let stored = |dl| cps.get(&(kind, dl)).and_then(|m| m.get(&key)).cloned();
        let position = match start_offset(&[stored(false), stored(true)], false) {
            Offset::Offset(o) => {
                let _ = tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
                Some(o)
            }
            _ => None,
        };
        if let Some(&(lo, hi)) = marks.get(&(e.topic().to_string(), e.partition())) {
            // Nothing committed yet: everything still in the log is behind.
            let lag = (hi - position.unwrap_or(lo).max(lo)).max(0);
            total += lag;
            m.partition_lag
                .with_label_values(&[SOURCE, e.topic(), &key.partition])
                .set(lag);
        }
    }
    m.lag.set(total);
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit failed (lag reporting only)");
        }
    }
}
