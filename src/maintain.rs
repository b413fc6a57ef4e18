//! `pinpipe maintain`: table upkeep that streaming appends make necessary.
//!
//! - **Compaction** (Delta `OPTIMIZE`): the many small files of frequent commits are
//!   rewritten into files of `target_size`. It commits with `dataChange = false`, so
//!   concurrent appends by `pinpipe run` do not conflict with it; a compaction that does
//!   conflict (another compaction, a concurrent delete) is retried on the new version,
//!   never forced. Rows, lineage columns and positions stay as they are. The files it
//!   writes have the writers' Parquet settings (`writer.zstd_level`, `raw.zstd_level` for
//!   the raw tables, no dictionary or statistics for unique columns), not deltalake's
//!   defaults (zstd 4 and a dictionary for every column).
//! - **Vacuum**: files no longer referenced by versions newer than the retention are
//!   deleted. Time travel to versions older than the retention stops working, so the
//!   retention defaults to Delta's 7 days.
//! - **Checkpoint**: a Parquet checkpoint of the log, so readers and `pinpipe run`
//!   resumes load the table without replaying every commit.
//! - **Raw retention**: with `raw.retention_days`, the raw tables' partitions (by
//!   `ingest_date`) older than that are deleted first. The predicate names only the
//!   partition column, so the delete removes whole files from the log without rewriting
//!   any; vacuum then deletes the files once the vacuum retention has passed.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use deltalake::{DeltaTable, DeltaTableError};

use crate::clean::RAW_PARTITION;
use crate::sink::table::TableError;
use crate::sink::{table_names, RawConfig, TableRole, TablesConfig, WriterConfig};

/// What `pinpipe maintain` does.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Compaction's target file size (bytes).
    pub target_size: u64,
    /// Vacuum keeps files needed by versions younger than this.
    pub retention: Duration,
    /// Conflicting compactions are retried this many times.
    pub attempts: u32,
    pub optimize: bool,
    pub vacuum: bool,
    pub checkpoint: bool,
    /// Raw partitions older than this many days are dropped; 0 keeps them forever.
    pub raw_retention_days: u32,
    /// The Parquet settings of the files compaction writes (the `[writer]` section)...
    pub writer: WriterConfig,
    /// ...and of the raw tables' (`RawConfig::writer`).
    pub raw_writer: WriterConfig,
}

impl Default for MaintainOptions {
    fn default() -> Self {
        Self {
            target_size: 128 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
            attempts: 5,
            optimize: true,
            vacuum: true,
            checkpoint: true,
            raw_retention_days: 0,
            writer: WriterConfig::default(),
            raw_writer: RawConfig::default().writer(&WriterConfig::default()),
        }
    }
}

/// Errors of `pinpipe maintain`.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("table {table}: {step}: {source}")]
    Delta {
        table: String,
        step: &'static str,
        #[source]
        source: DeltaTableError,
    },
}

/// What maintenance did to one table.
#[derive(Debug, Default, Clone)]
pub struct TableReport {
    pub table: String,
    pub files_before: usize,
    pub files_after: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub optimize_attempts: u32,
    /// Raw files whose partition the retention dropped.
    pub expired: Option<(String, usize)>,
    pub vacuumed: usize,
    pub checkpoint_version: Option<i64>,
    pub seconds: f64,
}

impl TableReport {
    pub fn line(&self) -> String {
        let mut parts = vec![format!(
            "{}: files {} -> {} (compaction removed {}, added {})",
            self.table, self.files_before, self.files_after, self.files_removed, self.files_added
        )];
        if self.optimize_attempts > 1 {
            parts.push(format!("{} attempts", self.optimize_attempts));
        }
        if let Some((before, files)) = &self.expired {
            parts.push(format!("retention dropped {files} files of partitions before {before}"));
        }
        parts.push(format!("vacuum deleted {} files", self.vacuumed));
        if let Some(v) = self.checkpoint_version {
            parts.push(format!("checkpoint at version {v}"));
        }
        parts.push(format!("{:.1}s", self.seconds));
        parts.join("; ")
    }
}

