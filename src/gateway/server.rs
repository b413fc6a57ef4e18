//! The gateway's HTTP server (actix-web): routes, authentication, limits, answers.
//!
//! Checks run cheapest first, and nothing is produced unless all pass: authentication
//! (401), the topic/stream allow-list (404), the content type (415), the body size (413),
//! the JSON and its shape (400, 422), the per-request and per-record limits (422), the
//! broker's state and the in-flight budget (503 with `Retry-After`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::body::{self, BodyError, KinesisRecord};
use super::kafka::{Failure, KafkaSink};
use super::{kinesis, GatewayConfig, GatewayError, TOKENS_ENV};
use crate::config::Config;
use crate::metrics::metrics;

const KAFKA_JSON: &str = "application/vnd.kafka.json.v2+json";
/// What the REST proxy answers with.
const KAFKA_RESPONSE: &str = "application/vnd.kafka.v2+json";

/// A refused request: its status, the REST proxy `error_code`, the Kinesis `__type`.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    code: u32,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

fn reject(status: u16, code: u32, kind: &'static str, message: impl Into<String>) -> Reject {
    Reject {
        status: StatusCode::from_u16(status).expect("valid status"),
        code,
        kind,
        message: message.into(),
        retry_after: None,
    }
}

impl Reject {
    fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Reject {
            retry_after: Some(retry_after),
            ..reject(503, 50003, "ServiceUnavailable", message)
        }
    }

    fn respond(&self, api: Api, extra: Option<serde_json::Value>) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"pinpipe\""));
        }
        let mut body = match api {
            Api::Kafka => {
                r.content_type(KAFKA_RESPONSE);
                json!({"error_code": self.code, "message": self.message})
            }
            Api::Kinesis => {
                r.content_type("application/json");
                json!({"__type": self.kind, "message": self.message})
            }
        };
        if let (Some(extra), Some(obj)) = (extra, body.as_object_mut()) {
            if let Some(e) = extra.as_object() {
                obj.extend(e.clone());
            }
        }
        r.body(body.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
enum Api {
    Kafka,
    Kinesis,
}

/// Shared by every worker.
struct State {
    cfg: GatewayConfig,
    /// `None`: authentication off (`gateway.auth = "none"`).
    tokens: Option<Vec<String>>,
    topics: BTreeSet<String>,
    streams: BTreeSet<String>,
    kafka: Option<KafkaSink>,
    kinesis: Option<aws_sdk_kinesis::Client>,
    inflight: Arc<Semaphore>,
}

impl State {
    fn authenticate(&self, req: &HttpRequest) -> Result<(), Reject> {
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
    fn budget(&self, n: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Reject> {
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
}

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
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, Reject> {
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

fn body_error(e: BodyError) -> Reject {
    match e {
        BodyError::Syntax(_) | BodyError::Base64(_) => reject(400, 400, "SerializationException", e.to_string()),
        BodyError::Shape(m) => reject(422, 42200, "ValidationException", m),
    }
}

fn record_too_large(at: String, n: usize, limit: usize) -> Reject {
    reject(
        422,
        42201,
        "ValidationException",
        format!("{at} is {n} bytes, over gateway.max_record_bytes = {limit}"),
    )
}

fn count(route: &str, status: StatusCode) {
    metrics()
        .gateway_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
}

async fn topic_route(
    req: HttpRequest,
    topic: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match produce_kafka(&req, &topic, payload, &st).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kafka, extra),
    };
    count("/topics/{topic}", resp.status());
    resp
}

/// What [`admit`] checks a request against.
struct Admit<'a> {
    /// `Topic` or `Stream`, for messages.
    what: &'static str,
    name: &'a str,
    allowed: &'a BTreeSet<String>,
    /// Why this side of the gateway is off, when it is.
    disabled: Option<&'static str>,
    content_types: &'a [&'a str],
}

/// The checks every produce route shares, cheapest first: authentication, the side being
/// on, the allow-list, the content type; then the body, within the size limit.
async fn admit(req: &HttpRequest, payload: web::Payload, st: &State, a: Admit<'_>) -> Result<web::BytesMut, Reject> {
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

/// The REST proxy's 40401 / Kinesis' ResourceNotFoundException.
fn missing(what: &str, name: &str, why: &str) -> Reject {
    reject(
        404,
        40401,
        "ResourceNotFoundException",
        format!("{what} {name} not found{why}"),
    )
}

/// The answer when every record failed: 404 for an unknown topic/stream, 503 when worth a
/// retry, 500 otherwise.
fn all_failed_reject(f: &Failure, broker: &str, not_found: Reject, retry_after: u64) -> Reject {
    if f.unknown_topic {
        not_found
    } else if f.retriable {
        Reject::unavailable(format!("{broker} did not acknowledge: {}", f.message), retry_after)
    } else {
        reject(
            500,
            50002,
            "InternalFailure",
            format!("{broker} refused the records: {}", f.message),
        )
    }
}

type Refusal = (Reject, Option<serde_json::Value>);

async fn produce_kafka(
    req: &HttpRequest,
    topic: &str,
    payload: web::Payload,
    st: &State,
) -> Result<HttpResponse, Refusal> {
    let not_found = || missing("Topic", topic, "");
    let sink = st.kafka.as_ref();
    let bytes = admit(
        req,
        payload,
        st,
        Admit {
            what: "Topic",
            name: topic,
            allowed: &st.topics,
            disabled: sink
                .is_none()
                .then_some("this gateway does not produce to Kafka (kafka.enabled = false)"),
            content_types: &[KAFKA_JSON],
        },
    )
    .await
    .map_err(|r| (r, None))?;
    let sink = sink.expect("admit checked the sink is on");
    let records = body::kafka(&bytes).map_err(|e| (body_error(e), None))?;
    check_count(records.len(), st).map_err(|r| (r, None))?;
    for (i, r) in records.iter().enumerate() {
        let n = r.value.len() + r.key.map_or(0, <[u8]>::len);
        if n > st.cfg.max_record_bytes {
            return Err((
                record_too_large(format!("records[{i}]"), n, st.cfg.max_record_bytes),
                None,
            ));
        }
    }
    if sink.is_down() {
        return Err((
            Reject::unavailable("Kafka broker unreachable; retry later", st.cfg.retry_after_s),
            None,
        ));
    }
    let _permit = st.budget(records.len()).map_err(|r| (r, None))?;
    let results = timed("kafka", records.len(), sink.produce(topic, &records)).await;
    let offsets: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Ok((p, o)) => json!({"partition": p, "offset": o, "error_code": null, "error": null}),
            Err(f) => json!({"partition": null, "offset": null, "error_code": failure_code(f), "error": f.message}),
        })
        .collect();
    let body = json!({"offsets": offsets, "key_schema_id": null, "value_schema_id": null});
    match all_failed(results.iter().map(|r| r.as_ref().err())) {
        None => Ok(HttpResponse::Ok().content_type(KAFKA_RESPONSE).body(body.to_string())),
        Some(f) => {
            let rej = all_failed_reject(f, "Kafka", not_found(), st.cfg.retry_after_s);
            Err((rej, Some(json!({"offsets": body["offsets"]}))))
        }
    }
}

