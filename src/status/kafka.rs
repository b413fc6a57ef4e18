//! Kafka's side of `pinpipe status`: the configured topics' partitions and their
//! watermarks, asked of the brokers with a short timeout; lag against the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use super::{positions_of, resume_position, End, EndpointStatus, SourceStatus, TableStatus};
use crate::clean::Kind;
use crate::sink::{Position, SourceKey, SourceKind};
use crate::sources::kafka::{AuthContext, KafkaConfig};

/// A status read must not print librdkafka's connection errors: an unreachable broker is
/// reported once, in the output. Tokens (MSK IAM) are still supplied.
struct Quiet(AuthContext);

impl ClientContext for Quiet {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(fac, message, "librdkafka");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
    }

    fn generate_oauth_token(&self, config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.0.generate_oauth_token(config)
    }
}

impl ConsumerContext for Quiet {}

/// The brokers' answer per partition of the configured topics, and every Kafka partition
/// the tables store a position for.
pub async fn read(cfg: &KafkaConfig, tables: &[TableStatus], timeout: Duration) -> (EndpointStatus, Vec<SourceStatus>) {
    let topics = cfg.topic_map();
    let cfg2 = cfg.clone();
    // The configured topics and those the tables hold positions of (an earlier demo's).
    let stored = tables
        .iter()
        .flat_map(|t| t.positions.keys())
        .filter(|k| k.source == SourceKind::Kafka)
        .map(|k| k.stream.clone());
    let names: Vec<String> = topics
        .keys()
        .cloned()
        .chain(stored)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let asked = tokio::task::spawn_blocking(move || watermarks(&cfg2, &names, timeout))
        .await
        .unwrap_or_else(|e| Err(format!("watermark task failed: {e}")));
    let (ends, error) = match asked {
        Ok(ends) => (ends, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    let endpoint = EndpointStatus {
        source: "kafka",
        target: cfg.brokers.clone(),
        state: if error.is_none() { "ok" } else { "unknown" },
        error: error.clone(),
    };
    let mut keys: BTreeSet<(String, i32)> = ends.keys().cloned().collect();
    for t in tables {
        for k in t.positions.keys().filter(|k| k.source == SourceKind::Kafka) {
            if let Ok(p) = k.partition.parse::<i32>() {
                keys.insert((k.stream.clone(), p));
            }
        }
    }
    let sources = keys
        .into_iter()
        .map(|(topic, p)| {
            let end = ends.get(&(topic.clone(), p)).copied();
            let kind = topics.get(&topic).copied();
            let why = match (&error, end, kind) {
                (Some(_), _, _) => Some("broker unreachable".to_string()),
                (None, None, _) => Some("not in the broker's metadata".to_string()),
                (None, Some(_), None) => Some("topic not in [kafka] (an earlier config's)".to_string()),
                _ => None,
            };
            partition(tables, topic, p, kind, end, why)
        })
        .collect();
    (endpoint, sources)
}

/// One partition's row: positions, end and lag.
fn partition(
    tables: &[TableStatus],
    topic: String,
    p: i32,
    kind: Option<Kind>,
    end: Option<(i64, i64)>,
    error: Option<String>,
) -> SourceStatus {
    let key = SourceKey::new(SourceKind::Kafka, topic.clone(), p.to_string());
    let stored = positions_of(tables, kind, &key);
    let resume = resume_position(&stored);
    let lag = end.map(|(low, high)| lag(resume.as_ref(), low, high));
    SourceStatus {
        source: "kafka",
        stream: topic,
        partition: p.to_string(),
        kind,
        positions: stored.into_iter().map(|(t, p)| (t, p.map(|p| p.to_string()))).collect(),
        end: end.map_or(End::Unknown, |(low, high)| End::Offset { high, low }),
        lag_records: lag,
        waiting: lag.map(|l| l > 0),
        lease: None,
        error,
    }
}

/// Records after `stored` (the next offset to read) up to the high watermark; without a
/// position, every record still in the partition.
pub fn lag(stored: Option<&Position>, low: i64, high: i64) -> i64 {
    let from = match stored {
        Some(Position::Offset(o)) => (*o).max(low),
        _ => low,
    };
    (high - from).max(0)
}

/// `(topic, partition) -> (low, high)` watermarks.
type Watermarks = BTreeMap<(String, i32), (i64, i64)>;

/// The watermarks of every partition of `topics`, or why the brokers could not tell.
fn watermarks(cfg: &KafkaConfig, topics: &[String], timeout: Duration) -> Result<Watermarks, String> {
    let consumer: BaseConsumer<Quiet> = cfg
        .client_config()
        .set("group.id", format!("{}-status", cfg.group_id))
        .set("enable.auto.commit", "false")
        .create_with_context(Quiet(AuthContext::new(&cfg.msk_iam_region)))
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("metadata of {topic} from {}: {e}", cfg.brokers))?;
        for t in md.topics() {
            if let Some(e) = t.error() {
                // Unknown topic: no partitions to show; tables may still name some.
                tracing::debug!(topic, error = ?e, "topic metadata error");
                continue;
            }
            for p in t.partitions() {
                let wm = consumer
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(|e| format!("watermarks of {topic}/{} from {}: {e}", p.id(), cfg.brokers))?;
                out.insert((topic.clone(), p.id()), wm);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_stored_offset_or_the_low_watermark() {
        let o = |n| Some(Position::Offset(n));
        assert_eq!(lag(o(10).as_ref(), 0, 15), 5);
        assert_eq!(lag(o(15).as_ref(), 0, 15), 0);
        assert_eq!(lag(None, 3, 15), 12);
        // Retention deleted records below the stored position's: counted from what exists.
        assert_eq!(lag(o(2).as_ref(), 5, 15), 10);
        assert_eq!(lag(o(20).as_ref(), 0, 15), 0);
    }
}
