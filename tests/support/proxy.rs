//! A fault-injecting HTTP/1.1 proxy for the tests: it forwards each request to a real server
//! on 127.0.0.1 unless a rule answers it first (a throttle, a 5xx). Written for the tests,
//! so real servers can be made to misbehave on cue without mocking them.
//!
//! Each client connection gets a thread; each request is forwarded on a fresh upstream
//! connection with `Connection: close`, and the upstream's response bytes are passed back
//! unchanged. Bounded: it serves until dropped, and every socket has timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One request as the rules see it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Header names lower-cased.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Request<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A canned answer: status, headers, body. Two statuses are not answers: 0 closes the
/// connection without forwarding the request (a reset), 1 forwards it and closes the
/// connection instead of passing the answer back (a reset after the server acted: the
/// client cannot tell whether its write happened).
pub type Answer = (u16, Vec<(String, String)>, String);
/// Decides whether a request is answered by the proxy instead of the server.
pub type Rule = Arc<dyn Fn(&Request<'_>) -> Option<Answer> + Send + Sync>;

pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Requests the rule answered.
    pub injected: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(upstream: u16, rule: Rule) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (s, i, f) = (stop.clone(), injected.clone(), forwarded.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (rule, i, f, s) = (rule.clone(), i.clone(), f.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, upstream, rule, i, f, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            injected,
            forwarded,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// AWS's JSON error response (Kinesis and other awsJson services).
pub fn aws_json_error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        vec![
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("x-amzn-ErrorType".into(), code.into()),
        ],
        serde_json::json!({"__type": code, "message": message}).to_string(),
    )
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    rule: Rule,
    injected: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        let mut raw_head = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k != "connection" {
                    raw_head.push(h.clone());
                }
                headers.push((k, v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Request {
            method: &method,
            path: &path,
            headers: &headers,
            body: &body,
        };
        let out = if let Some((status, hs, b)) = rule(&req) {
            injected.fetch_add(1, Ordering::Relaxed);
            if status == 0 {
                return;
            }
            if status == 1 {
                let _ = forward(upstream, &line, &raw_head, &body);
                return;
            }
            let mut r = format!("HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\n", b.len());
            for (k, v) in hs {
                r.push_str(&format!("{k}: {v}\r\n"));
            }
            r.push_str("\r\n");
            r.push_str(&b);
            r.into_bytes()
        } else {
            forwarded.fetch_add(1, Ordering::Relaxed);
            match forward(upstream, &line, &raw_head, &body) {
                Ok(bytes) => bytes,
                Err(_) => b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            }
        };
        if writer.write_all(&out).is_err() {
            return;
        }
        // The upstream closed after its answer; when it said so, do the same.
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
        if String::from_utf8_lossy(&out[..head_end])
            .to_ascii_lowercase()
            .contains("connection: close")
        {
            return;
        }
    }
}

fn forward(upstream: u16, request_line: &str, head: &[String], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", upstream))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = request_line.to_string();
    for h in head {
        req.push_str(h);
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    Ok(resp)
}
