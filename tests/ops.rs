//! Operations against real servers on 127.0.0.1: a real Prometheus scrapes a live
//! `pinpipe run` (consuming from a Kafka-protocol broker) and evaluates the alert rules;
//! every query of the Grafana dashboard and of the rules must be valid and return series;
//! the live exposition passes `promtool check metrics`; the lag gauge follows a pause and
//! the catch-up; `/healthz` and `/readyz` tell live from ready.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_port;
use support::http::http;
use support::kafka::{emulated, Broker};
use support::proc::{signal, Proc, Setup, BIN};
use support::prometheus::{bool_comparisons, promtool, Prometheus};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards/pinpipe.json");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts/pinpipe.rules.yml");
const RULE_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts/pinpipe.rules.test.yml");

/// `pinpipe run` with its metrics server on `port`.
fn run_on(setup: &Setup, name: &str, port: u16) -> Proc {
    setup.spawn_env(
        name,
        &["run", "--no-progress"],
        &[("PINPIPE__METRICS__LISTEN", format!("127.0.0.1:{port}"))],
    )
}

/// Polls `path` on `port` until it answers `code`; returns the body.
fn wait_http(port: u16, path: &str, code: u16, timeout: Duration, p: &mut Proc) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((c, body)) = http(port, "GET", path, &[], b"") {
            if c == code {
                return body;
            }
        }
        if let Some(s) = p.child.try_wait().unwrap() {
            panic!("{} exited with {s}:\n{}", p.name, p.tail());
        }
        assert!(Instant::now() < deadline, "{path} never answered {code}:\n{}", p.tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every `targets[].expr` of the dashboard's panels (rows' nested panels included).
fn dashboard_exprs(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::Array(targets)), title) = (m.get("targets"), m.get("title")) {
                for t in targets {
                    if let Some(e) = t["expr"].as_str() {
                        out.push((title.and_then(Value::as_str).unwrap_or("?").to_string(), e.to_string()));
                    }
                }
            }
            m.values().for_each(|x| dashboard_exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// The dashboard's template variables, as a test run sees them: every instance, and a
/// rate window that spans enough 500 ms scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
}

#[test]
fn prometheus_runs_every_dashboard_and_rule_query_against_a_live_run() {
    let broker = Broker::start(1);
    broker.create_topics("ops", 3);
    let setup = support::kafka::setup(&broker, "ops", 3_000);
    let port = free_port();
    let mut run = run_on(&setup, "run", port);
    // Liveness answers while the process is still joining the group.
    wait_http(port, "/healthz", 200, Duration::from_secs(20), &mut run);
    let prom = Prometheus::start(&[port], &[Path::new(RULES)]);

    // Bounded load: 6,000 posts (18,000 records) in 12 rounds, 300 ms apart.
    let records = emulated("ops", 6_000, 3, 11);
    for chunk in records.chunks(records.len() / 12) {
        broker.produce(chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        wait_http(port, "/readyz", 200, Duration::from_secs(30), &mut run),
        "ready\n"
    );
    setup.wait_rows(records.len(), Duration::from_secs(90), &mut [&mut run]);
    let n = records.len() as f64;
    // Every record once in a clean or dead-letter table, and once in its raw table.
    prom.wait_for(
        r#"sum(pinpipe_rows_committed_total{table!~".+_raw"})"#,
        Duration::from_secs(30),
        |v| v == n,
    );
    prom.wait_for(
        r#"sum(pinpipe_rows_committed_total{table=~".+_raw"})"#,
        Duration::from_secs(30),
        |v| v == n,
    );
    prom.wait_for("sum(pinpipe_records_consumed_total)", Duration::from_secs(10), |v| {
        v == n
    });
    assert_eq!(prom.scalar("pinpipe_ready"), Some(1.0));
    assert_eq!(prom.scalar("sum(pinpipe_owned_partitions)"), Some(9.0));
    let dead = prom.scalar("sum(pinpipe_dead_letters_total)").unwrap();
    let dead_rows: usize = setup
        .rows()
        .iter()
        .filter(|(t, _)| t.ends_with("_dead_letter"))
        .map(|(_, r)| r.len())
        .sum();
    assert_eq!(dead, dead_rows as f64, "dead-letter counter vs dead-letter rows");
    assert!(dead > 0.0, "the emulator's invalid share should give dead letters");

    // The live exposition passes promtool's lint.
    let (code, text) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    let mut lint = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );

    // Every dashboard query is valid and returns series.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} dashboard queries", exprs.len());
    let mut failed = Vec::new();
    for (panel, expr) in &exprs {
        let q = substitute(expr);
        assert!(!q.contains('$'), "panel {panel:?}: unknown template variable in {expr}");
        // This run reads Kafka only: Kinesis series cannot exist, but the query must be
        // valid. tests/kinesis.rs checks those metrics on a live Kinesis run.
        let kinesis_only = q.contains("pinpipe_kinesis_") || q.contains("source=\"kinesis\"");
        match prom.try_query(&q) {
            Ok(r) if r.is_empty() && !kinesis_only => failed.push(format!("{panel}: no series: {q}")),
            Ok(_) => {}
            Err(e) => failed.push(format!("{panel}: {e}: {q}")),
        }
    }
    assert!(failed.is_empty(), "dashboard queries:\n{}", failed.join("\n"));

    // Every rule was evaluated without error; recording rules return series, and so do
    // the alerts' expressions with their thresholds made `bool`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let groups = loop {
        let groups = prom.api("/api/v1/rules")["groups"].as_array().cloned().unwrap();
        let evaluated = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .all(|r| !r["lastEvaluation"].as_str().unwrap_or("0001").starts_with("0001"));
        if evaluated {
            break groups;
        }
        assert!(Instant::now() < deadline, "rules not evaluated:\n{}", prom.tail());
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut alerts = 0;
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let (name, query) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
        if rule["health"] != "ok" {
            failed.push(format!("{name}: health {} {}", rule["health"], rule["lastError"]));
            continue;
        }
        let q = if rule["type"] == "alerting" {
            alerts += 1;
            bool_comparisons(query)
        } else {
            query.to_string()
        };
        match prom.try_query(&q) {
            Ok(r) if r.is_empty() => failed.push(format!("{name}: no series: {q}")),
            Ok(_) => {}
            Err(e) => failed.push(format!("{name}: {e}: {q}")),
        }
    }
    assert!(failed.is_empty(), "rules:\n{}", failed.join("\n"));
    assert!(alerts >= 5, "only {alerts} alerts");
    // Healthy and caught up: nothing fires except what is pending by design (none).
    let firing = prom.query("ALERTS{alertstate=\"firing\"}");
    assert!(firing.is_empty(), "alerts firing on a healthy run: {firing:?}");

    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", run.tail());
}

