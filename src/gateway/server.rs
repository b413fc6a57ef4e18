//! Starting and stopping the gateway: the shared [`State`] built from the config sections
//! it uses, the route table, and a graceful stop that finishes the requests in progress
//! and flushes the producer.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::Semaphore;

use super::admission::State;
use super::kafka::KafkaSink;
use super::kinesis_api::kinesis_api;
use super::meter::count;
use super::refusal::{reject, Api};
use super::streams::{stream_record, stream_records};
use super::topics::topic_route;
use super::{GatewayConfig, GatewayError, TOKENS_ENV};
use crate::metrics::{health_routes, Readiness};
use crate::sources::kafka::KafkaConfig;
use crate::sources::kinesis::KinesisConfig;

/// A running gateway; [`Gateway::stop`] stops it after the requests in progress.
pub struct Gateway {
    handle: ServerHandle,
    /// The bound address (the real port when `gateway.listen` asked for port 0).
    pub addr: SocketAddr,
    /// Kept to flush what it still holds when stopping.
    kafka: Option<KafkaSink>,
    /// The broker probe, which runs until aborted.
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

/// Starts the gateway on `gw.listen`, producing to Kafka and/or Kinesis as their
/// sections enable. Needs a running actix `System`.
pub async fn serve(gw: &GatewayConfig, kafka: &KafkaConfig, kinesis: &KinesisConfig) -> Result<Gateway, GatewayError> {
    gw.validate().map_err(|(k, m)| config_err(k, m))?;
    let addr = gw.addr().map_err(|m| config_err("gateway.listen", m))?;
    let state = state(gw, kafka, kinesis).await?;
    let kafka = state.kafka.clone();
    let probe = kafka
        .clone()
        .map(|k| actix_rt::spawn(k.probe(Duration::from_secs(gw.retry_after_s))));
    let health = health_routes(Arc::new(BrokerReady(kafka.clone())));
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        let health = health.clone();
        App::new()
            .app_data(state.clone())
            .configure(move |app| routes(app, health))
    })
    .workers(gw.workers)
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

/// `pinpipe gateway`: serves until `stop` resolves (the CLI passes SIGINT/SIGTERM), then
/// finishes the requests in progress.
pub async fn run(
    gw: &GatewayConfig,
    kafka: &KafkaConfig,
    kinesis: &KinesisConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = serve(gw, kafka, kinesis).await?;
    eprintln!("gateway: listening on http://{}", gateway.addr);
    stop.await;
    eprintln!("gateway: stopping (finishing requests in progress)");
    gateway.stop().await;
    Ok(())
}

fn config_err(key: &'static str, message: String) -> GatewayError {
    GatewayError::Config { key, message }
}

/// What every worker shares: tokens, allow-lists, the producer and the Kinesis client.
async fn state(gw: &GatewayConfig, kafka: &KafkaConfig, kinesis: &KinesisConfig) -> Result<State, GatewayError> {
    let tokens = tokens(gw)?;
    // Empty allow-lists mean the names the consumers read.
    let topics: BTreeSet<String> = if gw.topics.is_empty() {
        kafka.topic_map().into_keys().collect()
    } else {
        gw.topics.iter().cloned().collect()
    };
    let streams: BTreeSet<String> = if gw.streams.is_empty() {
        kinesis.stream_map().into_keys().collect()
    } else {
        gw.streams.iter().cloned().collect()
    };
    let sink = if gw.produces_to("kafka") {
        Some(KafkaSink::new(kafka, gw)?)
    } else {
        None
    };
    let client = if gw.produces_to("kinesis") {
        Some(crate::sources::kinesis::client(kinesis).await)
    } else {
        None
    };
    Ok(State {
        inflight: Arc::new(Semaphore::new(gw.max_inflight_records)),
        cfg: gw.clone(),
        tokens,
        topics,
        streams,
        kafka: sink,
        kinesis: client,
    })
}

/// The accepted tokens, `None` when authentication is off; refusing to start with
/// authentication on and no token, which would refuse every request.
fn tokens(gw: &GatewayConfig) -> Result<Option<Vec<String>>, GatewayError> {
    if gw.auth == "none" {
        return Ok(None);
    }
    let t = gw.all_tokens(std::env::var(TOKENS_ENV).ok().as_deref());
    // A gateway for AWS SDK clients only (signed requests on `POST /`) needs no token:
    // the token routes then refuse every request.
    if t.is_empty() && gw.aws_keys.is_empty() {
        return Err(config_err(
            "gateway.tokens",
            format!(
                "no API keys configured: set gateway.tokens or {TOKENS_ENV} (or gateway.aws_keys \
                 for the Kinesis API route), or gateway.auth = \"none\" to turn authentication off"
            ),
        ));
    }
    Ok(Some(t.into_iter().collect()))
}

/// The route table: the produce routes (`POST /` is the Kinesis JSON API), the shared health routes (`/metrics`, `/healthz`,
/// `/readyz`, without authentication), and a 404 in the API's shape.
fn routes(app: &mut web::ServiceConfig, health: impl Fn(&mut web::ServiceConfig)) {
    app.route("/", web::post().to(kinesis_api))
        .route("/topics/{topic}", web::post().to(topic_route))
        .route("/streams/{stream}/record", web::put().to(stream_record))
        .route("/streams/{stream}/records", web::put().to(stream_records))
        .configure(health)
        .default_service(web::to(not_found));
}

/// The gateway's readiness: not ready while the Kafka broker is known to be down (requests
/// would only get 503s).
struct BrokerReady(Option<KafkaSink>);

impl Readiness for BrokerReady {
    fn not_ready(&self) -> Vec<String> {
        match &self.0 {
            Some(k) if k.is_down() => vec!["Kafka broker unreachable".to_string()],
            _ => Vec::new(),
        }
    }
}

/// Any other path or method: a 404 in the error shape of the API the path looks like.
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
