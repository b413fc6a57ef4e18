//! Source positions, stored in the Delta log in the same commit as the rows they cover.
//!
//! # Design
//!
//! Every commit a [`TableWriter`](super::writer::TableWriter) makes carries, for each
//! source partition that contributed rows since the last commit, the position up to which
//! that partition is now in the table. Delta writes a commit atomically (one log file put
//! with `If-None-Match`), so the rows and the positions appear together or not at all.
//!
//! Positions are Delta `txn` (SetTransaction) actions, whose `version` is an `i64`:
//!
//! - **Integer positions** (Kafka offsets; batch line counts): one action,
//!   `appId = pinpipe:<table>:<source>:<stream>:<partition>`, `version` = the next offset
//!   to read (Kafka) or the number of lines already consumed (batch).
//! - **Kinesis sequence numbers** are decimals of up to 129 digits, beyond `i64`. They are
//!   split into 18-digit chunks (each `< 10^18 < i64::MAX`), one action per chunk:
//!   `pinpipe.seq.<i>:<table>:...` with the chunk's value, plus a header action
//!   `pinpipe.seq:<table>:...` whose version is the number of chunks. All of them go in the
//!   same commit, so a reader of any committed version sees one consistent number; chunks
//!   beyond the header's count (left by an earlier, longer number) are ignored. The stored
//!   value is the last sequence number committed (resume `AFTER_SEQUENCE_NUMBER`).
//! - **Object keys** (batch backfill) are not positions but partitions: the key is the
//!   `<partition>` part of the app id and the position is the line count.
//!
//! Components of the app id are percent-encoded (`%` and `:`), so any stream name or
//! object key round-trips.
//!
//! Delta's own conflict checker fails a commit whose `txn` app ids were also written by a
//! concurrent winning commit (`ConcurrentTransaction`); together with the writer's check
//! that the stored position still equals the position its rows start from, that makes each
//! commit a compare-and-set per source partition: a zombie owner cannot commit twice.
//!
//! Delta has no public API that lists every `txn` of a snapshot, so [`CheckpointIndex`]
//! replays them from the log itself: the newest classic checkpoint (`_last_checkpoint`,
//! single or multi-part Parquet) and then the JSON commits after it. It is kept up to date
//! incrementally by the writer, which reads only the new commit files.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use deltalake::kernel::Transaction;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;

/// Where a stream of records comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Kafka,
    Kinesis,
    Batch,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
            SourceKind::Kinesis => "kinesis",
            SourceKind::Batch => "batch",
        }
    }

    /// The kind a lineage `_source` value names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kafka" => Some(SourceKind::Kafka),
            "kinesis" => Some(SourceKind::Kinesis),
            "batch" => Some(SourceKind::Batch),
            _ => None,
        }
    }
}

/// One source partition: a Kafka topic partition, a Kinesis shard, or a batch object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub source: SourceKind,
    pub stream: String,
    pub partition: String,
}

impl SourceKey {
    pub fn new(source: SourceKind, stream: impl Into<String>, partition: impl Into<String>) -> Self {
        Self {
            source,
            stream: stream.into(),
            partition: partition.into(),
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source.as_str(), self.stream, self.partition)
    }
}

/// How far a source partition is in a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// Next offset to read (Kafka) or lines consumed (batch).
    Offset(i64),
    /// Last Kinesis sequence number committed, as a decimal without leading zeros.
    Sequence(String),
}

impl Position {
    /// Whether a table holding `self` already has the record whose mark is `mark` (the
    /// position a table holds once that record is in it: the next offset after it, its
    /// sequence number, its line number). Positions of different sources never cover
    /// each other.
    pub fn covers(&self, mark: &Position) -> bool {
        match (self, mark) {
            (Position::Offset(stored), Position::Offset(m)) => m <= stored,
            (Position::Sequence(stored), Position::Sequence(m)) => seq_cmp(m, stored).is_le(),
            _ => false,
        }
    }
}

/// Orders two decimal sequence numbers (any length, leading zeros ignored).
pub fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Offset(o) => write!(f, "{o}"),
            Position::Sequence(s) => f.write_str(s),
        }
    }
}

/// Errors of checkpoint encoding and log replay.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("sequence number {0:?} is not a decimal of at most 144 digits")]
    BadSequence(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("reading Delta log file {path}: {message}")]
    Log { path: String, message: String },
    #[error("the newest Delta checkpoint (version {checkpoint}) is ahead of the snapshot (version {snapshot}); reload the table")]
    CheckpointAhead { checkpoint: i64, snapshot: i64 },
}

