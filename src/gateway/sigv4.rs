//! AWS Signature Version 4, checked the way AWS and S3-compatible servers check it, for
//! the gateway's Kinesis API route: an unmodified AWS SDK signs its requests with an
//! access key the gateway knows (`gateway.aws_keys`), and the gateway recomputes the
//! signature from the request it received.
//!
//! The signature covers the method, path, query, the headers the client listed in
//! `SignedHeaders`, and the SHA-256 of the body; the key is derived from the secret, the
//! date, the region and the service of the credential scope. The region is the client's
//! (whatever it signed with); the service must be `kinesis`. A request dated more than
//! [`MAX_SKEW`] away from the gateway's clock is refused as AWS refuses it, so a captured
//! request cannot be replayed later. Comparison is constant-time. The secret is never in
//! an error message.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far a request's `X-Amz-Date` may be from the gateway's clock (AWS allows 5 minutes).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service a credential scope must name.
pub const SERVICE: &str = "kinesis";

/// Why a signature was refused. Each maps to the error AWS answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header (or not a SigV4 one): AWS' `MissingAuthenticationToken`.
    #[error("Missing Authentication Token")]
    Missing,
    /// A SigV4 header that does not parse, or a scope for another service.
    #[error("{0}")]
    Malformed(String),
    /// An access key id the gateway does not know: AWS' `UnrecognizedClientException`.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature does not match: AWS' `InvalidSignatureException`.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
    /// `X-Amz-Date` too far from now: AWS' `InvalidSignatureException` "Signature expired".
    #[error("Signature expired: {date} is now earlier than {earliest} ({now} - 5 min.)")]
    Expired {
        date: String,
        earliest: String,
        now: String,
    },
    /// `X-Amz-Date` in the future beyond the skew.
    #[error("Signature not yet current: {date} is still later than {latest} ({now} + 5 min.)")]
    NotYetCurrent { date: String, latest: String, now: String },
}

impl SigError {
    /// The AWS error type (`__type`) of this refusal.
    pub fn aws_type(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationTokenException",
            SigError::Malformed(_) => "IncompleteSignatureException",
            SigError::UnknownKey => "UnrecognizedClientException",
            SigError::Mismatch | SigError::Expired { .. } | SigError::NotYetCurrent { .. } => {
                "InvalidSignatureException"
            }
        }
    }
}

/// The parts of a request a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (already percent-encoded by the client).
    pub path: &'a str,
    pub query: &'a str,
    /// Every header: (name, value); names in any case.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

