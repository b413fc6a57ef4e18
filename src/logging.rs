//! The `[log]` config section and the one place the process's logger is set up.
//!
//! `format = "text"` writes human lines (colours on a terminal); `"json"` writes one JSON
//! object per line with the event's fields at the top level (`table`, `topic`/`stream`,
//! `partition`/`shard`, `key`, `version`, `error`, ...) beside `timestamp`, `level`,
//! `target` and `message`, so a log pipeline can filter on them. The level is a tracing
//! `EnvFilter` string; `--log` and `PINPIPE_LOG` override it.
//!
//! Secrets never reach a log line. pinpipe's own events format no config section, token or
//! Kafka property value, but dependencies do at debug level (deltalake's S3 store prints
//! its credentials' key id), so the logger is also handed the secrets themselves
//! (`Config::secrets`, gathered by the config, which depends on this module and not the
//! other way round) and [`Redacting`] writes each of them as [`REDACTED`] whatever event
//! carries it. `Config::redacted` is what `check-config` prints.

use serde::{Deserialize, Serialize};

use crate::validate::{ensure, Invalid};

/// Warnings, minus two expected ones from deltalake: the "no files in log segment" error
/// it logs when a table is about to be created, and "no statistics for a binary column"
/// (the dead-letter `raw` column) on every flush.
pub const DEFAULT_LEVEL: &str = "warn,buoyant_kernel::snapshot::builder=off,deltalake_core::writer::stats=error";

/// What a secret is printed as, in logs and in `check-config`.
pub const REDACTED: &str = "***";

/// `[log]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human lines) or `json` (one object per line, for log pipelines).
    pub format: String,
    /// A tracing `EnvFilter` string, e.g. `info` or `warn,pinpipe=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: DEFAULT_LEVEL.into(),
        }
    }
}

impl LogConfig {
    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(
            ["text", "json"].contains(&self.format.as_str()),
            "log.format",
            format!("{:?} (allowed: text, json)", self.format),
        )?;
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| crate::validate::invalid("log.level", format!("{:?}: {e}", self.level)))
    }
}

/// Installs the process's logger on stderr: `cfg`'s format, and `level` (from `--log` or
/// `PINPIPE_LOG`) over `cfg.level`. An unparsable filter falls back to `warn`. Every
/// string of `secrets` is written as `***`.
pub fn init(cfg: &LogConfig, level: Option<&str>, secrets: Vec<String>) {
    use std::io::IsTerminal;
    let level = level.unwrap_or(&cfg.level);
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting::new(secrets));
    if cfg.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The logger's stderr, with every secret replaced by `***`. The fmt layer formats an
/// event in full and writes it with one `write_all`, so each `write` sees whole lines and
/// a secret is never split across two writes.
#[derive(Clone)]
pub struct Redacting {
    secrets: std::sync::Arc<Vec<String>>,
}

impl Redacting {
    /// Empty strings are dropped (they would match everywhere).
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        Self {
            secrets: std::sync::Arc::new(secrets),
        }
    }

    /// `line` with every secret replaced.
    pub fn redact<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(line);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
        out
    }
}

impl std::io::Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(self.redact(text).as_bytes())?,
            Err(_) => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redacting {
    type Writer = Redacting;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_level_are_checked() {
        LogConfig::default().validate().unwrap();
        let bad = LogConfig {
            format: "xml".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("log.format"));
        let bad = LogConfig {
            level: "pinpipe=loud".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("log.level"));
    }

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let r = Redacting::new(vec!["AKIA123".into(), String::new(), "pw".into()]);
        assert_eq!(
            r.redact("key_id: \"AKIA123\", pw=pw AKIA123"),
            "key_id: \"***\", ***=*** ***"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
