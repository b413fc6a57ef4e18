//! How the gateway says no. Every refusal carries three spellings of one reason: the HTTP
//! status, the REST proxy's `error_code` and Kinesis' `__type`; the route decides which
//! body shape the client gets (README, "Ingest gateway", is the table of them).

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use serde_json::json;

use super::body::BodyError;
use super::kafka::Failure;

/// What the REST proxy answers with.
pub(super) const KAFKA_RESPONSE: &str = "application/vnd.kafka.v2+json";
/// The Kinesis JSON API's media type, both ways.
pub(super) const AWS_JSON: &str = "application/x-amz-json-1.1";

/// Which API a route speaks, so a refusal is written in its error shape.
#[derive(Debug, Clone, Copy)]
pub(super) enum Api {
    Kafka,
    Kinesis,
    /// The Kinesis JSON API itself (`POST /` with `X-Amz-Target`): AWS' JSON 1.1 error
    /// shape, where every client error is a 400 named by `__type` and `x-amzn-ErrorType`
    /// (an SDK reads the type, not the status); 5xx stay 5xx so SDKs retry them.
    AwsJson,
}

/// A refused request: its status, the REST proxy `error_code`, the Kinesis `__type`.
#[derive(Debug)]
pub(super) struct Reject {
    status: StatusCode,
    code: u32,
    kind: &'static str,
    message: String,
    /// Seconds for `Retry-After` (503 only).
    retry_after: Option<u64>,
}

/// A refusal and, when some records got an answer, the per-record part of the body
/// (the REST proxy's `offsets`), merged into the error body.
pub(super) type Refusal = (Reject, Option<serde_json::Value>);

pub(super) fn reject(status: u16, code: u32, kind: &'static str, message: impl Into<String>) -> Reject {
    Reject {
        status: StatusCode::from_u16(status).expect("valid status"),
        code,
        kind,
        message: message.into(),
        retry_after: None,
    }
}

impl Reject {
    /// A 503 that tells the client when to come back.
    pub(super) fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Reject {
            retry_after: Some(retry_after),
            ..reject(503, 50003, "ServiceUnavailable", message)
        }
    }

    /// The response in `api`'s error shape, with `extra` members merged into the body.
    pub(super) fn respond(&self, api: Api, extra: Option<serde_json::Value>) -> HttpResponse {
        let status = match api {
            Api::AwsJson if self.status.is_client_error() => StatusCode::BAD_REQUEST,
            _ => self.status,
        };
        let mut r = HttpResponse::build(status);
        if let Some(s) = self.retry_after {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED && !matches!(api, Api::AwsJson) {
            r.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"pinpipe\""));
        }
        let mut body = match api {
            Api::Kafka => {
                r.content_type(KAFKA_RESPONSE);
                json!({"error_code": self.code, "message": self.message})
            }
            Api::Kinesis => {
                r.content_type("application/json");
                json!({"__type": self.kind, "message": self.message})
            }
            Api::AwsJson => {
                r.content_type(AWS_JSON);
                r.insert_header(("x-amzn-ErrorType", self.kind));
                json!({"__type": self.kind, "message": self.message})
            }
        };
        if let (Some(extra), Some(obj)) = (extra, body.as_object_mut()) {
            if let Some(e) = extra.as_object() {
                obj.extend(e.clone());
            }
        }
        r.body(body.to_string())
    }
}

/// The REST proxy's 40401 / Kinesis' ResourceNotFoundException.
pub(super) fn missing(what: &str, name: &str, why: &str) -> Reject {
    reject(
        404,
        40401,
        "ResourceNotFoundException",
        format!("{what} {name} not found{why}"),
    )
}

/// Not JSON (400), or JSON of the wrong shape (422).
pub(super) fn body_error(e: BodyError) -> Reject {
    match e {
        BodyError::Syntax(_) | BodyError::Base64(_) => reject(400, 400, "SerializationException", e.to_string()),
        BodyError::Shape(m) => reject(422, 42200, "ValidationException", m),
    }
}

/// One record over `gateway.max_record_bytes`; `at` names it (`records[3]`, `Data`).
pub(super) fn record_too_large(at: String, n: usize, limit: usize) -> Reject {
    reject(
        422,
        42201,
        "ValidationException",
        format!("{at} is {n} bytes, over gateway.max_record_bytes = {limit}"),
    )
}

/// More records in one request than `gateway.max_records`.
pub(super) fn too_many_records(n: usize, limit: usize) -> Reject {
    reject(
        422,
        42200,
        "ValidationException",
        format!("{n} records in one request, over gateway.max_records = {limit}"),
    )
}

/// `Some(first failure)` when every record failed; a partial failure is answered with
/// 200 and per-record errors, as both the REST proxy and Kinesis do.
pub(super) fn all_failed<'a>(mut failures: impl Iterator<Item = Option<&'a Failure>>) -> Option<&'a Failure> {
    let first = failures.next()??;
    failures.all(|f| f.is_some()).then_some(first)
}

/// The answer when every record failed: 404 for an unknown topic/stream, 503 when worth a
/// retry, 500 otherwise.
pub(super) fn all_failed_reject(f: &Failure, broker: &str, not_found: Reject, retry_after: u64) -> Reject {
    if f.unknown_topic {
        not_found
    } else if f.retriable {
        Reject::unavailable(format!("{broker} did not acknowledge: {}", f.message), retry_after)
    } else {
        reject(
            500,
            50002,
            "InternalFailure",
            format!("{broker} refused the records: {}", f.message),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(retriable: bool, unknown_topic: bool) -> Failure {
        Failure {
            retriable,
            unknown_topic,
            message: "x".into(),
        }
    }

    #[test]
    fn all_failed_only_when_every_record_failed() {
        let f = fail(true, false);
        assert!(all_failed([Some(&f), Some(&f)].into_iter()).is_some());
        assert!(all_failed([Some(&f), None].into_iter()).is_none());
        assert!(all_failed([None, Some(&f)].into_iter()).is_none());
        assert!(all_failed(std::iter::empty()).is_none());
    }

    #[test]
    fn every_record_failing_picks_the_status() {
        let status = |f: Failure| {
            all_failed_reject(&f, "Kafka", missing("Topic", "t", ""), 1)
                .status
                .as_u16()
        };
        assert_eq!(status(fail(false, true)), 404);
        assert_eq!(status(fail(true, false)), 503);
        assert_eq!(status(fail(false, false)), 500);
    }

    #[test]
    fn refusals_speak_the_route_api() {
        let r = Reject::unavailable("busy", 3);
        let kafka = r.respond(Api::Kafka, None);
        assert_eq!(kafka.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kafka.headers().get(header::RETRY_AFTER).unwrap(), "3");
        assert_eq!(kafka.headers().get(header::CONTENT_TYPE).unwrap(), KAFKA_RESPONSE);
        let unauthorized = reject(401, 40101, "UnrecognizedClientException", "no");
        let kinesis = unauthorized.respond(Api::Kinesis, None);
        assert!(kinesis.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(kinesis.headers().get(header::CONTENT_TYPE).unwrap(), "application/json");
        // The AWS JSON API: client errors are 400s named by type, 503 stays a 503.
        let aws = unauthorized.respond(Api::AwsJson, None);
        assert_eq!(aws.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            aws.headers().get("x-amzn-ErrorType").unwrap(),
            "UnrecognizedClientException"
        );
        assert_eq!(aws.headers().get(header::CONTENT_TYPE).unwrap(), AWS_JSON);
        assert!(!aws.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r.respond(Api::AwsJson, None).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
