//! Test harness shared by the integration tests: real servers on 127.0.0.1, the shared
//! fixture vectors, and reading Delta tables back.
#![allow(dead_code)]

pub mod fixtures;
pub mod kafka;
pub mod kinesis;
pub mod nasty;
pub mod prometheus;
pub mod proxy;
pub mod rows;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). A port is handed out at
/// most once per test process, so servers started by parallel tests never race for one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A tool installed by `.ci/install-servers.sh`: the path in env `var`, else `cached`
/// under the default tools folder `$HOME/.cache/pinpipe-tools`.
pub fn tool(var: &str, cached: &str) -> PathBuf {
    let (p, from) = match std::env::var_os(var) {
        Some(p) => (PathBuf::from(p), format!("${var}")),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            let p = PathBuf::from(home).join(".cache/pinpipe-tools").join(cached);
            (p, format!("the default (set {var} to override)"))
        }
    };
    assert!(
        p.is_file(),
        "{} ({from}) not found: run `bash .ci/install-servers.sh` first (PINPIPE_TOOLS picks its folder)",
        p.display()
    );
    p
}

/// Non-blank lines (records) of the files under `dir` whose path contains `name_part`
/// ("" for every file): the input side of an exactly-once count.
pub fn count_records(dir: &Path, name_part: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(name_part) {
                n += std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count();
            }
        }
    }
    n
}

/// The Prometheus text a pinpipe process serves on `127.0.0.1:port/metrics`.
pub fn scrape(port: u16) -> String {
    http(port, "GET", "/metrics", &[], b"").unwrap().1
}

/// The sum of every series of metric `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The last `n` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An `Authorization` header in SigV4 form with a dummy signature. moto never checks
/// signatures, but a request without one is anonymous: it may create buckets and new
/// objects, yet gets 403 on GET/HEAD of a (private) object and on a conditional PUT over
/// an existing one. Send this with raw requests that must act as the table owner.
pub const FAKE_AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
);

/// A raw HTTP/1.1 request to 127.0.0.1:`port`; returns the status code and the body.
/// No `Content-Type` is sent unless given: moto (Flask) swallows the body of a PUT sent as
/// `application/x-www-form-urlencoded` (curl's default for `--data`) and stores 0 bytes.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_with_head(port, method, path, headers, body).map(|(code, _, body)| (code, body))
}

/// [`http`], also returning the response head (status line and headers).
pub fn http_with_head(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let body = resp.get(split + 4..).unwrap_or_default();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Ok((code, head, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a `Transfer-Encoding: chunked` response (Go servers such as Prometheus
/// chunk large answers even to HTTP/1.1 clients that close the connection).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    out
}

/// moto's S3 API (`moto_server`) on a free port of 127.0.0.1, with its own empty state;
/// killed on drop. Its output goes to a log file whose tail is shown if it fails to start.
pub struct S3Server {
    pub endpoint: String,
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> Self {
        let bin = tool("PINPIPE_MOTO_SERVER", "venv/bin/moto_server");
        // A retry covers the rare port taken by another process between free_port() and
        // moto's bind (moto then exits at once with "Address already in use").
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("moto_server exited at start three times; last log:\n{last_log}");
    }

    /// Starts moto and waits (30 s at most) until it answers; Err(log tail) if it exited.
    fn try_start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e} (run `bash .ci/install-servers.sh`)", bin.display()));
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("moto_server exited with {status}:\n{}", server.log_tail()));
            }
            if let Ok((200, _)) = http(port, "GET", "/", &[], b"") {
                return Ok(server);
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {port} did not answer within 30 s; log tail:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines moto wrote (one per request it served, and any traceback).
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("moto.log"), 40)
    }

    /// A raw request acting as the table owner (with [`FAKE_AUTH`] added).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut all = vec![FAKE_AUTH];
        all.extend_from_slice(headers);
        http(self.port, method, path, &all, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates a bucket with an unsigned `PUT /name` (moto allows anonymous bucket
    /// creation). The name must be a valid S3 bucket name: 3 to 63 characters.
    pub fn create_bucket(&self, name: &str) {
        let (code, body) = http(self.port, "PUT", &format!("/{name}"), &[], b"")
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert_eq!(code, 200, "creating bucket {name}: {body}\n{}", self.log_tail());
    }

    /// Storage options for deltalake / object_store pointing at this server.
    pub fn storage_options(&self) -> HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
