//! [`TableSink`]: one Delta table's buffer, its position index and its commits. Plain async
//! code (the actor in [`super::writer`] drives it); the decisions are [`super::plan`]'s.
//!
//! A flush is one Delta commit: the Parquet files of every key the plan commits, and for
//! each of those keys a `txn` action with its new position ([`super::checkpoint`]). A
//! failed attempt (a store error, a stall past the request timeout) is retried whole after
//! a backoff, re-reading the positions first, so an attempt whose commit landed although
//! its answer was lost finds its keys committed instead of writing them twice.
//!
//! A table that cannot be committed to is stalled, not abandoned: see [`super::stall`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Date32Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError};
use indexmap::IndexMap;
use parquet::file::properties::WriterProperties;

use super::checkpoint::{encode, CheckpointError, CheckpointIndex, Position, SourceKey};
use super::damage::damaged_log;
use super::plan::{self, Admit, FlushPlan, Range};
use super::stall::{Stall, Stalled, STALL_LOG_EVERY, STALL_RETRY_MAX, STALL_RETRY_MIN};
use super::table::{schema_diff, TableError, TablesConfig};
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
    #[error("table {table}: its schema is not the one pinpipe writes ({detail}); another tool changed it")]
    SchemaChanged { table: String, detail: String },
    #[error("{error} (commits to {table} stopped after {attempts} failed attempts)")]
    Stalled {
        table: String,
        attempts: u64,
        error: String,
    },
    #[error("table writer stopped")]
    Stopped,
}

impl WriterError {
    /// Whether retrying at once may help (a store error, a conflict); a schema another tool
    /// changed or a position that cannot be encoded stays until someone acts.
    fn is_transient(&self) -> bool {
        !matches!(
            self,
            WriterError::SchemaChanged { .. }
                | WriterError::Table(TableError::DamagedLog { .. })
                | WriterError::Checkpoint {
                    source: CheckpointError::BadSequence(_),
                    ..
                }
        )
    }
}

/// Rows buffered for one source key, and the range of positions they cover.
struct Pending {
    range: Range,
    batches: Vec<RecordBatch>,
    rows: usize,
    /// For each of the range's steps, the batches and rows buffered up to it.
    cuts: Vec<(usize, usize)>,
}

impl Pending {
    /// The next append ends at `end`; its rows (if any) are pushed after this. A new step
    /// of the range gets its cut here, so the two lists stay in step.
    fn extend(&mut self, end: Position) {
        let steps = self.range.steps.len();
        self.range.extend(end);
        if self.range.steps.len() > steps {
            self.cuts.push((self.batches.len(), self.rows));
        }
    }

    /// Drops the rows up to the range's step `i` (the table holds them).
    fn trim(&mut self, i: usize) {
        let (batches, rows) = self.cuts[i];
        self.batches.drain(..batches);
        self.rows -= rows;
        self.cuts.drain(..=i);
        for cut in &mut self.cuts {
            *cut = (cut.0 - batches, cut.1 - rows);
        }
        self.range.trim(i);
    }
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
    /// `schema` as Delta types, compared with the table's before every commit.
    kernel_schema: StructType,
    index: CheckpointIndex,
    cfg: WriterConfig,
    props: WriterProperties,
    /// The table's partition columns (the raw tables' `ingest_date`).
    partitions: Vec<String>,
    pending: BTreeMap<SourceKey, Pending>,
    /// Keys another writer moved, with the position it stored: appends must resume there.
    fenced: HashMap<SourceKey, Option<Position>>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
    stats: SinkStats,
    metrics: TableMetrics,
    stalled: Option<Stalled>,
    stall: Arc<Stall>,
}

impl TableSink {
    /// Opens (or creates, partitioned by `partitions`) table `name` under `tables`. A table
    /// whose schema another tool changed opens stalled (the other tables keep going).
    pub async fn open(
        tables: &TablesConfig,
        name: &str,
        schema: SchemaRef,
        partitions: &[&str],
        cfg: WriterConfig,
    ) -> Result<Self, WriterError> {
        let table = tables.open_or_create(name, &schema, partitions).await?;
        let kernel_schema: StructType = schema.as_ref().try_into_kernel().map_err(|e| WriterError::Delta {
            table: name.to_string(),
            source: e.into(),
        })?;
        let props = cfg.writer_properties();
        let mut sink = Self {
            name: name.to_string(),
            table,
            schema,
            kernel_schema,
            index: CheckpointIndex::new(),
            cfg,
            props,
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
            pending: BTreeMap::new(),
            fenced: HashMap::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            stats: SinkStats::default(),
            metrics: metrics().table(name),
            stalled: None,
            stall: Arc::new(Stall::default()),
        };
        if let Err(e) = sink.check_schema() {
            sink.stall_on(e, 1);
        }
        Ok(sink)
    }