const CHUNK_DIGITS: usize = 18;
/// Chunk values are below 10^18.
const CHUNK_LIMIT: i64 = 1_000_000_000_000_000_000;
const MAX_CHUNKS: usize = 8;
const ENC: &AsciiSet = &CONTROLS.add(b'%').add(b':');

fn app_suffix(table: &str, key: &SourceKey) -> String {
    format!(
        "{}:{}:{}:{}",
        utf8_percent_encode(table, ENC),
        key.source.as_str(),
        utf8_percent_encode(&key.stream, ENC),
        utf8_percent_encode(&key.partition, ENC)
    )
}

/// The `txn` actions that record `pos` for `key` in `table`.
pub fn encode(table: &str, key: &SourceKey, pos: &Position, now_ms: i64) -> Result<Vec<Transaction>, CheckpointError> {
    let suffix = app_suffix(table, key);
    let txn = |app: String, v: i64| Transaction::new_with_last_update(app, v, Some(now_ms));
    match pos {
        Position::Offset(o) => Ok(vec![txn(format!("pinpipe:{suffix}"), *o)]),
        Position::Sequence(s) => {
            let digits = s.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > CHUNK_DIGITS * MAX_CHUNKS {
                return Err(CheckpointError::BadSequence(s.clone()));
            }
            let n = digits.len().div_ceil(CHUNK_DIGITS);
            let padded = format!("{digits:0>width$}", width = n * CHUNK_DIGITS);
            let mut out = vec![txn(format!("pinpipe.seq:{suffix}"), n as i64)];
            for i in 0..n {
                let chunk = &padded[i * CHUNK_DIGITS..(i + 1) * CHUNK_DIGITS];
                // 18 ASCII digits always parse into an i64.
                let v: i64 = chunk.parse().map_err(|_| CheckpointError::BadSequence(s.clone()))?;
                out.push(txn(format!("pinpipe.seq.{i}:{suffix}"), v));
            }
            Ok(out)
        }
    }
}

/// Splits an app id written by [`encode`] into (marker, table, key). Foreign app ids: `None`.
fn decode_app_id(app_id: &str) -> Option<(&str, String, SourceKey)> {
    let mut parts = app_id.splitn(5, ':');
    let marker = parts.next()?;
    let dec = |s: &str| percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
    let table = dec(parts.next()?)?;
    let source = SourceKind::parse(parts.next()?)?;
    let stream = dec(parts.next()?)?;
    let partition = dec(parts.next()?)?;
    Some((
        marker,
        table,
        SourceKey {
            source,
            stream,
            partition,
        },
    ))
}

/// All `txn` versions of a table at one log version, replayed from the Delta log.
#[derive(Debug, Default, Clone)]
pub struct CheckpointIndex {
    /// The log version the index reflects; `-1` before the first commit.
    version: i64,
    txns: HashMap<String, i64>,
}

#[derive(Deserialize)]
struct LastCheckpoint {
    version: i64,
    parts: Option<u32>,
}

