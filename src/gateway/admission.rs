//! Who may produce what, checked before anything is produced.
//!
//! Checks run cheapest first, and nothing is produced unless all pass: authentication
//! (401), the side being on and the topic/stream allow-list (404), the content type (415),
//! the body size (413); the routes then check the JSON and its shape (400, 422), the
//! per-request and per-record limits (422), the broker's state and the in-flight budget
//! (503 with `Retry-After`).

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::kafka::KafkaSink;
use super::refusal::{missing, reject, too_many_records, Reject};
use super::GatewayConfig;

/// Shared by every worker: what the gateway accepts and where it produces.
pub(super) struct State {
    pub(super) cfg: GatewayConfig,
    /// `None`: authentication off (`gateway.auth = "none"`).
    pub(super) tokens: Option<Vec<String>>,
    /// The allow-lists: a name outside them is a 404 before the body is read.
    pub(super) topics: BTreeSet<String>,
    pub(super) streams: BTreeSet<String>,
    /// `None`: that side is off (not in `gateway.produce_to`).
    pub(super) kafka: Option<KafkaSink>,
    pub(super) kinesis: Option<aws_sdk_kinesis::Client>,
    /// Records sent and not acknowledged yet, over all requests: the bound that turns a
    /// slow broker into 503s instead of a growing queue.
    pub(super) inflight: Arc<Semaphore>,
}

impl State {
    /// 401 unless the request carries a configured token (when authentication is on).
    pub(super) fn authenticate(&self, req: &HttpRequest) -> Result<(), Reject> {
        let Some(tokens) = &self.tokens else { return Ok(()) };
        let h = req.headers();
        let given = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        let Some(given) = given else {
            return Err(reject(
                401,
                40101,
                "UnrecognizedClientException",
                "authentication required: send Authorization: Bearer <token> or X-API-Key: <token>",
            ));
        };
        // Every token is compared, in constant time per token: no early exit that would
        // tell a prober how close a guess was.
        let ok = tokens
            .iter()
            .fold(0u8, |acc, t| acc | t.as_bytes().ct_eq(given.as_bytes()).unwrap_u8());
        if ok == 1 {
            Ok(())
        } else {
            Err(reject(
                401,
                40101,
                "UnrecognizedClientException",
                "unknown API key or bearer token",
            ))
        }
    }

    /// Takes `n` records of the in-flight budget, or answers 503.
    pub(super) fn budget(&self, n: usize) -> Result<OwnedSemaphorePermit, Reject> {
        self.inflight.clone().try_acquire_many_owned(n as u32).map_err(|_| {
            Reject::unavailable(
                format!(
                    "too many records in flight (gateway.max_inflight_records = {}); retry later",
                    self.cfg.max_inflight_records
                ),
                self.cfg.retry_after_s,
            )
        })
    }

    /// 422 when one request holds more than `gateway.max_records` records.
    pub(super) fn check_count(&self, n: usize) -> Result<(), Reject> {
        if n > self.cfg.max_records {
            return Err(too_many_records(n, self.cfg.max_records));
        }
        Ok(())
    }
}

/// What [`admit`] checks a request against.
pub(super) struct Admit<'a> {
    /// `Topic` or `Stream`, for messages.
    pub(super) what: &'static str,
    pub(super) name: &'a str,
    pub(super) allowed: &'a BTreeSet<String>,
    /// Why this side of the gateway is off, when it is.
    pub(super) disabled: Option<&'static str>,
    /// Accepted media types; the first is the one a 415 asks for.
    pub(super) content_types: &'a [&'a str],
}

/// The checks every produce route shares, cheapest first: authentication, the side being
/// on, the allow-list, the content type; then the body, within the size limit.
pub(super) async fn admit(
    req: &HttpRequest,
    payload: web::Payload,
    st: &State,
    a: Admit<'_>,
) -> Result<web::BytesMut, Reject> {
    st.authenticate(req)?;
    if let Some(why) = a.disabled {
        return Err(missing(a.what, a.name, &format!(": {why}")));
    }
    if !a.allowed.contains(a.name) {
        return Err(missing(a.what, a.name, ""));
    }
    if !content_type_is(req, a.content_types) {
        return Err(reject(
            415,
            415,
            "UnsupportedMediaTypeException",
            format!(
                "HTTP 415 Unsupported Media Type: use Content-Type: {}",
                a.content_types[0]
            ),
        ));
    }
    read_body(req, payload, st.cfg.max_body_bytes).await
}

/// Whether the media type (parameters such as `charset` ignored) is one of `allowed`.
fn content_type_is(req: &HttpRequest, allowed: &[&str]) -> bool {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    allowed.iter().any(|a| mime.eq_ignore_ascii_case(a))
}

/// Reads the body, refusing one over the limit before reading it when Content-Length says
/// so, and as soon as it passes the limit otherwise (chunked uploads).
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, Reject> {
    let too_large = |n: String| {
        reject(
            413,
            413,
            "ValidationException",
            format!("request body of {n} bytes is over gateway.max_body_bytes = {limit}"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        return Err(too_large(n.to_string()));
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(8 << 10).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| reject(400, 400, "SerializationException", format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}
