//! Structured logs and secrets. Every secret the config can hold (the gateway's tokens and
//! AWS secret keys, a SASL password and an SSL key password in `[kafka.properties]`, the
//! AWS keys of `[tables]` and `[kinesis]`) is set to a unique string, every command that reads the config runs
//! against real servers (the Kafka mock broker, kinesis-local, moto's S3) with debug logs,
//! and no byte of stdout or stderr may contain a secret. `[log] format = "json"` gives one
//! JSON object per line, with the filtering fields at the top level, under load.
mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::free_port;
use support::http::http;
use support::kafka::{kafka_toml, Broker};
use support::kinesis::{kinesis_toml, streams, KinesisServer};
use support::proc::{Proc, Setup, BIN};
use support::s3::S3Server;

/// A value no log line has by chance.
fn secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

struct Secrets {
    token: String,
    sasl: String,
    ssl_key: String,
    tables_key_id: String,
    tables_secret: String,
    kinesis_key_id: String,
    kinesis_secret: String,
    gateway_aws_secret: String,
}

impl Secrets {
    fn new() -> Self {
        Secrets {
            token: secret("gateway-token"),
            sasl: secret("sasl-password"),
            ssl_key: secret("ssl-key-password"),
            tables_key_id: secret("AKIATABLES"),
            tables_secret: secret("tables-secret"),
            kinesis_key_id: secret("AKIAKINESIS"),
            kinesis_secret: secret("kinesis-secret"),
            gateway_aws_secret: secret("gateway-aws-secret"),
        }
    }

    fn all(&self) -> [&str; 8] {
        [
            &self.token,
            &self.sasl,
            &self.ssl_key,
            &self.tables_key_id,
            &self.tables_secret,
            &self.kinesis_key_id,
            &self.kinesis_secret,
            &self.gateway_aws_secret,
        ]
    }
}

/// Kafka and Kinesis sources, tables on S3, and every secret in the file itself.
fn setup(broker: &Broker, kinesis: &str, s3: &S3Server, gateway_port: u16, x: &Secrets) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pinpipe.toml");
    // The test sections' static "test" keys give way to the secrets (moto and kinesis-local
    // accept any key).
    let kinesis = kinesis_toml(kinesis, "lg")
        .replace(
            "access_key_id = \"test\"",
            &format!("access_key_id = \"{}\"", x.kinesis_key_id),
        )
        .replace(
            "secret_access_key = \"test\"",
            &format!("secret_access_key = \"{}\"", x.kinesis_secret),
        );
    let toml = format!(
        r#"
[tables]
location = "s3://tables/lg"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
path_style = true
access_key_id = "{key_id}"
secret_access_key = "{secret}"

[writer]
max_rows = 500
max_age_ms = 300

[batch]
input = "{raw}"

[metrics]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:{gateway_port}"
tokens = ["{token}"]
aws_keys = {{ AKIALOGSTEST = "{gateway_aws}" }}
workers = 1
{kafka}"sasl.password" = "{sasl}"
"ssl.key.password" = "{ssl_key}"
{kinesis}"#,
        endpoint = s3.endpoint,
        key_id = x.tables_key_id,
        secret = x.tables_secret,
        raw = dir.path().join("raw").display(),
        token = x.token,
        gateway_aws = x.gateway_aws_secret,
        kafka = kafka_toml(broker, "lg"),
        sasl = x.sasl,
        ssl_key = x.ssl_key,
    );
    std::fs::write(&config, toml).unwrap();
    Setup {
        tables: dir.path().join("unused"),
        dir,
        config,
        prefix: "lg".into(),
    }
}

