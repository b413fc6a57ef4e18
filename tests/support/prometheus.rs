//! A real Prometheus (Debian's package, installed by `.ci/install-servers.sh`) on a free
//! port of 127.0.0.1, scraping given targets every 500 ms and evaluating given rule files;
//! killed on drop. Queries go through its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::http::http;
use super::{free_port, log_tail, tool};

/// The scrape job name the dashboard and the rules expect.
pub const JOB: &str = "pinpipe";

pub struct Prometheus {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn promtool() -> PathBuf {
    tool("PINPIPE_PROMTOOL", "bin/promtool")
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:<port>/metrics` of each of `targets` as job
    /// [`JOB`], with `rule_files` loaded; returns once it is ready.
    pub fn start(targets: &[u16], rule_files: &[&Path]) -> Self {
        let bin = tool("PINPIPE_PROMETHEUS", "bin/prometheus");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("'{}'", std::fs::canonicalize(p).unwrap().display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus {
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/-/ready", &[], b"") {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.tail());
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s:\n{}", p.tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn tail(&self) -> String {
        log_tail(&self.log, 30)
    }

    /// GET `path` of the HTTP API; panics unless it answers `"status": "success"`.
    pub fn api(&self, path: &str) -> Value {
        let (code, body) = http(self.port, "GET", path, &[], b"").expect("prometheus request");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(
            code == 200 && v["status"] == "success",
            "{path} answered {code}: {body}"
        );
        v["data"].clone()
    }

    /// An instant query; `Err` carries Prometheus' error (an invalid expression).
    pub fn try_query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", utf8_percent_encode(expr, NON_ALPHANUMERIC));
        let (code, body) = http(self.port, "GET", &path, &[], b"").map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{code}: {} {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// An instant query that must be valid; its result vector.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        self.try_query(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// The value of a query that returns one series (`None` when it returns none).
    pub fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        assert!(r.len() <= 1, "{expr} returned {} series", r.len());
        r.first().map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// Polls `expr` until `ok` holds for its single value; panics after `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            last = self.scalar(expr).or(last);
            if let Some(v) = last.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} = {last:?} after {timeout:?}:\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rewrites every comparison against a number (`> 5`, `== 0`) into its `bool` form
/// (`> bool 5`), which returns a 0/1 series instead of filtering: an alert's expression
/// then returns series whether or not it fires. Label matchers (`{a!="x"}`) and strings
/// are left alone.
pub fn bool_comparisons(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let (mut braces, mut quote) = (0, None::<char>);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            _ => {}
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = if ["==", "!=", ">=", "<="].contains(&two.as_str()) {
            Some(two)
        } else if (c == '>' || c == '<') && braces == 0 {
            Some(c.to_string())
        } else {
            None
        };
        if let Some(op) = op.filter(|_| braces == 0) {
            let rest: String = chars[i + op.len()..].iter().collect();
            let next = rest.trim_start();
            if next.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') {
                out.push_str(&op);
                out.push_str(" bool ");
                i += op.len();
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}
