//! The table writer: buffers rows from many sources and commits them to one Delta table,
//! each commit carrying the positions of every source partition that contributed.
//!
//! [`TableSink`] holds the logic (plain async code, testable on its own); [`TableWriter`]
//! is the actix actor around it, one per table, each on its own arbiter thread so the
//! Parquet encoding of different tables runs in parallel.
//!
//! # Protocol
//! A source sends [`Append`] with its rows and the position range they cover:
//! `expect` (the position the table must hold before these rows: what the source loaded
//! when it resumed, or the `end` of its previous append) and `end` (the position after
//! them). Appends for one source key must be contiguous. On flush, for each key:
//!
//! - stored position == `expect` of the first buffered append: the rows are committed
//!   together with `end` (a compare-and-set; Delta's conflict checker rejects a
//!   concurrent commit that wrote the same key);
//! - stored position == `end`: an earlier attempt already landed (e.g. a commit whose
//!   response was lost); the rows are dropped, not written twice;
//! - anything else: another owner moved the key (rebalance, a second process). The rows
//!   are dropped and the key is *fenced*: further appends fail with
//!   [`WriterError::Fenced`] until the source resumes from the stored position.
//!
//! An append with no rows still moves the key's position (a watermark): a source whose
//! records all went to the other table (clean vs dead-letter) moves both, so that a resume
//! never re-routes an already committed record.
//!
//! # Backpressure
//! A threshold-crossing append flushes before it returns, and the actor's mailbox is
//! bounded: a source awaiting `send` cannot run ahead of the commits.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use crate::metrics::{metrics, TableMetrics};

use super::checkpoint::{encode, CheckpointError, CheckpointIndex, Position, SourceKey};
use super::table::{TableError, TablesConfig};

/// Flush thresholds and file layout (the `[writer]` config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when the buffered Arrow data reaches this many bytes. Per table: a process
    /// writes six tables, so it holds up to six times this (plus the open row groups).
    pub max_bytes: usize,
    /// Flush when the oldest buffered row is this old (milliseconds).
    pub max_age_ms: u64,
    /// Roll to a new Parquet file past this size (bytes).
    pub target_file_size: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level (1..=22).
    pub zstd_level: i32,
    /// Attempts of one flush (each re-checks positions) before the error is returned.
    pub commit_attempts: u32,
    /// Messages queued per writer before senders wait.
    pub mailbox: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_rows: 200_000,
            // 32 MiB: the pin table (the widest rows) flushes near 100k rows, and a process
            // writing all six tables stays under 300 MiB RSS (BENCHMARKS.md).
            max_bytes: 32 << 20,
            max_age_ms: 10_000,
            target_file_size: 128 << 20,
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            commit_attempts: 10,
            mailbox: 16,
        }
    }
}

impl WriterConfig {
    pub fn writer_properties(&self) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .build()
    }
}

/// Errors of the table writer.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("table {table}: {source}")]
    Checkpoint {
        table: String,
        #[source]
        source: CheckpointError,
    },
    #[error("table {table}: {key} moved to {stored:?} by another writer; resume from there")]
    Fenced {
        table: String,
        key: SourceKey,
        stored: Option<Position>,
    },
    #[error("table {table}: append for {key} expects {got:?} but the previous append ended at {buffered}")]
    OutOfOrder {
        table: String,
        key: SourceKey,
        got: Option<Position>,
        buffered: Position,
    },
    #[error("table {table}: batch schema does not match the table")]
    Schema { table: String },
    #[error("table writer stopped")]
    Stopped,
}

struct Pending {
    expect: Option<Position>,
    end: Position,
    batches: Vec<RecordBatch>,
    rows: usize,
}

/// What one flush did.
#[derive(Debug, Default, Clone)]
pub struct FlushOutcome {
    /// The Delta version committed, if a commit was made.
    pub version: Option<i64>,
    pub rows: usize,
    pub files: usize,
    /// Keys whose position this flush committed (or found already committed).
    pub committed: Vec<(SourceKey, Position)>,
    /// Keys another writer had moved; their rows were dropped.
    pub fenced: Vec<(SourceKey, Option<Position>)>,
}

