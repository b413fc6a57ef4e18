//! Where the Delta tables live and how they are opened: a local folder or `s3://bucket/prefix`.
//!
//! Every table is created on first use from the Arrow schema of its kind. On S3 the
//! deltalake S3 log store commits with conditional puts (`If-None-Match: *`), so several
//! processes can append to one table without an external lock table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use arrow_schema::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::StructType;
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use object_store::path::Path;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use url::Url;

use super::damage::damaged_log;
use crate::validate::{ensure, invalid, Invalid};

/// Storage settings of the tables (the `[tables]` config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TablesConfig {
    /// A folder (`./data`) or an `s3://bucket/prefix` URI; each table is a child of it.
    pub location: String,
    /// S3 endpoint of a non-AWS server (MinIO, moto, ...). Empty: AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints (test servers); off for AWS.
    pub allow_http: bool,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub path_style: bool,
    /// Static credentials; without them the standard AWS credential chain is used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Delta checkpoint every N commits (keeps table loading and resume fast).
    pub checkpoint_interval: u32,
    /// S3 only: one request's time limit. A stalled store then fails a request in this
    /// time and is retried, instead of holding a flush for the client's default 30 s.
    pub request_timeout_ms: u64,
    /// S3 only: retries of one request (5xx, throttles, timeouts, resets) inside the
    /// client, with backoff, before the flush fails and pinpipe's own flush retry (counted in
    /// `pinpipe_flush_retries_total`) takes over.
    pub max_retries: u32,
}

impl Default for TablesConfig {
    fn default() -> Self {
        Self {
            location: "./data".into(),
            endpoint: None,
            region: None,
            allow_http: false,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            checkpoint_interval: 100,
            request_timeout_ms: 30_000,
            max_retries: 10,
        }
    }
}

/// Errors opening or creating a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("table {table}: damaged Delta log: {detail} (loading it failed with: {source})")]
    DamagedLog {
        table: String,
        detail: String,
        #[source]
        source: DeltaTableError,
    },
}

/// A location opened as an object store: the raw input of `pinpipe batch`, the lease
/// objects, the emulator's output.
pub struct StoreLocation {
    pub store: Arc<dyn ObjectStore>,
    /// The location's prefix inside `store`.
    pub prefix: Path,
    /// On S3 (keys are named in full; a folder's keys are relative to it).
    pub remote: bool,
}

