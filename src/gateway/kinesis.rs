//! The gateway's Kinesis side: PutRecords, answering only once Kinesis accepted each
//! record. Entries Kinesis refuses for throughput or an internal failure are put again
//! after a jittered backoff until `produce_timeout_ms`; what still fails is reported per
//! record, as Kinesis itself does.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use super::body::KinesisRecord;
use super::kafka::Failure;

/// The PutRecords limit of entries per call.
const MAX_ENTRIES: usize = 500;

/// `(shard id, sequence number)` once Kinesis accepted the record.
pub type Put = Result<(String, String), PutFailure>;

/// Why a record was not accepted: the Kinesis error type and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutFailure {
    pub code: String,
    pub failure: Failure,
}

fn failure(code: &str, message: String) -> PutFailure {
    PutFailure {
        code: code.to_string(),
        failure: Failure {
            retriable: crate::sources::kinesis::put_retriable(code),
            unknown_topic: code == "ResourceNotFoundException",
            message,
        },
    }
}

/// Puts the records to `stream`; one result per record, in order.
pub async fn put(client: &Client, stream: &str, records: &[KinesisRecord<'_>], timeout: Duration) -> Vec<Put> {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Put> = Vec::with_capacity(records.len());
    for chunk in records.chunks(MAX_ENTRIES) {
        out.extend(put_chunk(client, stream, chunk, deadline).await);
    }
    out
}

async fn put_chunk(client: &Client, stream: &str, records: &[KinesisRecord<'_>], deadline: Instant) -> Vec<Put> {
    let mut results: Vec<Option<Put>> = vec![None; records.len()];
    // Indexes of the records still to put.
    let mut todo: Vec<usize> = (0..records.len()).collect();
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let entries: Vec<PutRecordsRequestEntry> = todo
            .iter()
            .map(|&i| {
                let r = &records[i];
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.to_vec()))
                    .partition_key(&r.partition_key)
                    .set_explicit_hash_key(r.explicit_hash_key.clone())
                    .build()
                    .expect("data and partition key are set")
            })
            .collect();
        let call = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send();
        let left = deadline.saturating_duration_since(Instant::now());
        let still: Vec<(usize, PutFailure)> = match tokio::time::timeout(left.max(Duration::from_millis(1)), call).await
        {
            Err(_) => todo
                .iter()
                .map(|&i| (i, failure("Timeout", "PutRecords did not answer in time".into())))
                .collect(),
            Ok(Ok(resp)) => {
                let mut still = Vec::new();
                for (&i, r) in todo.iter().zip(resp.records()) {
                    match (r.shard_id(), r.sequence_number(), r.error_code()) {
                        (Some(shard), Some(seq), None) => results[i] = Some(Ok((shard.to_string(), seq.to_string()))),
                        (_, _, code) => {
                            let code = code.unwrap_or("InternalFailure");
                            still.push((i, failure(code, r.error_message().unwrap_or(code).to_string())));
                        }
                    }
                }
                // A response with fewer results than entries: the rest failed.
                for &i in todo.iter().skip(resp.records().len()) {
                    still.push((i, failure("InternalFailure", "no result for this entry".into())));
                }
                still
            }
            Ok(Err(e)) => {
                let code = e.code().unwrap_or("Dispatch").to_string();
                let message = match e.message() {
                    Some(m) => m.to_string(),
                    None => aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string(),
                };
                todo.iter().map(|&i| (i, failure(&code, message.clone()))).collect()
            }
        };
        let retry = still.iter().all(|(_, f)| f.failure.retriable);
        let pause = backoff.next_pause();
        let attempt = backoff.attempts();
        if still.is_empty() || !retry || Instant::now() + pause >= deadline {
            for (i, f) in still {
                results[i] = Some(Err(f));
            }
            break;
        }
        tracing::debug!(%stream, left = still.len(), attempt, code = %still[0].1.code, "gateway: PutRecords retry");
        todo = still.into_iter().map(|(i, _)| i).collect();
        tokio::time::sleep(pause).await;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(failure("InternalFailure", "not attempted".into()))))
        .collect()
}
