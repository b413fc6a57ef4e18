//! Record sources. Each source partition (Kafka partition, Kinesis shard, batch object)
//! resumes from the positions stored in the tables and hands cleaned rows to the writers.
pub mod batch;
pub mod kafka;
pub mod kinesis;
pub mod msk_iam;
