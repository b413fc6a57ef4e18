//! `pinpipe gateway` against a real Kafka-protocol broker (librdkafka's mock cluster) and a
//! real Kinesis API server (kinesis-local), all on 127.0.0.1: the seed's request shapes
//! end as rows, refused requests produce nothing, a broker outage gives 503s without
//! losing an acknowledged record, and a bounded load test prints requests/s and p99.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use serde_json::Value;

use support::free_port;
use support::http::{http, http_with_head};
use support::kafka::{kafka_toml, Broker};
use support::kinesis::{kinesis_toml, KinesisServer};
use support::proc::{assert_unique_lineage_from, Proc, Setup, BIN};

const TOKEN: &str = "test-token-1";
const KAFKA_CT: (&str, &str) = ("Content-Type", "application/vnd.kafka.json.v2+json");
const JSON_CT: (&str, &str) = ("Content-Type", "application/json");
const BEARER: (&str, &str) = ("Authorization", "Bearer test-token-1");

/// A refused request: what, path, headers, body, expected status, expected error code/type.
type Case<'a, C> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16, C);
/// A posted record: its title, the status, where it was acknowledged, the response head.
type Posted = (String, u16, Option<(i64, i64)>, String);

/// A config with both sources (Kinesis only when `kinesis` is given) and the gateway on
/// `port`, with small limits so the refusals are cheap to trigger.
fn setup(broker: &Broker, kinesis: Option<&str>, prefix: &str, port: u16, extra_gateway: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    let config = dir.path().join("pinpipe.toml");
    let kinesis_section = kinesis.map_or(String::new(), |endpoint| kinesis_toml(endpoint, prefix));
    let toml = format!(
        r#"
[tables]
location = "{tables}"

[writer]
max_rows = 2000
max_age_ms = 300

[metrics]
listen = "127.0.0.1:0"

{kafka}{kinesis_section}
[gateway]
listen = "127.0.0.1:{port}"
tokens = ["{TOKEN}"]
workers = 2
{extra_gateway}
"#,
        tables = tables.display(),
        kafka = kafka_toml(broker, prefix),
    );
    std::fs::write(&config, toml).unwrap();
    Setup {
        dir,
        config,
        tables,
        prefix: prefix.to_string(),
    }
}

/// A Kafka-protocol broker with the prefix's topics (`partitions` each) and a Kinesis API
/// server with its streams (`shards` each).
fn brokers(prefix: &str, partitions: i32, shards: u32) -> (Broker, KinesisServer) {
    let broker = Broker::start(1);
    broker.create_topics(prefix, partitions);
    let server = KinesisServer::start();
    for kind in ["pin", "geo", "user"] {
        server.create_stream(&format!("streaming-{prefix}-{kind}"), shards);
    }
    (broker, server)
}

/// Starts `pinpipe gateway` and waits for `/healthz`.
fn gateway(s: &Setup, port: u16) -> Proc {
    let mut p = s.spawn("gateway", &["gateway"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(port, "GET", "/healthz", &[], b"") {
            return p;
        }
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("gateway exited with {status}:\n{}", p.tail());
        }
        assert!(Instant::now() < deadline, "gateway not up:\n{}", p.tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Records in every partition of the prefix's topics (sum of high watermarks).
fn kafka_records(broker: &Broker, prefix: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let mut n = 0;
    for kind in ["pin", "geo", "user"] {
        for p in 0..partitions {
            let (lo, hi) = c
                .fetch_watermarks(&format!("{prefix}.{kind}"), p, Duration::from_secs(10))
                .unwrap();
            n += hi - lo;
        }
    }
    n
}

/// Every message of `topic`: `(partition, offset) -> payload`.
fn kafka_messages(broker: &Broker, topic: &str, partitions: i32) -> HashMap<(i32, i64), Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
        let (_, hi) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        ends.insert(p, hi);
    }
    c.assign(&tpl).unwrap();
    let mut out = HashMap::new();
    let total: i64 = ends.values().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.insert((m.partition(), m.offset()), m.payload().unwrap_or_default().to_vec());
        }
    }
    assert_eq!(out.len() as i64, total, "read every message of {topic}");
    out
}

/// Runs `pinpipe emulate --to gateway`; returns (acknowledged, refused).
fn emulate(s: &Setup, port: u16, api: &str, posts: u64, seed: u64) -> (u64, u64) {
    let out = Command::new(BIN)
        .args(["emulate", "--to", "gateway", "--api", api, "--no-progress"])
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["--count", &posts.to_string(), "--seed", &seed.to_string()])
        .env("PINPIPE_CONFIG", &s.config)
        .env("PINPIPE_GATEWAY_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "emulate failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "emulate: N posts, A records acknowledged by URL in ..., R refused as malformed ..."
    let num_before = |word: &str| -> u64 {
        let i = stdout.find(word).unwrap_or_else(|| panic!("{word:?} not in {stdout}"));
        stdout[..i].split_whitespace().last().unwrap().parse().unwrap()
    };
    (num_before(" records acknowledged"), num_before(" refused as malformed"))
}