fn file_count(table: &DeltaTable) -> usize {
    table.snapshot().map_or(0, |s| s.log_data().num_files())
}

/// Maintains every pinpipe table under `tables`, and the raw tables under `raw` (their
/// location; missing tables are skipped).
pub async fn run(
    tables: &TablesConfig,
    raw: &TablesConfig,
    opts: &MaintainOptions,
) -> Result<Vec<TableReport>, MaintainError> {
    let mut out = Vec::new();
    for name in table_names() {
        let is_raw = TableRole::of_table(&name).is_some_and(|(_, r)| r == TableRole::Raw);
        let at = if is_raw { raw } else { tables };
        if let Some(mut table) = at.open_existing(&name).await? {
            let expired = match (is_raw, opts.raw_retention_days) {
                (true, days) if days > 0 => Some(expire(&mut table, &name, days).await?),
                _ => None,
            };
            let writer = if is_raw { &opts.raw_writer } else { &opts.writer };
            let mut report = maintain(table, &name, opts, writer).await?;
            report.expired = expired;
            out.push(report);
        }
    }
    Ok(out)
}

/// Deletes the raw partitions older than `days` (by `ingest_date`, UTC): a metadata-only
/// delete, since the predicate names only the partition column.
async fn expire(table: &mut DeltaTable, name: &str, days: u32) -> Result<(String, usize), MaintainError> {
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string();
    let predicate = format!("{RAW_PARTITION} < '{cutoff}'");
    let (t, metrics) = table
        .clone()
        .delete()
        .with_predicate(predicate)
        .await
        .map_err(|source| MaintainError::Delta {
            table: name.to_string(),
            step: "retention",
            source,
        })?;
    *table = t;
    Ok((cutoff, metrics.num_removed_files))
}

/// Compacts, vacuums and checkpoints one table.
pub async fn maintain(
    mut table: DeltaTable,
    name: &str,
    opts: &MaintainOptions,
    writer: &WriterConfig,
) -> Result<TableReport, MaintainError> {
    let started = Instant::now();
    let err = |step, source| MaintainError::Delta {
        table: name.to_string(),
        step,
        source,
    };
    let mut report = TableReport {
        table: name.to_string(),
        files_before: file_count(&table),
        ..Default::default()
    };
    if opts.optimize {
        let target = NonZeroU64::new(opts.target_size.max(1)).expect("max(1) is non-zero");
        loop {
            report.optimize_attempts += 1;
            let optimize = table
                .clone()
                .optimize()
                .with_target_size(target)
                .with_writer_properties(writer.writer_properties());
            match optimize.await {
                Ok((t, metrics)) => {
                    table = t;
                    report.files_removed = metrics.num_files_removed;
                    report.files_added = metrics.num_files_added;
                    break;
                }
                // A conflicting commit (another compaction, say): plan again on the newest
                // version. Nothing was committed by the failed attempt.
                Err(DeltaTableError::Transaction { source }) if report.optimize_attempts < opts.attempts.max(1) => {
                    tracing::warn!(table = name, error = %source, "compaction conflicted; retrying on the new version");
                    table.update_incremental(None).await.map_err(|e| err("reload", e))?;
                }
                Err(e) => return Err(err("compaction", e)),
            }
        }
    }
    if opts.vacuum {
        let retention = chrono::Duration::from_std(opts.retention).unwrap_or(chrono::Duration::MAX);
        let (t, metrics) = table
            .clone()
            .vacuum()
            .with_retention_period(retention)
            // A retention under Delta's 7-day guard is the operator's explicit choice.
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| err("vacuum", e))?;
        table = t;
        report.vacuumed = metrics.files_deleted.len();
    }
    if opts.checkpoint {
        table.update_incremental(None).await.map_err(|e| err("reload", e))?;
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| err("checkpoint", e))?;
        report.checkpoint_version = table.version().map(|v| v as i64);
    }
    table.update_incremental(None).await.map_err(|e| err("reload", e))?;
    report.files_after = file_count(&table);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