/// Running totals of a writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub rows_buffered: usize,
    pub rows_committed: u64,
    pub commits: u64,
    pub files: u64,
    pub fenced: u64,
}

/// One Delta table's buffer, position index and commit logic.
pub struct TableSink {
    name: String,
    table: DeltaTable,
    schema: SchemaRef,
    index: CheckpointIndex,
    cfg: WriterConfig,
    props: WriterProperties,
    pending: BTreeMap<SourceKey, Pending>,
    fenced: HashMap<SourceKey, Option<Position>>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
    stats: SinkStats,
    metrics: TableMetrics,
}

impl TableSink {
    /// Opens (or creates) table `name` under `tables`.
    pub async fn open(
        tables: &TablesConfig,
        name: &str,
        schema: SchemaRef,
        cfg: WriterConfig,
    ) -> Result<Self, WriterError> {
        let table = tables.open_or_create(name, &schema).await?;
        let props = cfg.writer_properties();
        Ok(Self {
            name: name.to_string(),
            table,
            schema,
            index: CheckpointIndex::new(),
            cfg,
            props,
            pending: BTreeMap::new(),
            fenced: HashMap::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            stats: SinkStats::default(),
            metrics: metrics().table(name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            rows_buffered: self.rows,
            ..self.stats
        }
    }

    fn delta_err(&self, source: DeltaTableError) -> WriterError {
        WriterError::Delta {
            table: self.name.clone(),
            source,
        }
    }

    /// Loads the newest table version and brings the position index up to it.
    async fn refresh(&mut self) -> Result<i64, WriterError> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.delta_err(e))?;
        let version = self.table.version().map_or(-1, |v| v as i64);
        let store = self.table.log_store().object_store(None);
        match self.index.advance(store.as_ref(), version).await {
            Err(CheckpointError::CheckpointAhead { .. }) => {
                // Our index is older than the newest Delta checkpoint: rebuild it.
                self.index = CheckpointIndex::new();
                self.index.advance(store.as_ref(), version).await
            }
            r => r,
        }
        .map_err(|source| WriterError::Checkpoint {
            table: self.name.clone(),
            source,
        })?;
        Ok(version)
    }

    /// Every source position stored in the table, as of its newest version.
    pub async fn checkpoints(&mut self) -> Result<HashMap<SourceKey, Position>, WriterError> {
        self.refresh().await?;
        Ok(self.index.all(&self.name))
    }

    /// Buffers `batch` (if any) for `key`, covering positions up to `end`.
    pub fn append(
        &mut self,
        key: SourceKey,
        expect: Option<Position>,
        end: Position,
        batch: Option<RecordBatch>,
    ) -> Result<(), WriterError> {
        if let Some(b) = &batch {
            if b.schema().fields() != self.schema.fields() {
                return Err(WriterError::Schema {
                    table: self.name.clone(),
                });
            }
        }
        let pending = match self.pending.get_mut(&key) {
            Some(p) => {
                if expect.as_ref() != Some(&p.end) {
                    return Err(WriterError::OutOfOrder {
                        table: self.name.clone(),
                        key,
                        got: expect,
                        buffered: p.end.clone(),
                    });
                }
                p.end = end;
                p
            }
            None => {
                if let Some(stored) = self.fenced.get(&key) {
                    if *stored != expect {
                        return Err(WriterError::Fenced {
                            table: self.name.clone(),
                            key,
                            stored: stored.clone(),
                        });
                    }
                    self.fenced.remove(&key);
                }
                self.pending.entry(key).or_insert(Pending {
                    expect,
                    end,
                    batches: Vec::new(),
                    rows: 0,
                })
            }
        };
        if let Some(b) = batch.filter(|b| b.num_rows() > 0) {
            self.rows += b.num_rows();
            self.bytes += b.get_array_memory_size();
            pending.rows += b.num_rows();
            pending.batches.push(b);
        }
        self.oldest.get_or_insert_with(Instant::now);
        self.metrics.buffered_rows.set(self.rows as i64);
        Ok(())
    }

    /// True when buffered rows or bytes cross their threshold.
    pub fn is_full(&self) -> bool {
        self.rows >= self.cfg.max_rows || self.bytes >= self.cfg.max_bytes
    }