/// The REST proxy's per-record codes: 50003 retriable, 50002 not.
fn failure_code(f: &Failure) -> u32 {
    if f.retriable {
        50003
    } else {
        50002
    }
}

/// `Some(first failure)` when every record failed; a partial failure is answered with
/// 200 and per-record errors, as both the REST proxy and Kinesis do.
fn all_failed<'a>(mut failures: impl Iterator<Item = Option<&'a Failure>>) -> Option<&'a Failure> {
    let first = failures.next()??;
    failures.all(|f| f.is_some()).then_some(first)
}

fn check_count(n: usize, st: &State) -> Result<(), Reject> {
    if n > st.cfg.max_records {
        return Err(reject(
            422,
            42200,
            "ValidationException",
            format!(
                "{n} records in one request, over gateway.max_records = {}",
                st.cfg.max_records
            ),
        ));
    }
    Ok(())
}

/// Runs a produce, keeping the in-flight gauge, the duration histogram and the record
/// counters.
async fn timed<T, F: std::future::Future<Output = Vec<Result<T, E>>>, E>(
    sink: &str,
    n: usize,
    f: F,
) -> Vec<Result<T, E>> {
    let m = metrics();
    m.gateway_inflight.add(n as i64);
    let started = Instant::now();
    let out = f.await;
    m.gateway_inflight.sub(n as i64);
    m.gateway_produce_duration
        .with_label_values(&[sink])
        .observe(started.elapsed().as_secs_f64());
    let acked = out.iter().filter(|r| r.is_ok()).count() as u64;
    m.gateway_records.with_label_values(&[sink, "acked"]).inc_by(acked);
    m.gateway_records
        .with_label_values(&[sink, "failed"])
        .inc_by(out.len() as u64 - acked);
    out
}

