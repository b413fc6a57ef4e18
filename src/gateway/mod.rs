//! `pinpipe gateway`: the seed's API Gateway and Kafka REST proxy as one pinpipe service.
//!
//! - `POST /topics/{topic}`: Kafka REST proxy v2, json embedded format; answers
//!   `{"offsets":[{"partition":p,"offset":o,...}]}` or `{"error_code":..,"message":..}`.
//! - `PUT /streams/{stream}/record` and `/records`: the Kinesis-style bodies of the record
//!   contract; answers with shard ids and sequence numbers, or `{"__type":..,"message":..}`.
//! - `POST /` with `X-Amz-Target: Kinesis_20131202.PutRecord|PutRecords|...`: the Kinesis
//!   JSON API, for unmodified AWS SDKs, signed with Signature Version 4 ([`kinesis_api`]).
//! - `/metrics`, `/healthz`, `/readyz` on the same listener, without authentication.
//!
//! Records are not cleaned here: the bytes of each `value` / `Data` go to the broker as
//! sent ([`body`]). A request is answered only after the broker acknowledged its records
//! ([`kafka`], [`kinesis`]); an unreachable broker or a full in-flight budget gives a 503
//! with `Retry-After` instead of queueing without bound.
//!
//! A request's way through the files:
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | `[gateway]`: [`GatewayConfig`] and its validation |
//! | `server.rs` | start ([`serve`], [`run`]), the route table, the health routes, stop |
//! | `admission.rs` | the state every worker shares; authentication, allow-lists, content type, body size |
//! | `topics.rs`, `streams.rs` | the produce routes: parse, check the limits, produce, answer |
//! | `kinesis_api.rs`, `sigv4.rs` | the Kinesis JSON API route and its AWS Signature Version 4 check |
//! | `body.rs` | request bodies, parsed without re-encoding the records |
//! | `kafka.rs`, `kinesis.rs` | producing: the idempotent producer, PutRecords with retries |
//! | `refusal.rs` | every refusal, in the Kafka REST proxy's and Kinesis' error shapes |
//! | `meter.rs` | the gateway's metrics |

mod admission;
pub mod body;
mod config;
pub mod kafka;
pub mod kinesis;
mod kinesis_api;
mod meter;
mod refusal;
mod server;
pub mod sigv4;
mod streams;
mod topics;

use std::net::SocketAddr;

pub use self::config::{GatewayConfig, TOKENS_ENV};
pub use server::{run, serve, Gateway};

/// Errors starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("config key {key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("gateway.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("gateway server: {0}")]
    Server(#[source] std::io::Error),
}
