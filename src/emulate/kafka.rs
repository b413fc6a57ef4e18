//! The emulator's Kafka target: posts produced to `<prefix>.pin|geo|user`, keyed by `ind`,
//! with an idempotent producer and `acks=all`.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{EmulateConfig, Generator};
use crate::clean::Kind;
use crate::sources::kafka::{AuthContext, KafkaConfig};
use crate::sources::RunStats;

/// Errors producing emulator records.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Generator(#[from] super::EmulateError),
    #[error("no topic maps to kind {0} in [kafka.topics]")]
    NoTopic(Kind),
    #[error(
        "no acknowledgement from the brokers {brokers} within {ms} ms (kafka.properties \
         message.timeout.ms): are they reachable?"
    )]
    TimedOut { brokers: String, ms: u64 },
}

/// How long a record may wait for the brokers' acknowledgement unless
/// `kafka.properties` sets `message.timeout.ms`: librdkafka's own default (300 s) would
/// leave `emulate --to kafka` silent for five minutes when the brokers are unreachable.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// The emulator's idempotent producer, and its acknowledgement timeout (ms).
fn producer(kafka: &KafkaConfig) -> Result<(FutureProducer<AuthContext>, u64), ProduceError> {
    let timeout_ms = kafka
        .properties
        .get("message.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGE_TIMEOUT_MS);
    let producer = kafka
        .client_config()
        .set("message.timeout.ms", timeout_ms.to_string())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(kafka.auth())?;
    Ok((producer, timeout_ms))
}

/// The topic of each kind.
fn topics(kafka: &KafkaConfig) -> Result<Vec<(Kind, String)>, ProduceError> {
    let map = kafka.topic_map();
    Kind::ALL
        .iter()
        .map(|k| {
            let topic = map.iter().find(|(_, v)| *v == k).map(|(t, _)| t.clone());
            topic.map(|t| (*k, t)).ok_or(ProduceError::NoTopic(*k))
        })
        .collect()
}

/// Produces `count` posts (at `rate` posts/s if given); returns the records produced.
/// With `ahead = (stats, window)` it stays at most `window` posts ahead of a consumer's
/// record count (the embedded demo broker keeps only a few MiB per partition).
pub async fn produce(
    cfg: &EmulateConfig,
    kafka: &KafkaConfig,
    count: u64,
    rate: Option<f64>,
    progress: bool,
    ahead: Option<(&RunStats, u64)>,
) -> Result<u64, ProduceError> {
    let (producer, timeout_ms) = producer(kafka)?;
    let timed_out = || ProduceError::TimedOut {
        brokers: kafka.brokers.clone(),
        ms: timeout_ms,
    };
    let mut gen = Generator::from_config(cfg)?;
    let topics = topics(kafka)?;
    let bar = super::posts_bar(count, progress);
    let started = Instant::now();
    let mut pending = futures::stream::FuturesOrdered::new();
    let mut produced = 0u64;
    for n in 0..count {
        if let Some(r) = rate {
            tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / r)).into()).await;
        }
        if let Some((stats, window)) = ahead {
            while n.saturating_sub(window) * 3 > stats.records.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let post = gen.next_post();
        let key = post.ind.to_string();
        for (kind, topic) in &topics {
            // Enqueued now (not when a future is first polled): a throttled producer still
            // delivers what it already generated.
            let mut record = FutureRecord::to(topic).key(&key).payload(post.record(*kind));
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        match futures::StreamExt::next(&mut pending).await {
                            Some(d) => {
                                delivered(d, timed_out)?;
                                produced += 1;
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        // Bounded in-flight sends: memory stays flat however large `count` is.
        while pending.len() >= 30_000 {
            delivered(
                futures::StreamExt::next(&mut pending).await.expect("non-empty"),
                timed_out,
            )?;
            produced += 1;
        }
        bar.inc(1);
    }
    while let Some(d) = futures::StreamExt::next(&mut pending).await {
        delivered(d, timed_out)?;
        produced += 1;
    }
    bar.finish_and_clear();
    Ok(produced)
}

/// The outcome of one delivery report.
fn delivered(
    d: <DeliveryFuture as std::future::Future>::Output,
    timed_out: impl Fn() -> ProduceError + Copy,
) -> Result<(), ProduceError> {
    match d {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))) => Err(timed_out()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(ProduceError::Kafka(KafkaError::Canceled)),
    }
}