/// The `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct Authorization<'a> {
    key_id: &'a str,
    /// `<date>/<region>/<service>/aws4_request`.
    scope: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or(SigError::Missing)?;
    let bad = |m: &str| SigError::Malformed(format!("Authorization header: {m}"));
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("expected Credential=..., SignedHeaders=..., Signature=..."))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| bad("no Credential"))?;
    let (key_id, scope) = credential
        .split_once('/')
        .ok_or_else(|| bad("Credential is not <key id>/<scope>"))?;
    let parts: Vec<&str> = scope.split('/').collect();
    let [date, _region, service, "aws4_request"] = parts[..] else {
        return Err(bad(
            "the credential scope is not <date>/<region>/<service>/aws4_request",
        ));
    };
    if service != SERVICE {
        return Err(SigError::Malformed(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    let signed_headers: Vec<&str> = signed.ok_or_else(|| bad("no SignedHeaders"))?.split(';').collect();
    if !signed_headers.contains(&"host") {
        return Err(bad("SignedHeaders must include host"));
    }
    Ok(Authorization {
        key_id,
        scope,
        date,
        service,
        signed_headers,
        signature: signature.ok_or_else(|| bad("no Signature"))?,
    })
}

fn header<'a>(r: &Signed<'a>, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Checks `r`'s signature against `keys` (access key id → secret) at time `now`; returns
/// the access key id that signed it.
pub fn verify<'a>(r: &Signed<'a>, keys: &BTreeMap<String, String>, now: DateTime<Utc>) -> Result<&'a str, SigError> {
    let auth = header(r, "authorization").ok_or(SigError::Missing)?;
    let a = parse_authorization(auth)?;
    let secret = keys.get(a.key_id).ok_or(SigError::UnknownKey)?;
    let amz_date = header(r, "x-amz-date")
        .ok_or_else(|| SigError::Malformed("no X-Amz-Date header (the date the signature is for)".into()))?;
    let when = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| SigError::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?
        .and_utc();
    if !amz_date.starts_with(a.date) {
        return Err(SigError::Malformed(format!(
            "the credential scope's date {} is not X-Amz-Date's {amz_date}",
            a.date
        )));
    }
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    if when < now - MAX_SKEW {
        return Err(SigError::Expired {
            date: amz_date.into(),
            earliest: stamp(now - MAX_SKEW),
            now: stamp(now),
        });
    }
    if when > now + MAX_SKEW {
        return Err(SigError::NotYetCurrent {
            date: amz_date.into(),
            latest: stamp(now + MAX_SKEW),
            now: stamp(now),
        });
    }
    let expected = signature(r, &a, amz_date, secret)?;
    if expected.as_bytes().ct_eq(a.signature.as_bytes()).unwrap_u8() == 1 {
        Ok(a.key_id)
    } else {
        Err(SigError::Mismatch)
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The hex signature of `r` under `a`'s scope and `secret`.
fn signature(r: &Signed<'_>, a: &Authorization<'_>, amz_date: &str, secret: &str) -> Result<String, SigError> {
    let mut canonical_headers = String::new();
    for name in &a.signed_headers {
        // A header listed more than once is joined with commas, as the signer does.
        let values: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(SigError::Malformed(format!(
                "SignedHeaders lists {name}, which the request does not carry"
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // The body's hash, computed: a declared `X-Amz-Content-Sha256` (S3 style) must be
    // the same, since `UNSIGNED-PAYLOAD` would leave the records unsigned.
    let payload = sha256_hex(r.body);
    if header(r, "x-amz-content-sha256").is_some_and(|h| h != payload) {
        return Err(SigError::Mismatch);
    }
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        r.method,
        if r.path.is_empty() { "/" } else { r.path },
        canonical_query(r.query),
        canonical_headers,
        a.signed_headers.join(";"),
        payload
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        a.scope,
        sha256_hex(canonical.as_bytes())
    );
    let region = a.scope.split('/').nth(1).unwrap_or_default();
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), a.date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, a.service);
    let k_signing = hmac(&k_service, "aws4_request");
    Ok(hex::encode(hmac(&k_signing, &to_sign)))
}

/// The query's pairs sorted by name, then value (they arrive encoded already).
fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn keys() -> BTreeMap<String, String> {
        BTreeMap::from([(KEY_ID.to_string(), SECRET.to_string())])
    }

    fn at(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").unwrap().and_utc()
    }

    /// AWS' published SigV4 test suite, case `get-vanilla` (service `service`), run
    /// through the same computation with the service check set aside.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                    SignedHeaders=host;x-amz-date, \
                    Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let r = Signed {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
                ("Authorization", auth),
            ],
            body: b"",
        };
        let a = Authorization {
            key_id: KEY_ID,
            scope: "20150830/us-east-1/service/aws4_request",
            date: "20150830",
            service: "service",
            signed_headers: vec!["host", "x-amz-date"],
            signature: "",
        };
        assert_eq!(
            signature(&r, &a, "20150830T123600Z", SECRET).unwrap(),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        // The same request scoped to another service is refused before any computing.
        assert!(
            matches!(verify(&r, &keys(), at("20150830T123600Z")), Err(SigError::Malformed(m)) if m.contains("kinesis"))
        );
    }

    /// A request signed here, then changed one part at a time.
    #[test]
    fn every_covered_part_changes_the_signature() {
        let body = br#"{"StreamName":"s","Data":"e30=","PartitionKey":"k"}"#;
        let date = "20261201T120000Z";
        let signed = |body: &'static [u8], target: &'static str, auth: String| {
            let auth: &'static str = Box::leak(auth.into_boxed_str());
            Signed {
                method: "POST",
                path: "/",
                query: "",
                headers: vec![
                    ("host", "127.0.0.1:8082"),
                    ("x-amz-date", date),
                    ("x-amz-target", target),
                    ("authorization", auth),
                ],
                body,
            }
        };
        let unsigned = signed(body, "Kinesis_20131202.PutRecord", String::new());
        let a = Authorization {
            key_id: KEY_ID,
            scope: "20261201/eu-west-1/kinesis/aws4_request",
            date: "20261201",
            service: "kinesis",
            signed_headers: vec!["host", "x-amz-date", "x-amz-target"],
            signature: "",
        };
        let sig = signature(&unsigned, &a, date, SECRET).unwrap();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/20261201/eu-west-1/kinesis/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-target, Signature={sig}"
        );
        let now = at(date);
        let ok = signed(body, "Kinesis_20131202.PutRecord", auth.clone());
        assert_eq!(verify(&ok, &keys(), now), Ok(KEY_ID));
        // Another body, another target, another secret, another key id.
        let other_body = signed(br#"{"StreamName":"t"}"#, "Kinesis_20131202.PutRecord", auth.clone());
        assert_eq!(verify(&other_body, &keys(), now), Err(SigError::Mismatch));
        let other_target = signed(body, "Kinesis_20131202.PutRecords", auth.clone());
        assert_eq!(verify(&other_target, &keys(), now), Err(SigError::Mismatch));
        let wrong_secret = BTreeMap::from([(KEY_ID.to_string(), "not-the-secret".to_string())]);
        assert_eq!(verify(&ok, &wrong_secret, now), Err(SigError::Mismatch));
        let unknown = BTreeMap::from([("AKIDOTHER".to_string(), SECRET.to_string())]);
        assert_eq!(verify(&ok, &unknown, now), Err(SigError::UnknownKey));
        // The clock: within 5 minutes either way, and no further.
        assert!(verify(&ok, &keys(), now + TimeDelta::minutes(4)).is_ok());
        let late = verify(&ok, &keys(), now + TimeDelta::minutes(6)).unwrap_err();
        assert_eq!(late.aws_type(), "InvalidSignatureException");
        assert!(
            late.to_string().starts_with("Signature expired: 20261201T120000Z"),
            "{late}"
        );
        let early = verify(&ok, &keys(), now - TimeDelta::minutes(6)).unwrap_err();
        assert!(matches!(early, SigError::NotYetCurrent { .. }), "{early}");
        // No header, another scheme, a header naming what the request lacks.
        let mut none = signed(body, "Kinesis_20131202.PutRecord", String::new());
        none.headers.pop();
        assert_eq!(verify(&none, &keys(), now), Err(SigError::Missing));
        let basic = signed(body, "Kinesis_20131202.PutRecord", "Basic dXNlcjpwYXNz".into());
        assert_eq!(verify(&basic, &keys(), now), Err(SigError::Missing));
        let extra = signed(
            body,
            "Kinesis_20131202.PutRecord",
            auth.replace("x-amz-target,", "x-amz-target;x-amz-security-token,"),
        );
        assert!(matches!(verify(&extra, &keys(), now), Err(SigError::Malformed(_))));
        // The secret never shows in a refusal.
        for e in [SigError::Mismatch, SigError::UnknownKey, late] {
            assert!(!e.to_string().contains(SECRET));
        }
    }

    #[test]
    fn query_pairs_are_sorted() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("flag"), "flag=");
    }
}
