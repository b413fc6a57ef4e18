//! Kafka's side of the tests: a Kafka-protocol broker on 127.0.0.1 (librdkafka's mock
//! cluster, running inside the test process; child `pinpipe` processes reach it over
//! TCP), a producer that reports offsets, the `[kafka]` config section, emulated posts as
//! Kafka records, and a group's committed offsets. Processes are started by `super::proc`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use pinpipe::clean::Kind;

use super::proc::Setup;

/// A Kafka-protocol broker: a cluster of mock brokers inside the test process.
pub struct Broker {
    pub mock: MockCluster<'static, DefaultProducerContext>,
}

impl Broker {
    pub fn start(brokers: i32) -> Self {
        Broker {
            mock: MockCluster::new(brokers).expect("mock cluster"),
        }
    }

    pub fn bootstrap(&self) -> String {
        let b = self.mock.bootstrap_servers();
        assert!(b.starts_with("127.0.0.1:"), "broker must listen on loopback: {b}");
        b
    }

    /// Creates `<prefix>.pin|geo|user` with `partitions` partitions each.
    pub fn create_topics(&self, prefix: &str, partitions: i32) {
        for kind in Kind::ALL {
            self.mock
                .create_topic(&format!("{prefix}.{kind}"), partitions, 1)
                .expect("create topic");
        }
    }

    /// Produces every `(topic, partition, payload)` (acks=all, idempotent) and returns
    /// each record's offset, in input order.
    pub fn produce(&self, records: &[(String, i32, Vec<u8>)]) -> Vec<i64> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", "4000000")
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        let mut out = Vec::with_capacity(records.len());
        // Bounded in-flight window: the local queue never overflows.
        for chunk in records.chunks(5_000) {
            let futures: Vec<_> = chunk
                .iter()
                .map(|(topic, partition, payload)| {
                    let rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                        .partition(*partition)
                        .payload(payload.as_slice());
                    producer.send_result(rec).map_err(|(e, _)| e).expect("enqueue")
                })
                .collect();
            for f in futures {
                let delivery = futures::executor::block_on(f).expect("delivery future");
                let d = delivery.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
                out.push(d.offset);
            }
        }
        out
    }
}

/// The `[kafka]` section the tests share: small batches, quick group membership.
pub fn kafka_toml(broker: &Broker, prefix: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{prefix}-group"
topic_prefix = "{prefix}"
batch_rows = 200
batch_age_ms = 100
workers = 2

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"
"#,
        brokers = broker.bootstrap(),
    )
}

/// A config reading `<prefix>.*` topics of `broker` into local tables: small batches and
/// flush thresholds (many commits: `max_rows` per flush), quick group membership.
pub fn setup(broker: &Broker, prefix: &str, max_rows: usize) -> Setup {
    Setup::with_source(prefix, max_rows, "127.0.0.1:0", &kafka_toml(broker, prefix))
}

/// Posts from the emulator, as `(topic, partition, payload)` spread over `partitions`.
pub fn emulated(prefix: &str, posts: u64, partitions: i32, seed: u64) -> Vec<(String, i32, Vec<u8>)> {
    let mut gen = pinpipe::emulate::Generator::new(pinpipe::emulate::EmulateConfig {
        seed,
        ..Default::default()
    })
    .unwrap();
    let mut out = Vec::new();
    for n in 0..posts {
        let post = gen.next_post();
        for kind in Kind::ALL {
            let p = ((n as i32) + kind as i32) % partitions;
            out.push((format!("{prefix}.{kind}"), p, post.record(kind).to_vec()));
        }
    }
    out
}

/// The offsets group `group` committed for `<prefix>.*` partitions (those with one).
pub fn committed(broker: &Broker, group: &str, prefix: &str, partitions: i32) -> BTreeMap<(String, i32), i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for kind in Kind::ALL {
        for p in 0..partitions {
            tpl.add_partition(&format!("{prefix}.{kind}"), p);
        }
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}
