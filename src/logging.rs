//! The `[log]` config section and the one place the process's logger is set up.
//!
//! `format = "text"` writes human lines (colours on a terminal); `"json"` writes one JSON
//! object per line with the event's fields at the top level (`table`, `topic`/`stream`,
//! `partition`/`shard`, `key`, `version`, `error`, ...) beside `timestamp`, `level`,
//! `target` and `message`, so a log pipeline can filter on them. The level is a tracing
//! `EnvFilter` string; `--log` and `PINPIPE_LOG` override it.
//!
//! Secrets never reach a log line: no event formats a config section, the gateway's
//! tokens or a Kafka property value; [`Config::redacted`](crate::config::Config::redacted)
//! is what `check-config` prints.

use serde::{Deserialize, Serialize};

use crate::validate::{ensure, Invalid};

/// Warnings, minus two expected ones from deltalake: the "no files in log segment" error
/// it logs when a table is about to be created, and "no statistics for a binary column"
/// (the dead-letter `raw` column) on every flush.
pub const DEFAULT_LEVEL: &str = "warn,buoyant_kernel::snapshot::builder=off,deltalake_core::writer::stats=error";

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
/// `PINPIPE_LOG`) over `cfg.level`. An unparsable filter falls back to `warn`.
pub fn init(cfg: &LogConfig, level: Option<&str>) {
    use std::io::IsTerminal;
    let level = level.unwrap_or(&cfg.level);
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
}
