//! Batch backfill: raw JSON objects in a folder or under an S3 prefix, into the tables.
//!
//! Input: what the Kafka Connect S3 sink writes, `topics/<topic>/partition=<p>/` folders of
//! `<topic>+<p>+<startOffset>.json` objects (or `.json.gz` with
//! `s3.compression.type=gzip`), each JSON Lines or one JSON document. The topic gives the
//! kind (its suffix). Anything else under the input (a `_SUCCESS` marker, another folder, a
//! stray `notes.txt`) is skipped and counted, unless `--kind` says to read plain files: then
//! every object outside the layout is read as that kind.
//!
//! Each object is a source partition of its own: `_stream` is the topic (or the object's
//! folder), `_partition` the object key, `_position` the 1-based line number, and the
//! checkpoint stored in each table is the number of lines consumed. A rerun resumes every
//! object from the table's checkpoints, so running twice (or after a crash at any point)
//! writes every record exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::clean::{self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage};
use crate::sink::Writers;
use crate::sink::{Append, Position, SourceKey, SourceKind, TablesConfig, WriterError};

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
        self.rows
            .iter()
            .filter(|(t, _)| t.ends_with("_dead_letter"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The one-line summary printed at the end.
    pub fn line(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .filter(|(t, _)| !t.ends_with("_dead_letter"))
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        let rate = if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "batch: {} objects, {} records ({:.1} MB) in {:.2}s ({:.0} records/s); rows {}; dead letters {}; \
             already present {}; objects skipped (outside the layout) {}",
            self.objects,
            self.records,
            self.input_bytes as f64 / 1e6,
            self.seconds,
            rate,
            rows.join(" "),
            self.dead_letters(),
            self.skipped,
            self.skipped_objects
        )
    }
}

/// An input object and what it feeds.
#[derive(Debug, Clone)]
struct Object {
    path: Path,
    key: String,
    stream: String,
    kind: Kind,
    size: u64,
    /// `.gz`: gzip, decompressed before reading.
    gzip: bool,
}

/// Opens an input location (folder or `s3://bucket/prefix`) as a store and a prefix.
pub fn open_input(input: &str, tables: &TablesConfig) -> Result<(Arc<dyn ObjectStore>, Path, bool), BatchError> {
    let bad = |reason: String| BatchError::Input {
        input: input.to_string(),
        reason,
    };
    if input.starts_with("s3://") || input.starts_with("s3a://") {
        let url = Url::parse(input).map_err(|e| bad(e.to_string()))?;
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("an s3 URI needs a bucket".into()))?;
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in tables.storage_options() {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                b = b.with_config(key, v);
            }
        }
        let store = b.build().map_err(|e| bad(e.to_string()))?;
        let prefix = Path::from(url.path().trim_matches('/'));
        Ok((Arc::new(store), prefix, true))
    } else {
        let dir = std::path::Path::new(input.strip_prefix("file://").unwrap_or(input));
        if !dir.is_dir() {
            return Err(bad("not a folder (or it does not exist)".into()));
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
        Ok((Arc::new(store), Path::from(""), false))
    }
}

/// The kind a topic name stands for: its suffix after the last `.`, `-` or `_`.
pub fn kind_of_topic(topic: &str) -> Option<Kind> {
    topic.rsplit(['.', '-', '_']).next()?.parse().ok()
}

/// The topic of a Kafka Connect S3 sink object key, if the key has that layout:
/// `.../topics/<topic>/partition=<p>/<topic>+<p>+<offset>.json[.gz]`.
fn connect_topic(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    let [.., "topics", topic, partition, name] = parts[..] else {
        return None;
    };
    let p = partition.strip_prefix("partition=")?;
    let stem = name.strip_suffix(".json.gz").or_else(|| name.strip_suffix(".json"))?;
    let (rest, offset) = stem.rsplit_once('+')?;
    let (t, part) = rest.rsplit_once('+')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (t == topic && part == p && digits(p) && digits(offset)).then_some(topic)
}