#[derive(Deserialize)]
struct TxnLine {
    txn: Option<TxnAction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxnAction {
    app_id: String,
    version: i64,
}

fn log_path(name: String) -> Path {
    Path::from(format!("_delta_log/{name}"))
}

async fn read(store: &dyn ObjectStore, path: &Path) -> Result<Bytes, CheckpointError> {
    Ok(store.get(path).await?.bytes().await?)
}

impl CheckpointIndex {
    pub fn new() -> Self {
        Self {
            version: -1,
            txns: HashMap::new(),
        }
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// Brings the index to log version `to` (the version of the snapshot the caller holds).
    /// `store` is the table's own store (paths relative to the table root).
    pub async fn advance(&mut self, store: &dyn ObjectStore, to: i64) -> Result<(), CheckpointError> {
        if to <= self.version {
            return Ok(());
        }
        if self.version < 0 {
            self.load_checkpoint(store, to).await?;
        }
        for v in self.version + 1..=to {
            let path = log_path(format!("{v:020}.json"));
            let bytes = read(store, &path).await?;
            self.apply_commit(&bytes).map_err(|message| CheckpointError::Log {
                path: path.to_string(),
                message,
            })?;
            self.version = v;
        }
        Ok(())
    }

    fn apply_commit(&mut self, bytes: &[u8]) -> Result<(), String> {
        for line in bytes.split(|b| *b == b'\n') {
            // Cheap pre-filter: only txn lines are parsed.
            if !line.starts_with(b"{\"txn\"") {
                continue;
            }
            let parsed: TxnLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
            if let Some(t) = parsed.txn {
                self.insert_read(t.app_id, t.version)?;
            }
        }
        Ok(())
    }

    /// A `txn` read from the log (ours, another pinpipe's, or a foreign tool's). Values a
    /// pinpipe writer never stores are refused here, so a damaged or foreign log is an
    /// error naming the app id instead of a huge allocation or a negative offset (which
    /// librdkafka would take for "the end") later.
    fn insert_read(&mut self, app_id: String, version: i64) -> Result<(), String> {
        let bad = |what: &str| Err(format!("txn {app_id:?} has version {version}: {what}"));
        if app_id.starts_with("pinpipe:") && version < 0 {
            return bad("a position is never negative");
        }
        if app_id.starts_with("pinpipe.seq:") && !(1..=MAX_CHUNKS as i64).contains(&version) {
            return bad(&format!("a sequence number has 1..={MAX_CHUNKS} chunks"));
        }
        if app_id.starts_with("pinpipe.seq.") && !(0..CHUNK_LIMIT).contains(&version) {
            return bad("a sequence chunk has at most 18 digits");
        }
        self.txns.insert(app_id, version);
        Ok(())
    }

    async fn load_checkpoint(&mut self, store: &dyn ObjectStore, to: i64) -> Result<(), CheckpointError> {
        let last = match store.get(&log_path("_last_checkpoint".into())).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let last: LastCheckpoint = serde_json::from_slice(&last).map_err(|e| CheckpointError::Log {
            path: "_delta_log/_last_checkpoint".into(),
            message: e.to_string(),
        })?;
        if last.version > to {
            return Err(CheckpointError::CheckpointAhead {
                checkpoint: last.version,
                snapshot: to,
            });
        }
        let files: Vec<String> = match last.parts {
            None | Some(0) | Some(1) => vec![format!("{:020}.checkpoint.parquet", last.version)],
            Some(n) => (1..=n)
                .map(|i| format!("{:020}.checkpoint.{i:010}.{n:010}.parquet", last.version))
                .collect(),
        };
        for f in files {
            let path = log_path(f);
            let bytes = read(store, &path).await?;
            self.apply_checkpoint(bytes).map_err(|message| CheckpointError::Log {
                path: path.to_string(),
                message,
            })?;
        }
        self.version = last.version;
        Ok(())
    }

    fn apply_checkpoint(&mut self, bytes: Bytes) -> Result<(), String> {
        use arrow_array::{Array, Int64Array, StringArray, StructArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use parquet::arrow::ProjectionMask;

        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
        let descr = builder.parquet_schema();
        let Some(root) = descr.root_schema().get_fields().iter().position(|f| f.name() == "txn") else {
            return Ok(()); // a checkpoint of a table that never had a txn
        };
        let mask = ProjectionMask::roots(descr, [root]);
        let reader = builder.with_projection(mask).build().map_err(|e| e.to_string())?;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            let txn = batch
                .column(0)
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or("txn is not a struct")?;
            let app = txn
                .column_by_name("appId")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>());
            let ver = txn
                .column_by_name("version")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
            let (Some(app), Some(ver)) = (app, ver) else {
                return Err("txn lacks appId/version".into());
            };
            for i in 0..txn.len() {
                if txn.is_valid(i) && app.is_valid(i) && ver.is_valid(i) {
                    self.insert_read(app.value(i).to_owned(), ver.value(i))?;
                }
            }
        }
        Ok(())
    }

    /// Records the actions of a commit this process made at `version` (no log read).
    pub fn record(&mut self, version: i64, txns: &[Transaction]) {
        if version == self.version + 1 {
            for t in txns {
                self.txns.insert(t.app_id.clone(), t.version);
            }
            self.version = version;
        }
    }

    /// The position stored for `key` in `table`, if any.
    pub fn get(&self, table: &str, key: &SourceKey) -> Option<Position> {
        let suffix = app_suffix(table, key);
        if let Some(v) = self.txns.get(&format!("pinpipe:{suffix}")) {
            return Some(Position::Offset(*v));
        }
        self.sequence(&suffix)
    }

