//! A raw HTTP/1.1 client on 127.0.0.1, for requests a real client would not send: unsigned
//! or fake-signed S3 calls, malformed gateway requests, Prometheus' API, `/metrics`.
//! One request per connection (`Connection: close`), so no state is shared between calls.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