/// What to do with one listed object: read it as `Object`, or skip it (`None`).
fn describe(meta: &object_store::ObjectMeta, kind: Option<Kind>, prefix: &Path, full_keys: bool) -> Option<Object> {
    let full = meta.location.to_string();
    let name = meta.location.filename().unwrap_or("");
    // Hidden files and markers (`_SUCCESS`, `.crc`) are never records.
    if name.starts_with('.') || name.starts_with('_') {
        return None;
    }
    let rel = meta
        .location
        .prefix_match(prefix)
        .map(|p| p.map(|s| s.as_ref().to_string()).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|| full.clone());
    let key = if full_keys { full.clone() } else { rel.clone() };
    // In the layout, the topic names the kind; outside it only `--kind` does.
    let (stream, kind) = match connect_topic(&rel) {
        Some(topic) => (topic.to_string(), kind_of_topic(topic).or(kind)?),
        None => (rel.rsplit_once('/').map_or(".", |(d, _)| d).to_string(), kind?),
    };
    Some(Object {
        path: meta.location.clone(),
        gzip: name.ends_with(".gz"),
        key,
        stream,
        kind,
        size: meta.size,
    })
}

/// Runs the backfill into the writers and returns its totals.
pub async fn run(opts: &BatchOptions, tables: &TablesConfig, writers: &Writers) -> Result<BatchSummary, BatchError> {
    let started = Instant::now();
    let (store, prefix, full_keys) = open_input(&opts.input, tables)?;
    let metas: Vec<object_store::ObjectMeta> = store
        .list(if prefix.as_ref().is_empty() {
            None
        } else {
            Some(&prefix)
        })
        .try_collect()
        .await
        .map_err(|source| BatchError::List {
            input: opts.input.clone(),
            source,
        })?;
    if metas.is_empty() {
        return Err(BatchError::Empty(opts.input.clone()));
    }
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for m in &metas {
        match describe(m, opts.kind, &prefix, full_keys) {
            Some(o) => objects.push(o),
            None => skipped.push(m.location.to_string()),
        }
    }
    if objects.is_empty() {
        return Err(BatchError::NoLayout {
            input: opts.input.clone(),
            skipped: skipped.len(),
            example: skipped.first().cloned().unwrap_or_default(),
        });
    }
    for key in &skipped {
        tracing::info!(%key, "skipped: not in the Kafka Connect layout (give --kind to read plain files)");
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let total_bytes: u64 = objects.iter().map(|o| o.size).sum();

    let bar = if opts.progress {
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
    let before = writers.stats().await;
    let mut summary = BatchSummary {
        objects: objects.len(),
        input_bytes: total_bytes,
        skipped_objects: skipped.len(),
        ..Default::default()
    };
    let mut todo = objects;
    const ROUNDS: u32 = 5;
    for round in 1..=ROUNDS {
        let checkpoints = writers.checkpoints().await?;
        let results: Vec<Result<ObjectResult, BatchError>> = futures::stream::iter(todo.iter().cloned())
            .map(|o| {
                let store = store.clone();
                let checkpoints = &checkpoints;
                let bar = bar.clone();
                async move {
                    let r = process(store, o, opts, checkpoints, writers).await;
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

struct ObjectResult {
    key: String,
    bytes: u64,
    records: u64,
    skipped: u64,
    fenced: bool,
}

/// One chunk of cleaned lines: rows for each table and the line count after it.
struct Chunk {
    end: i64,
    clean: Option<RecordBatch>,
    dead: Option<RecordBatch>,
}

async fn process(
    store: Arc<dyn ObjectStore>,
    o: Object,
    opts: &BatchOptions,
    checkpoints: &HashMap<(Kind, bool), HashMap<SourceKey, Position>>,
    writers: &Writers,
) -> Result<ObjectResult, BatchError> {
    let key = SourceKey::new(SourceKind::Batch, o.stream.clone(), o.key.clone());
    let stored = |dl: bool| checkpoints.get(&(o.kind, dl)).and_then(|m| m.get(&key)).cloned();
    let (clean_at, dead_at) = (stored(false), stored(true));
    let lines_of = |p: &Option<Position>| match p {
        Some(Position::Offset(n)) => *n,
        _ => 0,
    };
    let (clean_done, dead_done) = (lines_of(&clean_at), lines_of(&dead_at));

    let bytes = store
        .get(&o.path)
        .await
        .map_err(|source| BatchError::Read {
            key: o.key.clone(),
            source,
        })?
        .bytes()
        .await
        .map_err(|source| BatchError::Read {
            key: o.key.clone(),
            source,
        })?;
    let size = bytes.len() as u64;
    // Decompressed whole before any row is handed over: a corrupt object commits nothing.
    let bytes = if o.gzip {
        let key = o.key.clone();
        tokio::task::spawn_blocking(move || gunzip(&bytes))
            .await
            .expect("gunzip never panics")
            .map_err(|source| BatchError::Gzip { key, source })?
            .into()
    } else {
        bytes
    };
    let (kind, stream, part) = (o.kind, o.stream.clone(), o.key.clone());
    let (batch_rows, max_bytes) = (opts.batch_rows, opts.max_record_bytes);
    // Cleaning is CPU work: off the async threads.
    let (chunks, records, skipped) = tokio::task::spawn_blocking(move || {
        clean_object(
            &bytes, kind, &stream, &part, clean_done, dead_done, batch_rows, max_bytes,
        )
    })
    .await
    .expect("cleaning never panics");

    let mut result = ObjectResult {
        key: o.key.clone(),
        bytes: size,
        records,
        skipped,
        fenced: false,
    };
    let total = chunks.last().map_or(0, |c| c.end);
    let mut expect = [(false, clean_at), (true, dead_at)];
    for chunk in chunks {
        for (dl, expect) in expect.iter_mut() {
            let done = if *dl { dead_done } else { clean_done };
            let batch = if *dl { chunk.dead.clone() } else { chunk.clean.clone() };
            // Rows go out as they come; a bare position only at the end of the object.
            if chunk.end <= done || (batch.is_none() && chunk.end < total) {
                continue;
            }
            let end = Position::Offset(chunk.end);
            let msg = Append {
                key: key.clone(),
                expect: expect.clone(),
                end: end.clone(),
                batch,
            };
            match writers
                .get(kind, *dl)
                .send(msg)
                .await
                .map_err(|_| WriterError::Stopped)?
            {
                Ok(()) => *expect = Some(end),
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

/// The content of a gzip object (every member, as `gzip -d` reads concatenated files).
fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Splits an object into records and cleans them, skipping lines already committed.
#[allow(clippy::too_many_arguments)]
fn clean_object(
    bytes: &[u8],
    kind: Kind,
    stream: &str,
    partition: &str,
    clean_done: i64,
    dead_done: i64,
    batch_rows: usize,
    max_bytes: usize,
) -> (Vec<Chunk>, u64, u64) {
    let lineage = Lineage {
        source: "batch",
        stream,
        partition,
        ingested_at: chrono::Utc::now().timestamp_micros(),
    };
    let records = split_records(bytes);
    let mut chunks = Vec::new();
    let mut clean_b = CleanBatchBuilder::new(kind);
    let mut dead_b = DeadLetterBatchBuilder::default();
    let (mut count, mut skipped) = (0u64, 0u64);
    let mut pos = itoa::Buffer::new();
    let mut last_line = 0i64;
    for (line, raw) in &records {
        let line = *line;
        last_line = line;
        count += 1;
        let p = pos.format(line);
        match clean::clean(kind, raw, max_bytes) {
            Ok(row) if line > clean_done => {
                clean_b.append(&row, &lineage, p);
            }
            Err(reject) if line > dead_done => dead_b.append(&lineage, p, &reject.to_string(), raw),
            _ => skipped += 1,
        }
        if clean_b.len() + dead_b.len() >= batch_rows {
            chunks.push(take_chunk(line, &mut clean_b, &mut dead_b));
        }
    }
    // The position covers the whole object (trailing blank lines included).
    let total = records_end(bytes).max(last_line);
    chunks.push(take_chunk(total, &mut clean_b, &mut dead_b));
    (chunks, count, skipped)
}

fn take_chunk(end: i64, c: &mut CleanBatchBuilder, d: &mut DeadLetterBatchBuilder) -> Chunk {
    Chunk {
        end,
        clean: (!c.is_empty()).then(|| c.finish()),
        dead: (!d.is_empty()).then(|| d.finish()),
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Number of lines in the object (a final line without `\n` counts).
fn records_end(bytes: &[u8]) -> i64 {
    let n = bytes.iter().filter(|b| **b == b'\n').count() as i64;
    if bytes.last().is_some_and(|b| *b != b'\n') {
        n + 1
    } else {
        n
    }
}

/// The records of an object with their 1-based line numbers: one JSON document spanning the
/// whole object (pretty-printed), or one per non-blank line.
pub fn split_records(bytes: &[u8]) -> Vec<(i64, &[u8])> {
    let lines: Vec<(i64, &[u8])> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as i64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !is_blank(l))
        .collect();
    if lines.len() > 1 && !lines[0].1.trim_ascii().ends_with(b"}") {
        // The first line is not a whole object: a document spread over lines?
        let doc = bytes.trim_ascii();
        if serde_json::from_slice::<serde::de::IgnoredAny>(doc).is_ok() {
            return vec![(1, doc)];
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(
            connect_topic("raw/topics/abc.pin/partition=0/abc.pin+0+0000000000.json"),
            Some("abc.pin")
        );
        assert_eq!(
            connect_topic("topics/a+b.geo/partition=12/a+b.geo+12+7.json.gz"),
            Some("a+b.geo")
        );
        assert_eq!(connect_topic("topics/x.geo/notpartition/f.json"), None);
        // The sink's own naming only: stray files, other extensions, mismatched names.
        for stray in [
            "topics/x.geo/partition=0/notes.txt",
            "topics/x.geo/partition=0/x.geo+0+1.txt",
            "topics/x.geo/partition=0/x.geo+0+1.json.zst",
            "topics/x.geo/partition=0/y.geo+0+1.json",
            "topics/x.geo/partition=0/x.geo+1+1.json",
            "topics/x.geo/partition=0/x.geo+0+a.json",
            "topics/x.geo/partition=0/sub/x.geo+0+1.json",
            "topics/x.geo/x.geo+0+1.json",
        ] {
            assert_eq!(connect_topic(stray), None, "{stray}");
        }
        assert_eq!(kind_of_topic("0a1b.user"), Some(Kind::User));
        assert_eq!(kind_of_topic("streaming-x-geo"), Some(Kind::Geo));
        assert_eq!(kind_of_topic("pins"), None);
    }

    #[test]
    fn splitting() {
        let jl = b"{\"a\":1}\n\n{\"b\":2}\r\n";
        assert_eq!(split_records(jl), vec![(1, &b"{\"a\":1}"[..]), (3, &b"{\"b\":2}"[..])]);
        assert_eq!(records_end(jl), 3);
        let pretty = b"{\n  \"a\": 1\n}\n";
        assert_eq!(split_records(pretty), vec![(1, &b"{\n  \"a\": 1\n}"[..])]);
        // Garbage spread over lines stays line by line (each a dead letter).
        assert_eq!(split_records(b"{\nnope\n").len(), 2);
        assert_eq!(records_end(b"x"), 1);
        assert!(split_records(b"").is_empty());
    }

    #[test]
    fn gzip_members_and_corruption() {
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let mut two = gz(b"{\"a\":1}\n");
        two.extend(gz(b"{\"b\":2}\n"));
        assert_eq!(gunzip(&two).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        let one = gz(b"{\"a\":1}\n");
        assert!(gunzip(&one[..one.len() - 5]).is_err(), "truncated");
        assert!(gunzip(b"{\"a\":1}").is_err(), "not gzip");
    }
}
