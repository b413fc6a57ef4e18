//! The `[writer]` config section: when a table writer flushes and how it writes files.

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::validate::{ensure, Invalid};

/// Columns whose values never repeat and that no analytics question filters on: written
/// without a dictionary and without min/max statistics. A dictionary of unique values is
/// built only to be dropped once it outgrows its page (every value hashed and interned
/// first), and the statistics compare every value twice for a range nobody queries.
/// `raw` is the record's bytes (dead-letter and raw tables), `_position` the lineage's
/// offset, sequence number or line. Plain `_position` made the geo and user tables 11-15 %
/// smaller. The pin texts (`unique_id`, `title`, `description`, `image_src`) keep theirs:
/// posts repeat from a pool (the emulator's 11 000), where the dictionary made the pin
/// table a third smaller (BENCHMARKS.md).
pub const UNIQUE_COLUMNS: [&str; 2] = ["raw", "_position"];

/// Flush thresholds and file layout (the `[writer]` config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when the buffered Arrow data reaches this many bytes. Per table: a process
    /// writes six tables, so it holds up to six times this (plus the open row groups).
    pub max_bytes: usize,
    /// Flush when the oldest buffered row is this old (milliseconds), counted from when its
    /// source read it: a source's own batching (`kafka.batch_age_ms`) is part of the age.
    pub max_age_ms: u64,
    /// Roll to a new Parquet file past this size (bytes).
    pub target_file_size: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level (1..=22).
    pub zstd_level: i32,
    /// Attempts of one flush before the table stalls (rows kept, retried every 1-30 s; see
    /// `sink::table_sink`). Each attempt re-reads the table's positions, writes the files
    /// if the set of keys changed, and commits.
    pub commit_attempts: u32,
    /// Inside one attempt, how often the Delta commit is retried on a newer table version
    /// when another writer committed first (Delta's conflict checker passed). Separate from
    /// `commit_attempts`: a flush makes at most `commit_attempts x (1 + conflict_retries)`
    /// commit tries.
    pub conflict_retries: u32,
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
            conflict_retries: 10,
            mailbox: 16,
        }
    }
}

impl WriterConfig {
    pub fn writer_properties(&self) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)));
        for column in UNIQUE_COLUMNS {
            b = b
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        b.build()
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(self.max_rows > 0, "writer.max_rows", "must be at least 1")?;
        ensure(self.max_bytes >= 1024, "writer.max_bytes", "must be at least 1024")?;
        ensure(self.max_age_ms > 0, "writer.max_age_ms", "must be at least 1")?;
        ensure(
            (1..=22).contains(&self.zstd_level),
            "writer.zstd_level",
            format!("{} is outside the allowed 1..=22", self.zstd_level),
        )?;
        ensure(self.row_group_rows > 0, "writer.row_group_rows", "must be at least 1")?;
        ensure(self.commit_attempts > 0, "writer.commit_attempts", "must be at least 1")?;
        ensure(
            self.conflict_retries <= 1000,
            "writer.conflict_retries",
            format!("{} (allowed: 0..=1000)", self.conflict_retries),
        )?;
        Ok(())
    }
}

/// The `[raw]` config section: the raw tables `<kind>_raw`, every record's bytes as
/// received, to rebuild the clean tables from (`pinpipe replay`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Write the raw tables (`pinpipe run` and `pinpipe batch`).
    pub enabled: bool,
    /// Where they live (a folder or `s3://bucket/prefix`, with the tables' S3 settings);
    /// empty: beside the other tables, at `tables.location`.
    pub location: String,
    /// `pinpipe maintain` drops raw partitions (by ingest date) older than this many days;
    /// 0 keeps them forever.
    pub retention_days: u32,
    /// zstd level of the raw tables' files (1..=22). Every record's bytes pass through it
    /// once more, and the raw tables are read only by a replay: level 1 compresses JSON
    /// nearly as well as `writer.zstd_level`'s 3 at a fraction of the CPU (BENCHMARKS.md).
    pub zstd_level: i32,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            location: String::new(),
            retention_days: 0,
            zstd_level: 1,
        }
    }
}

impl RawConfig {
    /// The raw tables' writer settings, from the clean tables' `writer`: a quarter of the
    /// buffer and their own zstd level. A raw row is the whole record (several times a
    /// cleaned row's bytes) and is read only by a replay: the quarter keeps three raw
    /// tables from doubling the process's memory, at the price of smaller raw files
    /// (maintain compacts them), and every record's bytes are compressed once more there.
    pub fn writer(&self, writer: &WriterConfig) -> WriterConfig {
        WriterConfig {
            max_bytes: (writer.max_bytes / 4).max(1024),
            zstd_level: self.zstd_level,
            ..writer.clone()
        }
    }

    /// The tables' settings with the raw tables' location.
    pub fn tables(&self, tables: &super::TablesConfig) -> super::TablesConfig {
        let mut t = tables.clone();
        if !self.location.is_empty() {
            t.location = self.location.clone();
        }
        t
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(
            (1..=22).contains(&self.zstd_level),
            "raw.zstd_level",
            format!("{} is outside the allowed 1..=22", self.zstd_level),
        )?;
        if self.location.is_empty() {
            return Ok(());
        }
        super::table::location_url(&self.location).map(|_| ()).map_err(|e| {
            crate::validate::invalid(
                "raw.location",
                format!("{e} (allowed: a folder path or s3://bucket/prefix)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_tables_write_with_a_quarter_of_the_buffer_and_their_own_level() {
        let writer = WriterConfig::default();
        let raw = RawConfig::default().writer(&writer);
        assert_eq!(raw.max_bytes, writer.max_bytes / 4);
        assert_eq!(raw.zstd_level, RawConfig::default().zstd_level);
        assert_eq!((raw.max_rows, raw.max_age_ms), (writer.max_rows, writer.max_age_ms));
        let tiny = WriterConfig {
            max_bytes: 1024,
            ..writer
        };
        assert_eq!(
            RawConfig::default().writer(&tiny).max_bytes,
            1024,
            "never under the minimum"
        );
    }

    #[test]
    fn unique_columns_get_neither_a_dictionary_nor_statistics_and_the_others_keep_both() {
        let props = WriterConfig::default().writer_properties();
        for column in UNIQUE_COLUMNS {
            let c = ColumnPath::from(column);
            assert!(!props.dictionary_enabled(&c), "{column}");
            assert_eq!(props.statistics_enabled(&c), EnabledStatistics::None, "{column}");
        }
        // What the analytics questions group and filter on keeps both.
        for column in ["category", "country", "description", "_partition"] {
            let c = ColumnPath::from(column);
            assert!(props.dictionary_enabled(&c), "{column}");
            assert_eq!(props.statistics_enabled(&c), EnabledStatistics::Chunk, "{column}");
        }
    }
}
