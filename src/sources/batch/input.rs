//! What `pinpipe batch` reads: the objects under the input, which of them are in the Kafka
//! Connect S3 sink's layout, and the records inside one object.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{BatchError, BatchOptions};
use crate::clean::Kind;
use crate::sink::TablesConfig;

/// An input object and what it feeds.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub path: Path,
    /// The object's key: relative to a folder input, in full on S3 (`_partition`).
    pub key: String,
    /// The topic, or the object's folder outside the layout (`_stream`).
    pub stream: String,
    pub kind: Kind,
    pub size: u64,
    /// `.gz`: gzip, decompressed before reading.
    pub gzip: bool,
}

/// The objects of a batch run, listed and checked before any table is touched.
pub struct Input {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) objects: Vec<Object>,
    /// Objects not read: outside the layout (without `--kind`), hidden files, markers.
    pub(super) skipped: usize,
}

impl Input {
    /// Lists `opts.input` and picks the objects to read. An input with nothing to read is
    /// an error: a typo in a location must not look like an empty success.
    pub async fn scan(opts: &BatchOptions, tables: &TablesConfig) -> Result<Self, BatchError> {
        let at = tables.open_store(&opts.input).map_err(|e| BatchError::Input {
            input: opts.input.clone(),
            reason: e.to_string(),
        })?;
        let listed: Vec<object_store::ObjectMeta> = at
            .store
            .list((!at.prefix.as_ref().is_empty()).then_some(&at.prefix))
            .try_collect()
            .await
            .map_err(|source| BatchError::List {
                input: opts.input.clone(),
                source,
            })?;
        if listed.is_empty() {
            return Err(BatchError::Empty(opts.input.clone()));
        }
        let mut objects = Vec::new();
        let mut skipped = Vec::new();
        for m in &listed {
            match describe(m, opts.kind, &at.prefix, at.remote) {
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
        Ok(Self {
            store: at.store,
            objects,
            skipped: skipped.len(),
        })
    }

    /// Input bytes of the objects read.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// The record bytes of `o`: its content, decompressed when it is gzip. Whole, before
    /// any row is handed over, so a corrupt object commits nothing.
    pub(super) async fn read(&self, o: &Object) -> Result<bytes::Bytes, BatchError> {
        let read = |source| BatchError::Read {
            key: o.key.clone(),
            source,
        };
        let bytes = self
            .store
            .get(&o.path)
            .await
            .map_err(read)?
            .bytes()
            .await
            .map_err(read)?;
        if !o.gzip {
            return Ok(bytes);
        }
        tokio::task::spawn_blocking(move || gunzip(&bytes))
            .await
            .expect("gunzip never panics")
            .map(Into::into)
            .map_err(|source| BatchError::Gzip {
                key: o.key.clone(),
                source,
            })
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

/// The content of a gzip object (every member, as `gzip -d` reads concatenated files).
fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Number of lines in the object (a final line without `\n` counts).
pub(super) fn records_end(bytes: &[u8]) -> i64 {
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
