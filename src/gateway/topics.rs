//! `POST /topics/{topic}`: the Kafka REST proxy v2 produce route (json embedded format).
//!
//! Answered with `{"offsets":[...],"key_schema_id":null,"value_schema_id":null}` once the
//! broker acknowledged every record, or reported per record when only some failed; when
//! all failed, the refusal carries the `offsets` too.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::admission::{admit, Admit, State};
use super::body::{self, KafkaRecord};
use super::kafka::{Delivery, Failure, KafkaSink};
use super::meter::{count, timed, Sink};
use super::refusal::{
    all_failed, all_failed_reject, body_error, missing, record_too_large, Api, Refusal, Reject, KAFKA_RESPONSE,
};

/// The REST proxy's request media type.
const KAFKA_JSON: &str = "application/vnd.kafka.json.v2+json";

pub(super) async fn topic_route(
    req: HttpRequest,
    topic: web::Path<String>,
    payload: web::Payload,
    st: web::Data<State>,
) -> HttpResponse {
    let resp = match produce_kafka(&req, &topic, payload, &st).await {
        Ok(r) => r,
        Err((rej, extra)) => rej.respond(Api::Kafka, extra),
    };
    count("/topics/{topic}", resp.status());
    resp
}

async fn produce_kafka(
    req: &HttpRequest,
    topic: &str,
    payload: web::Payload,
    st: &State,
) -> Result<HttpResponse, Refusal> {
    let sink = st.kafka.as_ref();
    let admitted = Admit {
        what: "Topic",
        name: topic,
        allowed: &st.topics,
        disabled: sink
            .is_none()
            .then_some("this gateway does not produce to Kafka (gateway.produce_to has no \"kafka\")"),
        content_types: &[KAFKA_JSON],
    };
    let bytes = admit(req, payload, st, admitted).await.map_err(|r| (r, None))?;
    let sink = sink.expect("admit checked the sink is on");
    let records = body::kafka(&bytes).map_err(|e| (body_error(e), None))?;
    check_records(&records, sink, st).map_err(|r| (r, None))?;
    let _permit = st.budget(records.len()).map_err(|r| (r, None))?;
    let results = timed(Sink::Kafka, records.len(), sink.produce(topic, &records)).await;
    answer(topic, &results, st)
}

/// The limits of one request, then the broker's state: nothing is produced if one fails.
fn check_records(records: &[KafkaRecord<'_>], sink: &KafkaSink, st: &State) -> Result<(), Reject> {
    st.check_count(records.len())?;
    for (i, r) in records.iter().enumerate() {
        let n = r.value.len() + r.key.map_or(0, <[u8]>::len);
        if n > st.cfg.max_record_bytes {
            return Err(record_too_large(format!("records[{i}]"), n, st.cfg.max_record_bytes));
        }
    }
    if sink.is_down() {
        return Err(Reject::unavailable(
            "Kafka broker unreachable; retry later",
            st.cfg.retry_after_s,
        ));
    }
    Ok(())
}

/// 200 with per-record offsets or errors, unless every record failed.
fn answer(topic: &str, results: &[Delivery], st: &State) -> Result<HttpResponse, Refusal> {
    let offsets: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Ok((p, o)) => json!({"partition": p, "offset": o, "error_code": null, "error": null}),
            Err(f) => json!({"partition": null, "offset": null, "error_code": failure_code(f), "error": f.message}),
        })
        .collect();
    let body = json!({"offsets": offsets, "key_schema_id": null, "value_schema_id": null});
    match all_failed(results.iter().map(|r| r.as_ref().err())) {
        None => Ok(HttpResponse::Ok().content_type(KAFKA_RESPONSE).body(body.to_string())),
        Some(f) => {
            let rej = all_failed_reject(f, "Kafka", missing("Topic", topic, ""), st.cfg.retry_after_s);
            Err((rej, Some(json!({"offsets": body["offsets"]}))))
        }
    }
}

/// The REST proxy's per-record codes: 50003 retriable, 50002 not.
fn failure_code(f: &Failure) -> u32 {
    if f.retriable {
        50003
    } else {
        50002
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_record_codes() {
        let fail = |retriable| Failure {
            retriable,
            unknown_topic: false,
            message: "x".into(),
        };
        assert_eq!(failure_code(&fail(true)), 50003);
        assert_eq!(failure_code(&fail(false)), 50002);
    }
}
