//! `POST /` with `X-Amz-Target: Kinesis_20131202.<Operation>`: the Kinesis JSON API itself,
//! so an unmodified AWS SDK (boto3, aws-sdk-*, Fluent Bit, Vector, the KPL) pointed at the
//! gateway as its endpoint puts records.
//!
//! - `PutRecord`, `PutRecords`: the same bodies, limits, in-flight budget and answers as
//!   the `/streams/{stream}/...` routes ([`super::streams::put`]), the stream named by the
//!   body's `StreamName` or `StreamARN`.
//! - `DescribeStreamSummary`, `ListShards`: the read-only calls producers make before their
//!   first put (the KPL and some agents), answered from the stream itself through the
//!   gateway's Kinesis client, for the streams the gateway may put to.
//! - Anything else: `UnknownOperationException`.
//!
//! Authentication is AWS Signature Version 4 ([`super::sigv4`]) against `gateway.aws_keys`,
//! not the tokens of the other routes; errors are in the AWS JSON 1.1 shape (a 400 named by
//! `__type`, 503 with `Retry-After` for backpressure).

use actix_web::{web, HttpRequest, HttpResponse};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use serde_json::{json, Value};

use super::admission::{read_body, State};
use super::body;
use super::meter::count;
use super::refusal::{body_error, missing, reject, Api, Reject, AWS_JSON};
use super::sigv4::{self, Signed};
use super::streams;

/// The operations' common prefix in `X-Amz-Target`.
const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// The route's label in `pinpipe_gateway_requests_total`.
const ROUTE: &str = "/ (Kinesis API)";

pub(super) async fn kinesis_api(req: HttpRequest, payload: web::Payload, st: web::Data<State>) -> HttpResponse {
    let resp = match handle(&req, payload, &st).await {
        Ok(answer) => HttpResponse::Ok().content_type(AWS_JSON).body(answer.to_string()),
        Err(rej) => rej.respond(Api::AwsJson, None),
    };
    count(ROUTE, resp.status());
    resp
}

fn unknown_operation(message: String) -> Reject {
    reject(400, 400, "UnknownOperationException", message)
}

async fn handle(req: &HttpRequest, payload: web::Payload, st: &State) -> Result<Value, Reject> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(unknown_operation(format!(
            "X-Amz-Target {target:?} is not a Kinesis operation ({TARGET_PREFIX}<Operation>)"
        )));
    };
    if st.kinesis.is_none() {
        return Err(unknown_operation(
            "this gateway does not put to Kinesis (gateway.produce_to has no \"kinesis\")".into(),
        ));
    }
    // The signature covers the body: it is read (within gateway.max_body_bytes) first.
    let bytes = read_body(req, payload, st.cfg.max_body_bytes).await?;
    authenticate(req, &bytes, st)?;
    match operation {
        "PutRecord" | "PutRecords" => put(operation == "PutRecords", &bytes, st).await,
        "DescribeStreamSummary" => describe_stream_summary(&bytes, st).await,
        "ListShards" => list_shards(&bytes, st).await,
        other => Err(unknown_operation(format!(
            "the gateway serves PutRecord, PutRecords, DescribeStreamSummary and ListShards, not {other}"
        ))),
    }
}

/// SigV4 against `gateway.aws_keys`, unless authentication is off.
fn authenticate(req: &HttpRequest, body: &[u8], st: &State) -> Result<(), Reject> {
    if st.cfg.auth == "none" {
        return Ok(());
    }
    if st.cfg.aws_keys.is_empty() {
        return Err(reject(
            401,
            40101,
            "UnrecognizedClientException",
            "this gateway has no AWS access keys (gateway.aws_keys): the Kinesis API route accepts no request",
        ));
    }
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let signed = Signed {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or_default(),
        headers,
        body,
    };
    match sigv4::verify(&signed, &st.cfg.aws_keys, chrono::Utc::now()) {
        Ok(key_id) => {
            tracing::debug!(key_id, "Kinesis API request signed");
            Ok(())
        }
        Err(e) => {
            // The key id is not secret (it travels in clear); the secret never leaves the config.
            tracing::info!(error = %e, "Kinesis API request refused");
            let status = if matches!(e, sigv4::SigError::Missing) {
                403
            } else {
                401
            };
            Err(reject(status, 40101, e.aws_type(), e.to_string()))
        }
    }
}

/// The allow-list: a stream the gateway may not put to does not exist for the client.
fn allowed<'a>(stream: Option<&'a str>, st: &State) -> Result<&'a str, Reject> {
    let stream = stream.ok_or_else(|| {
        reject(
            422,
            42200,
            "ValidationException",
            "the body names no stream (StreamName or StreamARN)",
        )
    })?;
    if !st.streams.contains(stream) {
        return Err(missing("Stream", stream, " under account 000000000000"));
    }
    Ok(stream)
}

async fn put(many: bool, bytes: &[u8], st: &State) -> Result<Value, Reject> {
    let parsed = if many {
        body::kinesis_records(bytes)
    } else {
        body::kinesis_record(bytes)
    }
    .map_err(body_error)?;
    let stream = allowed(parsed.stream_name.as_deref(), st)?;
    streams::check(&parsed.records, many, st)?;
    let mut answer = streams::put(st, stream, &parsed.records, many).await?;
    // What Kinesis answers besides: the gateway puts to the stream as it is configured.
    answer["EncryptionType"] = json!("NONE");
    Ok(answer)
}