    /// The table's stall, readable without asking the writer.
    pub fn stall(&self) -> Arc<Stall> {
        self.stall.clone()
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// Fails when the table's schema (at the loaded version) is not the one we write.
    fn check_schema(&self) -> Result<(), WriterError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_err(e))?;
        let diff = schema_diff(snapshot.schema().as_ref(), &self.kernel_schema);
        if diff.is_empty() {
            return Ok(());
        }
        Err(WriterError::SchemaChanged {
            table: self.name.clone(),
            detail: diff.join("; "),
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
        if let Err(source) = self.table.update_incremental(None).await {
            let store = self.table.log_store().object_store(None);
            return Err(
                match damaged_log(store.as_ref(), &object_store::path::Path::from("")).await {
                    Some(detail) => WriterError::Table(TableError::DamagedLog {
                        table: self.name.clone(),
                        detail,
                        source,
                    }),
                    None => self.delta_err(source),
                },
            );
        }
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

    /// Buffers `batch` (if any) for `key`, covering positions from `expect` up to `end`;
    /// its oldest record was read at `read_at` (`None`: now), where its age starts.
    pub fn append(
        &mut self,
        key: SourceKey,
        expect: Option<Position>,
        end: Position,
        batch: Option<RecordBatch>,
        read_at: Option<Instant>,
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
            range: Range::new(expect, end.clone()),
            batches: Vec::new(),
            rows: 0,
            cuts: Vec::new(),
        });
        pending.extend(end);
        if let Some(b) = batch.filter(|b| b.num_rows() > 0) {
            self.rows += b.num_rows();
            self.bytes += b.get_array_memory_size();
            pending.rows += b.num_rows();
            pending.batches.push(b);
        }
        let read_at = read_at.unwrap_or_else(Instant::now);
        self.oldest = Some(self.oldest.map_or(read_at, |t| t.min(read_at)));
        self.metrics.buffered_rows.set(self.rows as i64);
        if self.stalled.is_some() {
            // Kept: they are committed once the stall ends. The caller should stop sending.
            return Err(self.stalled_error());
        }
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
    /// retrying a failed attempt up to `writer.commit_attempts` times; then the table is
    /// stalled (see the module docs) and each call makes at most one attempt per pause.
    pub async fn flush(&mut self) -> Result<FlushOutcome, WriterError> {
        let mut outcome = FlushOutcome::default();
        if let Some(s) = &self.stalled {
            if Instant::now() < s.next_try {
                return Err(self.stalled_error());
            }
            if self.pending.is_empty() {
                // Nothing to commit: see whether the cause is gone (a schema put back).
                return match self.probe().await {
                    Ok(()) => Ok(outcome),
                    Err(e) => Err(self.stall_on(e, 1)),
                };
            }
        }
        if self.pending.is_empty() {
            return Ok(outcome);
        }
        let started = Instant::now();
        let mut written: Written = None;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            let e = match self.try_flush(&mut written, &mut outcome).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let attempts = backoff.attempts() + 1;
            if self.stalled.is_some() || !e.is_transient() || attempts >= self.cfg.commit_attempts {
                return Err(self.stall_on(e, attempts));
            }
            self.metrics.flush_retries.inc();
            tracing::warn!(table = %self.name, attempt = attempts, error = %e, "flush failed; re-checking positions and retrying");
            tokio::time::sleep(backoff.next_pause()).await;
        }
        self.recover();
        self.recount();
        if outcome.version.is_some() {
            self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
        }
        tracing::debug!(table = %self.name, rows = outcome.rows, ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(outcome)
    }

    /// A stalled table with nothing buffered: the newest version, and its schema.
    async fn probe(&mut self) -> Result<(), WriterError> {
        self.refresh().await?;
        self.check_schema()?;
        self.recover();
        Ok(())
    }

    /// Records a failed attempt: starts the stall (counted in `pinpipe_flush_failures_total`,
    /// logged as an error) or moves its next try; returns the error callers see.
    fn stall_on(&mut self, e: WriterError, attempts: u32) -> WriterError {
        let now = Instant::now();
        let error = e.to_string();
        match &mut self.stalled {
            Some(s) => {
                self.metrics.flush_retries.inc();
                s.attempts += 1;
                s.next_try = now + s.backoff.next_pause();
                s.error = error;
                if s.logged.elapsed() >= STALL_LOG_EVERY {
                    s.logged = now;
                    tracing::warn!(table = %self.name, attempts = s.attempts, seconds = s.since.elapsed().as_secs(), error = %s.error, "table still stalled; rows kept");
                }
            }
            None => {
                self.metrics.flush_failures.inc();
                self.metrics.stalled.set(1);
                tracing::error!(table = %self.name, attempts, error = %error, "table stalled: commits stopped, rows kept, retrying every 1-30 s; its kind's sources pause");
                let mut backoff = Backoff::new(STALL_RETRY_MIN, STALL_RETRY_MAX);
                self.stalled = Some(Stalled {
                    since: now,
                    next_try: now + backoff.next_pause(),
                    backoff,
                    attempts: u64::from(attempts),
                    error,
                    logged: now,
                });
            }
        }
        let s = self.stalled.as_ref().expect("stalled");
        // Readiness names the table itself.
        let prefix = format!("table {}: ", self.name);
        let said = s.error.strip_prefix(&prefix).unwrap_or(&s.error);
        self.stall.set(Some((s.since, said.to_string())));
        self.stalled_error()
    }

    fn stalled_error(&self) -> WriterError {
        let s = self.stalled.as_ref().expect("stalled");
        WriterError::Stalled {
            table: self.name.clone(),
            attempts: s.attempts,
            error: s.error.clone(),
        }
    }

    /// A flush succeeded: the stall, if any, is over.
    fn recover(&mut self) {
        if let Some(s) = self.stalled.take() {
            self.stall.set(None);
            self.metrics.stalled.set(0);
            tracing::info!(table = %self.name, attempts = s.attempts, seconds = s.since.elapsed().as_secs(), "table recovered: commits resumed");
        }
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
        // Before anything is written: files of our schema in a table of another one would
        // break its readers.
        self.check_schema()?;
        let decided = plan::plan(self.pending.iter().map(|(k, p)| (k, &p.range)), |k| {
            self.index.get(&self.name, k)
        });
        let FlushPlan {
            commit,
            landed,
            committed,
            fenced,
        } = decided;
        for (key, i) in landed {
            let p = self.pending.get_mut(&key).expect("a planned key is pending");
            let at = p.range.steps[i].clone();
            p.trim(i);
            tracing::warn!(table = %self.name, %key, ?at, "an earlier attempt committed these rows up to this position (its answer was lost); committing the rest");
            // Files an earlier attempt wrote hold the trimmed rows.
            *written = None;
        }
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
            let written = match one_partition(b, &self.partitions) {
                Some(values) => writer
                    .write_partition(b.clone(), &values, WriteMode::Default)
                    .await
                    .map(|_| ()),
                None => writer.write(b.clone()).await,
            };
            written.map_err(|e| self.delta_err(e))?;
        }
        let adds = writer.flush().await.map_err(|e| self.delta_err(e))?;
        Ok(adds.into_iter().map(Action::Add).collect())
    }
}

