//! The KinesisCoordinator: one per process. Every round (a quarter of `lease_ms`) it
//!
//! 1. refreshes the shard list when due (ListShards; after a split or merge, or a parent
//!    finishing, at once);
//! 2. renews the leases it holds. A renewal that loses its compare-and-set means either a
//!    steal request (drain, commit, write the lease free for the asker) or a takeover
//!    (the lease had expired in another process's eyes: stop reading at once);
//! 3. reads the other leases and watches their counters: one unchanged for `lease_ms` on
//!    this process's clock is expired;
//! 4. takes or asks for shards as [`balance::plan`] says, and starts a shard actor for each
//!    shard taken, resuming from the positions in the tables.
//!
//! A shard actor that reaches the end of a closed shard commits and exits; the coordinator
//! then marks the lease `finished`, which makes the shard's children eligible.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use tokio::sync::mpsc;

use super::balance::{self, ShardView, Step};
use super::lease::{Lease, LeaseStore, Tag, Written};
use super::shard::{now_ms, Exit, Mode, ShardActor, ShardEnv, ShardEvent, ShardSpec, Stop};
use super::{KinesisConfig, KinesisSourceError, SOURCE};
use crate::clean::Kind;
use crate::metrics::{Health, KinesisMetrics, SourceMetrics};
use crate::sink::{SourceKey, SourceKind, TablesConfig};
use crate::sources::SourceRun;

type Key = (String, String);

/// A shard as ListShards describes it.
#[derive(Debug, Clone)]
struct ShardInfo {
    kind: Kind,
    parents: Vec<String>,
}

/// A lease this process holds.
struct Owned {
    tag: Tag,
    counter: u64,
    actor: Addr<ShardActor>,
    /// Read by the actor before every call: the lease's deadline on [`now_ms`]'s clock.
    valid_until: Arc<AtomicU64>,
}

/// A lease just written as ours.
struct Taken {
    tag: Tag,
    counter: u64,
    valid_until: Arc<AtomicU64>,
}

struct Coordinator {
    cfg: Arc<KinesisConfig>,
    me: String,
    leases: LeaseStore,
    /// What every shard actor gets (client, writers, shutdown, metrics).
    env: ShardEnv,
    workers: Vec<Arbiter>,
    started: usize,
    streams: BTreeMap<String, Kind>,
    shards: BTreeMap<Key, ShardInfo>,
    last_sync: Option<Instant>,
    finished: HashSet<Key>,
    /// Other owners' lease counters and when this process first saw each value.
    observed: HashMap<Key, (u64, Instant)>,
    owned: HashMap<Key, Owned>,
    /// Shards whose actor failed: not taken again before this instant.
    cooling: HashMap<Key, Instant>,
}

/// A worker id unique across hosts and restarts.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[..8])
}

/// Consumes the configured streams until shutdown is triggered, then drains, commits and
/// releases the leases within the shutdown's grace period.
pub async fn run(cfg: &KinesisConfig, tables: &TablesConfig, run: SourceRun) -> Result<(), KinesisSourceError> {
    let source = SourceMetrics::new(SOURCE);
    let cfg = Arc::new(cfg.clone());
    let me = if cfg.worker_id.is_empty() {
        default_worker_id()
    } else {
        cfg.worker_id.clone()
    };
    let (events, mut inbox) = mpsc::unbounded_channel();
    let shutdown = run.shutdown.clone();
    let env = ShardEnv {
        client: super::client(&cfg).await,
        cfg: cfg.clone(),
        max_record_bytes: run.max_record_bytes,
        writers: run.writers,
        stats: run.stats,
        events,
        shutdown: shutdown.clone(),
        source: source.clone(),
        consumers: Arc::default(),
    };
    let mut co = Coordinator {
        leases: LeaseStore::open(tables, &cfg.application)?,
        streams: cfg.stream_map(),
        workers: (0..cfg.workers.max(1)).map(|_| Arbiter::new()).collect(),
        started: 0,
        me,
        env,
        shards: BTreeMap::new(),
        last_sync: None,
        finished: HashSet::new(),
        observed: HashMap::new(),
        owned: HashMap::new(),
        cooling: HashMap::new(),
        cfg: cfg.clone(),
    };
    tracing::info!(worker = %co.me, leases = co.leases.location(), "kinesis coordinator started");
    // A missing stream or bad credentials fail the start with a clear error.
    co.sync_shards(true).await?;
    if cfg.enhanced_fan_out {
        let mut consumers = BTreeMap::new();
        for stream in co.streams.keys() {
            let arn = super::fanout::consumer(&co.env.client, stream, cfg.consumer()).await?;
            consumers.insert(stream.clone(), arn);
        }
        tracing::info!(
            consumer = cfg.consumer(),
            streams = consumers.len(),
            "enhanced fan-out: reading by SubscribeToShard"
        );
        co.env.consumers = Arc::new(consumers);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.lease_ms / 4));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A round in flight when the trigger comes is dropped (it may wait on a stalled store).
    let r = tokio::select! {
        _ = shutdown.triggered() => Ok(()),
        r = co.serve(&mut tick, &mut inbox, &run.health) => r,
    };
    run.health.set_stopping();
    let released = shutdown.bounded(co.shutdown()).await;
    for w in &co.workers {
        w.stop();
    }
    source.owned(0);
    KinesisMetrics.stopped();
    r?;
    released.map_err(Into::into)
}

