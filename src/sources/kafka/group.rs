//! The consumer group side: librdkafka's callbacks into pinpipe ([`GroupContext`]).
//!
//! - **Assign**: the positions stored in each partition's clean and dead-letter tables
//!   are read and the partition starts at the lower of the two ([`resume`]), set in the
//!   assignment itself (no seek that could race the first fetch). The group's committed
//!   offsets are never used for correctness.
//! - **Revoke**: the revoked partitions' actors hand their rows over and the writers
//!   commit *before* the revoke returns, so the next owner rarely re-reads; a commit that
//!   cannot be made then is fenced by the writers' compare-and-set and re-read.
//!
//! Both callbacks run inside the dispatcher's poll and block it; their waits are bounded
//! by the shutdown deadline once shutdown started ([`Shutdown::wait_blocking`]), so a
//! stalled store cannot hold the process past its grace period.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use actix::Addr;
use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client_log::ClientLog;
use super::msk_iam::AuthContext;
use super::partition::{Drain, PartitionActor};
use crate::clean::Kind;
use crate::metrics::{Health, SourceMetrics};
use crate::shutdown::Shutdown;
use crate::sink::{PerTable, Position, SourceKey, SourceKind, TableRole, WriterError, Writers};
use crate::sources::partition::{resume, Resume};

pub(super) type TopicPartition = (String, i32);
/// Assigned partitions with the positions their tables store.
pub(super) type Assigned = Vec<(TopicPartition, PerTable<Option<Position>>)>;

/// What the rebalance callback tells the dispatcher.
#[derive(Debug)]
pub(super) enum GroupEvent {
    /// Assigned, with the positions stored in the partitions' tables; the consumer
    /// already starts each partition where [`resume`] says.
    Assigned(Assigned),
    /// The tables could not be read at assignment: stop rather than guess a position.
    Failed(WriterError),
}

/// State shared by the dispatcher and librdkafka's callbacks.
pub(super) struct GroupContext {
    pub auth: AuthContext,
    pub topics: BTreeMap<String, Kind>,
    pub latest_when_new: bool,
    pub writers: Arc<Writers>,
    pub actors: Mutex<HashMap<TopicPartition, Addr<PartitionActor>>>,
    pub events: Mutex<Vec<GroupEvent>>,
    pub health: Arc<Health>,
    pub metrics: SourceMetrics,
    pub shutdown: Shutdown,
    /// Where the callbacks' async work runs while they block.
    pub runtime: tokio::runtime::Handle,
    /// Each partition's (low, high) watermarks from librdkafka's statistics (lag gauges).
    pub watermarks: Mutex<HashMap<TopicPartition, (i64, i64)>>,
    /// librdkafka's errors and logs, said once per outage.
    pub log: ClientLog,
}

impl GroupContext {
    /// Publishes how many partitions this process owns.
    pub fn set_owned(&self, actors: &HashMap<TopicPartition, Addr<PartitionActor>>) {
        self.metrics.owned(actors.len());
    }

    /// The partitions' stored positions, read from the tables.
    fn stored(&self, parts: &[TopicPartition]) -> Result<Assigned, WriterError> {
        let writers = self.writers.clone();
        let read = self
            .shutdown
            .wait_blocking(&self.runtime, async move { writers.checkpoints().await })
            .map_err(|_| WriterError::Stopped)??;
        Ok(parts
            .iter()
            .filter_map(|(topic, partition)| {
                let kind = *self.topics.get(topic)?;
                let key = SourceKey::new(SourceKind::Kafka, topic.clone(), partition.to_string());
                Some(((topic.clone(), *partition), read.of(kind, &key)))
            })
            .collect())
    }

