//! The gateway's Kafka side: an idempotent producer (`acks=all`) whose deliveries are
//! awaited before a request is answered.
//!
//! Broker trouble is known two ways: librdkafka reports `AllBrokersDown`, and deliveries
//! fail with transport or timeout errors. Either marks the broker down; while it is down,
//! requests get a 503 at once instead of queueing records that would only time out, and a
//! probe (a metadata request every `retry_after_s`) marks it up again. A delivery that
//! succeeds also marks it up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::ClientConfig;

use super::body::KafkaRecord;
use super::GatewayConfig;
use crate::sources::kafka::AuthContext;
use crate::sources::kafka::KafkaConfig;

/// The outcome of one record: `(partition, offset)` once the broker acknowledged it.
pub type Delivery = Result<(i32, i64), Failure>;

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Worth retrying later (broker unreachable, timed out, queue full).
    pub retriable: bool,
    pub unknown_topic: bool,
    pub message: String,
}

impl Failure {
    fn of(e: &KafkaError) -> Self {
        let code = e.rdkafka_error_code();
        let unknown_topic = matches!(
            code,
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        );
        let retriable = !unknown_topic
            && matches!(
                code,
                Some(
                    RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::QueueFull
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::NotEnoughReplicas
                        | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                        | RDKafkaErrorCode::LeaderNotAvailable
                        | RDKafkaErrorCode::NotLeaderForPartition
                        | RDKafkaErrorCode::NetworkException
                )
            );
        Failure {
            retriable,
            unknown_topic,
            message: e.to_string(),
        }
    }
}

/// Client context: MSK IAM tokens (as everywhere) plus the broker-down flag.
struct GatewayContext {
    auth: AuthContext,
    down: Arc<AtomicBool>,
}

impl ClientContext for GatewayContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(config)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.down.swap(true, Ordering::Relaxed) {
                tracing::warn!(%reason, "gateway: all brokers down; answering 503 until one is back");
            }
        } else {
            tracing::warn!(%error, %reason, "gateway: kafka client error");
        }
    }
}

impl ProducerContext for GatewayContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The producer and what the gateway knows of the broker.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer<GatewayContext>,
    down: Arc<AtomicBool>,
}

impl KafkaSink {
    pub fn new(kafka: &KafkaConfig, gw: &GatewayConfig) -> Result<Self, KafkaError> {
        let down = Arc::new(AtomicBool::new(false));
        let mut c: ClientConfig = kafka.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // A record not acknowledged within this is failed by librdkafka (never sent
            // later), so a 503 truthfully means "not produced" (up to an in-flight request
            // whose answer was lost; the idempotent producer reports those as timed out).
            .set("message.timeout.ms", gw.produce_timeout_ms.to_string())
            // The gateway's own bound (max_inflight_records) is lower, so QueueFull stays
            // a safety net rather than the backpressure mechanism.
            .set(
                "queue.buffering.max.messages",
                (gw.max_inflight_records * 2).clamp(1_000, 10_000_000).to_string(),
            );
        let producer = c.create_with_context(GatewayContext {
            auth: kafka.auth(),
            down: down.clone(),
        })?;
        Ok(KafkaSink { producer, down })
    }

    /// Whether the broker is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Probes the broker while it is marked down; runs until the process ends.
    pub async fn probe(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.is_down() {
                continue;
            }
            let p = self.producer.clone();
            let up = tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, Duration::from_secs(2)))
                .await
                .is_ok_and(|r| r.is_ok_and(|m| !m.brokers().is_empty()));
            if up && self.down.swap(false, Ordering::Relaxed) {
                tracing::info!("gateway: broker reachable again");
            }
        }
    }

    /// Produces the records to `topic` and waits for every delivery report.
    pub async fn produce(&self, topic: &str, records: &[KafkaRecord<'_>]) -> Vec<Delivery> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(r.value);
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            pending.push(self.producer.send_result(rec).map_err(|(e, _)| Failure::of(&e)));
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Err(f) => Err(f),
                Ok(fut) => match fut.await {
                    Ok(Ok(d)) => Ok((d.partition, d.offset)),
                    Ok(Err((e, _))) => Err(Failure::of(&e)),
                    Err(_) => Err(Failure {
                        retriable: true,
                        unknown_topic: false,
                        message: "producer shut down before the delivery report".into(),
                    }),
                },
            });
        }
        if out.iter().any(|d| d.is_ok()) {
            self.down.store(false, Ordering::Relaxed);
        } else if out.iter().any(|d| d.as_ref().is_err_and(|f| f.retriable)) {
            self.down.store(true, Ordering::Relaxed);
        }
        out
    }

    /// Waits up to `timeout` for queued records to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "gateway: flushing the producer at shutdown");
        }
    }
}