impl Coordinator {
    /// Rounds on every tick and actor exits as they come, until a round fails.
    async fn serve(
        &mut self,
        tick: &mut tokio::time::Interval,
        inbox: &mut mpsc::UnboundedReceiver<ShardEvent>,
        health: &Health,
    ) -> Result<(), KinesisSourceError> {
        let mut first = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.round().await?;
                    if first {
                        health.set_assigned();
                        first = false;
                    }
                }
                Some(ev) = inbox.recv() => self.on_exit(ev).await,
            }
        }
    }

    fn set_owned(&self) {
        self.env.source.owned(self.owned.len());
    }

    /// ListShards for every stream. At start (`strict`) an error is fatal; later it is
    /// logged and the previous list kept.
    async fn sync_shards(&mut self, strict: bool) -> Result<(), KinesisSourceError> {
        let mut shards = BTreeMap::new();
        for (stream, &kind) in &self.streams {
            let mut token: Option<String> = None;
            loop {
                let req = match &token {
                    Some(t) => self.env.client.list_shards().next_token(t),
                    None => self.env.client.list_shards().stream_name(stream),
                };
                let out = match req.send().await {
                    Ok(o) => o,
                    Err(e) => {
                        let code = e.code().unwrap_or("Dispatch").to_string();
                        self.env.source.error(&code);
                        let message = match e.message() {
                            Some(m) => format!("{code}: {m}"),
                            None => format!("{code}: {}", aws_sdk_kinesis::error::DisplayErrorContext(&e)),
                        };
                        if strict {
                            return Err(KinesisSourceError::Stream {
                                stream: stream.clone(),
                                message: format!("ListShards failed: {message}"),
                            });
                        }
                        tracing::warn!(%stream, %message, "ListShards failed; keeping the previous shard list");
                        return Ok(());
                    }
                };
                for s in out.shards() {
                    let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                        .into_iter()
                        .flatten()
                        .map(str::to_string)
                        .collect();
                    shards.insert((stream.clone(), s.shard_id().to_string()), ShardInfo { kind, parents });
                }
                match out.next_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
        }
        self.shards = shards;
        self.last_sync = Some(Instant::now());
        Ok(())
    }

    async fn round(&mut self) -> Result<(), KinesisSourceError> {
        let sync_due = self
            .last_sync
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.cfg.shard_sync_ms));
        if sync_due {
            self.sync_shards(false).await?;
        }
        self.renew().await;
        let (views, tags) = self.observe().await;
        let steps = balance::plan(&self.me, &views);
        let mut taken = Vec::new();
        for step in steps {
            match step {
                Step::Take(key) => {
                    let current = tags.get(&key).cloned().flatten();
                    if let Some(o) = self.take(&key, current).await {
                        taken.push((key, o));
                    }
                }
                Step::Steal(key) => {
                    if let Some(Some((lease, tag))) = tags.get(&key) {
                        let ask = Lease {
                            counter: lease.counter + 1,
                            steal_for: Some(self.me.clone()),
                            ..lease.clone()
                        };
                        match self.write(&key, &ask, Some(tag)).await {
                            Some(Written::Ok(_)) => {
                                KinesisMetrics.lease("stolen");
                                tracing::info!(stream = %key.0, shard = %key.1, from = ?lease.owner, "asked for shard");
                            }
                            _ => tracing::debug!(shard = %key.1, "steal request lost a race"),
                        }
                    }
                }
            }
        }
        if !taken.is_empty() {
            self.start_actors(taken).await?;
        }
        Ok(())
    }

    async fn write(&self, key: &Key, lease: &Lease, expect: Option<&Tag>) -> Option<Written> {
        match self.leases.write(&key.0, &key.1, lease, expect).await {
            Ok(w) => Some(w),
            Err(e) => {
                self.env.source.error("LeaseStore");
                tracing::warn!(stream = %key.0, shard = %key.1, error = %e, "lease write failed");
                None
            }
        }
    }

    /// Renews every held lease; handles steal requests and takeovers.
    async fn renew(&mut self) {
        let keys: Vec<Key> = self.owned.keys().cloned().collect();
        for key in keys {
            let started = now_ms();
            let o = &self.owned[&key];
            let lease = Lease {
                owner: Some(self.me.clone()),
                counter: o.counter + 1,
                finished: false,
                steal_for: None,
            };
            let tag = o.tag.clone();
            match self.write(&key, &lease, Some(&tag)).await {
                Some(Written::Ok(tag)) => {
                    let o = self.owned.get_mut(&key).expect("owned");
                    o.tag = tag;
                    o.counter = lease.counter;
                    o.valid_until
                        .store(started + self.cfg.lease_ms * 3 / 4, Ordering::Release);
                }
                Some(Written::Conflict) => self.renewal_conflict(&key).await,
                // Store trouble: the lease stays valid until its deadline, then the actor stops.
                None => {}
            }
        }
        self.set_owned();
    }

    async fn renewal_conflict(&mut self, key: &Key) {
        let current = match self.leases.read(&key.0, &key.1).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(stream = %key.0, shard = %key.1, error = %e, "lease read failed");
                return;
            }
        };
        match current {
            Some((lease, tag)) if lease.owner.as_deref() == Some(&self.me) && lease.steal_for.is_some() => {
                // Hand over: drain and commit first, then free the lease for the asker.
                let o = self.owned.remove(key).expect("owned");
                o.actor.send(Stop(Mode::Drain)).await.ok();
                let free = Lease {
                    owner: None,
                    counter: lease.counter + 1,
                    finished: false,
                    steal_for: lease.steal_for.clone(),
                };
                // Until this write lands the lease is still ours in everyone's eyes.
                let _ = self.write(key, &free, Some(&tag)).await;
                self.forget(key);
                KinesisMetrics.lease("handed_over");
                tracing::info!(stream = %key.0, shard = %key.1, to = ?lease.steal_for, "shard handed over");
            }
            Some((lease, tag)) if lease.owner.as_deref() == Some(&self.me) => {
                // Our own earlier write landed although its answer was lost: adopt it.
                if let Some(o) = self.owned.get_mut(key) {
                    o.tag = tag;
                    o.counter = lease.counter;
                }
            }
            other => {
                let o = self.owned.remove(key).expect("owned");
                o.valid_until.store(0, Ordering::Release);
                o.actor.send(Stop(Mode::Abort)).await.ok();
                self.forget(key);
                KinesisMetrics.lease("lost");
                tracing::warn!(stream = %key.0, shard = %key.1, now = ?other.and_then(|(l, _)| l.owner), "shard lease lost");
            }
        }
    }

    fn forget(&self, key: &Key) {
        KinesisMetrics.forget(&key.0, &key.1);
        self.env.source.forget(&key.0, &key.1);
    }

    /// Reads the leases of every listed shard and builds the views [`balance::plan`] needs.
    #[allow(clippy::type_complexity)]
    async fn observe(&mut self) -> (Vec<ShardView>, HashMap<Key, Option<(Lease, Tag)>>) {
        let now = Instant::now();
        let lease_for = Duration::from_millis(self.cfg.lease_ms);
        let mut tags = HashMap::new();
        let keys: Vec<Key> = self
            .shards
            .keys()
            .filter(|k| !self.finished.contains(*k))
            .cloned()
            .collect();
        let reads = futures::future::join_all(keys.iter().map(|k| self.leases.read(&k.0, &k.1))).await;
        for (key, r) in keys.into_iter().zip(reads) {
            match r {
                Ok(Some((lease, tag))) => {
                    if lease.finished {
                        self.finished.insert(key.clone());
                    }
                    tags.insert(key, Some((lease, tag)));
                }
                Ok(None) => {
                    tags.insert(key, None);
                }
                Err(e) => {
                    self.env.source.error("LeaseStore");
                    tracing::warn!(stream = %key.0, shard = %key.1, error = %e, "lease read failed");
                }
            }
        }
        let mut views = Vec::new();
        for (key, info) in &self.shards {
            let parents_done = info.parents.iter().all(|p| {
                self.finished.contains(&(key.0.clone(), p.clone()))
                    || !self.shards.contains_key(&(key.0.clone(), p.clone()))
            });
            let finished = self.finished.contains(key);
            let Some(current) = tags.get(key) else {
                continue; // unreadable this round, or finished
            };
            let (owner, steal_pending) = match current {
                None => (None, false),
                Some((lease, _)) => {
                    // A lease handed over is free but reserved for the asker until it expires
                    // like any lease: without this the giver, seeing it free in the same round,
                    // would take it straight back (a livelock when the asker holds nothing yet).
                    let holder = lease
                        .owner
                        .as_deref()
                        .or_else(|| lease.steal_for.as_deref().filter(|asker| *asker != self.me));
                    let owner = match holder {
                        None => None,
                        Some(o) if o == self.me => self.owned.contains_key(key).then(|| o.to_string()),
                        Some(o) => {
                            let seen = self.observed.entry(key.clone()).or_insert((lease.counter, now));
                            if seen.0 != lease.counter {
                                *seen = (lease.counter, now);
                            }
                            (now.duration_since(seen.1) < lease_for).then(|| o.to_string())
                        }
                    };
                    (owner, lease.steal_for.is_some())
                }
            };
            let cooling = self.cooling.get(key).is_some_and(|t| *t > now);
            views.push(ShardView {
                key: key.clone(),
                owner: if cooling { Some("(cooling)".into()) } else { owner },
                finished,
                parents_done,
                steal_pending,
            });
        }
        self.cooling.retain(|_, t| *t > now);
        (views, tags)
    }

    /// Writes the lease as ours; `None` when someone else was faster.
    async fn take(&mut self, key: &Key, current: Option<(Lease, Tag)>) -> Option<Taken> {
        let (counter, expect) = match &current {
            Some((l, t)) => (l.counter + 1, Some(t)),
            None => (1, None),
        };
        let lease = Lease {
            owner: Some(self.me.clone()),
            counter,
            finished: false,
            steal_for: None,
        };
        let started = now_ms();
        match self.write(key, &lease, expect).await? {
            Written::Ok(tag) => {
                KinesisMetrics.lease("taken");
                tracing::info!(stream = %key.0, shard = %key.1, from = ?current.and_then(|(l, _)| l.owner), "shard lease taken");
                self.observed.remove(key);
                Some(Taken {
                    tag,
                    counter,
                    // Counted from before the write, like a renewal.
                    valid_until: Arc::new(AtomicU64::new(started + self.cfg.lease_ms * 3 / 4)),
                })
            }
            Written::Conflict => None,
        }
    }

    async fn start_actors(&mut self, taken: Vec<(Key, Taken)>) -> Result<(), KinesisSourceError> {
        let stored = match self.env.writers.checkpoints().await {
            Ok(c) => c,
            Err(e) => {
                // Without positions we cannot start; free the leases for another try.
                tracing::error!(error = %e, "reading table positions failed");
                for (key, t) in taken {
                    let free = Lease {
                        owner: None,
                        counter: t.counter + 1,
                        ..Default::default()
                    };
                    let _ = self.write(&key, &free, Some(&t.tag)).await;
                }
                return Ok(());
            }
        };
        for (
            key,
            Taken {
                tag,
                counter,
                valid_until,
            },
        ) in taken
        {
            let info = self.shards[&key].clone();
            let skey = SourceKey::new(SourceKind::Kinesis, &key.0, &key.1);
            let spec = ShardSpec {
                stream: key.0.clone(),
                shard: key.1.clone(),
                kind: info.kind,
                has_parent: !info.parents.is_empty(),
                stored: stored.of(info.kind, &skey),
            };
            tracing::info!(stream = %key.0, shard = %key.1, stored = ?spec.stored, "shard actor starting");

            let arbiter = &self.workers[self.started % self.workers.len()];
            self.started += 1;
            // Built on its arbiter: the actor's state is not Send.
            let (env, valid) = (self.env.clone(), valid_until.clone());
            let actor = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| ShardActor::new(spec, env, valid));
            self.owned.insert(
                key,
                Owned {
                    tag,
                    counter,
                    actor,
                    valid_until,
                },
            );
        }
        self.set_owned();
        Ok(())
    }

    async fn on_exit(&mut self, ev: ShardEvent) {
        let key = ev.key;
        match ev.exit {
            // Stops the coordinator asked for were handled where it asked.
            Exit::Drained | Exit::Aborted => {}
            Exit::Finished => {
                let Some(o) = self.owned.remove(&key) else { return };
                let done = Lease {
                    owner: None,
                    counter: o.counter + 1,
                    finished: true,
                    steal_for: None,
                };
                if let Some(Written::Ok(_)) = self.write(&key, &done, Some(&o.tag)).await {
                    self.finished.insert(key.clone());
                    KinesisMetrics.lease("finished");
                    tracing::info!(stream = %key.0, shard = %key.1, "shard finished; its children may start");
                }
                self.forget(&key);
                // Children become eligible now: look for them without waiting.
                self.last_sync = None;
            }
            Exit::LeaseLost => {
                if self.owned.remove(&key).is_some() {
                    self.forget(&key);
                    KinesisMetrics.lease("lost");
                    tracing::warn!(stream = %key.0, shard = %key.1, "shard lease expired before renewal; stopped reading");
                }
            }
            Exit::Fenced => {
                // Another owner moved a position: start over from the tables if still ours.
                if let Some(o) = self.owned.remove(&key) {
                    tracing::warn!(stream = %key.0, shard = %key.1, "position moved by another writer; resuming from the tables");
                    let t = Taken {
                        tag: o.tag,
                        counter: o.counter,
                        valid_until: o.valid_until,
                    };
                    let r = self.start_actors(vec![(key, t)]).await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "restarting a shard actor failed");
                    }
                }
            }
            Exit::Failed(message) => {
                tracing::error!(stream = %key.0, shard = %key.1, %message, "shard actor failed; releasing its lease");
                if let Some(o) = self.owned.remove(&key) {
                    let free = Lease {
                        owner: None,
                        counter: o.counter + 1,
                        ..Default::default()
                    };
                    let _ = self.write(&key, &free, Some(&o.tag)).await;
                    self.forget(&key);
                    self.cooling
                        .insert(key, Instant::now() + Duration::from_millis(self.cfg.shard_sync_ms));
                    self.last_sync = None;
                }
            }
        }
        self.set_owned();
    }

    /// Drains every actor (hand over and commit), then writes the leases free.
    async fn shutdown(&mut self) {
        let owned: Vec<(Key, Owned)> = self.owned.drain().collect();
        futures::future::join_all(owned.iter().map(|(_, o)| o.actor.send(Stop(Mode::Drain)))).await;
        for (key, o) in &owned {
            let free = Lease {
                owner: None,
                counter: o.counter + 1,
                ..Default::default()
            };
            if let Some(Written::Ok(_)) = self.write(key, &free, Some(&o.tag)).await {
                KinesisMetrics.lease("released");
                tracing::info!(stream = %key.0, shard = %key.1, "shard released");
            }
            self.forget(key);
        }
        // A round dropped at the trigger may have written a lease to us before it started
        // the actor: nothing was read from it, so it is written free too.
        let keys: Vec<Key> = self.shards.keys().cloned().collect();
        let reads = futures::future::join_all(keys.iter().map(|k| self.leases.read(&k.0, &k.1))).await;
        for (key, read) in keys.iter().zip(reads) {
            if let Ok(Some((lease, tag))) = read {
                if lease.owner.as_deref() == Some(self.me.as_str()) {
                    let free = Lease {
                        owner: None,
                        counter: lease.counter + 1,
                        steal_for: None,
                        ..lease
                    };
                    if let Some(Written::Ok(_)) = self.write(key, &free, Some(&tag)).await {
                        tracing::info!(stream = %key.0, shard = %key.1, "shard released (taken as the stop came)");
                    }
                }
            }
        }
    }
}
