//! Shard leases without DynamoDB: one small JSON object per shard in the object store that
//! holds the tables, changed only by compare-and-set.
//!
//! A lease lives at `<tables>/_pinpipe/leases/<application>/<stream>/<shard>.json`:
//!
//! ```json
//! {"owner":"host-123-ab12","counter":42,"finished":false,"steal_for":null}
//! ```
//!
//! - **Compare-and-set.** Every write names the version it replaces: on S3 the object's
//!   ETag (`If-Match`), and `If-None-Match: *` for the first write; in a local folder the
//!   file's `counter`, compared and replaced under an exclusive `flock` on a sibling lock
//!   file (object_store's local backend has no conditional update). A lost race is
//!   [`Written::Conflict`], never an error.
//! - **Expiry without clocks.** The owner bumps `counter` on every renewal. Nobody compares
//!   wall clocks: a process treats a lease as expired once it has seen the same counter for
//!   a whole lease period on its own monotonic clock (see `coordinator`). Clock skew between
//!   machines therefore cannot make two processes own a shard.
//! - `finished`: the shard was closed (split or merged), read to its end, and the last
//!   positions are committed in the tables. Its children may start.
//! - `steal_for`: another process asks the owner to hand the shard over (load balancing).
//!   The owner drains and commits, then writes the lease free; there is no overlap.
//!
//! Both stores must keep one contract; `tests/lease_store.rs` states it once and runs it
//! on a local folder and on an S3 server (moto, with conditional writes).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::sink::TablesConfig;

/// The contents of a lease object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The process holding the shard; `None` when free.
    pub owner: Option<String>,
    /// Bumped by every write: the heartbeat other processes watch.
    pub counter: u64,
    /// Read to its end and committed (a closed parent shard).
    #[serde(default)]
    pub finished: bool,
    /// A process that asked for the shard; the owner hands it over at its next renewal.
    #[serde(default)]
    pub steal_for: Option<String>,
}

/// The version a write must replace: an S3 ETag, or a local lease's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(String);

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Ok(Tag),
    /// Someone else wrote first; re-read and decide again.
    Conflict,
}

/// Errors of the lease store (not lost races: those are [`Written::Conflict`]).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease store at {location}: {reason}")]
    Location { location: String, reason: String },
    #[error("lease {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("lease file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lease {path} is not valid JSON: {message}")]
    Corrupt { path: String, message: String },
}

enum Backend {
    /// S3: conditional puts on the ETag.
    Object { store: Arc<dyn ObjectStore>, prefix: Path },
    /// A local folder: counter compare under `flock`.
    Folder(PathBuf),
}

/// Where leases are kept and how they are changed.
pub struct LeaseStore {
    backend: Backend,
    /// For error messages and logs.
    location: String,
}

impl LeaseStore {
    /// The lease space of `application` under the tables' location.
    pub fn open(tables: &TablesConfig, application: &str) -> Result<Self, LeaseError> {
        let root = tables.location.trim_end_matches('/');
        let location = format!("{root}/_pinpipe/leases/{application}");
        let bad = |reason: String| LeaseError::Location {
            location: location.clone(),
            reason,
        };
        let backend = if root.starts_with("s3://") || root.starts_with("s3a://") {
            let at = tables.open_store(&location).map_err(|e| bad(e.to_string()))?;
            Backend::Object {
                store: at.store,
                prefix: at.prefix,
            }
        } else {
            let dir = PathBuf::from(location.strip_prefix("file://").unwrap_or(&location));
            std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
            Backend::Folder(dir)
        };
        Ok(Self { backend, location })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn rel(stream: &str, shard: &str) -> String {
        // Stream and shard names are [a-zA-Z0-9_.-]; nothing to escape.
        format!("{stream}/{shard}.json")
    }

    /// The lease of `shard` and its version; `None` when it was never written.
    pub async fn read(&self, stream: &str, shard: &str) -> Result<Option<(Lease, Tag)>, LeaseError> {
        let rel = Self::rel(stream, shard);
        match &self.backend {
            Backend::Object { store, prefix } => {
                let path = prefix.clone().join_rel(&rel);
                let got = match store.get(&path).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(source) => return Err(store_err(&path, source)),
                };
                let tag = got.meta.e_tag.clone().unwrap_or_default();
                let bytes = got.bytes().await.map_err(|source| store_err(&path, source))?;
                Ok(Some((parse(path.as_ref(), &bytes)?, Tag(tag))))
            }
            Backend::Folder(dir) => {
                let file = dir.join(&rel);
                tokio::task::spawn_blocking(move || read_file(&file))
                    .await
                    .expect("lease read task panicked")
            }
        }
    }

