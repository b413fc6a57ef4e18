//! `pinpipe status`: one screen of an operator's first questions, read from the tables and,
//! when they answer, the brokers and streams of the config.
//!
//! - **Tables** ([`tables`]): per table its version, rows, files and bytes (from the Delta
//!   log's add actions), the age of its last commit (the commit file's modification time),
//!   the source positions it stores (through [`CheckpointIndex`](crate::sink::checkpoint::CheckpointIndex):
//!   the newest checkpoint plus the commits after it, so a table of thousands of commits is
//!   read in a few files), and its dead letters by reason over a recent window.
//! - **Kafka** ([`kafka`]): each configured topic's partitions and their high watermark.
//! - **Kinesis** ([`kinesis`]): each configured stream's shards, whether records wait after
//!   the stored position and how far behind latest it is, and the shard's lease.
//!
//! A part that cannot be read (a missing table, an unreachable broker) is shown as unknown
//! with its error, and the rest is still collected. The one rule that decides the exit
//! status, [`Status::stale_tables`], is a pure function of what was collected.

pub mod kafka;
pub mod kinesis;
mod render;
pub mod tables;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::clean::Kind;
use crate::config::Config;
use crate::sink::{PerTable, Position, SourceKey, SourceKind, TableRole};
use crate::sources::partition::{self, Resume};

/// What `pinpipe status` is asked.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// A table whose last commit is older than this while its source has records waiting
    /// is stale (the exit status says so).
    pub stale_after: Duration,
    /// Dead letters are counted over the files committed in this window.
    pub dead_letter_window: Duration,
    /// Bound of each broker or stream call.
    pub timeout: Duration,
}

/// One table's state; `error` set (and the rest empty) when it could not be read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    pub name: String,
    /// `ok`, `missing` (no Delta table at its location) or `error`.
    pub state: &'static str,
    pub error: Option<String>,
    pub version: Option<i64>,
    pub rows: Option<u64>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    /// Seconds since the newest commit file was written.
    pub last_commit_age_s: Option<f64>,
    /// Batch objects whose line counts the table stores (they are not listed one by one).
    pub batch_objects: usize,
    #[serde(skip)]
    pub positions: BTreeMap<SourceKey, Position>,
}

/// The end of a source partition as its broker or stream tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum End {
    /// Kafka: the high watermark (the next offset to be written) and the low one.
    Offset { high: i64, low: i64 },
    /// Kinesis has no "last sequence number" call: one GetRecords after the stored
    /// position tells whether a record waits and how far behind latest that position is.
    Probe {
        waiting: bool,
        millis_behind_latest: Option<i64>,
    },
    /// Not known: the broker or stream did not answer (see `error`), or the partition is
    /// not in the config.
    Unknown,
}

/// A shard's lease as the lease object tells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LeaseStatus {
    pub owner: Option<String>,
    pub finished: bool,
    /// Seconds since the lease object was last written (the owner renews every quarter
    /// of `kinesis.lease_ms`).
    pub age_s: Option<f64>,
}

/// One source partition (Kafka partition, Kinesis shard).
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: &'static str,
    pub stream: String,
    pub partition: String,
    /// The kind whose tables the stream feeds; `None` when the config does not map it.
    pub kind: Option<Kind>,
    /// The position each of the kind's tables stores (`null`: none yet, or unreadable).
    pub positions: BTreeMap<String, Option<String>>,
    pub end: End,
    /// Records after the lower stored position (Kafka); `None` when unknown or Kinesis.
    pub lag_records: Option<i64>,
    /// Whether records wait after the lower stored position; `None` when unknown.
    pub waiting: Option<bool>,
    pub lease: Option<LeaseStatus>,
    pub error: Option<String>,
}

/// Whether a broker or stream endpoint answered.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub source: &'static str,
    pub target: String,
    /// `ok` or `unknown`.
    pub state: &'static str,
    pub error: Option<String>,
}

/// Dead letters of one reason in one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterCount {
    pub table: String,
    pub reason: String,
    pub count: u64,
}

/// Everything `pinpipe status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub location: String,
    pub stale_after_s: f64,
    pub dead_letter_window_s: f64,
    pub tables: Vec<TableStatus>,
    pub endpoints: Vec<EndpointStatus>,
    pub sources: Vec<SourceStatus>,
    pub dead_letters: Vec<DeadLetterCount>,
    /// Errors of the dead-letter count (a table whose files could not be read).
    pub dead_letter_errors: Vec<String>,
    /// Tables whose last commit is older than `stale_after` while records wait.
    pub stale: Vec<String>,
}

