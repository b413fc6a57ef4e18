//! Kafka source: a consumer group whose assigned partitions each get a [`PartitionActor`].
//!
//! - [`config`]: the `[kafka]` section.
//! - [`group`]: librdkafka's callbacks: assignments start at the tables' positions, a
//!   revoke commits the revoked partitions' rows before it returns.
//! - [`partition`]: the actor that routes one partition's records.
//! - [`msk_iam`]: Amazon MSK IAM tokens.
//!
//! The dispatcher (this file) polls the consumer, hands each poll's records to their
//! partitions' actors and awaits them before it polls again: actors reply once the
//! writers accepted their rows (writers flush inline when full), so when the writers fall
//! behind, polling stops and librdkafka stops fetching once `kafka.fetch_queue_kbytes` is
//! buffered. Only partitions with records get a message; an actor that still holds
//! records gets an empty one every quarter batch age so that it hands them over by age.
//! (Messaging every owned partition after every poll made the thread wake-ups grow with
//! the partition count.) After a Delta commit, the tables' positions are committed to the
//! group for lag tools only.
//!
//! A kind whose table is stalled ([`crate::sink::table_sink`]: a full disk, a schema
//! another tool changed) has its partitions paused at the consumer until it recovers;
//! what was fetched before the pause waits in their actors. The other kinds go on.

mod client_log;
pub mod config;
mod group;
pub mod msk_iam;
mod partition;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

pub use client_log::ClientLog;
pub use config::KafkaConfig;
pub use msk_iam::AuthContext;
pub use partition::PartitionActor;

use crate::metrics::{metrics, SourceMetrics};
use crate::shutdown::{GraceExceeded, Shutdown};
use crate::sink::{PerTable, Position, SourceKey, SourceKind, WriterError};
use crate::sources::SourceRun;
use group::{error_code, start_offset, GroupContext, GroupEvent, TopicPartition};
use partition::{Drain, Fetched, PartitionEnv, Records};

/// The `source` label of this source's metrics and lineage.
const SOURCE: &str = "kafka";

/// Errors of the Kafka source.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    GraceExceeded(#[from] GraceExceeded),
}

/// One poll's records by topic, then partition. Nested so that a message finds its entry
/// by the topic name it borrows from librdkafka, with no String built per message.
type Poll = HashMap<String, HashMap<i32, Fetched>>;

/// Consumes the configured topics until shutdown is triggered, then hands everything
/// over, commits and leaves the group, all within the shutdown's grace period.
pub async fn run(cfg: &KafkaConfig, run: SourceRun) -> Result<(), KafkaSourceError> {
    let source = SourceMetrics::new(SOURCE);
    let shutdown = run.shutdown.clone();
    let ctx = GroupContext {
        auth: cfg.auth(),
        topics: cfg.topic_map(),
        latest_when_new: cfg.auto_offset_reset == "latest",
        writers: run.writers.clone(),
        actors: Mutex::new(HashMap::new()),
        events: Mutex::new(Vec::new()),
        health: run.health.clone(),
        metrics: source.clone(),
        shutdown: shutdown.clone(),
        runtime: tokio::runtime::Handle::current(),
        watermarks: Mutex::new(HashMap::new()),
        log: ClientLog::new(&cfg.brokers),
    };
    let consumer = consumer(cfg, ctx)?;
    // Partition actors run on a pool of arbiters (threads): cleaning runs in parallel and
    // never on the thread that blocks in the rebalance callback.
    let workers: Vec<Arbiter> = (0..cfg.workers.max(1)).map(|_| Arbiter::new()).collect();
    let env = PartitionEnv {
        writers: run.writers.clone(),
        stats: run.stats.clone(),
        max_record_bytes: run.max_record_bytes,
        batch_rows: cfg.batch_rows,
        batch_age: Duration::from_millis(cfg.batch_age_ms),
        held: Arc::new(AtomicUsize::new(0)),
        held_records: cfg.held_records,
    };
    let mut d = Dispatcher {
        consumer: &consumer,
        cfg,
        workers: &workers,
        env,
        started: 0,
        paused: HashSet::new(),
        holding: HashSet::new(),
        last_tick: Instant::now(),
    };
    let mut r = d.dispatch(&shutdown).await;
    if r.is_ok() {
        // Stopping (the loop ends only on the trigger): hand over, commit, within the grace.
        r = shutdown.bounded(d.finish()).await.map_err(Into::into).and_then(|r| r);
    }
    // Whatever happened, the actors are gone now; the consumer's close then revokes
    // nothing that still holds rows.
    let ctx = consumer.context();
    ctx.health.set_stopping();
    ctx.actors.lock().expect("lock").clear();
    source.stopped();
    for w in workers {
        w.stop();
    }
    // Leaving the group can wait on the broker (and on the group's rebalance): bounded like
    // the rest, but not a failure. The rows are committed or not by now; a consumer that
    // could not say goodbye is dropped from the group at its session timeout.
    let leaving = Instant::now();
    match shutdown.run_blocking(move || drop(consumer)) {
        Ok(()) => tracing::info!(ms = leaving.elapsed().as_millis() as u64, "left the consumer group"),
        Err(_) => tracing::warn!(
            "leaving the consumer group took past the grace period; the group drops this member at its session timeout"
        ),
    }
    r
}

