//! The `[kafka]` config section: the brokers, the group, the topics, and how partitions are
//! read and handed over.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

use super::msk_iam::{self, AuthContext};
use crate::clean::Kind;
use crate::validate::{ensure, invalid, Invalid};

/// `[kafka]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Consume the Kafka topics in `pinpipe run`.
    pub enabled: bool,
    pub brokers: String,
    pub group_id: String,
    /// Topics are `<topic_prefix>.pin|geo|user` unless `topics` maps them explicitly.
    pub topic_prefix: String,
    /// Explicit topic -> kind map; empty: derived from `topic_prefix`.
    pub topics: BTreeMap<String, Kind>,
    /// Where a partition with no position in the tables starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Records an actor collects before handing them to the writers.
    pub batch_rows: usize,
    /// An actor hands over a partial batch after this long (milliseconds).
    pub batch_age_ms: u64,
    /// Threads (actix arbiters) the partition actors are spread over.
    pub workers: usize,
    /// Records all partition actors of the process may hold together before each hands
    /// its records over at its next poll, whatever their age: with hundreds of partitions,
    /// `batch_age_ms` alone lets the actors hold that long of everything read.
    pub held_records: usize,
    /// Bound of librdkafka's prefetch queue per consumer (`queued.max.messages.kbytes`):
    /// when the writers fall behind, the dispatcher stops polling and fetching stops
    /// once this much is buffered.
    pub fetch_queue_kbytes: usize,
    /// After SIGTERM/SIGINT (or `--stop-after`), how long draining, the last flush and the
    /// offset commit may take before the process gives up and exits non-zero; rows not
    /// committed by then are read again by the next owner. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds`.
    pub shutdown_grace_ms: u64,
    /// AWS region of an Amazon MSK cluster to authenticate to with IAM (SASL/OAUTHBEARER,
    /// a SigV4 token from the standard AWS credential chain); empty: off. Sets
    /// `security.protocol = SASL_SSL` and `sasl.mechanism = OAUTHBEARER`.
    pub msk_iam_region: String,
    /// Passed to librdkafka as is (`security.protocol`, `sasl.mechanism`, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            brokers: "127.0.0.1:9092".into(),
            group_id: "pinpipe".into(),
            topic_prefix: "pinpipe".into(),
            topics: BTreeMap::new(),
            auto_offset_reset: "earliest".into(),
            batch_rows: 8192,
            batch_age_ms: 500,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            held_records: 32 * 1024,
            fetch_queue_kbytes: 16 * 1024,
            shutdown_grace_ms: 30_000,
            msk_iam_region: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The topic -> kind map in effect.
    pub fn topic_map(&self) -> BTreeMap<String, Kind> {
        if !self.topics.is_empty() {
            return self.topics.clone();
        }
        Kind::ALL
            .iter()
            .map(|k| (format!("{}.{k}", self.topic_prefix), *k))
            .collect()
    }

    /// librdkafka settings shared by consumer and producer.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        msk_iam::apply(&self.msk_iam_region, &mut c);
        c
    }

    /// The client context of pinpipe's producers and consumers (MSK IAM tokens).
    pub fn auth(&self) -> AuthContext {
        AuthContext::new(&self.msk_iam_region).with_log(&self.brokers)
    }

    /// Checks the section; errors name the key. (Whether any source is enabled is the
    /// runner's check.)
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(
            ["earliest", "latest"].contains(&self.auto_offset_reset.as_str()),
            "kafka.auto_offset_reset",
            format!("{:?} (allowed: earliest, latest)", self.auto_offset_reset),
        )?;
        ensure(
            !self.brokers.trim().is_empty(),
            "kafka.brokers",
            "must list at least one host:port",
        )?;
        ensure(!self.group_id.trim().is_empty(), "kafka.group_id", "must be non-empty")?;
        ensure(
            self.batch_rows > 0 && self.batch_age_ms > 0,
            "kafka.batch_rows",
            "kafka.batch_rows and kafka.batch_age_ms must be at least 1",
        )?;
        ensure(self.held_records > 0, "kafka.held_records", "must be at least 1")?;
        ensure(
            (1..=256).contains(&self.workers),
            "kafka.workers",
            format!("{} (allowed: 1..=256)", self.workers),
        )?;
        ensure(
            (64..=2_097_151).contains(&self.fetch_queue_kbytes),
            "kafka.fetch_queue_kbytes",
            format!(
                "{} (allowed: 64..=2097151, librdkafka's range)",
                self.fetch_queue_kbytes
            ),
        )?;
        if !self.msk_iam_region.is_empty() {
            for (key, want) in [("security.protocol", "SASL_SSL"), ("sasl.mechanism", "OAUTHBEARER")] {
                if let Some(v) = self.properties.get(key).filter(|v| !v.eq_ignore_ascii_case(want)) {
                    return Err(invalid(
                        "kafka.properties",
                        format!("{key} = {v:?} contradicts kafka.msk_iam_region (allowed: {want}, or unset)"),
                    ));
                }
            }
        }
        ensure(
            self.shutdown_grace_ms >= 1_000,
            "kafka.shutdown_grace_ms",
            format!("{} (allowed: at least 1000)", self.shutdown_grace_ms),
        )?;
        Ok(())
    }
}

/// Whether a librdkafka property holds a secret (a password, a private key, a client
/// secret, a JAAS config): `check-config` prints its value as `***`.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k == "sasl.oauthbearer.config"
        || (k.starts_with("ssl.key") && !k.ends_with(".location"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
        for k in [
            "sasl.username",
            "ssl.key.location",
            "ssl.ca.location",
            "security.protocol",
        ] {
            assert!(!is_secret_property(k), "{k}");
        }
    }

    #[test]
    fn msk_iam_rejects_contradicting_properties() {
        let mut c = KafkaConfig {
            msk_iam_region: "us-east-1".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        c.properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("kafka.properties") && e.contains("sasl.mechanism") && e.contains("OAUTHBEARER"),
            "{e}"
        );
    }
}
