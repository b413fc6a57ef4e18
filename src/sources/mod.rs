//! Record sources. Each source partition (a Kafka partition, a Kinesis shard, a batch
//! object) resumes from the positions stored in its tables and hands routed rows to the
//! writers through the one routing rule in [`partition`].
pub mod batch;
pub mod kafka;
pub mod kinesis;
pub mod kpl;
pub mod partition;

use std::sync::Arc;

pub use partition::RunStats;

use crate::metrics::Health;
use crate::shutdown::Shutdown;
use crate::sink::Writers;

/// What a streaming source (Kafka, Kinesis) gets from the run.
#[derive(Clone)]
pub struct SourceRun {
    pub writers: Arc<Writers>,
    pub stats: Arc<RunStats>,
    /// Readiness: the source says when it has its partitions and when it stops.
    pub health: Arc<Health>,
    pub shutdown: Shutdown,
    pub max_record_bytes: usize,
}