fn consumer(cfg: &KafkaConfig, ctx: GroupContext) -> Result<StreamConsumer<GroupContext>, KafkaSourceError> {
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
    Ok(consumer)
}

/// The polling loop and what it owns.
struct Dispatcher<'a> {
    consumer: &'a StreamConsumer<GroupContext>,
    cfg: &'a KafkaConfig,
    workers: &'a [Arbiter],
    env: PartitionEnv,
    /// Actors started so far (round-robin over the arbiters).
    started: usize,
    /// Owned partitions paused because a table of their kind is stalled.
    paused: HashSet<TopicPartition>,
    /// Owned partitions whose actors hold records not handed over yet (as they replied).
    holding: HashSet<TopicPartition>,
    /// When the holding actors were last visited by age.
    last_tick: Instant,
}

impl Dispatcher<'_> {
    fn group(&self) -> &GroupContext {
        self.consumer.context()
    }

    /// Polls and hands out until shutdown is triggered (or the group fails). A step in
    /// flight when the trigger comes is dropped (it may wait on a stalled store): records
    /// it fetched but did not route are read again by the next owner.
    async fn dispatch(&mut self, shutdown: &Shutdown) -> Result<(), KafkaSourceError> {
        let mut last_commit = Instant::now();
        loop {
            let step = async {
                let batch = self.poll().await;
                // After the poll: assignments made during it get their actors before the
                // records fetched for them are handed out.
                self.apply_events()?;
                self.pause_stalled();
                self.hand_out(batch).await?;
                if last_commit.elapsed() >= Duration::from_secs(1) {
                    commit_positions(self.consumer).await;
                    last_commit = Instant::now();
                }
                Ok::<(), KafkaSourceError>(())
            };
            tokio::select! {
                _ = shutdown.triggered() => return Ok(()),
                r = step => r?,
            }
        }
    }

    /// One poll: waits up to a batch age for a message, then takes what is already
    /// fetched without waiting, up to `kafka.batch_rows`.
    async fn poll(&self) -> Poll {
        let mut batch = Poll::new();
        let wait = Duration::from_millis(self.cfg.batch_age_ms.max(10));
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Ok(m) => m,
            Err(_) => return batch,
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(m) = next.take() {
            match m {
                Ok(m) => push(&mut batch, &m),
                Err(e) => {
                    // librdkafka repeats a broker outage on every poll: counted, said once.
                    self.group().metrics.error(&error_code(&e));
                    self.group().log.problem(&e.to_string());
                    break;
                }
            }
            taken += 1;
            if taken <= self.cfg.batch_rows {
                next = futures::FutureExt::now_or_never(self.consumer.recv());
            }
        }
        batch
    }

    fn apply_events(&mut self) -> Result<(), KafkaSourceError> {
        let events: Vec<GroupEvent> = std::mem::take(&mut *self.group().events.lock().expect("lock"));
        for ev in events {
            match ev {
                GroupEvent::Failed(e) => return Err(e.into()),
                GroupEvent::Assigned(parts) => {
                    for ((topic, partition), stored) in parts {
                        self.start_actor(topic, partition, stored);
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses fetching for the owned partitions of kinds with a stalled table, and resumes
    /// them once it recovered: backpressure for that kind alone.
    fn pause_stalled(&mut self) {
        let group = self.consumer.context();
        let owned: Vec<TopicPartition> = group.actors.lock().expect("lock").keys().cloned().collect();
        // A revoked partition is no longer paused (a new assignment starts fetching).
        self.paused.retain(|tp| owned.contains(tp));
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for tp in owned {
            let stalled = group.topics.get(&tp.0).is_some_and(|k| group.writers.stalled(*k));
            if stalled && self.paused.insert(tp.clone()) {
                pause.add_partition(&tp.0, tp.1);
            } else if !stalled && self.paused.remove(&tp) {
                resume.add_partition(&tp.0, tp.1);
            }
        }
        for (list, paused) in [(pause, true), (resume, false)] {
            if list.count() == 0 {
                continue;
            }
            let parts = group::list(&list);
            let r = if paused {
                self.consumer.pause(&list)
            } else {
                self.consumer.resume(&list)
            };
            match r {
                Ok(()) if paused => tracing::warn!(?parts, "fetching paused: a table of their kind is stalled"),
                Ok(()) => tracing::info!(?parts, "fetching resumed: the table recovered"),
                Err(e) => tracing::warn!(?parts, error = %e, "pausing or resuming fetching failed"),
            }
        }
    }

    fn start_actor(&mut self, topic: String, partition: i32, stored: PerTable<Option<Position>>) {
        let arbiter = self.workers[self.started % self.workers.len()].handle();
        self.started += 1;
        let group = self.group();
        let kind = group.topics[&topic];
        let metrics = group.metrics.partition(&topic, &partition.to_string());
        // Built on its arbiter: the actor's state is not Send.
        let (env, t) = (self.env.clone(), topic.clone());
        let addr = PartitionActor::start_in_arbiter(&arbiter, move |_| {
            PartitionActor::new(kind, &t, partition, stored, env, metrics)
        });
        let mut actors = group.actors.lock().expect("lock");
        actors.insert((topic, partition), addr);
        group.set_owned(&actors);
    }

    /// Gives each partition its records, and every quarter batch age an empty message to
    /// the actors still holding records (so that they hand over by age), and waits for all
    /// of them: the backpressure point.
    async fn hand_out(&mut self, batch: Poll) -> Result<(), KafkaSourceError> {
        let tick = self.last_tick.elapsed() >= Duration::from_millis(self.cfg.batch_age_ms / 4);
        if tick {
            self.last_tick = Instant::now();
        }
        let mut sends = Vec::new();
        {
            let consumer: &StreamConsumer<GroupContext> = self.consumer;
            let actors = consumer.context().actors.lock().expect("lock");
            // A revoked partition's actor is gone; a new assignment starts empty.
            self.holding.retain(|tp| actors.contains_key(tp));
            for (topic, parts) in batch {
                for (partition, fetched) in parts {
                    let tp = (topic.clone(), partition);
                    // Records of a partition revoked since the fetch are dropped here: the
                    // new owner reads them again from the table position.
                    if let Some(a) = actors.get(&tp) {
                        self.holding.remove(&tp);
                        sends.push((tp, a.send(Records(fetched))));
                    }
                }
            }
            if tick {
                for tp in self.holding.drain() {
                    if let Some(a) = actors.get(&tp) {
                        sends.push((tp, a.send(Records(Fetched::default()))));
                    }
                }
            }
        }
        let waiting = Instant::now();
        let (parts, sends): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
        for (tp, r) in parts.into_iter().zip(futures::future::join_all(sends).await) {
            if r.map_err(|_| WriterError::Stopped)?? {
                self.holding.insert(tp);
            }
        }
        // Time not spent polling: the actors' cleaning and, when the writers are full,
        // their inline flushes. A wait longer than a batch age is a backpressure pause.
        let waited = waiting.elapsed();
        let long = waited > Duration::from_millis(self.cfg.batch_age_ms);
        self.group().metrics.fetch_paused(waited.as_secs_f64(), long);
        Ok(())
    }

    /// The graceful end: hand everything over, commit, store the group offsets. A table
    /// that cannot commit (stalled) does not keep the others from committing; its error is
    /// returned at the end (its rows are read again by the next owner).
    async fn finish(&self) -> Result<(), KafkaSourceError> {
        let group = self.group();
        let current: Vec<(TopicPartition, Addr<PartitionActor>)> = group.actors.lock().expect("lock").drain().collect();
        let mut failed = None;
        for (_, a) in &current {
            if let Err(e) = a.send(Drain).await.map_err(|_| WriterError::Stopped).and_then(|r| r) {
                failed.get_or_insert(e);
            }
        }
        let flushed = group.writers.flush_all().await;
        commit_positions(self.consumer).await;
        if let Some(e) = failed {
            return Err(e.into());
        }
        flushed?;
        for ((topic, partition), _) in &current {
            tracing::info!(%topic, partition, "partition released");
        }
        Ok(())
    }
}

fn push(batch: &mut Poll, m: &BorrowedMessage<'_>) {
    let parts = match batch.get_mut(m.topic()) {
        Some(parts) => parts,
        None => batch.entry(m.topic().to_string()).or_default(),
    };
    parts
        .entry(m.partition())
        .or_default()
        .push(m.offset(), m.payload(), m.key(), m.timestamp().to_millis());
}

/// Stores the tables' positions as the group's offsets (for lag tools), and sets the lag
/// gauges: each partition's high watermark minus its position in the tables.
async fn commit_positions(consumer: &StreamConsumer<GroupContext>) {
    let group = consumer.context();
    let Ok(stored) = group.writers.checkpoints().await else {
        return;
    };
    let Ok(assigned) = consumer.assignment() else { return };
    let mut tpl = TopicPartitionList::new();
    let marks = group.watermarks.lock().expect("lock").clone();
    let mut total = 0;
    for e in assigned.elements() {
        let Some(&kind) = group.topics.get(e.topic()) else {
            continue;
        };
        let key = SourceKey::new(SourceKind::Kafka, e.topic(), e.partition().to_string());
        let position = match start_offset(&stored.of(kind, &key), group.writers.roles(), false) {
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
            group.metrics.lag(e.topic(), &key.partition, lag);
        }
    }
    metrics().lag.set(total);
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit failed (lag reporting only)");
        }
    }
}