/// The partition values every row of `b` shares, if it does and the partition columns are
/// dates (the raw tables' `ingest_date`: a batch is one hand-over, nearly always of one
/// day). Such a batch goes to its partition as it is; deltalake's own split would hash
/// every row and copy the whole batch, the record bytes included, to group it.
fn one_partition<S: ScalarExt>(b: &RecordBatch, columns: &[String]) -> Option<IndexMap<String, S>> {
    let mut values = IndexMap::with_capacity(columns.len());
    for name in uniform_dates(b, columns)? {
        let col = b.column_by_name(name)?;
        values.insert(name.clone(), S::from_array(col.as_ref(), 0)?);
    }
    Some(values)
}

/// `columns`, if there are some, each is a date column of `b` and each holds one value in
/// every row (no nulls).
fn uniform_dates<'a>(b: &RecordBatch, columns: &'a [String]) -> Option<&'a [String]> {
    if columns.is_empty() || b.num_rows() == 0 {
        return None;
    }
    for name in columns {
        let dates = b.column_by_name(name)?.as_primitive_opt::<Date32Type>()?;
        let days = dates.values();
        if dates.null_count() > 0 || days.iter().any(|d| *d != days[0]) {
            return None;
        }
    }
    Some(columns)
}

#[cfg(test)]
mod one_partition_tests {
    use std::sync::Arc;

    use arrow_array::{Date32Array, Int32Array};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn batch(days: Vec<Option<i32>>) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("n", DataType::Int32, false),
            Field::new("ingest_date", DataType::Date32, true),
        ]);
        let n = Int32Array::from_iter_values(0..days.len() as i32);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(n), Arc::new(Date32Array::from(days))]).unwrap()
    }

    #[test]
    fn only_a_batch_of_one_day_skips_the_split() {
        let cols = ["ingest_date".to_string()];
        assert!(uniform_dates(&batch(vec![Some(20_000); 3]), &cols).is_some());
        // Across midnight, a null, an empty batch, an unpartitioned table, a column that is
        // not a date: deltalake's split decides.
        assert!(uniform_dates(&batch(vec![Some(20_000), Some(20_001)]), &cols).is_none());
        assert!(uniform_dates(&batch(vec![Some(20_000), None]), &cols).is_none());
        assert!(uniform_dates(&batch(vec![]), &cols).is_none());
        assert!(uniform_dates(&batch(vec![Some(1)]), &[]).is_none());
        assert!(uniform_dates(&batch(vec![Some(1)]), &["n".to_string()]).is_none());
        assert!(uniform_dates(&batch(vec![Some(1)]), &["missing".to_string()]).is_none());
    }
}