    fn sequence(&self, suffix: &str) -> Option<Position> {
        // The header count was range-checked when read (`insert_read`) or written by us.
        let n = usize::try_from(*self.txns.get(&format!("pinpipe.seq:{suffix}"))?)
            .ok()?
            .min(MAX_CHUNKS);
        let mut s = String::with_capacity(n * CHUNK_DIGITS);
        for i in 0..n {
            let v = self.txns.get(&format!("pinpipe.seq.{i}:{suffix}"))?;
            s.push_str(&format!("{v:0>CHUNK_DIGITS$}"));
        }
        let t = s.trim_start_matches('0');
        Some(Position::Sequence(if t.is_empty() { "0".into() } else { t.into() }))
    }

    /// Every position stored in `table`: what a source needs to resume from the table alone.
    pub fn all(&self, table: &str) -> HashMap<SourceKey, Position> {
        let mut out = HashMap::new();
        for app_id in self.txns.keys() {
            if let Some((marker, t, key)) = decode_app_id(app_id) {
                if t != table || !(marker == "pinpipe" || marker == "pinpipe.seq") {
                    continue;
                }
                if let Some(p) = self.get(table, &key) {
                    out.insert(key, p);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SourceKey {
        SourceKey::new(SourceKind::Kinesis, "streaming-x:pin", "shardId-000000000001")
    }

    #[test]
    fn sequence_round_trip() {
        let seq = "49590338271490256608559692538361571095921575989136588898";
        let txns = encode("pin", &key(), &Position::Sequence(seq.into()), 0).unwrap();
        assert_eq!(txns.len(), 1 + 4);
        let mut idx = CheckpointIndex::new();
        idx.record(0, &txns);
        assert_eq!(idx.get("pin", &key()), Some(Position::Sequence(seq.into())));
        // A shorter number later: stale higher chunks are ignored.
        idx.record(
            1,
            &encode("pin", &key(), &Position::Sequence("0007".into()), 0).unwrap(),
        );
        assert_eq!(idx.get("pin", &key()), Some(Position::Sequence("7".into())));
        assert_eq!(idx.all("pin").len(), 1);
        assert!(idx.all("geo").is_empty());
    }

    #[test]
    fn damaged_or_foreign_txn_values_are_errors_not_panics() {
        let suffix = app_suffix("pin", &key());
        for (app, version) in [
            (format!("pinpipe.seq:{suffix}"), -1),
            (format!("pinpipe.seq:{suffix}"), i64::MAX),
            (format!("pinpipe.seq:{suffix}"), 0),
            (format!("pinpipe.seq.0:{suffix}"), -7),
            (format!("pinpipe.seq.0:{suffix}"), CHUNK_LIMIT),
            (format!("pinpipe:{suffix}"), -2),
        ] {
            let line = format!("{{\"txn\":{{\"appId\":{app:?},\"version\":{version}}}}}\n");
            let mut idx = CheckpointIndex::new();
            let e = idx.apply_commit(line.as_bytes()).unwrap_err();
            assert!(e.contains(&app) && e.contains(&version.to_string()), "{e}");
        }
        // Foreign app ids are kept as they are, whatever their version.
        let mut idx = CheckpointIndex::new();
        idx.apply_commit(b"{\"txn\":{\"appId\":\"kdi-0\",\"version\":-1}}\n")
            .unwrap();
        assert!(idx.all("pin").is_empty());
    }

    #[test]
    fn positions_cover_records_up_to_them() {
        let off = Position::Offset;
        // Kafka: the table holds the next offset; the record at offset 4 has mark 5.
        assert!(off(5).covers(&off(5)));
        assert!(!off(5).covers(&off(6)));
        // Kinesis: the table holds the last sequence number; numbers compare as decimals.
        let seq = |s: &str| Position::Sequence(s.into());
        assert!(seq("10").covers(&seq("9")));
        assert!(seq("10").covers(&seq("0010")));
        assert!(!seq("9").covers(&seq("10")));
        assert!(!off(5).covers(&seq("1")) && !seq("9").covers(&off(1)));
    }

    #[test]
    fn offsets_and_odd_names() {
        let k = SourceKey::new(SourceKind::Batch, "a:b%c", "topics/x/partition=0/x+0+0000.json");
        let mut idx = CheckpointIndex::new();
        idx.record(0, &encode("pin_dead_letter", &k, &Position::Offset(42), 0).unwrap());
        let all = idx.all("pin_dead_letter");
        assert_eq!(all.get(&k), Some(&Position::Offset(42)));
        assert!(encode("t", &k, &Position::Sequence("12a".into()), 0).is_err());
    }
}