impl TablesConfig {
    /// The storage options deltalake / object_store understand.
    pub fn storage_options(&self) -> HashMap<String, String> {
        let mut o = HashMap::new();
        let mut put = |k: &str, v: Option<&String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                o.insert(k.to_string(), v.clone());
            }
        };
        put("AWS_ENDPOINT_URL", self.endpoint.as_ref());
        put("AWS_REGION", self.region.as_ref());
        put("AWS_ACCESS_KEY_ID", self.access_key_id.as_ref());
        put("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_ref());
        if self.allow_http {
            o.insert("AWS_ALLOW_HTTP".into(), "true".into());
        }
        if self.path_style {
            o.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
        }
        if self.location.starts_with("s3://") {
            // object_store's client timeout and deltalake's retry settings.
            o.insert("timeout".into(), format!("{}ms", self.request_timeout_ms));
            o.insert("max_retries".into(), self.max_retries.to_string());
        }
        o
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        location_url(&self.location).map_err(|e| {
            invalid(
                "tables.location",
                format!("{e} (allowed: a folder path or s3://bucket/prefix)"),
            )
        })?;
        ensure(
            self.checkpoint_interval > 0,
            "tables.checkpoint_interval",
            "must be at least 1",
        )?;
        ensure(
            self.request_timeout_ms >= 100,
            "tables.request_timeout_ms",
            "must be at least 100",
        )?;
        ensure(self.max_retries <= 100, "tables.max_retries", "must be at most 100")?;
        if let Some(ep) = &self.endpoint {
            ensure(
                ep.starts_with("http://") || ep.starts_with("https://"),
                "tables.endpoint",
                format!("{ep:?} is not an http:// or https:// URL"),
            )?;
            ensure(
                !ep.starts_with("http://") || self.allow_http,
                "tables.endpoint",
                "an http:// endpoint needs tables.allow_http = true",
            )?;
        }
        Ok(())
    }

    /// Opens `location` (a folder, which must exist, or `s3://bucket/prefix`) with the
    /// tables' S3 settings: the same endpoint and credentials serve every location.
    pub fn open_store(&self, location: &str) -> Result<StoreLocation, TableError> {
        let bad = |reason: String| TableError::Location {
            location: location.to_string(),
            reason,
        };
        if location.starts_with("s3://") || location.starts_with("s3a://") {
            let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("an s3 URI needs a bucket".into()))?;
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in self.storage_options() {
                if let Ok(key) = k.to_ascii_lowercase().parse() {
                    b = b.with_config(key, v);
                }
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            return Ok(StoreLocation {
                store: Arc::new(store),
                prefix: Path::from(url.path().trim_matches('/')),
                remote: true,
            });
        }
        let dir = std::path::Path::new(location.strip_prefix("file://").unwrap_or(location));
        if !dir.is_dir() {
            return Err(bad("not a folder (or it does not exist)".into()));
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
        Ok(StoreLocation {
            store: Arc::new(store),
            prefix: Path::from(""),
            remote: false,
        })
    }

    /// The URL of the root under which all tables live.
    pub fn root_url(&self) -> Result<Url, TableError> {
        location_url(&self.location)
    }

    /// The URL of one table.
    pub fn table_url(&self, name: &str) -> Result<Url, TableError> {
        let root = self.root_url()?;
        let mut s = root.to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        s.push_str(name);
        s.push('/');
        Url::parse(&s).map_err(|e| TableError::Location {
            location: s.clone(),
            reason: e.to_string(),
        })
    }

    /// Opens an existing table; `None` when there is no table at its location.
    pub async fn open_existing(&self, name: &str) -> Result<Option<DeltaTable>, TableError> {
        register_handlers();
        let url = self.table_url(name)?;
        if url.scheme() == "file" && !url.to_file_path().is_ok_and(|p| p.join("_delta_log").is_dir()) {
            return Ok(None);
        }
        let table = match DeltaTable::try_from_url_with_storage_options(url.clone(), self.storage_options()).await {
            Ok(t) => t,
            Err(source) => return Err(self.load_failed(name, &url, source).await),
        };
        Ok(table.version().is_some().then_some(table))
    }

    /// The error of a table that did not load: naming the damaged log file and its version
    /// when that is the cause ([`damaged_log`]).
    pub async fn load_failed(&self, name: &str, url: &Url, source: DeltaTableError) -> TableError {
        let detail = match self.open_store(url.as_str()) {
            Ok(at) => damaged_log(at.store.as_ref(), &at.prefix).await,
            Err(_) => None,
        };
        match detail {
            Some(detail) => TableError::DamagedLog {
                table: name.to_string(),
                detail,
                source,
            },
            None => TableError::Delta {
                table: name.to_string(),
                source,
            },
        }
    }

    /// Opens the table, creating it (with `schema`, partitioned by `partitions`) if it does
    /// not exist yet. An existing table's schema is checked by its writer ([`schema_diff`]),
    /// not here.
    pub async fn open_or_create(
        &self,
        name: &str,
        schema: &SchemaRef,
        partitions: &[&str],
    ) -> Result<DeltaTable, TableError> {
        register_handlers();
        let url = self.table_url(name)?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| TableError::Location {
                location: url.to_string(),
                reason: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&path).map_err(|e| TableError::Location {
                location: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let delta = |source| TableError::Delta {
            table: name.to_string(),
            source,
        };
        let table = match DeltaTable::try_from_url_with_storage_options(url.clone(), self.storage_options()).await {
            Ok(t) => t,
            Err(source) => return Err(self.load_failed(name, &url, source).await),
        };
        if table.version().is_some() {
            return Ok(table);
        }
        let fields: StructType = schema.as_ref().try_into_kernel().map_err(|e| delta(e.into()))?;
        let created = table
            .create()
            .with_table_name(name)
            .with_columns(fields.fields().cloned())
            .with_partition_columns(partitions.iter().copied())
            .with_configuration_property(
                TableProperty::CheckpointInterval,
                Some(self.checkpoint_interval.to_string()),
            )
            // No retry: when several processes start at once, a create that lost the race for
            // version 0 would otherwise be retried as version 1, a second CREATE TABLE with a
            // new table id over the winner's (seen in tests/faults.rs). Losing is fine: the
            // error path below opens the winner's table.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(t) => Ok(t),
            // Another process created it first: use theirs.
            Err(e) => {
                let table = DeltaTable::try_from_url_with_storage_options(url, self.storage_options())
                    .await
                    .map_err(delta)?;
                if table.version().is_none() {
                    return Err(delta(e));
                }
                Ok(table)
            }
        }
    }
}

/// How a table's schema differs from the one pinpipe writes, one phrase per column (by
/// name: type, nullability, added or missing); empty when they match. Column order is not
/// compared: Delta resolves columns by name.
pub fn schema_diff(table: &StructType, ours: &StructType) -> Vec<String> {
    let null = |n: bool| if n { "nullable" } else { "not null" };
    let mut out = Vec::new();
    for f in table.fields() {
        match ours.field(f.name()) {
            None => out.push(format!("column {} ({}) added", f.name(), f.data_type())),
            Some(o) if o.data_type() != f.data_type() => out.push(format!(
                "column {} is {}, pinpipe writes {}",
                f.name(),
                f.data_type(),
                o.data_type()
            )),
            Some(o) if o.is_nullable() != f.is_nullable() => out.push(format!(
                "column {} is {}, pinpipe writes it {}",
                f.name(),
                null(f.is_nullable()),
                null(o.is_nullable())
            )),
            Some(_) => {}
        }
    }
    for o in ours.fields().filter(|o| table.field(o.name()).is_none()) {
        out.push(format!("column {} ({}) missing", o.name(), o.data_type()));
    }
    out
}

/// Parses a folder path or URL into a URL (relative folders are made absolute).
pub fn location_url(location: &str) -> Result<Url, TableError> {
    let bad = |reason: String| TableError::Location {
        location: location.to_string(),
        reason,
    };
    if location.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    if location.contains("://") {
        let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
        return match url.scheme() {
            "s3" | "s3a" | "file" | "memory" => {
                if url.scheme().starts_with("s3") && url.host_str().unwrap_or("").is_empty() {
                    return Err(bad("an s3 URI needs a bucket: s3://bucket/prefix".into()));
                }
                Ok(url)
            }
            other => Err(bad(format!(
                "unsupported scheme {other:?} (allowed: a folder path, s3://, file://)"
            ))),
        };
    }
    let mut path = PathBuf::from(location);
    if path.is_relative() {
        path = std::env::current_dir().map_err(|e| bad(e.to_string()))?.join(path);
    }
    Url::from_directory_path(&path).map_err(|_| bad("not an absolute path".into()))
}

fn register_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = TablesConfig {
            location: "s3://b/raw/tables".into(),
            ..Default::default()
        };
        assert_eq!(c.table_url("pin").unwrap().as_str(), "s3://b/raw/tables/pin/");
        assert!(location_url("s3:///x").is_err());
        assert!(location_url("gs://b/x").is_err());
        assert!(location_url("").is_err());
        let local = location_url("rel/dir").unwrap();
        assert_eq!(local.scheme(), "file");
        assert!(local.path().ends_with("/rel/dir/"));
    }

    #[test]
    fn schema_diff_names_each_column_that_differs() {
        use arrow_schema::{DataType, Field, Schema};
        let kernel = |fields: Vec<Field>| -> StructType { (&Schema::new(fields)).try_into_kernel().unwrap() };
        let ours = kernel(vec![
            Field::new("ind", DataType::Int64, false),
            Field::new("title", DataType::Utf8, true),
        ]);
        assert!(schema_diff(&ours, &ours).is_empty());
        let added = kernel(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("ind", DataType::Int64, false),
            Field::new("extra", DataType::Utf8, true),
        ]);
        assert_eq!(schema_diff(&added, &ours), ["column extra (string) added"]);
        let retyped = kernel(vec![
            Field::new("ind", DataType::Utf8, false),
            Field::new("title", DataType::Utf8, false),
        ]);
        assert_eq!(
            schema_diff(&retyped, &ours),
            [
                "column ind is string, pinpipe writes long",
                "column title is not null, pinpipe writes it nullable"
            ]
        );
        let dropped = kernel(vec![Field::new("ind", DataType::Int64, false)]);
        assert_eq!(schema_diff(&dropped, &ours), ["column title (string) missing"]);
    }

    #[test]
    fn options_only_when_set() {
        let c = TablesConfig {
            path_style: true,
            allow_http: true,
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let o = c.storage_options();
        assert_eq!(o["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"], "false");
        assert_eq!(o["AWS_ALLOW_HTTP"], "true");
        assert!(!o.contains_key("AWS_REGION"));
    }
}
