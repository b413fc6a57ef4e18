//! Configuration: `config/pinpipe.toml` (or `--config FILE`), then `PINPIPE__SECTION__KEY`
//! environment overrides, then validation.
//!
//! Every section has defaults, so an empty file (or none) is a working local setup.
//! Unknown keys are errors (a typo must not silently fall back to a default), and
//! validation errors name the key and the allowed values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clean::{Kind, DEFAULT_MAX_RECORD_BYTES};
use crate::sink::{TablesConfig, WriterConfig};

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/pinpipe.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub tables: TablesConfig,
    pub writer: WriterConfig,
    pub clean: CleanConfig,
    pub batch: BatchConfig,
    pub emulate: crate::emulate::EmulateConfig,
    pub kafka: crate::sources::kafka::KafkaConfig,
    pub kinesis: crate::sources::kinesis::KinesisConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub gateway: crate::gateway::GatewayConfig,
}

/// `[clean]`: limits of per-record cleaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanConfig {
    /// A record larger than this is a dead letter (`too large`), bytes kept.
    pub max_record_bytes: usize,
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// `[batch]`: the backfill from raw JSON files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Folder or `s3://bucket/prefix` with the raw JSON.
    pub input: String,
    /// Kind of every object, for inputs not in the Kafka Connect layout.
    pub kind: Option<Kind>,
    /// Objects read at the same time.
    pub concurrency: usize,
    /// Rows per Arrow batch handed to a writer.
    pub batch_rows: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            input: "./raw".into(),
            kind: None,
            concurrency: 4,
            batch_rows: 8192,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config key {key}: must be a whole number, got {value}")]
    NotWhole { key: String, value: f64 },
}