    /// Sets each partition's start; false when the positions could not be read (then
    /// nothing is assigned and the dispatcher stops the run).
    fn assign(&self, tpl: &mut TopicPartitionList) -> bool {
        match self.stored(&list(tpl)) {
            Ok(assigned) => {
                for ((topic, partition), stored) in &assigned {
                    let start = start_offset(stored, self.writers.roles(), self.latest_when_new);
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, start) {
                        tracing::warn!(%topic, partition, error = %e, "setting the start offset failed");
                    }
                    tracing::info!(%topic, partition, ?start, "partition assigned");
                }
                self.events.lock().expect("lock").push(GroupEvent::Assigned(assigned));
                self.health.set_assigned();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reading table positions at assignment failed");
                self.events.lock().expect("lock").push(GroupEvent::Failed(e));
                false
            }
        }
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let parts = list(tpl);
        tracing::info!(?parts, "partitions revoked");
        let drained: Vec<Addr<PartitionActor>> = {
            let mut actors = self.actors.lock().expect("lock");
            let drained = parts.iter().filter_map(|p| actors.remove(p)).collect();
            self.set_owned(&actors);
            drained
        };
        for (topic, partition) in &parts {
            self.metrics.forget(topic, &partition.to_string());
        }
        if drained.is_empty() {
            return;
        }
        let writers = self.writers.clone();
        let work = async move {
            for a in &drained {
                a.send(Drain).await.map_err(|_| WriterError::Stopped)??;
            }
            writers.flush_all().await.map(|_| ())
        };
        match self.shutdown.wait_blocking(&self.runtime, work) {
            Ok(Ok(())) => {
                for (topic, partition) in &parts {
                    tracing::info!(%topic, partition, "partition released");
                }
            }
            // Nothing was committed past the table positions, so the next owner re-reads
            // those rows; the writers' compare-and-set fences ours.
            Ok(Err(e)) => tracing::error!(error = %e, "flush on revoke failed"),
            Err(e) => tracing::error!(error = %e, "flush on revoke abandoned"),
        }
    }
}

/// The topic partitions of a list.
pub(super) fn list(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Where a partition starts: the lowest of its tables' positions; from the beginning when
/// a table has none, or the end when none has one and `auto_offset_reset = "latest"`.
pub(super) fn start_offset(stored: &PerTable<Option<Position>>, roles: &[TableRole], latest_when_new: bool) -> Offset {
    match resume(stored, roles) {
        Resume::From(Position::Offset(o)) => Offset::Offset(o),
        Resume::New if latest_when_new => Offset::End,
        _ => Offset::Beginning,
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(config)
    }

    // librdkafka's client-wide errors (a broker down, all brokers down, auth failures)
    // arrive here, not at a fetch: counted, so an outage shows in the metrics while the
    // client reconnects on its own.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.metrics.error(&error_code(&error));
        self.log.problem(&format!("{error}: {reason}"));
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message);
    }

    // `statistics.interval.ms`: keep each partition's high watermark for the lag gauges,
    // and notice the brokers answering again after an outage.
    fn stats(&self, s: Statistics) {
        if s.brokers.values().any(|b| b.state == "UP") {
            self.log.reachable();
        }
        let mut marks = self.watermarks.lock().expect("lock");
        for (topic, t) in s.topics {
            for (partition, p) in t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; -1001 an unknown offset.
                if partition >= 0 && p.hi_offset >= 0 {
                    marks.insert((topic.clone(), partition), (p.lo_offset.max(0), p.hi_offset));
                }
            }
        }
    }
}

/// A librdkafka error's code name, the `error` label of `pinpipe_source_errors_total`.
pub(super) fn error_code(e: &rdkafka::error::KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"))
}

impl ConsumerContext for GroupContext {
    // Replaces rdkafka's default: assignments start at the tables' positions, and a revoke
    // completes only after the revoked partitions' rows are committed (see the module docs).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let r = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if !self.assign(tpl) {
                    return;
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets() {
        let p = |clean: Option<i64>, dead: Option<i64>| PerTable {
            clean: clean.map(Position::Offset),
            dead_letter: dead.map(Position::Offset),
            raw: None,
        };
        let roles = &TableRole::CLEANED;
        assert_eq!(start_offset(&p(Some(10), Some(4)), roles, false), Offset::Offset(4));
        assert_eq!(start_offset(&p(Some(10), None), roles, true), Offset::Beginning);
        assert_eq!(start_offset(&p(None, None), roles, false), Offset::Beginning);
        assert_eq!(start_offset(&p(None, None), roles, true), Offset::End);
        // A raw table added to old tables starts where they are.
        assert_eq!(
            start_offset(&p(Some(10), Some(4)), &TableRole::ALL, false),
            Offset::Offset(4)
        );
    }
}
