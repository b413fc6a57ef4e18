//! pinpipe: cleans Pinterest-style pin/geo/user events into Delta Lake tables.
//!
//! Layout follows the data flow:
//! - [`clean`]: per-record cleaning into typed Arrow rows or dead-letter reasons.
//! - [`sink`]: Delta tables, the per-table writer actor and same-commit checkpoints.
//! - [`sources`]: where records come from (Kafka, Kinesis, batch files) and the one
//!   routing rule they share.
//! - [`run`] and [`demo`]: `pinpipe run` (the sources driving the writers) and the
//!   embedded demo; [`gateway`]: the ingest HTTP API; [`emulate`]: the post generator.
//! - [`report`] and [`maintain`]: the analytics questions (DataFusion SQL) and table upkeep;
//!   [`replay`]: the clean tables rebuilt from the raw tables;
//!   [`status`]: one screen of tables, positions, lag, leases and dead letters.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` routes.
//! - [`config`]: the configuration file and overrides, gathering each component's section;
//!   [`logging`]: the `[log]` section and the logger (text or JSON lines).
//! - At the bottom: [`shutdown`] (one stop for every loop), [`backoff`] (one retry pause),
//!   [`actors`] (the actix state helper), [`validate`] (the config error).
// Error enums carry the table and source key they concern; they are on the cold path, so
// their size is not worth boxing every variant.
#![allow(clippy::result_large_err)]

pub mod actors;
pub mod backoff;
pub mod clean;
pub mod config;
pub mod demo;
pub mod emulate;
pub mod gateway;
pub mod logging;
pub mod maintain;
pub mod memory;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod run;
pub mod shutdown;
pub mod sink;
pub mod sources;
pub mod status;
pub mod validate;

/// Runs `fut` inside an actix `System` backed by a multi-threaded tokio runtime: writer
/// actors get their own arbiter threads, cleaning and I/O use the runtime's workers.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
    .block_on(fut)
}

/// Runs `fut` on a plain multi-threaded tokio runtime, for commands without actors
/// (`report`, `maintain`): delta-rs' log replay and conflict checks use
/// `block_in_place`, which a task inside actix's `System` (a `LocalSet`) may not call.
pub fn block_on_tokio<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fut)
}