    /// The lease of `shard` and when it was last written (the object's or file's
    /// modification time): what `pinpipe status` shows as the lease's age. Read only.
    pub async fn inspect(
        &self,
        stream: &str,
        shard: &str,
    ) -> Result<Option<(Lease, Option<std::time::SystemTime>)>, LeaseError> {
        let rel = Self::rel(stream, shard);
        match &self.backend {
            Backend::Object { store, prefix } => {
                let path = prefix.clone().join_rel(&rel);
                let got = match store.get(&path).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(source) => return Err(store_err(&path, source)),
                };
                let modified = std::time::SystemTime::from(got.meta.last_modified);
                let bytes = got.bytes().await.map_err(|source| store_err(&path, source))?;
                Ok(Some((parse(path.as_ref(), &bytes)?, Some(modified))))
            }
            Backend::Folder(dir) => {
                let file = dir.join(&rel);
                let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
                Ok(read_file(&file)?.map(|(l, _)| (l, modified)))
            }
        }
    }

    /// Writes `lease` if the stored version is still `expect` (`None`: only if absent).
    pub async fn write(
        &self,
        stream: &str,
        shard: &str,
        lease: &Lease,
        expect: Option<&Tag>,
    ) -> Result<Written, LeaseError> {
        let rel = Self::rel(stream, shard);
        let body = serde_json::to_vec(lease).expect("a lease serializes");
        match &self.backend {
            Backend::Object { store, prefix } => {
                let path = prefix.clone().join_rel(&rel);
                let mode = match expect {
                    None => PutMode::Create,
                    Some(t) => PutMode::Update(UpdateVersion {
                        e_tag: Some(t.0.clone()),
                        version: None,
                    }),
                };
                let opts = PutOptions {
                    mode,
                    ..Default::default()
                };
                match store.put_opts(&path, PutPayload::from(body), opts).await {
                    Ok(r) => Ok(Written::Ok(Tag(r.e_tag.unwrap_or_default()))),
                    Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                        Ok(Written::Conflict)
                    }
                    // An update of an object deleted meanwhile.
                    Err(object_store::Error::NotFound { .. }) if expect.is_some() => Ok(Written::Conflict),
                    Err(source) => Err(store_err(&path, source)),
                }
            }
            Backend::Folder(dir) => {
                let file = dir.join(&rel);
                let expect = expect.cloned();
                let lease = lease.clone();
                tokio::task::spawn_blocking(move || write_file(&file, &lease, expect.as_ref()))
                    .await
                    .expect("lease write task panicked")
            }
        }
    }
}

trait JoinRel {
    fn join_rel(self, rel: &str) -> Path;
}

impl JoinRel for Path {
    fn join_rel(self, rel: &str) -> Path {
        let mut s = self.to_string();
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(rel);
        Path::from(s)
    }
}

fn store_err(path: &Path, source: object_store::Error) -> LeaseError {
    LeaseError::Store {
        path: path.to_string(),
        source,
    }
}

fn parse(path: &str, bytes: &[u8]) -> Result<Lease, LeaseError> {
    serde_json::from_slice(bytes).map_err(|e| LeaseError::Corrupt {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LeaseError + '_ {
    move |source| LeaseError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A local lease's version is its counter: every write bumps it, under the lock.
fn local_tag(lease: &Lease) -> Tag {
    Tag(lease.counter.to_string())
}

fn read_unlocked(file: &std::path::Path) -> Result<Option<Lease>, LeaseError> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(parse(&file.display().to_string(), &bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(file)(e)),
    }
}

fn read_file(file: &std::path::Path) -> Result<Option<(Lease, Tag)>, LeaseError> {
    // The file is replaced by rename, so a read without the lock sees a whole version.
    Ok(read_unlocked(file)?.map(|l| {
        let t = local_tag(&l);
        (l, t)
    }))
}

fn write_file(file: &std::path::Path, lease: &Lease, expect: Option<&Tag>) -> Result<Written, LeaseError> {
    let dir = file.parent().expect("a lease file has a folder");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = file.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // Released when `lock` is dropped (also if this process dies).
    lock.lock().map_err(io_err(&lock_path))?;
    let current = read_unlocked(file)?;
    let matches = match (&current, expect) {
        (None, None) => true,
        (Some(c), Some(t)) => local_tag(c) == *t,
        _ => false,
    };
    if !matches {
        return Ok(Written::Conflict);
    }
    // The counter doubles as the version: it must move on every write.
    let mut lease = lease.clone();
    if let Some(c) = &current {
        lease.counter = lease.counter.max(c.counter + 1);
    }
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&lease).expect("a lease serializes")).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, file).map_err(io_err(file))?;
    Ok(Written::Ok(local_tag(&lease)))
}