    /// True when the oldest buffered append is older than the age threshold.
    pub fn is_due(&self) -> bool {
        self.oldest
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.cfg.max_age_ms))
    }

    /// Writes and commits everything buffered (see the module docs for the per-key rules).
    pub async fn flush(&mut self) -> Result<FlushOutcome, WriterError> {
        let mut outcome = FlushOutcome::default();
        if self.pending.is_empty() {
            return Ok(outcome);
        }
        let started = Instant::now();
        // Files written for a set of keys; rewritten only if the set shrinks on a retry.
        let mut written: Option<(Vec<SourceKey>, Vec<Action>)> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.try_flush(&mut written, &mut outcome).await;
            match result {
                Ok(()) => break,
                Err(e) if attempt >= self.cfg.commit_attempts => {
                    self.metrics.flush_failures.inc();
                    return Err(e);
                }
                Err(e) => {
                    self.metrics.flush_retries.inc();
                    tracing::warn!(table = %self.name, attempt, error = %e, "flush failed; re-checking positions and retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
            }
        }
        self.rows = self.pending.values().map(|p| p.rows).sum();
        self.bytes = self
            .pending
            .values()
            .flat_map(|p| &p.batches)
            .map(|b| b.get_array_memory_size())
            .sum();
        if self.pending.is_empty() {
            self.oldest = None;
        }
        self.metrics.buffered_rows.set(self.rows as i64);
        if outcome.version.is_some() {
            self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
        }
        tracing::debug!(table = %self.name, rows = outcome.rows, ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(outcome)
    }

    async fn try_flush(
        &mut self,
        written: &mut Option<(Vec<SourceKey>, Vec<Action>)>,
        outcome: &mut FlushOutcome,
    ) -> Result<(), WriterError> {
        self.refresh().await?;
        // Decide per key against the positions stored at this version.
        let mut include = Vec::new();
        let keys: Vec<SourceKey> = self.pending.keys().cloned().collect();
        for key in keys {
            let stored = self.index.get(&self.name, &key);
            let p = &self.pending[&key];
            if stored == p.expect {
                include.push(key);
            } else if stored.as_ref() == Some(&p.end) {
                let p = self.pending.remove(&key).expect("key is pending");
                outcome.committed.push((key, p.end));
            } else {
                tracing::warn!(table = %self.name, %key, ?stored, "position moved by another writer; dropping buffered rows");
                self.pending.remove(&key);
                self.stats.fenced += 1;
                self.fenced.insert(key.clone(), stored.clone());
                outcome.fenced.push((key, stored));
            }
        }
        if include.is_empty() {
            return Ok(());
        }
        let adds = match written.take() {
            Some((keys, adds)) if keys == include => adds,
            _ => self.write_files(&include).await?,
        };
        *written = Some((include.clone(), adds.clone()));

        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut txns: Vec<Transaction> = Vec::new();
        for key in &include {
            let end = &self.pending[key].end;
            txns.extend(
                encode(&self.name, key, end, now_ms).map_err(|source| WriterError::Checkpoint {
                    table: self.name.clone(),
                    source,
                })?,
            );
        }
        let files = adds.len();
        let bytes: i64 = adds
            .iter()
            .map(|a| match a {
                Action::Add(add) => add.size,
                _ => 0,
            })
            .sum();
        let snapshot = self.table.snapshot().map_err(|e| self.delta_err(e))?;
        let read_version = snapshot.version() as i64;
        let commit_started = Instant::now();
        let commit = CommitBuilder::from(CommitProperties::default().with_application_transactions(txns.clone()))
            .with_actions(adds)
            .with_max_retries(self.cfg.commit_attempts as usize)
            .build(
                Some(snapshot),
                self.table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                },
            )
            .await
            .map_err(|e| self.delta_err(e))?;
        let version = commit.version() as i64;
        self.metrics
            .commit_duration
            .observe(commit_started.elapsed().as_secs_f64());
        // delta-rs retries a conflicting commit at the next version (its conflict checker
        // passed): every version between our read and our commit was another writer's.
        self.metrics
            .commit_conflicts
            .inc_by(u64::try_from(version - read_version - 1).unwrap_or(0));
        self.index.record(version, &txns);

        let mut rows = 0;
        for key in include {
            let p = self.pending.remove(&key).expect("included key is pending");
            rows += p.rows;
            outcome.committed.push((key, p.end));
        }
        *written = None;
        outcome.version = Some(version);
        outcome.rows += rows;
        outcome.files += files;
        self.stats.commits += 1;
        self.stats.rows_committed += rows as u64;
        self.stats.files += files as u64;
        self.metrics.commits.inc();
        self.metrics.rows_committed.inc_by(rows as u64);
        self.metrics.written_files.inc_by(files as u64);
        self.metrics.written_bytes.inc_by(u64::try_from(bytes).unwrap_or(0));
        tracing::debug!(table = %self.name, version, rows, files, "committed");
        Ok(())
    }

    async fn write_files(&self, keys: &[SourceKey]) -> Result<Vec<Action>, WriterError> {
        let batches: Vec<&RecordBatch> = keys.iter().flat_map(|k| &self.pending[k].batches).collect();
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|e| self.delta_err(e))?
            .with_writer_properties(self.props.clone())
            .with_target_file_size(self.cfg.target_file_size);
        for b in batches {
            writer.write(b.clone()).await.map_err(|e| self.delta_err(e))?;
        }
        let adds = writer.flush().await.map_err(|e| self.delta_err(e))?;
        Ok(adds.into_iter().map(Action::Add).collect())
    }
}