/// Reads the tables, then the brokers and streams, and decides staleness.
pub async fn collect(cfg: &Config, opts: &StatusOptions) -> Status {
    // The raw tables live at their own location and exist only with `[raw] enabled`.
    let (raw, cleaned): (Vec<String>, Vec<String>) = crate::sink::table_names()
        .into_iter()
        .partition(|n| TableRole::of_table(n).is_some_and(|(_, r)| r == TableRole::Raw));
    let mut tables = tables::read_all(&cfg.tables, &cleaned).await;
    if cfg.raw.enabled {
        tables.extend(tables::read_all(&cfg.raw.tables(&cfg.tables), &raw).await);
    }
    let (dead_letters, dead_letter_errors) = tables::dead_letters(&cfg.tables, &tables, opts.dead_letter_window).await;
    let mut endpoints = Vec::new();
    let mut sources = Vec::new();
    if cfg.kafka.enabled || has_positions(&tables, SourceKind::Kafka) {
        let (e, s) = kafka::read(&cfg.kafka, &tables, opts.timeout).await;
        endpoints.push(e);
        sources.extend(s);
    }
    if cfg.kinesis.enabled || has_positions(&tables, SourceKind::Kinesis) {
        let (e, s) = kinesis::read(&cfg.kinesis, &cfg.tables, &tables, opts.timeout).await;
        endpoints.push(e);
        sources.extend(s);
    }
    let mut status = Status {
        location: cfg.tables.location.clone(),
        stale_after_s: opts.stale_after.as_secs_f64(),
        dead_letter_window_s: opts.dead_letter_window.as_secs_f64(),
        tables,
        endpoints,
        sources,
        dead_letters,
        dead_letter_errors,
        stale: Vec::new(),
    };
    status.stale = status.stale_tables(opts.stale_after);
    status
}

fn has_positions(tables: &[TableStatus], source: SourceKind) -> bool {
    tables.iter().any(|t| t.positions.keys().any(|k| k.source == source))
}

/// The stored positions of `key` in its kind's tables, by table name (`None`: no position
/// or the table could not be read).
pub(crate) fn positions_of(
    tables: &[TableStatus],
    kind: Option<Kind>,
    key: &SourceKey,
) -> BTreeMap<String, Option<Position>> {
    let Some(kind) = kind.or_else(|| stored_kind(tables, key)) else {
        return BTreeMap::new();
    };
    TableRole::ALL
        .iter()
        .map(|r| r.table_name(kind))
        // Only the tables this process reads (no raw tables with `[raw] enabled = false`).
        .filter(|name| tables.iter().any(|t| t.name == *name))
        .map(|name| {
            let pos = tables
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.positions.get(key).cloned());
            (name, pos)
        })
        .collect()
}

/// The kind of the tables that store a position for `key` (a stream the config no longer
/// names, such as an earlier demo's topics).
fn stored_kind(tables: &[TableStatus], key: &SourceKey) -> Option<Kind> {
    let t = tables.iter().find(|t| t.positions.contains_key(key))?;
    Kind::ALL
        .into_iter()
        .find(|k| TableRole::ALL.iter().any(|r| r.table_name(*k) == t.name))
}

/// Where the source resumes, by the sources' own rule ([`partition::resume`]) over the
/// tables listed: `None` when it reads from the beginning or starts new.
pub(crate) fn resume_position(positions: &BTreeMap<String, Option<Position>>) -> Option<Position> {
    let mut stored: PerTable<Option<Position>> = PerTable::default();
    let mut roles = Vec::new();
    for (name, p) in positions {
        if let Some((_, role)) = TableRole::of_table(name) {
            *stored.get_mut(role) = p.clone();
            roles.push(role);
        }
    }
    match partition::resume(&stored, &roles) {
        Resume::From(p) => Some(p),
        Resume::Beginning | Resume::New => None,
    }
}

impl Status {
    /// The staleness rule: a table is stale when its last commit is older than
    /// `stale_after` while a source partition of its kind has records waiting beyond the
    /// position this table stores. A table or source whose state is unknown is not called
    /// stale (the output shows it as unknown instead).
    pub fn stale_tables(&self, stale_after: Duration) -> Vec<String> {
        let mut stale = Vec::new();
        for t in &self.tables {
            let Some(age) = t.last_commit_age_s else { continue };
            if age <= stale_after.as_secs_f64() {
                continue;
            }
            let waiting = self
                .sources
                .iter()
                .filter(|s| s.positions.contains_key(&t.name))
                .any(|s| s.waiting_for(&t.name));
            if waiting {
                stale.push(t.name.clone());
            }
        }
        stale
    }

    /// The exit status of `pinpipe status`: 0, or 2 when a table is stale.
    pub fn exit_code(&self) -> u8 {
        if self.stale.is_empty() {
            0
        } else {
            2
        }
    }

