//! Which file of a Delta log is damaged, once loading the table failed.
//!
//! Delta's own errors say what went wrong (`Json error: Truncated record`, `Had a
//! _last_checkpoint hint but didn't find any checkpoints`) but not where. An operator needs
//! the table and the version to restore or remove, so after a failed load the log is read
//! the way a load reads it, and the first file that cannot be read is named:
//!
//! - `_last_checkpoint` must be JSON and the checkpoint it names must exist;
//! - every commit after that checkpoint must exist (no gap in the versions) and each of its
//!   lines must be a JSON object.
//!
//! Nothing is repaired and nothing is written: a damaged log needs a person.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

#[derive(Deserialize)]
struct LastCheckpoint {
    version: u64,
}

/// The first damaged file of the log under `root` (a table's folder in `store`), said in
/// words with its version; `None` when every file a load reads is whole (the load failed for
/// another reason, or the log could not even be listed).
pub async fn damaged_log(store: &dyn ObjectStore, root: &Path) -> Option<String> {
    let dir = join(root, "_delta_log");
    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await.ok()?;
    let mut commits = BTreeMap::new();
    let mut checkpoints = BTreeSet::new();
    for meta in listed {
        let Some(name) = meta.location.filename() else { continue };
        match name.split_once('.') {
            Some((v, "json")) => {
                if let Ok(v) = v.parse::<u64>() {
                    commits.insert(v, meta.location.clone());
                }
            }
            Some((v, rest)) if rest.starts_with("checkpoint.") && rest.ends_with(".parquet") => {
                if let Ok(v) = v.parse::<u64>() {
                    checkpoints.insert(v);
                }
            }
            _ => {}
        }
    }
    let start = match last_checkpoint(store, &dir, &checkpoints).await {
        Ok(v) => v.map_or(0, |v| v + 1),
        Err(said) => return Some(said),
    };
    for (expect, (&v, path)) in (start..).zip(commits.range(start..)) {
        if v != expect {
            return Some(format!("version {expect} is missing: the log goes on at version {v}"));
        }
        if let Some(said) = bad_commit(store, path).await {
            return Some(format!("version {v} ({path}): {said}"));
        }
    }
    None
}

/// The version of the checkpoint `_last_checkpoint` names (`None` without one), or what is
/// wrong with it.
async fn last_checkpoint(store: &dyn ObjectStore, dir: &Path, present: &BTreeSet<u64>) -> Result<Option<u64>, String> {
    let path = join(dir, "_last_checkpoint");
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| format!("{path}: {e}"))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    let last: LastCheckpoint = serde_json::from_slice(&bytes).map_err(|e| format!("{path} is not valid JSON ({e})"))?;
    if !present.contains(&last.version) {
        return Err(format!(
            "{path} names the checkpoint of version {v}, but {dir}/{v:020}.checkpoint.parquet is missing",
            v = last.version
        ));
    }
    Ok(Some(last.version))
}

/// What is wrong with a commit file, if anything: unreadable, or a line that is not JSON.
async fn bad_commit(store: &dyn ObjectStore, path: &Path) -> Option<String> {
    let bytes = match store.get(path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return Some(e.to_string()),
    };
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) {
            // serde counts lines within the one line it was given: keep the column only.
            let said = e.to_string();
            let what = said.split(" at line ").next().unwrap_or(&said);
            return Some(format!(
                "line {}, column {}, is not a JSON action: {what}",
                i + 1,
                e.column()
            ));
        }
    }
    None
}

fn join(root: &Path, name: &str) -> Path {
    if root.as_ref().is_empty() {
        Path::from(name)
    } else {
        Path::from(format!("{root}/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    async fn put(store: &InMemory, path: &str, body: &str) {
        store
            .put(&Path::from(path), PutPayload::from(body.as_bytes().to_vec()))
            .await
            .unwrap();
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        crate::block_on_tokio(f)
    }

    #[test]
    fn names_the_first_damaged_file_with_its_version() {
        block_on(async {
            let s = InMemory::new();
            let root = Path::from("t/pin");
            let log = "t/pin/_delta_log";
            put(
                &s,
                &format!("{log}/00000000000000000000.json"),
                "{\"protocol\":{}}\n{\"metaData\":{}}\n",
            )
            .await;
            put(&s, &format!("{log}/00000000000000000001.json"), "{\"add\":{}}\n").await;
            assert_eq!(damaged_log(&s, &root).await, None, "a whole log");

            put(
                &s,
                &format!("{log}/00000000000000000002.json"),
                "{\"add\":{\"path\":\"x",
            )
            .await;
            let said = damaged_log(&s, &root).await.unwrap();
            let expected = "version 2 (t/pin/_delta_log/00000000000000000002.json): line 1, column ";
            assert!(said.starts_with(expected), "{said}");
            assert!(
                said.ends_with(", is not a JSON action: EOF while parsing a string"),
                "{said}"
            );

            put(&s, &format!("{log}/00000000000000000002.json"), "{\"add\":{}}\n").await;
            put(&s, &format!("{log}/00000000000000000004.json"), "{\"add\":{}}\n").await;
            let said = damaged_log(&s, &root).await.unwrap();
            assert_eq!(said, "version 3 is missing: the log goes on at version 4");

            // A checkpoint hint: the commits before it are not read, its file must exist.
            put(&s, &format!("{log}/_last_checkpoint"), "{\"version\":3,\"size\":4}").await;
            let said = damaged_log(&s, &root).await.unwrap();
            assert!(said.contains("names the checkpoint of version 3"), "{said}");
            assert!(
                said.contains("00000000000000000003.checkpoint.parquet is missing"),
                "{said}"
            );
            put(&s, &format!("{log}/00000000000000000003.checkpoint.parquet"), "PAR1").await;
            assert_eq!(damaged_log(&s, &root).await, None);

            put(&s, &format!("{log}/_last_checkpoint"), "{\"vers").await;
            let said = damaged_log(&s, &root).await.unwrap();
            assert!(
                said.starts_with("t/pin/_delta_log/_last_checkpoint is not valid JSON"),
                "{said}"
            );
        });
    }

    #[test]
    fn a_table_at_the_store_root() {
        block_on(async {
            let s = InMemory::new();
            put(&s, "_delta_log/00000000000000000000.json", "garbage\n").await;
            let said = damaged_log(&s, &Path::from("")).await.unwrap();
            assert!(
                said.starts_with("version 0 (_delta_log/00000000000000000000.json): line 1"),
                "{said}"
            );
        });
    }
}