/// The config crate rounds a float given for an integer key (`workers = 1.5` becomes 2)
/// without a word; this refuses it. Integer keys are those whose default serializes as an
/// integer; `value` is the merged file and environment tree.
fn refuse_fractions(value: &config::Value, defaults: &serde_json::Value, path: &str) -> Result<(), ConfigError> {
    match &value.kind {
        config::ValueKind::Table(t) => {
            for (k, v) in t {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                refuse_fractions(v, defaults.get(k).unwrap_or(&serde_json::Value::Null), &child)?;
            }
        }
        config::ValueKind::Float(f) if f.fract() != 0.0 && (defaults.is_u64() || defaults.is_i64()) => {
            return Err(ConfigError::NotWhole {
                key: path.to_string(),
                value: *f,
            });
        }
        _ => {}
    }
    Ok(())
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` (or [`DEFAULT_PATH`] when it exists), applies `PINPIPE__*` overrides and
    /// validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder();
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => b = b.add_source(config::File::from(p)),
            None if Path::new(DEFAULT_PATH).exists() => b = b.add_source(config::File::with_name(DEFAULT_PATH)),
            None => {}
        }
        let env = config::Environment::with_prefix("PINPIPE")
            .separator("__")
            .try_parsing(true);
        let merged = b.add_source(env).build()?;
        let defaults = serde_json::to_value(Config::default()).expect("the default config serializes");
        refuse_fractions(&merged.cache, &defaults, "")?;
        let cfg: Config = merged.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and combinations serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::sink::table::location_url(&self.tables.location).map_err(|e| {
            invalid(
                "tables.location",
                format!("{e} (allowed: a folder path or s3://bucket/prefix)"),
            )
        })?;
        if self.tables.checkpoint_interval == 0 {
            return Err(invalid("tables.checkpoint_interval", "must be at least 1"));
        }
        if self.tables.request_timeout_ms < 100 {
            return Err(invalid("tables.request_timeout_ms", "must be at least 100"));
        }
        if self.tables.max_retries > 100 {
            return Err(invalid("tables.max_retries", "must be at most 100"));
        }
        if let Some(ep) = &self.tables.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(invalid(
                    "tables.endpoint",
                    format!("{ep:?} is not an http:// or https:// URL"),
                ));
            }
            if ep.starts_with("http://") && !self.tables.allow_http {
                return Err(invalid(
                    "tables.endpoint",
                    "an http:// endpoint needs tables.allow_http = true",
                ));
            }
        }
        let w = &self.writer;
        if w.max_rows == 0 {
            return Err(invalid("writer.max_rows", "must be at least 1"));
        }
        if w.max_bytes < 1024 {
            return Err(invalid("writer.max_bytes", "must be at least 1024"));
        }
        if w.max_age_ms == 0 {
            return Err(invalid("writer.max_age_ms", "must be at least 1"));
        }
        if !(1..=22).contains(&w.zstd_level) {
            return Err(invalid(
                "writer.zstd_level",
                format!("{} is outside the allowed 1..=22", w.zstd_level),
            ));
        }
        if w.row_group_rows == 0 {
            return Err(invalid("writer.row_group_rows", "must be at least 1"));
        }
        if w.commit_attempts == 0 {
            return Err(invalid("writer.commit_attempts", "must be at least 1"));
        }
        if self.clean.max_record_bytes == 0 {
            return Err(invalid("clean.max_record_bytes", "must be at least 1"));
        }
        if self.batch.concurrency == 0 || self.batch.concurrency > 256 {
            return Err(invalid("batch.concurrency", "allowed: 1..=256"));
        }
        if self.batch.batch_rows == 0 {
            return Err(invalid("batch.batch_rows", "must be at least 1"));
        }
        self.emulate.validate().map_err(|e| match e {
            crate::emulate::EmulateError::InvalidConfig { key, message } => invalid(key, message),
        })?;
        let k = &self.kafka;
        if !k.enabled && !self.kinesis.enabled {
            return Err(invalid(
                "kafka.enabled",
                "kafka.enabled and kinesis.enabled are both false: `pinpipe run` would read nothing",
            ));
        }
        if !["earliest", "latest"].contains(&k.auto_offset_reset.as_str()) {
            return Err(invalid(
                "kafka.auto_offset_reset",
                format!("{:?} (allowed: earliest, latest)", k.auto_offset_reset),
            ));
        }
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must be non-empty"));
        }
        if k.batch_rows == 0 || k.batch_age_ms == 0 {
            return Err(invalid(
                "kafka.batch_rows",
                "kafka.batch_rows and kafka.batch_age_ms must be at least 1",
            ));
        }
        if k.workers == 0 || k.workers > 256 {
            return Err(invalid("kafka.workers", format!("{} (allowed: 1..=256)", k.workers)));
        }
        if k.fetch_queue_kbytes < 64 || k.fetch_queue_kbytes > 2_097_151 {
            return Err(invalid(
                "kafka.fetch_queue_kbytes",
                format!("{} (allowed: 64..=2097151, librdkafka's range)", k.fetch_queue_kbytes),
            ));
        }
        if !k.msk_iam_region.is_empty() {
            for (key, want) in [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "OAUTHBEARER")] {
                if let Some(v) = k.properties.get(key).filter(|v| !v.eq_ignore_ascii_case(want)) {
                    return Err(invalid(
                        "kafka.properties",
                        format!("{key} = {v:?} contradicts kafka.msk_iam_region (allowed: {want}, or unset)"),
                    ));
                }
            }
        }
        self.metrics.addr().map_err(|m| invalid("metrics.listen", m))?;
        self.kinesis.validate().map_err(|(key, m)| invalid(key, m))?;
        self.gateway.validate().map_err(|(key, m)| invalid(key, m))?;
        if k.shutdown_grace_ms < 1_000 {
            return Err(invalid(
                "kafka.shutdown_grace_ms",
                format!("{} (allowed: at least 1000)", k.shutdown_grace_ms),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msk_iam_rejects_contradicting_properties() {
        let mut c = Config::default();
        c.kafka.msk_iam_region = "us-east-1".into();
        c.validate().unwrap();
        c.kafka
            .properties
            .insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("kafka.properties") && e.contains("sasl.mechanism") && e.contains("OAUTHBEARER"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = Config::default();
        c.writer.zstd_level = 40;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("writer.zstd_level") && e.contains("1..=22"), "{e}");
        let mut c = Config::default();
        c.tables.location = "gs://x/y".into();
        assert!(c.validate().unwrap_err().to_string().contains("tables.location"));
        let mut c = Config::default();
        c.metrics.listen = "0.0.0.0".into();
        assert!(c.validate().unwrap_err().to_string().contains("metrics.listen"));
    }

    #[test]
    fn file_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[writer]\nmax_rows = 5\n").unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().writer.max_rows, 5);
        std::fs::write(&p, "[writer]\nmax_rowz = 5\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("max_rowz") && e.contains("max_rows"), "{e}");
        std::fs::write(&p, "[writer]\nmax_rows = \"many\"\n").unwrap();
        assert!(Config::load(Some(&p)).unwrap_err().to_string().contains("max_rows"));
        assert!(matches!(
            Config::load(Some(&dir.path().join("nope.toml"))),
            Err(ConfigError::Missing(_))
        ));
    }
}
