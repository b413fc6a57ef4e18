//! Configuration: `config/pinpipe.toml` (or `--config FILE`), then `PINPIPE__SECTION__KEY`
//! environment overrides, then validation.
//!
//! Every section has defaults, so an empty file (or none) is a working local setup.
//! Unknown keys are errors (a typo must not silently fall back to a default), and
//! validation errors name the key and the allowed values.

mod env;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clean::{Kind, DEFAULT_MAX_RECORD_BYTES};
use crate::sink::{RawConfig, TablesConfig, WriterConfig};
use crate::validate::{ensure, invalid, Invalid};

/// What a secret is printed as (defined beside the logger, which redacts the same way).
pub use crate::logging::REDACTED;

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/pinpipe.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub tables: TablesConfig,
    pub writer: WriterConfig,
    pub raw: RawConfig,
    pub clean: CleanConfig,
    pub batch: BatchConfig,
    pub emulate: crate::emulate::EmulateConfig,
    pub kafka: crate::sources::kafka::KafkaConfig,
    pub kinesis: crate::sources::kinesis::KinesisConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub gateway: crate::gateway::GatewayConfig,
    pub log: crate::logging::LogConfig,
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
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("config key {key}: must be a whole number, got {value}")]
    NotWhole { key: String, value: f64 },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
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

impl Config {
    /// Loads `path` (or [`DEFAULT_PATH`] when it exists), applies `PINPIPE__*` overrides and
    /// validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder();
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            // TOML whatever the file is called (a ConfigMap key, `pinpipe.conf`).
            Some(p) => b = b.add_source(config::File::from(p).format(config::FileFormat::Toml)),
            None if Path::new(DEFAULT_PATH).exists() => b = b.add_source(config::File::with_name(DEFAULT_PATH)),
            None => {}
        }
        let defaults = serde_json::to_value(Config::default()).expect("the default config serializes");
        // The environment last, typed by the config's own keys (see `env`).
        let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let env = env::overrides(vars, &defaults)?;
        let env = toml::to_string(&env).expect("a tree of tables, strings, numbers and lists is TOML");
        let merged = b
            .add_source(config::File::from_str(&env, config::FileFormat::Toml))
            .build()?;
        refuse_fractions(&merged.cache, &defaults, "")?;
        let cfg: Config = merged.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and combinations serde cannot: each section's own `validate()`, then
    /// what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tables.validate()?;
        self.writer.validate()?;
        self.raw.validate()?;
        ensure(
            self.clean.max_record_bytes > 0,
            "clean.max_record_bytes",
            "must be at least 1",
        )?;
        self.batch.validate()?;
        self.emulate.validate()?;
        self.kafka.validate()?;
        self.kinesis.validate()?;
        self.metrics.addr().map_err(|m| invalid("metrics.listen", m))?;
        self.gateway.validate().map_err(|(key, m)| invalid(key, m))?;
        self.log.validate()?;
        ensure(
            self.kafka.enabled || self.kinesis.enabled,
            "kafka.enabled",
            "kafka.enabled and kinesis.enabled are both false: `pinpipe run` would read nothing",
        )?;
        Ok(())
    }

    /// The config with every secret shown as [`REDACTED`]: the gateway's tokens, the AWS
    /// keys of `[tables]` and `[kinesis]`, and Kafka properties that hold passwords, keys
    /// or secrets. What `check-config` prints.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        let hide = |v: &mut String| {
            if !v.is_empty() {
                *v = REDACTED.into();
            }
        };
        for v in [&mut c.tables.access_key_id, &mut c.tables.secret_access_key]
            .into_iter()
            .flatten()
        {
            hide(v);
        }
        hide(&mut c.kinesis.access_key_id);
        hide(&mut c.kinesis.secret_access_key);
        c.gateway.tokens.iter_mut().for_each(hide);
        c.gateway.aws_keys.values_mut().for_each(hide);
        for (k, v) in c.kafka.properties.iter_mut() {
            if crate::sources::kafka::config::is_secret_property(k) {
                hide(v);
            }
        }
        c
    }

    /// Every secret's value (the ones [`Config::redacted`] hides), for the logger to redact.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.tables.access_key_id, &self.tables.secret_access_key]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.push(self.kinesis.access_key_id.clone());
        out.push(self.kinesis.secret_access_key.clone());
        out.extend(self.gateway.tokens.iter().cloned());
        out.extend(self.gateway.aws_keys.values().cloned());
        out.extend(
            self.kafka
                .properties
                .iter()
                .filter(|(k, _)| crate::sources::kafka::config::is_secret_property(k))
                .map(|(_, v)| v.clone()),
        );
        out.retain(|s| !s.is_empty());
        out
    }

    /// The sections `pinpipe run` uses.
    pub fn run_config(&self) -> crate::run::RunConfig {
        crate::run::RunConfig {
            tables: self.tables.clone(),
            writer: self.writer.clone(),
            raw: self.raw.clone(),
            kafka: self.kafka.clone(),
            kinesis: self.kinesis.clone(),
            metrics: self.metrics.clone(),
            max_record_bytes: self.clean.max_record_bytes,
        }
    }
}