#[test]
fn seed_shapes_become_rows_with_the_bytes_as_sent() {
    let (broker, server) = brokers("gw", 3, 2);
    let port = free_port();
    let s = setup(&broker, Some(&server.endpoint()), "gw", port, "");
    let mut g = gateway(&s, port);

    // The REST proxy v2 answer: one offset per record.
    let pin = br#"{"records": [{"value": {"index": 7, "unique_id": "u", "title": "t", "description": "d", "poster_name": "p", "follower_count": "6k", "tag_list": "a,b", "is_image_or_video": "image", "image_src": "https://x", "downloaded": 1, "save_location": "Local save in /data/x", "category": "art"}}]}"#;
    let (code, body) = http(port, "POST", "/topics/gw.pin", &[KAFKA_CT, BEARER], pin).unwrap();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["offsets"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        v["offsets"][0]["partition"].is_i64() && v["offsets"][0]["offset"].is_i64(),
        "{body}"
    );
    assert!(v["offsets"][0]["error_code"].is_null(), "{body}");
    assert!(v.as_object().unwrap().contains_key("value_schema_id"), "{body}");
    // A value the cleaner rejects: its exact bytes (repeated key, an integer beyond u64,
    // odd spacing) must reach the dead-letter table untouched.
    let odd = r#"{"ind":  1, "ind": 123456789012345678901234567890 , "age": 3}"#;
    let body_odd = format!(r#"{{"records":[{{"key":"k","value":{odd}}}]}}"#);
    let (code, body) = http(
        port,
        "POST",
        "/topics/gw.user",
        &[KAFKA_CT, ("X-API-Key", TOKEN)],
        body_odd.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 200, "X-API-Key works too: {body}");
    // Kinesis-style: one record, then two.
    let geo = br#"{"StreamName": "streaming-gw-geo", "Data": {"ind": 7, "timestamp": "2020-01-01 00:00:00", "latitude": 1.5, "longitude": 2.5, "country": "X"}, "PartitionKey": "partition-1"}"#;
    let (code, body) = http(port, "PUT", "/streams/streaming-gw-geo/record", &[JSON_CT, BEARER], geo).unwrap();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert!(v["ShardId"].as_str().unwrap().starts_with("shardId-"), "{body}");
    assert!(
        v["SequenceNumber"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit()),
        "{body}"
    );
    let users = br#"{"StreamName":"streaming-gw-user","Records":[{"Data":{"ind":1,"first_name":"A","last_name":"B","age":30,"date_joined":"2016-01-01 00:00:00"},"PartitionKey":"a"},{"Data":{"ind":2,"age":"abc"},"PartitionKey":"b"}]}"#;
    let (code, body) = http(
        port,
        "PUT",
        "/streams/streaming-gw-user/records",
        &[JSON_CT, BEARER],
        users,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["FailedRecordCount"], 0, "{body}");
    assert_eq!(v["Records"].as_array().unwrap().len(), 2, "{body}");

    // The emulator, both APIs, with its deliberately broken records.
    let (ka, kr) = emulate(&s, port, "kafka", 300, 1);
    let (na, nr) = emulate(&s, port, "kinesis", 300, 2);
    assert_eq!(ka + kr, 900, "every kafka record answered");
    assert_eq!(na + nr, 900, "every kinesis record answered");
    assert!(ka > 850 && na > 850, "most records are valid JSON: {ka} {na}");
    assert_eq!(
        kafka_records(&broker, "gw", 3),
        ka as i64 + 2,
        "Kafka holds the acknowledged records"
    );
    let on_kinesis: usize = ["pin", "geo", "user"]
        .iter()
        .map(|k| server.count_records(&format!("streaming-gw-{k}")))
        .sum();
    assert_eq!(on_kinesis as u64, na + 3, "Kinesis holds the acknowledged records");

    // `pinpipe run` turns exactly those into rows.
    let expected = (ka + na + 5) as usize;
    let mut run = s.spawn("run", &["run", "--no-progress", "--stop-after", &expected.to_string()]);
    s.wait_rows(expected, Duration::from_secs(120), &mut [&mut run, &mut g]);
    assert!(run.terminate(Duration::from_secs(30)).success(), "{}", run.tail());
    let rows = s.rows();
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), expected);
    // Each source's rows are exactly what that broker acknowledged, none twice.
    for (source, want) in [("kafka", ka + 2), ("kinesis", na + 3)] {
        let of: BTreeMap<String, Vec<serde_json::Map<String, Value>>> = rows
            .iter()
            .map(|(t, rs)| {
                (
                    t.clone(),
                    rs.iter().filter(|r| r["_source"] == source).cloned().collect(),
                )
            })
            .collect();
        assert_eq!(
            assert_unique_lineage_from(&of, source).len() as u64,
            want,
            "{source} rows"
        );
    }
    let dead = &rows["user_dead_letter"];
    let raw_of = |r: &serde_json::Map<String, Value>| r["raw"].as_str().unwrap_or_default().to_string();
    assert!(
        dead.iter()
            .any(|r| raw_of(r) == odd || raw_of(r) == base64_of(odd.as_bytes())),
        "the odd record's exact bytes in user_dead_letter: {:?}",
        dead.iter().map(raw_of).collect::<Vec<_>>()
    );
    let pins = &rows["pin"];
    assert!(
        pins.iter().any(|r| r["ind"] == 7 && r["follower_count"] == 6000),
        "the posted pin is a row"
    );
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn refused_requests_produce_nothing() {
    let (broker, server) = brokers("rf", 2, 1);
    let port = free_port();
    let s = setup(
        &broker,
        Some(&server.endpoint()),
        "rf",
        port,
        "max_body_bytes = 4096\nmax_record_bytes = 2048\nmax_records = 5",
    );
    let mut g = gateway(&s, port);
    let rec = br#"{"records":[{"value":{"index":1}}]}"#;
    let big = format!(r#"{{"records":[{{"value":{{"t":"{}"}}}}]}}"#, "x".repeat(5000));
    let big_record = format!(r#"{{"records":[{{"value":{{"t":"{}"}}}}]}}"#, "x".repeat(3000));
    let six = format!(r#"{{"records":[{}]}}"#, [r#"{"value":{"index":1}}"#; 6].join(","));
    let kafka_cases: Vec<Case<'_, u32>> = vec![
        ("no token", "/topics/rf.pin", vec![KAFKA_CT], rec, 401, 40101),
        (
            "wrong token",
            "/topics/rf.pin",
            vec![KAFKA_CT, ("Authorization", "Bearer nope")],
            rec,
            401,
            40101,
        ),
        (
            "unknown topic",
            "/topics/rf.other",
            vec![KAFKA_CT, BEARER],
            rec,
            404,
            40401,
        ),
        (
            "wrong content type",
            "/topics/rf.pin",
            vec![JSON_CT, BEARER],
            rec,
            415,
            415,
        ),
        ("no content type", "/topics/rf.pin", vec![BEARER], rec, 415, 415),
        (
            "oversized body",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            big.as_bytes(),
            413,
            413,
        ),
        (
            "oversized record",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            big_record.as_bytes(),
            422,
            42201,
        ),
        (
            "malformed JSON",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            b"{\"records\":[{\"value\":{\"a\":NaN}}]}",
            400,
            400,
        ),
        (
            "truncated",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            b"{\"records\":[{\"value\":{",
            400,
            400,
        ),
        (
            "no records",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            b"{\"value\":{}}",
            422,
            42200,
        ),
        (
            "no value",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            b"{\"records\":[{\"key\":1}]}",
            422,
            42200,
        ),
        (
            "too many records",
            "/topics/rf.pin",
            vec![KAFKA_CT, BEARER],
            six.as_bytes(),
            422,
            42200,
        ),
    ];
    for (what, path, headers, body, status, code) in &kafka_cases {
        let (got, head, resp) = http_with_head(port, "POST", path, headers, body).unwrap();
        assert_eq!(got, *status, "{what}: {resp}");
        let v = json_of(&resp);
        assert_eq!(v["error_code"], *code, "{what}: {resp}");
        assert!(!v["message"].as_str().unwrap().is_empty(), "{what}: {resp}");
        assert!(
            head.to_ascii_lowercase().contains("application/vnd.kafka.v2+json"),
            "{what}: {head}"
        );
        if *status == 401 {
            assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
        }
    }
    let kinesis_cases: Vec<Case<'_, &str>> = vec![
        (
            "no token",
            "/streams/streaming-rf-pin/record",
            vec![JSON_CT],
            br#"{"Data":{},"PartitionKey":"a"}"#,
            401,
            "UnrecognizedClientException",
        ),
        (
            "unknown stream",
            "/streams/nope/record",
            vec![JSON_CT, BEARER],
            br#"{"Data":{},"PartitionKey":"a"}"#,
            404,
            "ResourceNotFoundException",
        ),
        (
            "wrong content type",
            "/streams/streaming-rf-pin/record",
            vec![KAFKA_CT, BEARER],
            br#"{"Data":{},"PartitionKey":"a"}"#,
            415,
            "UnsupportedMediaTypeException",
        ),
        (
            "malformed JSON",
            "/streams/streaming-rf-pin/record",
            vec![JSON_CT, BEARER],
            br#"{"Data":{"a":1,},"PartitionKey":"a"}"#,
            400,
            "SerializationException",
        ),
        (
            "no partition key",
            "/streams/streaming-rf-pin/record",
            vec![JSON_CT, BEARER],
            br#"{"Data":{}}"#,
            422,
            "ValidationException",
        ),
        (
            "other stream in body",
            "/streams/streaming-rf-pin/record",
            vec![JSON_CT, BEARER],
            br#"{"StreamName":"streaming-rf-geo","Data":{},"PartitionKey":"a"}"#,
            422,
            "ValidationException",
        ),
        (
            "empty records",
            "/streams/streaming-rf-pin/records",
            vec![JSON_CT, BEARER],
            br#"{"Records":[]}"#,
            422,
            "ValidationException",
        ),
    ];
    for (what, path, headers, body, status, kind) in &kinesis_cases {
        let (got, resp) = http(port, "PUT", path, headers, body).unwrap();
        assert_eq!(got, *status, "{what}: {resp}");
        assert_eq!(json_of(&resp)["__type"], *kind, "{what}: {resp}");
    }
    assert_eq!(http(port, "GET", "/topics/rf.pin", &[BEARER], b"").unwrap().0, 404);

    // Nothing reached either broker.
    assert_eq!(kafka_records(&broker, "rf", 2), 0);
    for kind in ["pin", "geo", "user"] {
        assert_eq!(server.count_records(&format!("streaming-rf-{kind}")), 0, "{kind}");
    }
    // The refusals are counted by route and status, on the gateway's /metrics.
    let (_, m) = http(port, "GET", "/metrics", &[], b"").unwrap();
    for (route, status, at_least) in [("/topics/{topic}", "401", 2), ("/topics/{topic}", "422", 4)] {
        let line = format!("pinpipe_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
        let n: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} missing:\n{m}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= at_least, "{line}{n}");
    }
    // And a good request still goes through.
    let (code, body) = http(port, "POST", "/topics/rf.pin", &[KAFKA_CT, BEARER], rec).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(kafka_records(&broker, "rf", 2), 1);
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

#[test]
fn no_tokens_is_a_clear_error_unless_auth_is_off() {
    let broker = Broker::start(1);
    let port = free_port();
    let s = setup(&broker, None, "nt", port, "");
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("tokens = [\"{TOKEN}\"]"), "");
    std::fs::write(&s.config, &cfg).unwrap();
    let out = Command::new(BIN)
        .args(["gateway"])
        .env("PINPIPE_CONFIG", &s.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gateway.tokens") && err.contains("PINPIPE_GATEWAY_TOKENS") && err.contains("auth = \"none\""),
        "{err}"
    );
    std::fs::write(&s.config, cfg.replace("[gateway]", "[gateway]\nauth = \"none\"")).unwrap();
    broker.create_topics("nt", 1);
    let mut g = gateway(&s, port);
    let (code, body) = http(
        port,
        "POST",
        "/topics/nt.geo",
        &[KAFKA_CT],
        br#"{"records":[{"value":{"ind":1}}]}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

/// Posts one record per request with a unique `title`; returns `title -> (status,
/// Some((partition, offset)) when acknowledged)`.
fn post_marked(port: u16, topic: &str, n: usize, tag: &str) -> Vec<Posted> {
    (0..n)
        .map(|i| {
            let title = format!("{tag}-{i}");
            let body = format!(r#"{{"records":[{{"value":{{"index":{i},"title":"{title}"}}}}]}}"#);
            let (code, head, resp) = http_with_head(
                port,
                "POST",
                &format!("/topics/{topic}"),
                &[KAFKA_CT, BEARER],
                body.as_bytes(),
            )
            .unwrap();
            let at = (code == 200).then(|| {
                let v = json_of(&resp);
                (
                    v["offsets"][0]["partition"].as_i64().unwrap(),
                    v["offsets"][0]["offset"].as_i64().unwrap(),
                )
            });
            (title, code, at, head)
        })
        .collect()
}

#[test]
fn broker_down_gives_503_and_no_acknowledged_record_is_lost() {
    let broker = Broker::start(1);
    broker.create_topics("dn", 2);
    let port = free_port();
    let s = setup(
        &broker,
        None,
        "dn",
        port,
        "produce_timeout_ms = 1500\nretry_after_s = 1",
    );
    let mut g = gateway(&s, port);
    let mut sent = post_marked(port, "dn.pin", 20, "before");
    assert!(sent.iter().all(|(_, c, _, _)| *c == 200), "all up before the outage");

    broker.mock.broker_down(1).unwrap();
    // Bounded: until three 503s in a row, at most 60 requests.
    let mut outage = Vec::new();
    for round in 0..60 {
        let r = post_marked(port, "dn.pin", 1, &format!("down{round}")).remove(0);
        outage.push(r);
        if outage.len() >= 3 && outage.iter().rev().take(3).all(|(_, c, _, _)| *c == 503) {
            break;
        }
    }
    let unavailable: Vec<_> = outage.iter().filter(|(_, c, _, _)| *c == 503).collect();
    assert!(
        unavailable.len() >= 3,
        "503s while the broker is down: {:?}",
        outage.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    assert!(
        outage.iter().all(|(_, c, _, _)| *c == 200 || *c == 503),
        "only 200 or 503"
    );
    for (_, _, _, head) in &unavailable {
        assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    }
    let (code, _) = http(port, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(code, 503, "not ready while the broker is down");

    broker.mock.broker_up(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = Vec::new();
    loop {
        let r = post_marked(port, "dn.pin", 1, &format!("after{}", after.len())).remove(0);
        let ok = r.1 == 200;
        after.push(r);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never recovered:\n{}", g.tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    after.extend(post_marked(port, "dn.pin", 20, "later"));
    assert!(after.iter().rev().take(20).all(|(_, c, _, _)| *c == 200));
    sent.extend(outage);
    sent.extend(after);

    // Every acknowledged record is in the topic, at the offset the gateway answered.
    let messages = kafka_messages(&broker, "dn.pin", 2);
    let mut acked = 0;
    for (title, code, at, _) in &sent {
        if *code != 200 {
            continue;
        }
        acked += 1;
        let (p, o) = at.unwrap();
        let payload = messages
            .get(&(p as i32, o))
            .unwrap_or_else(|| panic!("{title} acknowledged at {p}/{o}, not in the topic"));
        assert!(
            String::from_utf8_lossy(payload).contains(&format!("\"{title}\"")),
            "{title} at {p}/{o}"
        );
    }
    let refused_landed = sent
        .iter()
        .filter(|(t, c, _, _)| {
            *c != 200
                && messages
                    .values()
                    .any(|m| String::from_utf8_lossy(m).contains(&format!("\"{t}\"")))
        })
        .count();
    eprintln!(
        "broker outage: {} requests, {acked} acknowledged (all in the topic), {} answered 503, {refused_landed} of those landed anyway",
        sent.len(),
        sent.len() - acked
    );
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

#[test]
fn bounded_load_reports_rate_and_p99() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    const RECORDS: usize = 10;
    let broker = Broker::start(1);
    broker.create_topics("ld", 4);
    let port = free_port();
    let s = setup(&broker, None, "ld", port, "");
    let mut g = gateway(&s, port);
    let body = format!(
        r#"{{"records":[{}]}}"#,
        [r#"{"value":{"index":1,"title":"load","category":"art","follower_count":"6k"}}"#; RECORDS].join(",")
    );
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let started = Instant::now();
    // Bounded twice: PER_THREAD requests per thread, and 30 s.
    let stop_at = started + Duration::from_secs(30);
    std::thread::scope(|sc| {
        for _ in 0..THREADS {
            let (latencies, statuses, body) = (latencies.clone(), statuses.clone(), body.clone());
            sc.spawn(move || {
                for _ in 0..PER_THREAD {
                    if Instant::now() > stop_at {
                        break;
                    }
                    let t = Instant::now();
                    let (code, _) = http(port, "POST", "/topics/ld.geo", &[KAFKA_CT, BEARER], body.as_bytes()).unwrap();
                    latencies.lock().unwrap().push(t.elapsed());
                    *statuses.lock().unwrap().entry(code).or_default() += 1;
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let statuses = statuses.lock().unwrap().clone();
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let p = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1].as_secs_f64() * 1000.0;
    eprintln!(
        "gateway load: {} requests ({} records each) in {secs:.2}s with {THREADS} clients: {:.0} requests/s, {:.0} records/s; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; statuses {statuses:?}",
        l.len(),
        RECORDS,
        l.len() as f64 / secs,
        (ok * RECORDS) as f64 / secs,
        p(0.5),
        p(0.99),
        p(1.0)
    );
    // Correctness only (figures are printed, never asserted): every acknowledged record
    // is in the topic, nothing else is.
    assert!(statuses.keys().all(|c| *c == 200), "{statuses:?}");
    assert!(ok > 0);
    assert_eq!(kafka_records(&broker, "ld", 4), (ok * RECORDS) as i64);
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

/// Every shared cleaning vector, pending ones included, through the gateway: as a REST
/// proxy value and as a Kinesis `Data` both ways (the record as a JSON value, and the base64
/// of its bytes). Both `Data` shapes give the same rows; each row is what the vector says;
/// a `Data` string that is not base64 is a 400 and produces nothing.
#[test]
fn vectors_through_the_gateway_json_and_base64_data_alike() {
    let (broker, server) = brokers("gv", 2, 1);
    let port = free_port();
    let s = setup(&broker, Some(&server.endpoint()), "gv", port, "");
    let mut g = gateway(&s, port);

    // Where each posted record was acknowledged: (source, stream, partition, position).
    type At = (String, String, String, String);
    let mut posted: Vec<(usize, &str, At)> = Vec::new();
    let vectors = support::fixtures::vectors();
    for (i, (kind, v)) in vectors.iter().enumerate() {
        let raw = v["raw"].as_str().unwrap();
        let stream = format!("streaming-gv-{kind}");
        let path = format!("/streams/{stream}/record");
        let mut shapes = vec![("base64", format!("\"{}\"", base64_of(raw.as_bytes())))];
        // A record that is not JSON can only travel as base64 (as a value it is a 400).
        let json_value = serde_json::from_str::<Value>(raw).is_ok() && raw.trim() == raw && !raw.is_empty();
        if json_value {
            // A JSON string as `Data` means base64 (the contract), so a record that is a
            // JSON string travels as base64 only.
            if !raw.starts_with('"') {
                shapes.push(("json", raw.to_string()));
            }
            let topic = format!("gv.{kind}");
            let body = format!(r#"{{"records":[{{"value":{raw}}}]}}"#);
            let (code, resp) = http(
                port,
                "POST",
                &format!("/topics/{topic}"),
                &[KAFKA_CT, BEARER],
                body.as_bytes(),
            )
            .unwrap();
            assert_eq!(code, 200, "{kind} {}: {resp}", v["case"]);
            let o = &json_of(&resp)["offsets"][0];
            let at = (
                "kafka".into(),
                topic,
                o["partition"].to_string(),
                o["offset"].to_string(),
            );
            posted.push((i, "rest", at));
        }
        for (shape, data) in shapes {
            let body = format!(r#"{{"StreamName":"{stream}","Data":{data},"PartitionKey":"k{i}"}}"#);
            let (code, resp) = http(port, "PUT", &path, &[JSON_CT, BEARER], body.as_bytes()).unwrap();
            assert_eq!(code, 200, "{kind} {} as {shape}: {resp}", v["case"]);
            let r = json_of(&resp);
            let at = (
                "kinesis".into(),
                stream.clone(),
                r["ShardId"].as_str().unwrap().to_string(),
                r["SequenceNumber"].as_str().unwrap().to_string(),
            );
            posted.push((i, shape, at));
        }
    }
    // Not base64: refused as the Kinesis API refuses a bad blob, and nothing is produced.
    let before = server.count_records("streaming-gv-user");
    for bad in [r#""not base64!""#, r#""eyJ""#] {
        let body = format!(
            r#"{{"StreamName":"streaming-gv-user","Records":[{{"Data":"eyJpbmQiOjF9","PartitionKey":"a"}},{{"Data":{bad},"PartitionKey":"b"}}]}}"#
        );
        let (code, resp) = http(
            port,
            "PUT",
            "/streams/streaming-gv-user/records",
            &[JSON_CT, BEARER],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(code, 400, "{resp}");
        assert_eq!(json_of(&resp)["__type"], "SerializationException", "{resp}");
        assert!(resp.contains("Records[1].Data"), "{resp}");
    }
    assert_eq!(
        server.count_records("streaming-gv-user"),
        before,
        "a refused request produced a record"
    );

    let n = posted.len();
    let mut run = s.spawn("run", &["run", "--no-progress", "--stop-after", &n.to_string()]);
    s.wait_rows(n, Duration::from_secs(120), &mut [&mut run, &mut g]);
    assert!(run.terminate(Duration::from_secs(30)).success(), "{}", run.tail());
    let rows = s.rows();
    assert_eq!(
        rows.values().map(Vec::len).sum::<usize>(),
        n,
        "one row per acknowledged record"
    );
    let mut by_at: HashMap<At, (&str, &serde_json::Map<String, Value>)> = HashMap::new();
    for (table, rs) in &rows {
        for r in rs {
            let c = |k: &str| r[k].as_str().unwrap().to_string();
            let at = (c("_source"), c("_stream"), c("_partition"), c("_position"));
            assert!(by_at.insert(at, (table.as_str(), r)).is_none(), "a lineage key twice");
        }
    }
    let data = |r: &serde_json::Map<String, Value>| -> Vec<(String, Value)> {
        r.iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for (i, (kind, v)) in vectors.iter().enumerate() {
        let mine: Vec<&(usize, &str, At)> = posted.iter().filter(|p| p.0 == i).collect();
        let first = by_at[&mine[0].2];
        for (_, shape, at) in &mine {
            let (table, r) = by_at[at];
            support::fixtures::check_row(*kind, v, table, r);
            assert_eq!(
                (table, data(r)),
                (first.0, data(first.1)),
                "{kind} {}: {shape} gives another row",
                v["case"]
            );
        }
    }
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

/// Issue #28: the gateway's routes follow its own `gateway.produce_to`, not what `pinpipe
/// run` reads: with `kinesis.enabled = false` (the default) the Kinesis routes still put,
/// and a route left out of `produce_to` is a 404 that names the key.
#[test]
fn the_gateway_serves_the_routes_of_its_own_settings() {
    let (broker, server) = brokers("gk", 1, 1);
    let port = free_port();
    let s = setup(&broker, Some(&server.endpoint()), "gk", port, "");
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let cfg = cfg.replacen("[kinesis]\nenabled = true", "[kinesis]\nenabled = false", 1);
    assert!(cfg.contains("[kinesis]\nenabled = false"), "{cfg}");
    std::fs::write(&s.config, &cfg).unwrap();
    let body = br#"{"StreamName":"streaming-gk-user","Data":"eyJpbmQiOjEsImFnZSI6M30=","PartitionKey":"a"}"#;
    let path = "/streams/streaming-gk-user/record";
    let mut g = gateway(&s, port);
    let (code, resp) = http(port, "PUT", path, &[JSON_CT, BEARER], body).unwrap();
    assert_eq!(code, 200, "{resp}");
    assert_eq!(server.count_records("streaming-gk-user"), 1);
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());

    std::fs::write(&s.config, format!("{cfg}\nproduce_to = [\"kafka\"]\n")).unwrap();
    let mut g = gateway(&s, port);
    let (code, resp) = http(port, "PUT", path, &[JSON_CT, BEARER], body).unwrap();
    assert_eq!(code, 404, "{resp}");
    assert!(resp.contains("gateway.produce_to"), "{resp}");
    assert_eq!(server.count_records("streaming-gk-user"), 1, "nothing produced");
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
}

const AWS_KEY_ID: &str = "AKIAPINPIPEGATEWAY";
const AWS_SECRET: &str = "gw/Secret+Key0123456789abcdefghijklmnopq";

/// boto3 (PyPI, in the venv of the tests' moto server, which depends on it) against the
/// gateway's Kinesis API: `count` records with PutRecord, then the same with PutRecords in
/// one call, after a DescribeStreamSummary; prints one JSON line of what it saw.
const BOTO3: &str = r#"
import base64, json, sys
import boto3
url, key_id, secret, stream, count, first = sys.argv[1:7]
count, first = int(count), int(first)
c = boto3.client("kinesis", endpoint_url=url, region_name="eu-west-1",
                 aws_access_key_id=key_id, aws_secret_access_key=secret)
summary = c.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
shards = c.list_shards(StreamName=stream)["Shards"]
rec = lambda i: json.dumps({"ind": i, "age": 30, "first_name": "boto", "last_name": "3",
                            "date_joined": "2020-01-01 00:00:00"}).encode()
single = [c.put_record(StreamName=stream, Data=rec(first + i), PartitionKey=str(i))["SequenceNumber"]
          for i in range(count)]
batch = c.put_records(StreamName=stream, Records=[
    {"Data": rec(first + count + i), "PartitionKey": str(i)} for i in range(count)])
print(json.dumps({"status": summary["StreamStatus"], "open_shards": summary["OpenShardCount"],
                  "shards": [s["ShardId"] for s in shards], "single": len(single),
                  "failed": batch["FailedRecordCount"], "batch": len(batch["Records"])}))
"#;

/// Issue #25: unmodified AWS SDK clients (boto3 and the `aws-sdk-kinesis` crate) given the
/// gateway's URL as their endpoint put records with Signature Version 4 signed requests;
/// exactly those records become rows through the Kinesis source. A wrong secret, an unknown
/// key, a request dated 10 minutes back and an unsigned request are refused in the Kinesis
/// API's error shapes, and produce nothing.
#[test]
fn aws_sdks_put_through_the_kinesis_api_with_signed_requests() {
    let (broker, server) = brokers("sdk", 1, 2);
    let port = free_port();
    let keys = format!("\n[gateway.aws_keys]\n{AWS_KEY_ID} = \"{AWS_SECRET}\"\n");
    let s = setup(&broker, Some(&server.endpoint()), "sdk", port, &keys);
    let mut g = gateway(&s, port);
    let url = format!("http://127.0.0.1:{port}");
    let (user, pin) = ("streaming-sdk-user", "streaming-sdk-pin");

    // boto3: 25 PutRecord calls and one PutRecords of 25.
    let python = support::tool("PINPIPE_MOTO_SERVER", "venv/bin/moto_server").with_file_name("python");
    let out = Command::new(&python)
        .args(["-c", BOTO3, &url, AWS_KEY_ID, AWS_SECRET, user, "25", "1000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        g.tail()
    );
    let seen = json_of(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(seen["status"], "ACTIVE", "{seen}");
    assert_eq!(seen["open_shards"], 2, "{seen}");
    assert_eq!(seen["shards"].as_array().unwrap().len(), 2, "{seen}");
    assert_eq!(
        (seen["single"].as_u64(), seen["batch"].as_u64()),
        (Some(25), Some(25)),
        "{seen}"
    );
    assert_eq!(seen["failed"], 0, "{seen}");
    assert_eq!(server.count_records(user), 50);

    // The aws-sdk-kinesis crate: one PutRecord, one PutRecords of 30 (by stream ARN).
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let client = |id: &str, secret: &str, clock: Option<std::time::SystemTime>| {
        let mut cfg = support::kinesis::sdk_config(&url, id, secret);
        if let Some(at) = clock {
            cfg = cfg.time_source(aws_smithy_async::time::StaticTimeSource::new(at));
        }
        aws_sdk_kinesis::Client::from_conf(cfg.build())
    };
    let pin_record = |i: usize| Blob::new(format!(r#"{{"index":{i},"unique_id":"u{i}","title":"sdk"}}"#));
    let ok = client(AWS_KEY_ID, AWS_SECRET, None);
    let one = server
        .block_on(
            ok.put_record()
                .stream_name(pin)
                .data(pin_record(0))
                .partition_key("p")
                .send(),
        )
        .unwrap_or_else(|e| panic!("{}\n{}", aws_sdk_kinesis::error::DisplayErrorContext(&e), g.tail()));
    assert!(one.shard_id().starts_with("shardId-"), "{one:?}");
    let entries: Vec<PutRecordsRequestEntry> = (1..=30)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .data(pin_record(i))
                .partition_key(format!("p{i}"))
                .build()
                .unwrap()
        })
        .collect();
    let arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{pin}");
    let many = server
        .block_on(
            ok.put_records()
                .stream_arn(&arn)
                .set_records(Some(entries.clone()))
                .send(),
        )
        .unwrap_or_else(|e| panic!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e)));
    assert_eq!(many.failed_record_count(), Some(0));
    assert_eq!(many.records().len(), 30);
    assert_eq!(server.count_records(pin), 31);

    // Refused, each in its own words, and nothing reaches the stream.
    // A client per call: after a refusal the SDK corrects its clock by the answer's `Date`
    // (as it would against AWS), so only its first call is sent with the skewed date.
    let minutes_ago = std::time::SystemTime::now() - Duration::from_secs(600);
    for (what, id, secret, clock, code, says) in [
        (
            "wrong secret",
            AWS_KEY_ID,
            "not-the-secret",
            None,
            "InvalidSignatureException",
            "does not match",
        ),
        (
            "unknown key",
            "AKIAUNKNOWN",
            AWS_SECRET,
            None,
            "UnrecognizedClientException",
            "invalid",
        ),
        (
            "expired date",
            AWS_KEY_ID,
            AWS_SECRET,
            Some(minutes_ago),
            "InvalidSignatureException",
            "Signature expired",
        ),
    ] {
        use aws_sdk_kinesis::error::ProvideErrorMetadata;
        let c = client(id, secret, clock);
        let single = server.block_on(
            c.put_record()
                .stream_name(pin)
                .data(pin_record(99))
                .partition_key("p")
                .send(),
        );
        let e = single.expect_err(what);
        assert_eq!(
            e.code(),
            Some(code),
            "{what}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        );
        assert!(
            e.message().unwrap_or_default().contains(says),
            "{what}: {:?}",
            e.message()
        );
        let c = client(id, secret, clock);
        let batch = server.block_on(
            c.put_records()
                .stream_name(pin)
                .set_records(Some(entries.clone()))
                .send(),
        );
        assert_eq!(batch.expect_err(what).code(), Some(code), "{what}");
    }
    // Unsigned; and another service's operation.
    let body = br#"{"StreamName":"streaming-sdk-pin","Data":"e30=","PartitionKey":"k"}"#;
    let target = ("X-Amz-Target", "Kinesis_20131202.PutRecord");
    let ct = ("Content-Type", "application/x-amz-json-1.1");
    let (code, head, resp) = http_with_head(port, "POST", "/", &[target, ct], body).unwrap();
    assert_eq!(code, 400, "{resp}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-amzn-errortype: missingauthenticationtokenexception"),
        "{head}"
    );
    assert_eq!(
        json_of(&resp)["__type"],
        "MissingAuthenticationTokenException",
        "{resp}"
    );
    let (code, _, resp) = http_with_head(
        port,
        "POST",
        "/",
        &[("X-Amz-Target", "DynamoDB_20120810.PutItem"), ct],
        b"{}",
    )
    .unwrap();
    assert_eq!(
        (code, json_of(&resp)["__type"].clone()),
        (400, "UnknownOperationException".into()),
        "{resp}"
    );
    assert_eq!(server.count_records(pin), 31, "the refused requests put nothing");
    assert_eq!(server.count_records(user), 50);

    // `pinpipe run` reads exactly the 81 acknowledged records into rows (clean or dead
    // letters), none twice.
    let mut run = s.spawn("run", &["run", "--no-progress", "--stop-after", "81"]);
    s.wait_rows(81, Duration::from_secs(120), &mut [&mut run, &mut g]);
    assert!(run.terminate(Duration::from_secs(30)).success(), "{}", run.tail());
    let rows = s.rows();
    assert_eq!(rows.values().map(Vec::len).sum::<usize>(), 81);
    assert_unique_lineage_from(&rows, "kinesis");
    assert!(g.terminate(Duration::from_secs(20)).success(), "{}", g.tail());
    // Nothing the gateway logged holds the secret (tests/logs.rs checks every command).
    let log = std::fs::read_to_string(&g.log).unwrap();
    assert!(!log.contains(AWS_SECRET), "{log}");
}
