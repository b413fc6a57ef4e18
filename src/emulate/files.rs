//! The emulator's file target: raw JSON Lines in the Kafka Connect S3 sink layout,
//! `topics/<prefix>.<kind>/partition=<p>/<prefix>.<kind>+<p>+<startOffset>.json`, in a
//! folder or under an S3 prefix: what `pinpipe batch` reads back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{EmulateConfig, Generator};
use crate::clean::Kind;
use crate::sink::TablesConfig;

/// Errors writing emulator files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("output {out:?}: {reason}")]
    Output { out: String, reason: String },
    #[error("writing {path}: {source}")]
    Put {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error(transparent)]
    Generator(#[from] super::EmulateError),
}

/// Totals of an emulator run.
#[derive(Debug, Default, Clone)]
pub struct EmulateSummary {
    pub posts: u64,
    pub records: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub out: String,
}

impl EmulateSummary {
    pub fn line(&self) -> String {
        let rate = if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "emulate: {} posts, {} records, {} files ({:.1} MB) in {:.2}s ({:.0} records/s) to {}",
            self.posts,
            self.records,
            self.files,
            self.bytes as f64 / 1e6,
            self.seconds,
            rate,
            self.out
        )
    }
}

/// One open file per topic partition.
struct OpenFile {
    start: u64,
    next: u64,
    buf: Vec<u8>,
}

/// Writes `count` posts (at `rate` posts/s if given).
pub async fn write(
    cfg: &EmulateConfig,
    tables: &TablesConfig,
    out: &str,
    count: u64,
    rate: Option<f64>,
    progress: bool,
) -> Result<EmulateSummary, FilesError> {
    let (store, prefix) = open_output(out, tables)?;
    let mut gen = Generator::from_config(cfg)?;
    let parts = cfg.partitions as usize;
    let mut files: Vec<Vec<OpenFile>> = (0..3)
        .map(|_| {
            (0..parts)
                .map(|_| OpenFile {
                    start: 0,
                    next: 0,
                    buf: Vec::new(),
                })
                .collect()
        })
        .collect();
    let bar = super::posts_bar(count, progress);
    let started = Instant::now();
    let mut summary = EmulateSummary {
        out: out.to_string(),
        ..Default::default()
    };
    for n in 0..count {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(n as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let post = gen.next_post();
        // Like a keyed producer: a post's three records land in the same partition number.
        let p = (post.ind.unsigned_abs() % parts as u64) as usize;
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            let f = &mut files[k][p];
            f.buf.extend_from_slice(post.record(kind));
            f.buf.push(b'\n');
            f.next += 1;
            summary.records += 1;
            if (f.next - f.start) as usize >= cfg.records_per_file {
                put(&store, &prefix, &cfg.topic_prefix, kind, p, f, &mut summary).await?;
            }
        }
        summary.posts += 1;
        bar.inc(1);
    }
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        for (p, f) in files[k].iter_mut().enumerate() {
            put(&store, &prefix, &cfg.topic_prefix, kind, p, f, &mut summary).await?;
        }
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    topic_prefix: &str,
    kind: Kind,
    p: usize,
    f: &mut OpenFile,
    summary: &mut EmulateSummary,
) -> Result<(), FilesError> {
    if f.buf.is_empty() {
        return Ok(());
    }
    let topic = format!("{topic_prefix}.{kind}");
    let name = format!("topics/{topic}/partition={p}/{topic}+{p}+{:010}.json", f.start);
    let path = if prefix.as_ref().is_empty() {
        Path::from(name)
    } else {
        Path::from(format!("{prefix}/{name}"))
    };
    let bytes = std::mem::take(&mut f.buf);
    summary.bytes += bytes.len() as u64;
    summary.files += 1;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|source| FilesError::Put {
            path: path.to_string(),
            source,
        })?;
    f.start = f.next;
    Ok(())
}

fn open_output(out: &str, tables: &TablesConfig) -> Result<(Arc<dyn ObjectStore>, Path), FilesError> {
    let bad = |reason: String| FilesError::Output {
        out: out.to_string(),
        reason,
    };
    if out.contains("://") && !out.starts_with("file://") {
        let at = tables.open_store(out).map_err(|e| bad(e.to_string()))?;
        return Ok((at.store, at.prefix));
    }
    let dir = out.strip_prefix("file://").unwrap_or(out);
    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
    Ok((Arc::new(store), Path::from("")))
}
