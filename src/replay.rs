//! `pinpipe replay`: rebuilds the clean and dead-letter tables of one or all kinds from the
//! raw tables, into a destination (a new folder beside the live tables by default).
//!
//! Each raw row is a record as a source read it, with its lineage. Replay puts every source
//! partition's rows, in position order, through the same routing rule as `pinpipe run`
//! ([`Router`]), with the record's original lineage and ingestion time: the destination
//! holds, row for row by lineage, what `pinpipe run` would write for those records under
//! today's cleaning rules. The destination's tables store each partition's position like
//! any source's, so replaying again (after a crash, or twice) adds nothing.
//!
//! The raw tables are read with DataFusion on a runtime of its own (delta-rs' scans block
//! in place, which the actix system's threads may not do); batches come over a bounded
//! channel, so memory stays flat however large the raw tables are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use deltalake::arrow::compute::cast;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clean::{raw_schema, Kind, RecordMeta};
use crate::sink::table::TableError;
use crate::sink::{
    Position, Positions, RowCounts, SourceKey, SourceKind, TableRole, TablesConfig, WriterError, Writers,
};
use crate::sources::partition::{Router, Tally};

/// What a replay reads.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub kinds: Vec<Kind>,
    /// Only raw rows ingested on or after this date (UTC).
    pub from: Option<chrono::NaiveDate>,
    /// Only raw rows ingested on or before this date (UTC).
    pub to: Option<chrono::NaiveDate>,
    /// Rows routed between hand-overs to the writers.
    pub batch_rows: usize,
    pub max_record_bytes: usize,
    /// What the sort of the raw rows may hold in memory before it spills to disk.
    pub memory_limit: usize,
    pub progress: bool,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("raw table {table} does not exist under {location}: nothing to replay (is raw.enabled on, or raw.location set?)")]
    Missing { table: String, location: String },
    #[error("raw table {table} does not have pinpipe's raw schema ({detail}): refusing to replay it")]
    Schema { table: String, detail: String },
    #[error("reading raw table {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error("raw table {table}: a row has {detail}")]
    Row { table: String, detail: String },
    #[error(transparent)]
    Writer(#[from] WriterError),
}

/// Totals of a replay.
#[derive(Debug, Default, Clone)]
pub struct ReplaySummary {
    pub records: u64,
    /// Rows committed per destination table.
    pub rows: BTreeMap<String, u64>,
    /// Records the destination had already (an earlier replay).
    pub present: u64,
    pub seconds: f64,
}

impl ReplaySummary {
    pub fn line(&self) -> String {
        let rows = RowCounts(&self.rows);
        format!(
            "replay: {} raw records in {:.2}s ({:.0} records/s); rows {}; dead letters {}; already present {}",
            self.records,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            rows.clean(),
            rows.dead_letters(),
            self.present
        )
    }
}

/// The raw tables of `kinds` under `raw`, checked: each must exist with pinpipe's raw
/// schema. Done before any destination table is touched.
pub async fn open_raw(raw: &TablesConfig, kinds: &[Kind]) -> Result<Vec<(Kind, DeltaTable)>, ReplayError> {
    let mut out = Vec::new();
    for &kind in kinds {
        let name = TableRole::Raw.table_name(kind);
        let table = raw.open_existing(&name).await?.ok_or_else(|| ReplayError::Missing {
            table: name.clone(),
            location: raw.location.clone(),
        })?;
        check_schema(&name, &table)?;
        out.push((kind, table));
    }
    Ok(out)
}

fn check_schema(name: &str, table: &DeltaTable) -> Result<(), ReplayError> {
    let snapshot = table.snapshot().map_err(|source| TableError::Delta {
        table: name.to_string(),
        source,
    })?;
    let have: Vec<(String, String)> = snapshot
        .schema()
        .fields()
        .map(|f| (f.name().to_string(), format!("{:?}", f.data_type())))
        .collect();
    let want: Vec<String> = raw_schema().fields().iter().map(|f| f.name().to_string()).collect();
    let names: Vec<&String> = have.iter().map(|(n, _)| n).collect();
    if names != want.iter().collect::<Vec<_>>() {
        return Err(ReplayError::Schema {
            table: name.to_string(),
            detail: format!("columns {names:?}, expected {want:?}"),
        });
    }
    Ok(())
}

