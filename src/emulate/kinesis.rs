//! The emulator's Kinesis target: posts put to `streaming-<prefix>-pin|geo|user` with
//! PutRecords, partition key = the post's `ind` (spread over the shards by its MD5 hash).
//!
//! Batches hold at most 500 entries and 5 MiB (the PutRecords limits). Entries a batch
//! reports as failed (`ProvisionedThroughputExceededException`, `InternalFailure`) are put
//! again after a jittered backoff, up to `MAX_ATTEMPTS` times; nothing is counted as
//! produced before Kinesis accepted it. A retried entry can land after later entries of the
//! same key: Kinesis orders by arrival, and the cleaning is per record, so nothing breaks.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use super::{EmulateConfig, Generator};
use crate::clean::Kind;
use crate::sources::kinesis::KinesisConfig;

const MAX_ENTRIES: usize = 500;
const MAX_BATCH_BYTES: usize = 5 << 20;
const MAX_ATTEMPTS: u32 = 12;

/// Errors putting emulator records.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    Generator(#[from] super::EmulateError),
    #[error("no stream maps to kind {0} in [kinesis.streams]")]
    NoStream(Kind),
    #[error("PutRecords to {stream}: {message}")]
    Put { stream: String, message: String },
    #[error("PutRecords to {stream}: {failed} entries still failing after {MAX_ATTEMPTS} attempts (last: {code})")]
    GaveUp {
        stream: String,
        failed: usize,
        code: String,
    },
}

/// One stream's pending batch.
struct Batch {
    stream: String,
    entries: Vec<PutRecordsRequestEntry>,
    bytes: usize,
}

/// Puts `count` posts (at `rate` posts/s if given); returns the records put.
pub async fn put(
    cfg: &EmulateConfig,
    kinesis: &KinesisConfig,
    count: u64,
    rate: Option<f64>,
    progress: bool,
) -> Result<u64, PutError> {
    let client = crate::sources::kinesis::client(kinesis).await;
    let mut gen = Generator::from_config(cfg)?;
    let map = kinesis.stream_map();
    let mut batches: Vec<(Kind, Batch)> = Kind::ALL
        .iter()
        .map(|k| {
            let stream = map.iter().find(|(_, v)| *v == k).map(|(s, _)| s.clone());
            stream
                .map(|stream| {
                    (
                        *k,
                        Batch {
                            stream,
                            entries: Vec::new(),
                            bytes: 0,
                        },
                    )
                })
                .ok_or(PutError::NoStream(*k))
        })
        .collect::<Result<_, _>>()?;
    let bar = super::posts_bar(count, progress);
    let started = Instant::now();
    let mut put = 0u64;
    for n in 0..count {
        if let Some(r) = rate {
            let at = started + Duration::from_secs_f64(n as f64 / r);
            if at > Instant::now() {
                // Do not sit on a partial batch while pacing.
                for (_, b) in &mut batches {
                    put += send(&client, b).await?;
                }
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let post = gen.next_post();
        let key = post.ind.to_string();
        for (kind, b) in &mut batches {
            let data = post.record(*kind);
            if b.entries.len() == MAX_ENTRIES || b.bytes + data.len() + key.len() > MAX_BATCH_BYTES {
                put += send(&client, b).await?;
            }
            b.bytes += data.len() + key.len();
            b.entries.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data.to_vec()))
                    .partition_key(&key)
                    .build()
                    .expect("data and partition key are set"),
            );
        }
        bar.inc(1);
    }
    for (_, b) in &mut batches {
        put += send(&client, b).await?;
    }
    bar.finish_and_clear();
    Ok(put)
}

/// Puts a batch, retrying the entries Kinesis refused; returns how many were put.
async fn send(client: &Client, b: &mut Batch) -> Result<u64, PutError> {
    let mut entries = std::mem::take(&mut b.entries);
    b.bytes = 0;
    let total = entries.len() as u64;
    let mut attempt = 0u32;
    let mut backoff =
        crate::backoff::Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(3));
    while !entries.is_empty() {
        attempt += 1;
        let r = client
            .put_records()
            .stream_name(&b.stream)
            .set_records(Some(entries.clone()))
            .send()
            .await;
        let code = match r {
            Ok(out) => {
                if out.failed_record_count().unwrap_or(0) == 0 {
                    return Ok(total);
                }
                // Results are in request order; keep the failed entries only.
                let mut code = String::new();
                let mut kept = Vec::new();
                for (e, res) in entries.into_iter().zip(out.records()) {
                    if let Some(c) = res.error_code() {
                        code = c.to_string();
                        kept.push(e);
                    }
                }
                entries = kept;
                code
            }
            Err(e) => {
                let code = e.code().unwrap_or("Dispatch").to_string();
                let retry = crate::sources::kinesis::put_retriable(&code);
                if !retry {
                    return Err(PutError::Put {
                        stream: b.stream.clone(),
                        message: match e.message() {
                            Some(m) => format!("{code}: {m}"),
                            None => format!("{code}: {}", aws_sdk_kinesis::error::DisplayErrorContext(&e)),
                        },
                    });
                }
                code
            }
        };
        if attempt >= MAX_ATTEMPTS {
            return Err(PutError::GaveUp {
                stream: b.stream.clone(),
                failed: entries.len(),
                code,
            });
        }
        tracing::debug!(stream = %b.stream, %code, left = entries.len(), attempt, "PutRecords retry");
        tokio::time::sleep(backoff.next_pause()).await;
    }
    Ok(total)
}
