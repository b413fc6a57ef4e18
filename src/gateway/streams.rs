//! `PUT /streams/{stream}/record` and `/records`: the Kinesis-style routes.
//!
//! `/record` answers `{"SequenceNumber","ShardId"}`, `/records` answers
//! `{"FailedRecordCount","Records":[...]}` with per-record errors when only some failed.
//! When every record failed the answer is a refusal whose message starts with Kinesis'
//! error type.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::admission::{admit, Admit, State};
use super::body::{self, KinesisRecord};
use super::kafka::Failure;
use super::kinesis::{self, Put};
use super::meter::{count, timed, Sink};
use super::refusal::{
    all_failed, all_failed_reject, body_error, missing, record_too_large, reject, Api, Refusal, Reject,
};

/// `PUT /streams/{stream}/record`: one record.
pub(super) async fn stream_record(
    req: HttpRequest,
    stream: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match put_kinesis(&req, &stream, payload, &st, false).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kinesis, extra),
    };
    count("/streams/{stream}/record", resp.status());
    resp
}

/// `PUT /streams/{stream}/records`: a PutRecords-style batch.
pub(super) async fn stream_records(
    req: HttpRequest,
    stream: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match put_kinesis(&req, &stream, payload, &st, true).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kinesis, extra),
    };
    count("/streams/{stream}/records", resp.status());
    resp
}

/// Admits, parses and checks the request, puts its records, answers. `many`: the
/// `/records` route.
async fn put_kinesis(
    req: &HttpRequest,
    stream: &str,
    payload: web::Payload,
    st: &State,
    many: bool,
) -> Result<HttpResponse, Refusal> {
    let client = st.kinesis.as_ref();
    let admitted = Admit {
        what: "Stream",
        name: stream,
        allowed: &st.streams,
        disabled: client
            .is_none()
            .then_some("this gateway does not put to Kinesis (gateway.produce_to has no \"kinesis\")"),
        content_types: &["application/json", "application/x-amz-json-1.1"],
    };
    let bytes = admit(req, payload, st, admitted).await.map_err(|r| (r, None))?;
    let records = parse(&bytes, stream, many, st).map_err(|r| (r, None))?;
    let answer = put(st, stream, &records, many).await.map_err(|r| (r, None))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(answer.to_string()))
}

/// What both Kinesis APIs share once a request's records are checked: the in-flight
/// budget, the put, and the answer (PutRecords' shape when `many`, PutRecord's else).
pub(super) async fn put(
    st: &State,
    stream: &str,
    records: &[KinesisRecord<'_>],
    many: bool,
) -> Result<serde_json::Value, Reject> {
    let client = st.kinesis.as_ref().expect("the routes check the Kinesis side is on");
    let _permit = st.budget(records.len())?;
    let timeout = Duration::from_millis(st.cfg.produce_timeout_ms);
    let put = kinesis::put(client, stream, records, timeout);
    let results = timed(Sink::Kinesis, records.len(), put).await;
    if let Some(rej) = every_record_failed(&results, stream, st) {
        return Err(rej);
    }
    Ok(answer(&results, many))
}

/// The records of the body, within the limits; the body's `StreamName`, when given, must
/// be the path's.
fn parse<'a>(bytes: &'a [u8], stream: &str, many: bool, st: &State) -> Result<Vec<KinesisRecord<'a>>, Reject> {
    let parsed = if many {
        body::kinesis_records(bytes)
    } else {
        body::kinesis_record(bytes)
    }
    .map_err(body_error)?;
    if let Some(name) = parsed.stream_name.as_deref().filter(|n| *n != stream) {
        return Err(reject(
            422,
            42200,
            "ValidationException",
            format!("StreamName {name:?} differs from the stream in the path ({stream:?})"),
        ));
    }
    check(&parsed.records, many, st)?;
    Ok(parsed.records)
}

/// The per-request and per-record limits (422).
pub(super) fn check(records: &[KinesisRecord<'_>], many: bool, st: &State) -> Result<(), Reject> {
    st.check_count(records.len())?;
    for (i, r) in records.iter().enumerate() {
        let n = r.data.len() + r.partition_key.len();
        if n > st.cfg.max_record_bytes {
            let at = if many { format!("Records[{i}]") } else { "Data".into() };
            return Err(record_too_large(at, n, st.cfg.max_record_bytes));
        }
    }
    Ok(())
}

/// The refusal when every record failed.
fn every_record_failed(results: &[Put], stream: &str, st: &State) -> Option<Reject> {
    let f = all_failed(results.iter().map(|r| r.as_ref().err().map(|p| &p.failure)))?;
    // Kinesis' error type leads the message (the per-record answers carry it apart).
    let code = results[0].as_ref().err().map_or("InternalFailure", |p| p.code.as_str());
    let f = Failure {
        message: format!("{code}: {}", f.message),
        ..f.clone()
    };
    let not_found = missing("Stream", stream, "");
    Some(all_failed_reject(&f, "Kinesis", not_found, st.cfg.retry_after_s))
}

/// The 200 body: PutRecords' shape for `/records`, PutRecord's for `/record`.
fn answer(results: &[Put], many: bool) -> serde_json::Value {
    if many {
        let failed = results.iter().filter(|r| r.is_err()).count();
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match r {
                Ok((shard, seq)) => json!({"SequenceNumber": seq, "ShardId": shard}),
                Err(p) => json!({"ErrorCode": p.code, "ErrorMessage": p.failure.message}),
            })
            .collect();
        json!({"FailedRecordCount": failed, "Records": out})
    } else {
        let Some(Ok((shard, seq))) = results.first() else {
            unreachable!("one record, not failed")
        };
        json!({"SequenceNumber": seq, "ShardId": shard})
    }
}