/// Replays the raw tables into `dest` (clean and dead-letter writers).
///
/// Each kind's raw table is read and routed on a thread of its own (the kinds write
/// disjoint tables, so their order does not matter): the cleaning, not the reading, is
/// where a replay spends its CPU, and one thread per kind keeps both cores busy. Their
/// sorts share `opts.memory_limit`.
pub async fn run(
    raw: Vec<(Kind, DeltaTable)>,
    dest: &Writers,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let before = dest.stats().await;
    let stored = dest.checkpoints().await?;
    let bar = progress_bar(opts.progress);
    bar.set_message(
        raw.iter()
            .map(|(k, _)| TableRole::Raw.table_name(*k))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut per_kind = opts.clone();
    per_kind.memory_limit = (opts.memory_limit / raw.len().max(1)).max(1 << 20);
    let done: Vec<_> = raw
        .into_iter()
        .map(|(kind, table)| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (dest, stored, opts, bar) = (dest.clone(), stored.clone(), per_kind.clone(), bar.clone());
            std::thread::spawn(move || {
                let _ = tx.send(crate::block_on_tokio(replay_table(
                    kind, table, &dest, &stored, &opts, &bar,
                )));
            });
            rx
        })
        .collect();
    let mut summary = ReplaySummary::default();
    for rx in done {
        let (n, present) = rx.await.map_err(|_| WriterError::Stopped)??;
        summary.records += n;
        summary.present += present;
    }
    dest.flush_all().await?;
    bar.finish_and_clear();
    for (table, n) in dest.stats().await {
        summary
            .rows
            .insert(table.clone(), n - before.get(&table).copied().unwrap_or(0));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads and routes one kind's raw table; returns (rows, rows the destination had already).
async fn replay_table(
    kind: Kind,
    table: DeltaTable,
    dest: &Writers,
    stored: &Positions,
    opts: &ReplayOptions,
    bar: &ProgressBar,
) -> Result<(u64, u64), ReplayError> {
    let name = TableRole::Raw.table_name(kind);
    let mut rows = read_sorted(table, opts);
    let mut replayer = Replayer {
        kind,
        table: &name,
        dest,
        stored,
        opts,
        router: None,
    };
    let (mut records, mut present) = (0, 0);
    while let Some(batch) = rows.recv().await {
        let batch = batch.map_err(|source| ReplayError::Query {
            table: name.clone(),
            source,
        })?;
        let (n, p) = replayer.batch(&batch).await?;
        records += n;
        present += p;
        bar.inc(n);
    }
    replayer.finish().await?;
    Ok((records, present))
}

fn progress_bar(show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {human_pos} raw records ({per_sec}) {msg}")
            .expect("static template"),
    );
    bar
}

type Batches = tokio::sync::mpsc::Receiver<Result<RecordBatch, DataFusionError>>;

/// The raw rows of `table` in the ingest-date range, sorted by source partition and
/// position, streamed from a thread with a runtime of its own.
fn read_sorted(table: DeltaTable, opts: &ReplayOptions) -> Batches {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sql = query(opts);
    let memory = opts.memory_limit;
    std::thread::spawn(move || {
        crate::block_on_tokio(async move {
            let stream = async {
                let ctx = session(table, memory).await?;
                ctx.sql(&sql).await?.execute_stream().await
            };
            match stream.await {
                Ok(mut s) => {
                    while let Some(b) = s.next().await {
                        if tx.send(b).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        })
    });
    rx
}

/// A query engine over a raw table (as `raw`), with a memory limit its sort spills past.
async fn session(table: DeltaTable, memory: usize) -> Result<SessionContext, DataFusionError> {
    use deltalake::datafusion::common::config::SpillCompression;
    use deltalake::datafusion::execution::memory_pool::FairSpillPool;
    use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use deltalake::datafusion::prelude::SessionConfig;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()?;
    // One partition: a kind already has a thread of its own, and with more the sorted
    // partitions meet in a SortPreservingMergeExec, whose buffers cannot spill and ran
    // out of a small pool (a 600 000-record replay at 256 MiB over three kinds failed so).
    // Batches of 2 048 rows: a raw pin row is ~1.4 KB, and at 8 192 one batch (11.6 MB)
    // did not fit beside the sort's 10 MB merge reservation in a 64 MiB limit's third.
    let mut config = SessionConfig::new().with_target_partitions(1).with_batch_size(2048);
    // The sort spills most of a large raw table, even at the 1 GiB default: uncompressed,
    // writing the spill files through the page cache took a quarter of a replay's CPU.
    // zstd spills made a replay 10-25 % faster at 1 GiB and at 256 MiB; lz4 was slower
    // (BENCHMARKS.md).
    config.options_mut().execution.spill_compression = SpillCompression::Zstd;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    ctx.register_table("raw", provider)?;
    Ok(ctx)
}

/// The rows to replay, in the order the routing rule needs: per source partition, by
/// position (decimals without leading zeros order by length, then text).
fn query(opts: &ReplayOptions) -> String {
    let mut filter = Vec::new();
    if let Some(d) = opts.from {
        filter.push(format!("ingest_date >= DATE '{d}'"));
    }
    if let Some(d) = opts.to {
        filter.push(format!("ingest_date <= DATE '{d}'"));
    }
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filter.join(" AND "))
    };
    format!(
        "SELECT raw, _source, _stream, _partition, _position, _ingested_at FROM raw {filter} \
         ORDER BY _source, _stream, _partition, length(_position), _position"
    )
}

/// Routes one raw table's sorted rows, a router per source partition.
struct Replayer<'a> {
    kind: Kind,
    table: &'a str,
    dest: &'a Writers,
    stored: &'a Positions,
    opts: &'a ReplayOptions,
    router: Option<Router>,
}

impl Replayer<'_> {
    fn bad(&self, detail: impl Into<String>) -> ReplayError {
        ReplayError::Row {
            table: self.table.to_string(),
            detail: detail.into(),
        }
    }

    /// Routes a batch of raw rows; returns (raw rows, records the destination had already).
    /// A KPL aggregate is one raw row, routed as the user records it packs.
    async fn batch(&mut self, b: &RecordBatch) -> Result<(u64, u64), ReplayError> {
        // DataFusion may hand Parquet's strings and bytes over as view arrays (its
        // `schema_force_view_types`): read them as the plain types pinpipe wrote.
        let plain = |i: usize, ty: &DataType| {
            cast(b.column(i), ty).map_err(|e| self.bad(format!("column {i} is {}: {e}", b.column(i).data_type())))
        };
        let raw = plain(0, &DataType::Binary)?;
        let raw = raw.as_binary::<i32>();
        let cols = [1, 2, 3, 4].map(|i| plain(i, &DataType::Utf8));
        let [source, stream, partition, position] = match cols {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
            other => return Err(other.into_iter().find_map(Result::err).expect("one failed")),
        };
        let (source, stream, partition, position) = (
            source.as_string::<i32>(),
            stream.as_string::<i32>(),
            partition.as_string::<i32>(),
            position.as_string::<i32>(),
        );
        let ingested = plain(5, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))?;
        let ingested = ingested.as_primitive::<TimestampMicrosecondType>();
        let mut present = 0;
        for i in 0..b.num_rows() {
            let kind =
                SourceKind::parse(source.value(i)).ok_or_else(|| self.bad(format!("_source {:?}", source.value(i))))?;
            let key = SourceKey::new(kind, stream.value(i), partition.value(i));
            if self.router.as_ref().is_none_or(|r| *r.key() != key) {
                self.finish().await?;
                let at = self.stored.of(self.kind, &key);
                self.router = Some(Router::new(
                    self.kind,
                    key,
                    at,
                    self.dest.roles(),
                    self.opts.max_record_bytes,
                ));
            }
            let text = position.value(i);
            let mark = mark(kind, text).ok_or_else(|| self.bad(format!("_position {text:?} for {kind:?}")))?;
            let router = self.router.as_mut().expect("set above");
            let bytes = if raw.is_null(i) { &[][..] } else { raw.value(i) };
            let tally = match mark {
                // As the shard actor routes it: a KPL aggregate (kept whole in the raw
                // table) is split into its user records again.
                Position::Sequence(_) => router.route_kinesis(bytes, RecordMeta::default(), text, ingested.value(i)),
                mark => Tally::of(router.route(bytes, RecordMeta::default(), mark, text, ingested.value(i))),
            };
            present += tally.covered;
            if router.buffered() >= self.opts.batch_rows {
                router.send(self.dest).await?;
            }
        }
        Ok((b.num_rows() as u64, present))
    }

    /// Hands the current partition's last rows over.
    async fn finish(&mut self) -> Result<(), ReplayError> {
        if let Some(mut r) = self.router.take() {
            r.send(self.dest).await?;
        }
        Ok(())
    }
}