async fn stream_record(
    req: HttpRequest,
    stream: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match put_kinesis(&req, &stream, payload, &st, false).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kinesis, extra),
    };
    count("/streams/{stream}/record", resp.status());
    resp
}

async fn stream_records(
    req: HttpRequest,
    stream: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match put_kinesis(&req, &stream, payload, &st, true).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kinesis, extra),
    };
    count("/streams/{stream}/records", resp.status());
    resp
}

async fn put_kinesis(
    req: &HttpRequest,
    stream: &str,
    payload: web::Payload,
    st: &State,
    many: bool,
) -> Result<HttpResponse, Refusal> {
    let not_found = || missing("Stream", stream, "");
    let client = st.kinesis.as_ref();
    let bytes = admit(
        req,
        payload,
        st,
        Admit {
            what: "Stream",
            name: stream,
            allowed: &st.streams,
            disabled: client
                .is_none()
                .then_some("this gateway does not put to Kinesis (kinesis.enabled = false)"),
            content_types: &["application/json", "application/x-amz-json-1.1"],
        },
    )
    .await
    .map_err(|r| (r, None))?;
    let client = client.expect("admit checked the client is on");
    let parsed = if many {
        body::kinesis_records(&bytes)
    } else {
        body::kinesis_record(&bytes)
    }
    .map_err(|e| (body_error(e), None))?;
    if let Some(name) = parsed.stream_name.as_deref().filter(|n| *n != stream) {
        return Err((
            reject(
                422,
                42200,
                "ValidationException",
                format!("StreamName {name:?} differs from the stream in the path ({stream:?})"),
            ),
            None,
        ));
    }
    let records: Vec<KinesisRecord<'_>> = parsed.records;
    check_count(records.len(), st).map_err(|r| (r, None))?;
    for (i, r) in records.iter().enumerate() {
        let n = r.data.len() + r.partition_key.len();
        if n > st.cfg.max_record_bytes {
            let at = if many { format!("Records[{i}]") } else { "Data".into() };
            return Err((record_too_large(at, n, st.cfg.max_record_bytes), None));
        }
    }
    let _permit = st.budget(records.len()).map_err(|r| (r, None))?;
    let timeout = Duration::from_millis(st.cfg.produce_timeout_ms);
    let results = timed(
        "kinesis",
        records.len(),
        kinesis::put(client, stream, &records, timeout),
    )
    .await;
    if let Some(f) = all_failed(results.iter().map(|r| r.as_ref().err().map(|p| &p.failure))) {
        // Kinesis' error type leads the message (the per-record answers carry it apart).
        let code = results[0].as_ref().err().map_or("InternalFailure", |p| p.code.as_str());
        let f = Failure {
            message: format!("{code}: {}", f.message),
            ..f.clone()
        };
        let rej = all_failed_reject(&f, "Kinesis", not_found(), st.cfg.retry_after_s);
        return Err((rej, None));
    }
    let body = if many {
        let failed = results.iter().filter(|r| r.is_err()).count();
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match r {
                Ok((shard, seq)) => json!({"SequenceNumber": seq, "ShardId": shard}),
                Err(p) => json!({"ErrorCode": p.code, "ErrorMessage": p.failure.message}),
            })
            .collect();
        json!({"FailedRecordCount": failed, "Records": out})
    } else {
        let Some(Ok((shard, seq))) = results.first() else {
            unreachable!("one record, not failed")
        };
        json!({"SequenceNumber": seq, "ShardId": shard})
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.to_string()))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let api = if req.path().starts_with("/streams/") {
        Api::Kinesis
    } else {
        Api::Kafka
    };
    let resp = reject(
        404,
        404,
        "UnknownOperationException",
        format!("HTTP 404 Not Found: {} {}", req.method(), req.path()),
    )
    .respond(api, None);
    count("other", resp.status());
    resp
}

async fn render_metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics().render())
}

async fn readyz(st: web::Data<State>) -> HttpResponse {
    match &st.kafka {
        Some(k) if k.is_down() => HttpResponse::ServiceUnavailable().body("not ready: Kafka broker unreachable\n"),
        _ => HttpResponse::Ok().body("ready\n"),
    }
}

