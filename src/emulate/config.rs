//! `[emulate]`: what the emulator generates (seed, dirt, repetition) and how its file
//! target lays records out. One type serves the config file, the CLI's overrides and
//! [`Generator`](super::Generator), so a default is written once.

use serde::{Deserialize, Serialize};

use crate::validate::{invalid, Invalid};

/// `[emulate]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulateConfig {
    /// Seed of every random choice: the same seed gives byte-identical posts.
    pub seed: u64,
    /// Share of records (each kind independently) made invalid on purpose for the
    /// dead-letter path, 0..=1.
    pub invalid_share: f64,
    /// Indexes are drawn from `0..index_pool`, so posts repeat like the seed's.
    pub index_pool: u64,
    /// Topics are `<topic_prefix>.pin|geo|user`.
    pub topic_prefix: String,
    /// Kafka partitions per topic in the file layout.
    pub partitions: u32,
    /// Records per file in the Kafka Connect layout.
    pub records_per_file: usize,
}

impl Default for EmulateConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            invalid_share: 0.005,
            index_pool: 11_000,
            topic_prefix: "pinpipe".into(),
            partitions: 3,
            records_per_file: 10_000,
        }
    }
}

/// A rejected `[emulate]` section.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmulateError {
    #[error(transparent)]
    InvalidConfig(#[from] Invalid),
}

impl EmulateConfig {
    /// Checks the ranges serde cannot; the first problem found, naming its key.
    pub fn validate(&self) -> Result<(), Invalid> {
        // `contains` is false for NaN, so a NaN share is refused too.
        if !(0.0..=1.0).contains(&self.invalid_share) {
            return Err(invalid(
                "emulate.invalid_share",
                format!("{} is outside the allowed 0..=1", self.invalid_share),
            ));
        }
        if self.index_pool == 0 {
            return Err(invalid("emulate.index_pool", "must be at least 1"));
        }
        // `ind` is an int64 in every table: a larger pool would draw indexes that wrap.
        if self.index_pool > 1 << 63 {
            return Err(invalid(
                "emulate.index_pool",
                format!("{} is more than indexes fit in int64", self.index_pool),
            ));
        }
        if self.partitions == 0 {
            return Err(invalid("emulate.partitions", "must be at least 1"));
        }
        if self.records_per_file == 0 {
            return Err(invalid("emulate.records_per_file", "must be at least 1"));
        }
        // The prefix becomes part of topic names and of object paths.
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['/', ' ']) {
            return Err(invalid(
                "emulate.topic_prefix",
                "must be non-empty, without '/' or spaces",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key `validate` names when `f` spoils the default config.
    fn refused_key(f: impl FnOnce(&mut EmulateConfig)) -> &'static str {
        let mut c = EmulateConfig::default();
        f(&mut c);
        c.validate().unwrap_err().key
    }

    #[test]
    fn validation_names_the_key() {
        EmulateConfig::default().validate().unwrap();
        for share in [-0.1, 1.5, f64::NAN] {
            assert_eq!(refused_key(|c| c.invalid_share = share), "emulate.invalid_share");
        }
        assert_eq!(refused_key(|c| c.index_pool = 0), "emulate.index_pool");
        assert_eq!(refused_key(|c| c.index_pool = (1 << 63) + 1), "emulate.index_pool");
        assert_eq!(refused_key(|c| c.partitions = 0), "emulate.partitions");
        assert_eq!(refused_key(|c| c.records_per_file = 0), "emulate.records_per_file");
        assert_eq!(refused_key(|c| c.topic_prefix = "a/b".into()), "emulate.topic_prefix");
        assert_eq!(refused_key(|c| c.topic_prefix = String::new()), "emulate.topic_prefix");
        let edge = EmulateConfig {
            invalid_share: 1.0,
            index_pool: 1,
            ..Default::default()
        };
        edge.validate().unwrap();
    }

    #[test]
    fn messages_match_the_config_file_errors() {
        let c = EmulateConfig {
            invalid_share: 1.5,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "config key emulate.invalid_share: 1.5 is outside the allowed 0..=1"
        );
    }
}