/// The stream of a read-only call's body (`StreamName` or `StreamARN`).
fn stream_of(bytes: &[u8]) -> Result<String, Reject> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| reject(400, 400, "SerializationException", format!("the body is not JSON: {e}")))?;
    if let Some(name) = v["StreamName"].as_str() {
        return Ok(name.to_string());
    }
    if let Some(arn) = v["StreamARN"].as_str() {
        // The same ARN rule as the put bodies.
        let probe = json!({"StreamARN": arn, "Records": [{"Data": "", "PartitionKey": "k"}]}).to_string();
        return body::kinesis_records(probe.as_bytes())
            .map_err(body_error)?
            .stream_name
            .ok_or_else(|| reject(422, 42200, "ValidationException", "StreamARN names no stream"));
    }
    Err(reject(
        422,
        42200,
        "ValidationException",
        "the body names no stream (StreamName or StreamARN)",
    ))
}

/// A read-only call the stream's server refused, in its own words.
fn backend_error(stream: &str, e: &impl ProvideErrorMetadata, display: String) -> Reject {
    match e.code() {
        Some("ResourceNotFoundException") => missing("Stream", stream, " under account 000000000000"),
        Some("LimitExceededException") | Some("ProvisionedThroughputExceededException") => {
            Reject::unavailable(format!("Kinesis: {}", e.message().unwrap_or("rate exceeded")), 1)
        }
        _ => Reject::unavailable(format!("Kinesis did not answer: {display}"), 1),
    }
}

fn epoch_seconds(t: &aws_sdk_kinesis::primitives::DateTime) -> f64 {
    t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9
}

async fn describe_stream_summary(bytes: &[u8], st: &State) -> Result<Value, Reject> {
    let stream = stream_of(bytes)?;
    let stream = allowed(Some(&stream), st)?;
    let client = st.kinesis.as_ref().expect("handle checked the Kinesis side is on");
    let out = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| {
            let shown = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
            backend_error(stream, &e, shown)
        })?;
    let Some(d) = out.stream_description_summary() else {
        return Err(Reject::unavailable("Kinesis answered no stream description", 1));
    };
    Ok(json!({
        "StreamDescriptionSummary": {
            "StreamName": d.stream_name(),
            "StreamARN": d.stream_arn(),
            "StreamStatus": d.stream_status().as_str(),
            "StreamModeDetails": {
                "StreamMode": d.stream_mode_details().map_or("PROVISIONED", |m| m.stream_mode().as_str()),
            },
            "RetentionPeriodHours": d.retention_period_hours(),
            "StreamCreationTimestamp": epoch_seconds(d.stream_creation_timestamp()),
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
            "OpenShardCount": d.open_shard_count(),
            "ConsumerCount": d.consumer_count().unwrap_or(0),
        }
    }))
}

async fn list_shards(bytes: &[u8], st: &State) -> Result<Value, Reject> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| reject(400, 400, "SerializationException", format!("the body is not JSON: {e}")))?;
    let client = st.kinesis.as_ref().expect("handle checked the Kinesis side is on");
    // A continued listing names no stream (the token carries it), as in Kinesis.
    let mut call = client.list_shards();
    let stream = match v["NextToken"].as_str() {
        Some(token) => {
            call = call.next_token(token);
            None
        }
        None => {
            let stream = stream_of(bytes)?;
            let stream = allowed(Some(&stream), st)?.to_string();
            call = call.stream_name(&stream);
            Some(stream)
        }
    };
    if let Some(n) = v["MaxResults"].as_i64() {
        call = call.max_results(n.clamp(1, 10_000) as i32);
    }
    let out = call.send().await.map_err(|e| {
        let shown = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
        backend_error(stream.as_deref().unwrap_or("(from NextToken)"), &e, shown)
    })?;
    let shards: Vec<Value> = out
        .shards()
        .iter()
        .map(|s| {
            let mut shard = json!({
                "ShardId": s.shard_id(),
                "HashKeyRange": s.hash_key_range().map(|h| json!({
                    "StartingHashKey": h.starting_hash_key(),
                    "EndingHashKey": h.ending_hash_key(),
                })),
                "SequenceNumberRange": s.sequence_number_range().map(|r| {
                    let mut range = json!({"StartingSequenceNumber": r.starting_sequence_number()});
                    // An open shard has no end: the member is absent, not null.
                    if let Some(end) = r.ending_sequence_number() {
                        range["EndingSequenceNumber"] = json!(end);
                    }
                    range
                }),
            });
            if let Some(p) = s.parent_shard_id() {
                shard["ParentShardId"] = json!(p);
            }
            if let Some(p) = s.adjacent_parent_shard_id() {
                shard["AdjacentParentShardId"] = json!(p);
            }
            shard
        })
        .collect();
    let mut answer = json!({ "Shards": shards });
    if let Some(t) = out.next_token() {
        answer["NextToken"] = json!(t);
    }
    Ok(answer)
}