/// A running gateway; [`Gateway::stop`] stops it after the requests in progress.
pub struct Gateway {
    handle: ServerHandle,
    pub addr: SocketAddr,
    kafka: Option<KafkaSink>,
    probe: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Some(p) = self.probe {
            p.abort();
        }
        if let Some(k) = self.kafka {
            tokio::task::spawn_blocking(move || k.flush(Duration::from_secs(5)))
                .await
                .ok();
        }
    }
}

/// Starts the gateway on `cfg.gateway.listen`. Needs a running actix `System`.
pub async fn serve(cfg: &Config) -> Result<Gateway, GatewayError> {
    let gw = cfg.gateway.clone();
    let config_err = |key, message: String| GatewayError::Config { key, message };
    gw.validate().map_err(|(k, m)| config_err(k, m))?;
    let addr = gw.addr().map_err(|m| config_err("gateway.listen", m))?;
    let tokens = match gw.auth.as_str() {
        "none" => None,
        _ => {
            let t = gw.all_tokens(std::env::var(TOKENS_ENV).ok().as_deref());
            if t.is_empty() {
                return Err(config_err(
                    "gateway.tokens",
                    format!(
                        "no API keys configured: set gateway.tokens or {TOKENS_ENV}, \
                         or gateway.auth = \"none\" to turn authentication off"
                    ),
                ));
            }
            Some(t.into_iter().collect())
        }
    };
    if !cfg.kafka.enabled && !cfg.kinesis.enabled {
        return Err(config_err(
            "kafka.enabled",
            "kafka.enabled and kinesis.enabled are both false: the gateway would produce nowhere".into(),
        ));
    }
    let topics: BTreeSet<String> = if gw.topics.is_empty() {
        cfg.kafka.topic_map().into_keys().collect()
    } else {
        gw.topics.iter().cloned().collect()
    };
    let streams: BTreeSet<String> = if gw.streams.is_empty() {
        cfg.kinesis.stream_map().into_keys().collect()
    } else {
        gw.streams.iter().cloned().collect()
    };
    let kafka = if cfg.kafka.enabled {
        Some(KafkaSink::new(&cfg.kafka, &gw)?)
    } else {
        None
    };
    let kinesis = if cfg.kinesis.enabled {
        Some(crate::sources::kinesis::client(&cfg.kinesis).await)
    } else {
        None
    };
    let probe = kafka
        .clone()
        .map(|k| actix_rt::spawn(k.probe(Duration::from_secs(gw.retry_after_s))));
    let workers = gw.workers;
    let state = web::Data::new(State {
        inflight: Arc::new(Semaphore::new(gw.max_inflight_records)),
        cfg: gw,
        tokens,
        topics,
        streams,
        kafka: kafka.clone(),
        kinesis,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/topics/{topic}", web::post().to(topic_route))
            .route("/streams/{stream}/record", web::put().to(stream_record))
            .route("/streams/{stream}/records", web::put().to(stream_records))
            .route("/metrics", web::get().to(render_metrics))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok\n") }))
            .route("/readyz", web::get().to(readyz))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    // SIGTERM is handled by `run`: stop accepting, finish the requests in progress.
    .disable_signals()
    .shutdown_timeout(30)
    .bind(addr)
    .map_err(|source| GatewayError::Bind { addr, source })?;
    let addr = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%addr, "gateway listening");
    Ok(Gateway {
        handle,
        addr,
        kafka,
        probe,
    })
}

/// `pinpipe gateway`: serves until SIGINT/SIGTERM.
pub async fn run(cfg: &Config) -> Result<(), GatewayError> {
    let gw = serve(cfg).await?;
    eprintln!("gateway: listening on http://{}", gw.addr);
    crate::shutdown::signal().await;
    eprintln!("gateway: stopping (finishing requests in progress)");
    gw.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(retriable: bool) -> Failure {
        Failure {
            retriable,
            unknown_topic: false,
            message: "x".into(),
        }
    }

    #[test]
    fn all_failed_only_when_every_record_failed() {
        let f = fail(true);
        assert!(all_failed([Some(&f), Some(&f)].into_iter()).is_some());
        assert!(all_failed([Some(&f), None].into_iter()).is_none());
        assert!(all_failed([None, Some(&f)].into_iter()).is_none());
        assert!(all_failed(std::iter::empty()).is_none());
        assert_eq!(failure_code(&fail(true)), 50003);
        assert_eq!(failure_code(&fail(false)), 50002);
    }
}
