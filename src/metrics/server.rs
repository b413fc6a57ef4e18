//! The HTTP endpoints Prometheus and Kubernetes call: `/metrics`, `/healthz`, `/readyz`.
//!
//! An actix-web server with one worker inside the process's actix `System`; it never
//! touches the pipeline's actors, it only reads the registry and the [`Health`] flags, so
//! a busy or stuck pipeline still answers (liveness must not depend on the work).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use super::metrics;

/// `[metrics]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz` (host:port); empty: no server.
    /// Loopback by default; a pod sets `0.0.0.0:9898` so Prometheus and the kubelet reach it.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".into(),
        }
    }
}

impl MetricsConfig {
    /// The address to bind, `None` when the server is off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        let l = self.listen.trim();
        if l.is_empty() {
            return Ok(None);
        }
        l.parse()
            .map(Some)
            .map_err(|e| format!("{l:?} is not host:port with an IP host ({e}); empty turns the server off"))
    }
}

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics.listen: {0}")]
    Config(String),
}

/// What `/readyz` reports: ready once the tables are open and the group assigned this
/// process its partitions (possibly none), until shutdown starts, and while nothing it
/// watches (the table writers: a stalled table) says otherwise.
#[derive(Default)]
pub struct Health {
    tables_open: AtomicBool,
    assigned: AtomicBool,
    stopping: AtomicBool,
    watched: Mutex<Vec<Arc<dyn Readiness>>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_tables_open(&self) {
        self.tables_open.store(true, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_assigned(&self) {
        self.assigned.store(true, Ordering::Relaxed);
        self.publish();
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Adds what `r` says to the reasons for not being ready.
    pub fn watch(&self, r: Arc<dyn Readiness>) {
        self.watched.lock().expect("lock").push(r);
    }

    /// Why the process is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.tables_open.load(Ordering::Relaxed) {
            why.push("tables not open yet");
        }
        if !self.assigned.load(Ordering::Relaxed) {
            why.push("no partition assignment received yet");
        }
        if self.stopping.load(Ordering::Relaxed) {
            why.push("shutting down");
        }
        why
    }

    fn publish(&self) {
        metrics().ready.set(i64::from(self.not_ready().is_empty()));
    }
}

/// A running server; [`MetricsServer::stop`] closes it.
pub struct MetricsServer {
    handle: ServerHandle,
    pub addr: SocketAddr,
}

impl MetricsServer {
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Whatever can say why its process is not ready: a run's [`Health`], the gateway's
/// broker state.
pub trait Readiness: Send + Sync + 'static {
    /// Why the process is not ready; empty when it is.
    fn not_ready(&self) -> Vec<String>;
}

impl Readiness for Health {
    fn not_ready(&self) -> Vec<String> {
        let mut why: Vec<String> = Health::not_ready(self).into_iter().map(str::to_string).collect();
        for r in self.watched.lock().expect("lock").iter() {
            why.extend(r.not_ready());
        }
        why
    }
}

async fn render(ready: web::Data<Arc<dyn Readiness>>) -> HttpResponse {
    // Readiness can change without an event (a table stalls): the series follows /readyz
    // as of this scrape.
    metrics().ready.set(i64::from(ready.not_ready().is_empty()));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics().render())
}

async fn readyz(ready: web::Data<Arc<dyn Readiness>>) -> HttpResponse {
    let why = ready.not_ready();
    if why.is_empty() {
        HttpResponse::Ok().body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().body(format!("not ready: {}\n", why.join("; ")))
    }
}

/// `/metrics`, `/healthz` and `/readyz` (answered from `ready`), without authentication:
/// mounted by the metrics server of `pinpipe run` and by the gateway.
pub fn health_routes(ready: Arc<dyn Readiness>) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let data = web::Data::new(ready);
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(data.clone())
            .route("/metrics", web::get().to(render))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok\n") }))
            .route("/readyz", web::get().to(readyz));
    }
}

/// Starts the server when `cfg` enables it. Needs a running actix `System`.
pub fn serve(cfg: &MetricsConfig, health: Arc<Health>) -> Result<Option<MetricsServer>, MetricsError> {
    let Some(addr) = cfg.addr().map_err(MetricsError::Config)? else {
        return Ok(None);
    };
    health.publish();
    let routes = health_routes(health);
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        // One worker is plenty for a scrape every few seconds; the pipeline owns the cores.
        .workers(1)
        // pinpipe handles SIGTERM itself (drain, commit); the server stops when told to.
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let addr = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%addr, "metrics server listening");
    Ok(Some(MetricsServer { handle, addr }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_or_names_the_problem() {
        let mut c = MetricsConfig::default();
        assert_eq!(c.addr().unwrap().unwrap().port(), 9898);
        c.listen = " ".into();
        assert_eq!(c.addr().unwrap(), None);
        c.listen = "localhost:x".into();
        assert!(c.addr().unwrap_err().contains("host:port"));
    }

    #[test]
    fn readiness_needs_tables_and_assignment_and_ends_at_shutdown() {
        let h = Health::default();
        assert_eq!(h.not_ready().len(), 2);
        h.set_tables_open();
        h.set_assigned();
        assert!(h.not_ready().is_empty());
        h.set_stopping();
        assert_eq!(h.not_ready(), vec!["shutting down"]);
    }

    struct Stalled;
    impl Readiness for Stalled {
        fn not_ready(&self) -> Vec<String> {
            vec!["table pin: commits stopped".into()]
        }
    }

    #[test]
    fn readiness_includes_what_it_watches() {
        let h = Health::default();
        h.set_tables_open();
        h.set_assigned();
        assert!(Readiness::not_ready(&h).is_empty());
        h.watch(Arc::new(Stalled));
        assert_eq!(Readiness::not_ready(&h), ["table pin: commits stopped"]);
    }
}