    /// The status as one JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the status serializes")
    }

    /// The status as aligned text tables.
    pub fn to_table(&self) -> String {
        render::table(self)
    }
}

impl SourceStatus {
    /// Whether records wait beyond what `table` stores for this partition.
    fn waiting_for(&self, table: &str) -> bool {
        let stored = self.positions.get(table).cloned().flatten();
        match (&self.end, stored) {
            (End::Offset { high, low }, Some(p)) => p.parse::<i64>().is_ok_and(|p| *high > p.max(*low)),
            (End::Offset { high, low }, None) => high > low,
            // The probe reads after the lower position; a table at a higher position may
            // still be current, but the pair of tables moves together (watermarks).
            (End::Probe { waiting, .. }, _) => *waiting,
            (End::Unknown, _) => false,
        }
    }
}

/// Parses a duration such as `90s`, `5m`, `2h`, `500ms` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 5m, 2h, 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (allowed: ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, age: f64) -> TableStatus {
        TableStatus {
            name: name.into(),
            state: "ok",
            last_commit_age_s: Some(age),
            ..Default::default()
        }
    }

    fn kafka_source(pos: i64, high: i64) -> SourceStatus {
        SourceStatus {
            source: "kafka",
            stream: "t.pin".into(),
            partition: "0".into(),
            kind: Some(Kind::Pin),
            positions: [
                ("pin".to_string(), Some(pos.to_string())),
                ("pin_dead_letter".to_string(), Some(pos.to_string())),
            ]
            .into(),
            end: End::Offset { high, low: 0 },
            lag_records: Some(high - pos),
            waiting: Some(high > pos),
            lease: None,
            error: None,
        }
    }

    fn status(tables: Vec<TableStatus>, sources: Vec<SourceStatus>) -> Status {
        Status {
            location: "./data".into(),
            stale_after_s: 60.0,
            dead_letter_window_s: 3600.0,
            tables,
            endpoints: vec![],
            sources,
            dead_letters: vec![],
            dead_letter_errors: vec![],
            stale: vec![],
        }
    }

    #[test]
    fn stale_needs_an_old_commit_and_records_waiting() {
        let after = Duration::from_secs(60);
        // Old commit, records waiting: stale.
        let s = status(
            vec![table("pin", 120.0), table("geo", 120.0)],
            vec![kafka_source(10, 15)],
        );
        assert_eq!(s.stale_tables(after), ["pin"]);
        // Old commit, nothing waiting: an idle stream, not stale.
        let s = status(vec![table("pin", 120.0)], vec![kafka_source(15, 15)]);
        assert!(s.stale_tables(after).is_empty());
        // Records waiting, recent commit: catching up.
        let s = status(vec![table("pin", 5.0)], vec![kafka_source(10, 15)]);
        assert!(s.stale_tables(after).is_empty());
        // Unknown end (broker down): not called stale.
        let mut src = kafka_source(10, 15);
        src.end = End::Unknown;
        let s = status(vec![table("pin", 120.0)], vec![src]);
        assert!(s.stale_tables(after).is_empty());
        // No position yet but records in the partition: waiting.
        let mut src = kafka_source(0, 15);
        src.positions.insert("pin".into(), None);
        let s = status(vec![table("pin", 120.0)], vec![src]);
        assert_eq!(s.stale_tables(after), ["pin"]);
        // Kinesis: the probe's verdict.
        let mut src = kafka_source(0, 0);
        src.end = End::Probe {
            waiting: true,
            millis_behind_latest: Some(5_000),
        };
        let s = status(vec![table("pin", 120.0)], vec![src]);
        assert_eq!(s.stale_tables(after), ["pin"]);
    }

    #[test]
    fn resume_is_the_lower_position() {
        let p = |a: Option<i64>, b: Option<i64>| {
            let m: BTreeMap<String, Option<Position>> = [
                ("pin".to_string(), a.map(Position::Offset)),
                ("pin_dead_letter".to_string(), b.map(Position::Offset)),
            ]
            .into();
            resume_position(&m)
        };
        assert_eq!(p(Some(5), Some(3)), Some(Position::Offset(3)));
        assert_eq!(p(Some(3), Some(5)), Some(Position::Offset(3)));
        assert_eq!(p(Some(3), None), None);
    }

    #[test]
    fn a_raw_table_without_positions_resumes_where_the_clean_tables_are() {
        // As the sources do: a raw table created on older tables adopts their positions.
        let m: BTreeMap<String, Option<Position>> = [
            ("pin".to_string(), Some(Position::Offset(7))),
            ("pin_dead_letter".to_string(), Some(Position::Offset(4))),
            ("pin_raw".to_string(), None),
        ]
        .into();
        assert_eq!(resume_position(&m), Some(Position::Offset(4)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }
}