/// A record's mark from its lineage position, as its source marks it: the next offset
/// (Kafka), the sequence number (Kinesis), the line (batch).
fn mark(source: SourceKind, position: &str) -> Option<Position> {
    match source {
        SourceKind::Kafka => position.parse::<i64>().ok()?.checked_add(1).map(Position::Offset),
        SourceKind::Batch => position.parse::<i64>().ok().map(Position::Offset),
        SourceKind::Kinesis => position
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| Position::Sequence(position.to_string())),
    }
}

/// Where `pinpipe replay` writes by default: a new folder (or prefix) beside the live
/// tables, named by the time of the replay.
pub fn default_destination(live: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    format!("{}-replay-{stamp}", live.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_follow_each_source() {
        assert_eq!(mark(SourceKind::Kafka, "41"), Some(Position::Offset(42)));
        assert_eq!(mark(SourceKind::Batch, "7"), Some(Position::Offset(7)));
        assert_eq!(
            mark(
                SourceKind::Kinesis,
                "49590338271490256608559692538361571095921575989136588898"
            ),
            Some(Position::Sequence(
                "49590338271490256608559692538361571095921575989136588898".into()
            ))
        );
        assert_eq!(mark(SourceKind::Kafka, "x"), None);
        assert_eq!(mark(SourceKind::Kinesis, "12a"), None);
        assert_eq!(mark(SourceKind::Kafka, &i64::MAX.to_string()), None);
    }

    #[test]
    fn the_query_filters_dates_and_orders_positions_numerically() {
        let opts = ReplayOptions {
            kinds: Kind::ALL.to_vec(),
            from: chrono::NaiveDate::from_ymd_opt(2026, 11, 1),
            to: None,
            batch_rows: 10,
            max_record_bytes: 10,
            memory_limit: 1 << 20,
            progress: false,
        };
        let q = query(&opts);
        assert!(q.contains("WHERE ingest_date >= DATE '2026-11-01'"), "{q}");
        assert!(q.ends_with("length(_position), _position"), "{q}");
        assert!(default_destination("./data/").starts_with("./data-replay-"));
    }
}