/// `pinpipe <args>` to completion with debug logs; its stdout and stderr.
fn pinpipe(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("PINPIPE_CONFIG", &s.config)
        .env("PINPIPE_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinpipe {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, output: &str, x: &Secrets) {
    for s in x.all() {
        if let Some(i) = output.find(s) {
            let from = output[..i].rfind('\n').map_or(0, |n| n + 1);
            let to = output[i..].find('\n').map_or(output.len(), |n| i + n);
            panic!("{what} printed a secret: {}", &output[from..to]);
        }
    }
}

/// Starts `pinpipe gateway` with debug logs and waits for `/healthz`.
fn gateway(s: &Setup, port: u16) -> Proc {
    let mut p = s.spawn_env("gateway", &["gateway"], &[("PINPIPE_LOG", "debug".into())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http(port, "GET", "/healthz", &[], b""), Ok((200, _))) {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("gateway exited with {status}:\n{}", p.tail());
        }
        assert!(Instant::now() < deadline, "gateway not up:\n{}", p.tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

#[test]
fn no_secret_in_any_output() {
    let x = Secrets::new();
    let broker = Broker::start(1);
    broker.create_topics("lg", 2);
    let kinesis = KinesisServer::start();
    for stream in streams("lg") {
        kinesis.create_stream(&stream, 1);
    }
    let s3 = S3Server::start();
    s3.create_bucket("tables");
    let port = free_port();
    let s = setup(&broker, &kinesis.endpoint(), &s3, port, &x);

    let check = pinpipe(&s, &["check-config"], &[]);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("\"***\""), "secrets are shown as set: {printed}");
    assert_no_secret("check-config", &text(&check), &x);

    // Both sources get records, through the emulator and through the gateway.
    let out = pinpipe(
        &s,
        &["emulate", "--to", "kafka", "--count", "100", "--no-progress"],
        &[],
    );
    assert_no_secret("emulate --to kafka", &text(&out), &x);
    let out = pinpipe(
        &s,
        &["emulate", "--to", "kinesis", "--count", "100", "--no-progress"],
        &[],
    );
    assert_no_secret("emulate --to kinesis", &text(&out), &x);
    let mut gw = gateway(&s, port);
    let url = format!("http://127.0.0.1:{port}");
    let args = [
        "emulate",
        "--to",
        "gateway",
        "--url",
        &url,
        "--count",
        "20",
        "--no-progress",
    ];
    let out = pinpipe(&s, &args, &[("PINPIPE_GATEWAY_TOKEN", &x.token)]);
    assert_no_secret("emulate --to gateway", &text(&out), &x);
    // "emulate: 20 posts, N records acknowledged by ..."
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let acked: u64 = said
        .split(" records acknowledged")
        .next()
        .and_then(|h| h.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no acknowledged count in {said}"));
    // A wrong token is refused and logged without either token.
    let bad = format!("Bearer {}", secret("wrong"));
    let (status, _) = http(port, "POST", "/topics/lg.pin", &[("Authorization", &bad)], b"{}").unwrap();
    assert_eq!(status, 401);
    assert!(gw.terminate(Duration::from_secs(20)).success(), "{}", gw.tail());
    assert_no_secret("gateway", &gw.log_text(), &x);

    // 300 + acked records in Kafka, 300 in Kinesis: run commits them all to S3 and stops.
    let total = (600 + acked).to_string();
    let out = pinpipe(&s, &["run", "--no-progress", "--stop-after", &total], &[]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(&format!("run: {total} records")), "{}", text(&out));
    assert_no_secret("run", &text(&out), &x);

    let out = pinpipe(&s, &["emulate", "--count", "100", "--no-progress"], &[]);
    assert_no_secret("emulate --to files", &text(&out), &x);
    let out = pinpipe(&s, &["batch", "--no-progress"], &[]);
    assert_no_secret("batch", &text(&out), &x);
    let out = pinpipe(&s, &["status"], &[]);
    assert_no_secret("status", &text(&out), &x);
}

/// The fields a log pipeline filters on, at the top level of every line that has them.
#[test]
fn json_logs_parse_line_by_line_under_load() {
    let broker = Broker::start(1);
    broker.create_topics("js", 4);
    let s = support::kafka::setup(&broker, "js", 2000);
    broker.produce(&support::kafka::emulated("js", 10_000, 4, 3));
    let out = Command::new(BIN)
        .args(["run", "--no-progress", "--stop-after", "30000"])
        .env("PINPIPE_CONFIG", &s.config)
        .env("PINPIPE__LOG__FORMAT", "json")
        .env("PINPIPE_LOG", "info,pinpipe=debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut lines = 0;
    let mut committed = 0;
    let mut assigned = 0;
    for line in stderr.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(),
            "{line}"
        );
        // deltalake's kernel logs some events with fields and no message.
        assert!(v["message"].is_null() || v["message"].is_string(), "{line}");
        lines += 1;
        match v["message"].as_str().unwrap_or_default() {
            "committed" => {
                assert!(v["table"].is_string() && v["version"].is_u64(), "{line}");
                committed += 1;
            }
            "partition assigned" => {
                assert!(v["topic"].is_string() && v["partition"].is_i64(), "{line}");
                assigned += 1;
            }
            _ => {}
        }
    }
    assert!(
        committed >= 6 && assigned >= 12,
        "{lines} lines, {committed} commits, {assigned} assignments"
    );
}
