//! Batch backfill: raw JSON objects in a folder or under an S3 prefix, into the tables.
//!
//! Input ([`input`]): what the Kafka Connect S3 sink writes, `topics/<topic>/partition=<p>/`
//! folders of `<topic>+<p>+<startOffset>.json` objects (or `.json.gz` with
//! `s3.compression.type=gzip`), each JSON Lines or one JSON document. The topic gives the
//! kind (its suffix). Anything else under the input (a `_SUCCESS` marker, another folder, a
//! stray `notes.txt`) is skipped and counted, unless `--kind` says to read plain files: then
//! every object outside the layout is read as that kind.
//!
//! Each object is a source partition of its own: `_stream` is the topic (or the object's
//! folder), `_partition` the object key, `_position` the 1-based line number, and the
//! position stored in each table is the number of lines consumed. A rerun resumes every
//! object from the tables' positions, so running twice (or after a crash at any point)
//! writes every record exactly once.

mod input;

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

pub use input::{kind_of_topic, split_records, Input};

use crate::clean::{Kind, RecordMeta};
use crate::sink::{
    Append, Position, Positions, RowCounts, SourceKey, SourceKind, TableRole, TablesConfig, WriterError, Writers,
};
use crate::sources::partition::{Routed, Router};
use input::{records_end, Object};

/// What a batch run reads and how.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub input: String,
    pub kind: Option<Kind>,
    pub concurrency: usize,
    pub batch_rows: usize,
    pub max_record_bytes: usize,
    pub progress: bool,
}

/// Errors of a batch run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("input {input:?}: {reason}")]
    Input { input: String, reason: String },
    #[error("listing input {input}: {source}")]
    List {
        input: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("no objects under input {0}")]
    Empty(String),
    #[error(
        "nothing to read under input {input}: {skipped} objects, none in the Kafka Connect layout \
         topics/<prefix>.pin|geo|user/partition=<p>/<topic>+<p>+<offset>.json[.gz] (e.g. {example}); \
         give --kind to read plain files"
    )]
    NoLayout {
        input: String,
        skipped: usize,
        example: String,
    },
    #[error("{key}: not a valid gzip object ({source}); nothing from it was committed")]
    Gzip {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("objects still fenced by another writer after {0} rounds")]
    Contended(u32),
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct BatchSummary {
    pub objects: usize,
    pub records: u64,
    pub input_bytes: u64,
    /// Rows committed by this run per table (clean and dead-letter).
    pub rows: BTreeMap<String, u64>,
    /// Records already in the tables from an earlier run, skipped.
    pub skipped: u64,
    /// Objects under the input that were not read: outside the layout (without `--kind`),
    /// hidden files and markers.
    pub skipped_objects: usize,
    pub seconds: f64,
}

impl BatchSummary {
    pub fn dead_letters(&self) -> u64 {
        RowCounts(&self.rows).dead_letters()
    }

    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        let rate = if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "batch: {} objects, {} records ({:.1} MB) in {:.2}s ({:.0} records/s); rows {}; dead letters {}; \
             raw {}; already present {}; objects skipped (outside the layout) {}",
            self.objects,
            self.records,
            self.input_bytes as f64 / 1e6,
            self.seconds,
            rate,
            RowCounts(&self.rows).clean(),
            self.dead_letters(),
            RowCounts(&self.rows).raw(),
            self.skipped,
            self.skipped_objects
        )
    }
}

/// Scans the input, then backfills it into the writers.
pub async fn run(opts: &BatchOptions, tables: &TablesConfig, writers: &Writers) -> Result<BatchSummary, BatchError> {
    let input = Input::scan(opts, tables).await?;
    run_input(&input, opts, writers).await
}

/// Rounds over the objects: an object another writer moved (fenced) is read again from
/// the tables' positions in the next round.
const ROUNDS: u32 = 5;