#[test]
fn lag_gauge_rises_with_a_paused_processor_and_falls_to_zero_after_catch_up() {
    let broker = Broker::start(1);
    broker.create_topics("lag", 3);
    // One flush per 4 s (no row threshold): after the pause, the rows read back sit in the
    // writers for seconds before their commit moves the checkpoint.
    let setup = support::kafka::setup(&broker, "lag", 1_000_000);
    let toml = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, toml.replace("max_age_ms = 300", "max_age_ms = 4000")).unwrap();
    let port = free_port();
    let mut run = run_on(&setup, "run", port);
    let prom = Prometheus::start(&[port], &[]);

    let first = emulated("lag", 1_000, 3, 21);
    broker.produce(&first);
    wait_http(port, "/readyz", 200, Duration::from_secs(30), &mut run);
    setup.wait_rows(first.len(), Duration::from_secs(60), &mut [&mut run]);
    prom.wait_for("pinpipe_lag_records", Duration::from_secs(20), |v| v == 0.0);

    // Pause the processor (SIGSTOP), produce a backlog, resume.
    let backlog = emulated("lag", 6_000, 3, 22);
    signal(&run.child, "STOP");
    broker.produce(&backlog);
    std::thread::sleep(Duration::from_secs(1));
    signal(&run.child, "CONT");

    // The gauge reports the whole backlog until the 4 s flush commits it...
    let peak = prom.wait_for("max_over_time(pinpipe_lag_records[1m])", Duration::from_secs(20), |v| {
        v >= backlog.len() as f64
    });
    assert_eq!(peak, backlog.len() as f64, "lag counts records behind, nothing else");
    let per_partition = prom
        .scalar("sum(max_over_time(pinpipe_partition_lag_records[1m]))")
        .unwrap();
    assert!(per_partition >= peak, "partition lags {per_partition} vs total {peak}");
    // ... then falls to zero once it is committed.
    prom.wait_for("pinpipe_lag_records", Duration::from_secs(30), |v| v == 0.0);
    setup.wait_rows(first.len() + backlog.len(), Duration::from_secs(30), &mut [&mut run]);
    assert_eq!(setup.total(), first.len() + backlog.len());
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", run.tail());
}

#[test]
fn readyz_waits_for_an_assignment_while_healthz_answers() {
    // A broker address where nothing listens: the tables open, no assignment ever comes.
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pinpipe.toml");
    std::fs::write(
        &config,
        format!(
            "[tables]\nlocation = \"{}\"\n[kafka]\nbrokers = \"127.0.0.1:{dead}\"\n",
            dir.path().join("tables").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("run.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "run", "--no-progress"])
        .env("PINPIPE__METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut run = Proc {
        name: "run".into(),
        child,
        log,
    };
    assert_eq!(
        wait_http(port, "/healthz", 200, Duration::from_secs(20), &mut run),
        "ok\n"
    );
    // The tables open within a moment; then readiness names the one thing missing.
    let body = wait_http(port, "/readyz", 503, Duration::from_secs(20), &mut run);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut body = body;
    while body.contains("tables not open") {
        assert!(Instant::now() < deadline, "tables never opened: {body}");
        std::thread::sleep(Duration::from_millis(100));
        body = http(port, "GET", "/readyz", &[], b"").unwrap().1;
    }
    assert_eq!(body, "not ready: no partition assignment received yet\n");
    let (_, metrics) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert!(metrics.contains("\npinpipe_ready 0\n"), "{metrics}");
    let status = run.terminate(Duration::from_secs(40));
    assert!(status.success(), "{}", run.tail());
}

#[test]
fn alert_rules_pass_promtool_and_each_alert_has_a_unit_test() {
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = Command::new(promtool()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(RULES).unwrap();
    let tests = std::fs::read_to_string(RULE_TESTS).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "alert {a} has no promtool test case"
        );
    }
}

#[test]
fn bool_rewrite_leaves_matchers_alone() {
    assert_eq!(
        bool_comparisons(r#"sum(rate(x{a!="1",b=~"2"}[5m])) > 0.05 and y == 0"#),
        r#"sum(rate(x{a!="1",b=~"2"}[5m])) > bool  0.05 and y == bool  0"#
    );
    assert_eq!(bool_comparisons("a > b"), "a > b");
    assert_eq!(bool_comparisons("changes(x[30m])>2"), "changes(x[30m])> bool 2");
}
