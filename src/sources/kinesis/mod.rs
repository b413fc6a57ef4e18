//! Kinesis source: leased shards, each read by a [`ShardActor`](shard::ShardActor).
//!
//! - [`config`]: the `[kinesis]` section.
//! - [`client`]: the Kinesis client and how its errors are read.
//! - [`coordinator`]: lists the shards, takes, renews, balances and releases leases, and
//!   starts or stops one shard actor per owned shard. Children start only after their
//!   parents are finished.
//! - [`lease`]: the lease objects in the tables' object store (no DynamoDB).
//! - [`balance`]: the pure rules deciding which leases to take or ask for.
//! - [`shard`]: the shard actor (GetRecords or SubscribeToShard steps, limits, backoff,
//!   hand-over).
//! - [`fanout`]: enhanced fan-out's stream consumer.
//!
//! Positions are sequence numbers stored in the Delta commits (see `sink::checkpoint`);
//! the leases say who reads, the tables say how far.

pub mod balance;
mod client;
pub mod config;
mod coordinator;
mod fanout;
pub mod lease;
pub mod shard;

pub use client::{client, put_retriable};
pub use config::KinesisConfig;
pub use coordinator::run;

use crate::shutdown::GraceExceeded;
use crate::sink::WriterError;

/// The `source` label of this source's metrics and lineage.
const SOURCE: &str = "kinesis";

/// Errors of the Kinesis source.
#[derive(Debug, thiserror::Error)]
pub enum KinesisSourceError {
    #[error("kinesis stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    GraceExceeded(#[from] GraceExceeded),
}
