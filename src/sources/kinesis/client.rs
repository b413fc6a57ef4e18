//! The Kinesis API client of the source and the emulator, and how its errors are read.

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

use super::KinesisConfig;
use crate::metrics::SourceMetrics;

/// A Kinesis client for `cfg`: its endpoint, region and credentials, else the standard AWS
/// chain. SDK retries are off: the shard actors back off themselves and count throttles.
pub async fn client(cfg: &KinesisConfig) -> aws_sdk_kinesis::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !cfg.region.is_empty() {
        loader = loader.region(aws_config::Region::new(cfg.region.clone()));
    }
    if !cfg.access_key_id.is_empty() {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            None,
            None,
            "pinpipe-config",
        ));
    }
    if !cfg.endpoint.is_empty() {
        loader = loader.endpoint_url(cfg.endpoint.clone());
    }
    let sdk = loader.load().await;
    let conf = aws_sdk_kinesis::config::Builder::from(&sdk)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Whether a PutRecords failure (a call's error code, or an entry's `ErrorCode`) is worth
/// putting again: throughput, throttling, the service's own trouble, or no connection.
pub fn put_retriable(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ThrottlingException"
            | "KMSThrottlingException"
            | "Dispatch"
            | "Timeout"
    )
}

/// Whether an error code means the server refused for throughput.
pub(super) fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
    )
}

/// What a failed read call means for the shard's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// Throttled or a transient failure (its code): back off and retry.
    Retry(String),
    /// The iterator expired: get a new one.
    Expired,
    /// The shard or stream is gone, or access is denied: stop.
    Fatal(String),
}

/// Reads (and counts, by code) a failed call.
pub(super) fn classify<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    metrics: &SourceMetrics,
) -> CallError {
    let status = match e {
        SdkError::ServiceError(s) => s.raw().status().as_u16(),
        _ => 0,
    };
    decide(e, status, metrics)
}

/// Reads (and counts, by code) a failure of a SubscribeToShard subscription's event
/// stream: the same rule, but an event carries no HTTP status of its own.
pub(super) fn classify_event<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, metrics: &SourceMetrics) -> CallError {
    decide(e, 0, metrics)
}

/// The rule: the shard or stream gone, access denied or another client error (`status`
/// 4xx, not a throttle) stops the reader; anything else is retried after a backoff.
fn decide<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, status: u16, metrics: &SourceMetrics) -> CallError {
    let code = e.code().unwrap_or("").to_string();
    let label = if code.is_empty() {
        match e {
            SdkError::TimeoutError(_) => "Timeout".to_string(),
            SdkError::DispatchFailure(_) => "Dispatch".to_string(),
            SdkError::ResponseError(_) => "Response".to_string(),
            _ => "Other".to_string(),
        }
    } else {
        code.clone()
    };
    metrics.error(&label);
    match code.as_str() {
        "ExpiredIteratorException" => CallError::Expired,
        // SubscribeToShard within 5 s of the shard's previous subscription (a resubscribe,
        // or a new owner right after a hand-over), or a consumer not ACTIVE yet: try again.
        "ResourceInUseException" => CallError::Retry(label),
        "ResourceNotFoundException" | "AccessDeniedException" | "InvalidArgumentException" => {
            CallError::Fatal(format!("{label}: {}", e.message().unwrap_or("")))
        }
        _ if status != 0 && status < 500 && !is_throttle(&code) => {
            CallError::Fatal(format!("{label} (HTTP {status}): {}", e.message().unwrap_or("")))
        }
        _ => CallError::Retry(label),
    }
}
