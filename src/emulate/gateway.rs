//! The emulator's gateway target: each record posted as its own HTTP request, in exactly
//! the seed's shapes.
//!
//! - `--api kafka`: `POST <url>/topics/<topic>`, `Content-Type:
//!   application/vnd.kafka.json.v2+json`, body `{"records":[{"value":<record>}]}`.
//! - `--api kinesis`: `PUT <url>/streams/<stream>/record`, `Content-Type:
//!   application/json`, body `{"StreamName":..,"Data":<record>,"PartitionKey":..}` (the
//!   post's `ind`, so posts spread over the shards).
//!
//! A 503 or a connection error is retried after `Retry-After` (or a backoff). A 400/422 is
//! the gateway refusing a record the emulator broke on purpose (a truncated object cannot
//! travel inside a JSON envelope): counted and reported, not retried. Any other answer
//! (401, 404, 413, 415, 5xx) is a setup problem and stops the run.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use super::{EmulateConfig, Generator};
use crate::clean::Kind;

/// Attempts of one request before the run stops.
const MAX_ATTEMPTS: u32 = 30;

/// Which of the gateway's APIs to post to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatewayApi {
    Kafka,
    Kinesis,
}

/// What a gateway run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySummary {
    pub acked: u64,
    /// Records the gateway refused with 400/422 (broken on purpose by the emulator).
    pub refused: u64,
    /// Requests answered 503 or failed to connect, then retried.
    pub retries: u64,
}

/// Errors posting to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayPostError {
    #[error(transparent)]
    Generator(#[from] super::EmulateError),
    #[error("--url {0:?}: not an http:// or https:// URL")]
    Url(String),
    #[error("http client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{target}: HTTP {status}: {body}")]
    Refused { target: String, status: u16, body: String },
    #[error("{target}: still failing after {MAX_ATTEMPTS} attempts: {last}")]
    GaveUp { target: String, last: String },
}

/// Where and how to post.
#[derive(Debug, Clone)]
pub struct GatewayTarget {
    pub url: String,
    pub api: GatewayApi,
    pub token: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Topic (kafka) or stream (kinesis) per kind.
    pub names: [(Kind, String); 3],
}

/// One request: where, and the body.
struct Request {
    target: String,
    body: Vec<u8>,
}

/// Posts `count` posts (at `rate` posts/s if given).
pub async fn post(
    cfg: &EmulateConfig,
    target: &GatewayTarget,
    count: u64,
    rate: Option<f64>,
    progress: bool,
) -> Result<GatewaySummary, GatewayPostError> {
    let base = target.url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(GatewayPostError::Url(target.url.clone()));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(GatewayPostError::Client)?;
    let mut gen = Generator::from_config(cfg)?;
    let bar = super::posts_bar(count, progress);
    let started = Instant::now();
    let names = target.names.clone();
    let api = target.api;
    let requests = futures::stream::iter(0..count)
        .then(move |n| {
            let post = gen.next_post();
            async move {
                if let Some(r) = rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / r)).into()).await;
                }
                post
            }
        })
        .flat_map(move |post| {
            let reqs: Vec<Request> = names
                .iter()
                .map(|(kind, name)| request(api, &base, name, post.ind, post.record(*kind)))
                .collect();
            futures::stream::iter(reqs)
        });
    let mut sends = std::pin::pin!(requests
        .map(|r| send(&client, target, r))
        .buffer_unordered(target.concurrency.max(1)));
    let mut sum = GatewaySummary::default();
    let mut done = 0u64;
    while let Some(r) = sends.next().await {
        let (acked, retries) = r?;
        sum.retries += retries;
        if acked {
            sum.acked += 1;
        } else {
            sum.refused += 1;
        }
        done += 1;
        if done.is_multiple_of(3) {
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(sum)
}

fn request(api: GatewayApi, base: &str, name: &str, ind: i64, record: &[u8]) -> Request {
    let mut body = Vec::with_capacity(record.len() + 96);
    match api {
        GatewayApi::Kafka => {
            body.extend_from_slice(b"{\"records\":[{\"value\":");
            body.extend_from_slice(record);
            body.extend_from_slice(b"}]}");
            Request {
                target: format!("{base}/topics/{name}"),
                body,
            }
        }
        GatewayApi::Kinesis => {
            body.extend_from_slice(b"{\"StreamName\":");
            body.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
            body.extend_from_slice(b",\"Data\":");
            body.extend_from_slice(record);
            body.extend_from_slice(format!(",\"PartitionKey\":\"{ind}\"}}").as_bytes());
            Request {
                target: format!("{base}/streams/{name}/record"),
                body,
            }
        }
    }
}

/// Sends one request until it is answered for good: `(acknowledged, retries)`.
async fn send(client: &reqwest::Client, t: &GatewayTarget, r: Request) -> Result<(bool, u64), GatewayPostError> {
    let mut last = String::new();
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    for attempt in 0..MAX_ATTEMPTS {
        let wait = match http_request(client, t, &r)?.send().await {
            Ok(resp) => match answer(&r, resp).await? {
                Answer::Final { acked } => return Ok((acked, u64::from(attempt))),
                Answer::Retry { wait, why } => {
                    last = why;
                    wait
                }
            },
            Err(e) => {
                last = e.to_string();
                backoff.next_pause()
            }
        };
        tokio::time::sleep(wait).await;
    }
    Err(GatewayPostError::GaveUp { target: r.target, last })
}

/// The HTTP request of `r`, in the shape of `t.api`.
fn http_request(
    client: &reqwest::Client,
    t: &GatewayTarget,
    r: &Request,
) -> Result<reqwest::RequestBuilder, GatewayPostError> {
    let (req, content_type) = match t.api {
        GatewayApi::Kafka => (client.post(&r.target), "application/vnd.kafka.json.v2+json"),
        GatewayApi::Kinesis => (client.put(&r.target), "application/json"),
    };
    let mut req = req.header(CONTENT_TYPE, content_type).body(r.body.clone());
    if let Some(tok) = &t.token {
        let v = HeaderValue::from_str(&format!("Bearer {tok}"))
            .map_err(|_| GatewayPostError::Url("the token has characters not allowed in a header".into()))?;
        req = req.header(AUTHORIZATION, v);
    }
    Ok(req)
}

/// What the gateway's answer means for the record.
enum Answer {
    /// Answered for good: acknowledged, or refused as malformed (`acked: false`).
    Final { acked: bool },
    /// Busy (503): try again after `wait`.
    Retry { wait: Duration, why: String },
}

/// Reads an answer: 2xx acknowledged, 400/422 a record broken on purpose, 503 busy; any
/// other status is a setup problem that stops the run.
async fn answer(r: &Request, resp: reqwest::Response) -> Result<Answer, GatewayPostError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = resp.text().await.unwrap_or_default();
    match status {
        200..=299 => Ok(Answer::Final { acked: true }),
        400 | 422 => {
            tracing::debug!(target = %r.target, status, %body, "gateway refused a record");
            Ok(Answer::Final { acked: false })
        }
        // The gateway says when to come back; capped so a bad header cannot stall the run.
        503 => Ok(Answer::Retry {
            wait: Duration::from_secs(retry_after.unwrap_or(1).min(30)),
            why: format!("HTTP 503: {body}"),
        }),
        _ => Err(GatewayPostError::Refused {
            target: r.target.clone(),
            status,
            body,
        }),
    }
}