impl BatchConfig {
    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(
            (1..=256).contains(&self.concurrency),
            "batch.concurrency",
            "allowed: 1..=256",
        )?;
        ensure(self.batch_rows > 0, "batch.batch_rows", "must be at least 1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/pinpipe.toml` shows every key of every section (set, or commented out where
    /// the default is unset or the machine's): a key added to a struct and not to the file,
    /// or one left in the file after its key is gone, fails here.
    #[test]
    fn the_example_config_shows_every_key() {
        let text = include_str!("../../config/pinpipe.toml");
        let mut shown: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                // `[kafka]`, or a map shown as `# [kafka.properties]`.
                if line.starts_with('[') {
                    section = name.to_string();
                } else {
                    shown.insert(name.to_string());
                }
                continue;
            }
            let Some((key, _)) = l.split_once(" = ") else { continue };
            if !section.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                shown.insert(format!("{section}.{key}"));
            }
        }
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for (section, fields) in defaults.as_object().unwrap() {
            for key in fields.as_object().unwrap().keys() {
                keys.insert(format!("{section}.{key}"));
            }
        }
        let missing: Vec<&String> = keys.difference(&shown).collect();
        let stale: Vec<&String> = shown.difference(&keys).collect();
        assert!(missing.is_empty(), "config/pinpipe.toml lacks {missing:?}");
        assert!(
            stale.is_empty(),
            "config/pinpipe.toml shows keys that do not exist: {stale:?}"
        );
        // And it loads as it is.
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn redacted_hides_every_secret() {
        let mut c = Config::default();
        c.tables.access_key_id = Some("AKIA-tables".into());
        c.tables.secret_access_key = Some("tables-secret".into());
        c.kinesis.access_key_id = "AKIA-kinesis".into();
        c.kinesis.secret_access_key = "kinesis-secret".into();
        c.gateway.tokens = vec!["gw-token".into()];
        c.gateway.aws_keys = [("AKIAGATEWAY".into(), "gw-aws-secret".into())].into();
        for (k, v) in [
            ("sasl.password", "sasl-pw"),
            ("ssl.key.password", "key-pw"),
            ("ssl.keystore.password", "store-pw"),
            ("sasl.oauthbearer.client.secret", "oauth-secret"),
            ("ssl.key.pem", "pem-key"),
            ("sasl.username", "alice"),
        ] {
            c.kafka.properties.insert(k.into(), v.into());
        }
        let text = toml::to_string_pretty(&c.redacted()).unwrap();
        // The logger redacts the same values check-config hides.
        let mut secrets = c.secrets();
        secrets.sort();
        let mut hidden = vec![
            "AKIA-kinesis",
            "AKIA-tables",
            "gw-token",
            "gw-aws-secret",
            "kinesis-secret",
            "key-pw",
            "oauth-secret",
            "pem-key",
            "sasl-pw",
            "store-pw",
            "tables-secret",
        ];
        hidden.sort();
        assert_eq!(secrets, hidden);
        for secret in [
            "AKIA-tables",
            "tables-secret",
            "AKIA-kinesis",
            "kinesis-secret",
            "gw-token",
            "gw-aws-secret",
            "sasl-pw",
            "key-pw",
            "store-pw",
            "oauth-secret",
            "pem-key",
        ] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        // What is not secret stays readable.
        assert!(text.contains("alice") && text.contains(REDACTED), "{text}");
        // Unset secrets stay unset (a "***" would read as set).
        let plain = toml::to_string_pretty(&Config::default().redacted()).unwrap();
        assert!(!plain.contains(REDACTED), "{plain}");
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
        c.raw.zstd_level = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("raw.zstd_level") && e.contains("1..=22"), "{e}");
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
