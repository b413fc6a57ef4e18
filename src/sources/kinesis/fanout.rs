//! Enhanced fan-out: the stream consumer every process of an application subscribes
//! through.
//!
//! With `kinesis.enhanced_fan_out`, the coordinator registers (or finds) one consumer per
//! stream before any shard is read, and each shard actor reads its shard with
//! SubscribeToShard through it instead of polling GetRecords. The leases are unchanged:
//! they keep one reader per shard, so one consumer per application is enough (and the
//! stream's limit of 20 consumers counts applications, not processes).
//!
//! The consumer is left registered when pinpipe stops: a restart or another process of
//! the application uses it again, and only an operator knows when the application is gone.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ConsumerStatus;
use aws_sdk_kinesis::Client;

use super::KinesisSourceError;

/// How long a new consumer may take to become ACTIVE (AWS: seconds).
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// The ARN of `stream`'s consumer `name`, registered if it is not yet, once it is ACTIVE.
pub(super) async fn consumer(client: &Client, stream: &str, name: &str) -> Result<String, KinesisSourceError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| KinesisSourceError::Stream {
        stream: stream.to_string(),
        message: format!("enhanced fan-out: {what}: {e}"),
    };
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| fail("DescribeStreamSummary", &aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|d| d.stream_arn().to_string())
        .ok_or_else(|| fail("DescribeStreamSummary", &"no stream description in the answer"))?;
    match client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => {
            if let Some(c) = out.consumer() {
                tracing::info!(
                    stream,
                    consumer = name,
                    arn = c.consumer_arn(),
                    "stream consumer registered"
                );
            }
        }
        // Registered by an earlier run or another process of the application.
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => {
            return Err(fail(
                "RegisterStreamConsumer",
                &aws_sdk_kinesis::error::DisplayErrorContext(e),
            ))
        }
    }
    let deadline = Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| {
                fail(
                    "DescribeStreamConsumer",
                    &aws_sdk_kinesis::error::DisplayErrorContext(e),
                )
            })?;
        let Some(d) = described.consumer_description() else {
            return Err(fail("DescribeStreamConsumer", &"no consumer description in the answer"));
        };
        match d.consumer_status() {
            ConsumerStatus::Active => return Ok(d.consumer_arn().to_string()),
            ConsumerStatus::Deleting => {
                return Err(fail(
                    "consumer",
                    &format!("{name:?} is being deregistered; start again once it is gone"),
                ))
            }
            status if Instant::now() > deadline => {
                return Err(fail(
                    "consumer",
                    &format!("{name:?} still {status:?} after {ACTIVE_WITHIN:?}"),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
