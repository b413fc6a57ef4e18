//! [`TableSink`]: one Delta table's buffer, its position index and its commits. Plain async
//! code (the actor in [`super::writer`] drives it); the decisions are [`super::plan`]'s.
//!
//! A flush is one Delta commit: the Parquet files of every key the plan commits, and for
//! each of those keys a `txn` action with its new position ([`super::checkpoint`]). A
//! failed attempt (a store error, a stall past the request timeout) is retried whole after
//! a backoff, re-reading the positions first, so an attempt whose commit landed although
//! its answer was lost finds its keys committed instead of writing them twice.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use parquet::file::properties::WriterProperties;

use super::checkpoint::{encode, CheckpointError, CheckpointIndex, Position, SourceKey};
use super::plan::{self, Admit, FlushPlan, Range};
use super::table::{TableError, TablesConfig};
use super::WriterConfig;
use crate::backoff::Backoff;
use crate::metrics::{metrics, TableMetrics};

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

/// Rows buffered for one source key, and the range of positions they cover.
struct Pending {
    range: Range,
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

/// Files already written for a set of keys by an earlier attempt of the same flush:
/// reused when the next attempt commits the same keys.
type Written = Option<(Vec<SourceKey>, Vec<Action>)>;

/// One Delta table's buffer, position index and commit logic.
pub struct TableSink {
    name: String,
    table: DeltaTable,
    schema: SchemaRef,
    index: CheckpointIndex,
    cfg: WriterConfig,
    props: WriterProperties,
    pending: BTreeMap<SourceKey, Pending>,
    /// Keys another writer moved, with the position it stored: appends must resume there.
    fenced: HashMap<SourceKey, Option<Position>>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
    stats: SinkStats,
    metrics: TableMetrics,
}

impl TableSink {
    /// Opens (or creates, partitioned by `partitions`) table `name` under `tables`.
    pub async fn open(
        tables: &TablesConfig,
        name: &str,
        schema: SchemaRef,
        partitions: &[&str],
        cfg: WriterConfig,
    ) -> Result<Self, WriterError> {
        let table = tables.open_or_create(name, &schema, partitions).await?;
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

    pub fn config(&self) -> &WriterConfig {
        &self.cfg
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

    fn checkpoint_err(&self, source: CheckpointError) -> WriterError {
        WriterError::Checkpoint {
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
        let advanced = match self.index.advance(store.as_ref(), version).await {
            Err(CheckpointError::CheckpointAhead { .. }) => {
                // Our index is older than the newest Delta checkpoint: rebuild it.
                self.index = CheckpointIndex::new();
                self.index.advance(store.as_ref(), version).await
            }
            r => r,
        };
        advanced.map_err(|e| self.checkpoint_err(e))?;
        Ok(version)
    }

    /// Every source position stored in the table, as of its newest version.
    pub async fn checkpoints(&mut self) -> Result<HashMap<SourceKey, Position>, WriterError> {
        self.refresh().await?;
        Ok(self.index.all(&self.name))
    }

    /// Buffers `batch` (if any) for `key`, covering positions from `expect` up to `end`.
    pub fn append(
        &mut self,
        key: SourceKey,
        expect: Option<Position>,
        end: Position,
        batch: Option<RecordBatch>,
    ) -> Result<(), WriterError> {
        if batch
            .as_ref()
            .is_some_and(|b| b.schema().fields() != self.schema.fields())
        {
            return Err(WriterError::Schema {
                table: self.name.clone(),
            });
        }
        let buffered = self.pending.get(&key).map(|p| &p.range.end);
        match plan::admit(buffered, self.fenced.get(&key), expect.as_ref()) {
            Admit::OutOfOrder { buffered } => {
                return Err(WriterError::OutOfOrder {
                    table: self.name.clone(),
                    key,
                    got: expect,
                    buffered,
                })
            }
            Admit::Fenced { stored } => {
                return Err(WriterError::Fenced {
                    table: self.name.clone(),
                    key,
                    stored,
                })
            }
            Admit::Extend | Admit::Start => {}
        }
        self.fenced.remove(&key);
        let pending = self.pending.entry(key).or_insert_with(|| Pending {
            range: Range {
                expect,
                end: end.clone(),
            },
            batches: Vec::new(),
            rows: 0,
        });
        pending.range.end = end;
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

    /// Writes and commits everything buffered (see [`super::plan`] for the per-key rules),
    /// retrying a failed attempt up to `writer.commit_attempts` times.
    pub async fn flush(&mut self) -> Result<FlushOutcome, WriterError> {
        let mut outcome = FlushOutcome::default();
        if self.pending.is_empty() {
            return Ok(outcome);
        }
        let started = Instant::now();
        let mut written: Written = None;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match self.try_flush(&mut written, &mut outcome).await {
                Ok(()) => break,
                Err(e) if backoff.attempts() + 1 >= self.cfg.commit_attempts => {
                    self.metrics.flush_failures.inc();
                    return Err(e);
                }
                Err(e) => {
                    self.metrics.flush_retries.inc();
                    let attempt = backoff.attempts() + 1;
                    tracing::warn!(table = %self.name, attempt, error = %e, "flush failed; re-checking positions and retrying");
                    tokio::time::sleep(backoff.next_pause()).await;
                }
            }
        }
        self.recount();
        if outcome.version.is_some() {
            self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
        }
        tracing::debug!(table = %self.name, rows = outcome.rows, ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(outcome)
    }

    /// Buffer totals after a flush removed keys.
    fn recount(&mut self) {
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
    }

    /// One attempt: decide per key at the newest version, then write and commit.
    async fn try_flush(&mut self, written: &mut Written, outcome: &mut FlushOutcome) -> Result<(), WriterError> {
        self.refresh().await?;
        let decided = plan::plan(self.pending.iter().map(|(k, p)| (k, &p.range)), |k| {
            self.index.get(&self.name, k)
        });
        let FlushPlan {
            commit,
            committed,
            fenced,
        } = decided;
        for key in committed {
            let p = self.pending.remove(&key).expect("a planned key is pending");
            outcome.committed.push((key, p.range.end));
        }
        for (key, stored) in fenced {
            tracing::warn!(table = %self.name, %key, ?stored, "position moved by another writer; dropping buffered rows");
            self.pending.remove(&key);
            self.stats.fenced += 1;
            self.fenced.insert(key.clone(), stored.clone());
            outcome.fenced.push((key, stored));
        }
        if commit.is_empty() {
            return Ok(());
        }
        let adds = match written.take() {
            Some((keys, adds)) if keys == commit => adds,
            _ => self.write_files(&commit).await?,
        };
        *written = Some((commit.clone(), adds.clone()));
        let version = self.commit(&commit, adds, outcome).await?;
        *written = None;
        tracing::debug!(table = %self.name, version, "committed");
        Ok(())
    }

    /// The Delta commit of `adds` with the new positions of `keys`; then the bookkeeping.
    async fn commit(
        &mut self,
        keys: &[SourceKey],
        adds: Vec<Action>,
        outcome: &mut FlushOutcome,
    ) -> Result<i64, WriterError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut txns: Vec<Transaction> = Vec::new();
        for key in keys {
            let end = &self.pending[key].range.end;
            txns.extend(encode(&self.name, key, end, now_ms).map_err(|e| self.checkpoint_err(e))?);
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
            .with_max_retries(self.cfg.conflict_retries as usize)
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
        for key in keys {
            let p = self.pending.remove(key).expect("a committed key is pending");
            rows += p.rows;
            outcome.committed.push((key.clone(), p.range.end));
        }
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
        Ok(version)
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
