//! The gateway's metrics, recorded here only: requests by route pattern and status (a
//! bounded label set: patterns, never paths), and per produce the in-flight gauge, the
//! duration and the records acknowledged or failed.

use std::future::Future;
use std::time::Instant;

use actix_web::http::StatusCode;

use crate::metrics::metrics;

/// Which broker a produce went to: the `sink` label.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sink {
    Kafka,
    Kinesis,
}

impl Sink {
    fn label(self) -> &'static str {
        match self {
            Sink::Kafka => "kafka",
            Sink::Kinesis => "kinesis",
        }
    }
}

/// Counts one answered request; `route` is the route's pattern (`/topics/{topic}`) or
/// `other`.
pub(super) fn count(route: &str, status: StatusCode) {
    metrics()
        .gateway_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
}

/// Runs a produce of `n` records, keeping the in-flight gauge, the duration histogram
/// and the record counters.
pub(super) async fn timed<T, E, F>(sink: Sink, n: usize, produce: F) -> Vec<Result<T, E>>
where
    F: Future<Output = Vec<Result<T, E>>>,
{
    let m = metrics();
    let sink = sink.label();
    m.gateway_inflight.add(n as i64);
    let started = Instant::now();
    let out = produce.await;
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