// ---------------------------------------------------------------------------------------
// The actor.

/// Observer called after every flush of a table (metrics, progress, source acks).
pub type CommitObserver = Arc<dyn Fn(&str, &FlushOutcome) + Send + Sync>;

/// Rows (or a watermark) for one source key; replies once buffered (after a flush if the
/// buffer became full).
#[derive(Message)]
#[rtype(result = "Result<(), WriterError>")]
pub struct Append {
    pub key: SourceKey,
    pub expect: Option<Position>,
    pub end: Position,
    pub batch: Option<RecordBatch>,
}

/// Commit everything buffered now.
#[derive(Message)]
#[rtype(result = "Result<FlushOutcome, WriterError>")]
pub struct Flush;

/// All positions stored in the table.
#[derive(Message)]
#[rtype(result = "Result<HashMap<SourceKey, Position>, WriterError>")]
pub struct Checkpoints;

/// Running totals.
#[derive(Message)]
#[rtype(result = "SinkStats")]
pub struct Stats;

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// Actor owning one [`TableSink`].
pub struct TableWriter {
    // Behind an async mutex rather than moved in and out of the actor: actix runs
    // `AtomicResponse`s one at a time for mailbox messages, but a `ctx.notify`ed Tick can
    // start while another handler's future is still in flight (actix issue #458). Every
    // handler locks inside its future, so overlapping handlers queue (FIFO) instead of
    // finding the sink gone.
    sink: Rc<tokio::sync::Mutex<TableSink>>,
    cfg: WriterConfig,
    stats: SinkStats,
    on_commit: Option<CommitObserver>,
}

impl TableWriter {
    /// Starts the writer on its own arbiter (thread). `on_commit` observes every flush.
    pub fn start_on_arbiter(sink: TableSink, on_commit: Option<CommitObserver>) -> Addr<TableWriter> {
        let arbiter = Arbiter::new();
        TableWriter::start_in_arbiter(&arbiter.handle(), move |_| TableWriter {
            stats: sink.stats(),
            cfg: sink.cfg.clone(),
            sink: Rc::new(tokio::sync::Mutex::new(sink)),
            on_commit,
        })
    }

    fn run<R, F>(&mut self, f: F) -> AtomicResponse<Self, R>
    where
        R: 'static,
        F: for<'a> FnOnce(&'a mut TableSink) -> futures::future::LocalBoxFuture<'a, R> + 'static,
    {
        let sink = Rc::clone(&self.sink);
        let fut = async move {
            let mut guard = sink.lock().await;
            let r = f(&mut guard).await;
            (guard.stats(), r)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|(stats, r), act, _| {
            act.stats = stats;
            r
        })))
    }

    fn observer(&self) -> Option<CommitObserver> {
        self.on_commit.clone()
    }
}