/// Backfills a scanned input into the writers and returns its totals.
pub async fn run_input(input: &Input, opts: &BatchOptions, writers: &Writers) -> Result<BatchSummary, BatchError> {
    let started = Instant::now();
    let bar = progress_bar(opts.progress, input.bytes());
    let before = writers.stats().await;
    let mut summary = BatchSummary {
        objects: input.objects.len(),
        input_bytes: input.bytes(),
        skipped_objects: input.skipped,
        ..Default::default()
    };
    let mut todo: Vec<&Object> = input.objects.iter().collect();
    for round in 1..=ROUNDS {
        let stored = writers.checkpoints().await?;
        let results: Vec<Result<ObjectResult, BatchError>> = futures::stream::iter(todo.iter().copied())
            .map(|o| {
                let (stored, bar) = (&stored, bar.clone());
                async move {
                    let r = process(input, o, opts, stored, writers).await;
                    if let Ok(r) = &r {
                        bar.inc(r.bytes);
                    }
                    r
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut fenced: Vec<String> = Vec::new();
        for r in results {
            let r = r?;
            if round == 1 {
                summary.records += r.records;
            }
            summary.skipped += r.skipped;
            if r.fenced {
                fenced.push(r.key);
            }
        }
        let outcomes = writers.flush_all().await?;
        fenced.extend(outcomes.into_iter().flat_map(|o| o.fenced).map(|(k, _)| k.partition));
        if fenced.is_empty() {
            break;
        }
        if round == ROUNDS {
            return Err(BatchError::Contended(ROUNDS));
        }
        tracing::warn!(
            objects = fenced.len(),
            round,
            "objects moved by another writer; resuming them from the table"
        );
        todo.retain(|o| fenced.contains(&o.key));
        bar.set_position(bar.position().saturating_sub(todo.iter().map(|o| o.size).sum()));
    }
    bar.finish_and_clear();
    let after = writers.stats().await;
    for (table, n) in after {
        let b = before.get(&table).copied().unwrap_or(0);
        summary.rows.insert(table, n - b);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress_bar(show: bool, total_bytes: u64) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total_bytes)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .expect("static template"),
    );
    bar
}

struct ObjectResult {
    key: String,
    bytes: u64,
    records: u64,
    skipped: u64,
    fenced: bool,
}

/// Reads, routes and hands over one object.
async fn process(
    input: &Input,
    o: &Object,
    opts: &BatchOptions,
    stored: &Positions,
    writers: &Writers,
) -> Result<ObjectResult, BatchError> {
    let key = SourceKey::new(SourceKind::Batch, o.stream.clone(), o.key.clone());
    let at = stored.of(o.kind, &key);
    let router = Router::new(o.kind, key, at, writers.roles(), opts.max_record_bytes);
    let bytes = input.read(o).await?;
    let batch_rows = opts.batch_rows;
    // Routing is CPU work: off the async threads.
    let (router, hand_overs, records, skipped) =
        tokio::task::spawn_blocking(move || route_object(router, &bytes, batch_rows))
            .await
            .expect("routing never panics");
    let mut result = ObjectResult {
        key: o.key.clone(),
        bytes: o.size,
        records,
        skipped,
        fenced: false,
    };
    for appends in hand_overs {
        for (role, append) in appends {
            match writers
                .get(router.kind(), role)
                .send(append)
                .await
                .map_err(|_| WriterError::Stopped)?
            {
                Ok(()) => {}
                Err(WriterError::Fenced { .. }) => {
                    result.fenced = true;
                    return Ok(result);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(result)
}

/// One object's records through the router: the hand-overs every `batch_rows` rows and at
/// the end, with the number of records and of records already in their tables.
type ObjectRoute = (Router, Vec<Vec<(TableRole, Append)>>, u64, u64);

fn route_object(mut router: Router, bytes: &[u8], batch_rows: usize) -> ObjectRoute {
    let now = chrono::Utc::now().timestamp_micros();
    let records = split_records(bytes);
    let mut hand_overs = Vec::new();
    let (mut count, mut covered) = (0u64, 0u64);
    let mut line_text = itoa::Buffer::new();
    let mut last_line = 0;
    for (line, raw) in &records {
        last_line = *line;
        count += 1;
        // A batch position is the number of lines consumed: a line's mark is its number.
        let meta = RecordMeta::default();
        let routed = router.route(raw, meta, Position::Offset(*line), line_text.format(*line), now);
        covered += u64::from(routed == Routed::Covered);
        if router.buffered() >= batch_rows {
            hand_overs.push(router.hand_over());
        }
    }
    // The position covers the whole object (trailing blank lines included).
    router.skip_to(Position::Offset(records_end(bytes).max(last_line)));
    hand_overs.push(router.hand_over());
    (router, hand_overs, count, covered)
}