async fn flush_observed(sink: &mut TableSink, observe: Option<CommitObserver>) -> Result<FlushOutcome, WriterError> {
    let outcome = sink.flush().await?;
    if let Some(f) = observe {
        f(sink.name(), &outcome);
    }
    Ok(outcome)
}

impl Actor for TableWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let cfg = &self.cfg;
        ctx.set_mailbox_capacity(cfg.mailbox.max(1));
        // The tick's period adds to the worst-case age of a row: keep it a tenth of it.
        let every = Duration::from_millis((cfg.max_age_ms / 10).clamp(10, 1000));
        ctx.run_interval(every, |_, ctx| ctx.notify(Tick));
    }
}

impl Handler<Append> for TableWriter {
    type Result = AtomicResponse<Self, Result<(), WriterError>>;
    fn handle(&mut self, m: Append, _: &mut Context<Self>) -> Self::Result {
        let observe = self.observer();
        self.run(move |sink| {
            Box::pin(async move {
                sink.append(m.key, m.expect, m.end, m.batch)?;
                if sink.is_full() {
                    flush_observed(sink, observe).await?;
                }
                Ok(())
            })
        })
    }
}

impl Handler<Flush> for TableWriter {
    type Result = AtomicResponse<Self, Result<FlushOutcome, WriterError>>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let observe = self.observer();
        self.run(move |sink| Box::pin(flush_observed(sink, observe)))
    }
}

impl Handler<Checkpoints> for TableWriter {
    type Result = AtomicResponse<Self, Result<HashMap<SourceKey, Position>, WriterError>>;
    fn handle(&mut self, _: Checkpoints, _: &mut Context<Self>) -> Self::Result {
        self.run(|sink| Box::pin(sink.checkpoints()))
    }
}

impl Handler<Stats> for TableWriter {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl Handler<Tick> for TableWriter {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, _: Tick, _: &mut Context<Self>) -> Self::Result {
        let observe = self.observer();
        self.run(move |sink| {
            Box::pin(async move {
                if sink.is_due() {
                    if let Err(e) = flush_observed(sink, observe).await {
                        // The rows stay buffered; the next tick or append retries.
                        tracing::error!(table = %sink.name(), error = %e, "age-triggered flush failed");
                    }
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::checkpoint::SourceKind;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};

    // Regression: a 10 ms Tick interval overlapping appends and explicit flushes used to
    // find the sink moved out by another in-flight handler and panic (seen in CI).
    #[actix_rt::test]
    async fn ticks_appends_and_flushes_overlap_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let tables = TablesConfig {
            location: dir.path().to_string_lossy().into_owned(),
            ..TablesConfig::default()
        };
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let cfg = WriterConfig {
            max_rows: 7,
            max_age_ms: 1,
            ..WriterConfig::default()
        };
        let sink = TableSink::open(&tables, "t", schema.clone(), cfg).await.unwrap();
        let writer = TableWriter::start_on_arbiter(sink, None);
        // Like real sources: each key awaits its appends in order, keys run side by side,
        // and explicit flushes arrive in between.
        let per_key = (0..3).map(|p| {
            let (writer, schema) = (writer.clone(), schema.clone());
            async move {
                let key = SourceKey::new(SourceKind::Kafka, "s", p.to_string());
                for i in 0..40i64 {
                    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![i; 3]))]);
                    let append = Append {
                        key: key.clone(),
                        expect: (i > 0).then_some(Position::Offset(i)),
                        end: Position::Offset(i + 1),
                        batch: Some(batch.unwrap()),
                    };
                    writer
                        .send(append)
                        .await
                        .expect("writer alive")
                        .expect("append accepted");
                    if i % 5 == 0 {
                        writer.do_send(Flush);
                    }
                }
            }
        });
        futures::future::join_all(per_key).await;
        let sent = 3 * 40 * 3;
        writer.send(Flush).await.unwrap().unwrap();
        let stats = writer.send(Stats).await.unwrap();
        assert_eq!(stats.rows_committed as i64, sent);
        let positions = writer.send(Checkpoints).await.unwrap().unwrap();
        assert_eq!(positions.len(), 3);
        assert!(positions.values().all(|p| *p == Position::Offset(40)), "{positions:?}");
    }
}
