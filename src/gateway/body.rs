//! Request bodies of the gateway, parsed without re-encoding the records.
//!
//! Records must reach the broker as the bytes the client sent: re-serializing a
//! `serde_json::Value` would drop repeated keys, reformat numbers and turn integers beyond
//! u64 into floats, and the cleaner's verdict depends on all three. serde_json's `RawValue`
//! keeps spans but needs its `raw_value` feature, which changes serde_json for the whole
//! dependency tree (DataFusion and deltalake rebuild). So the body is first validated by
//! serde_json (strict RFC 8259: no NaN, no BOM, no trailing garbage), then [`Cursor`] walks
//! only the envelope's outer levels and lets serde_json measure each member's value.
//!
//! A Kinesis `Data` comes in two shapes: a JSON value (the record itself, the old
//! emulator's shape) or a JSON string holding the base64 of the record's bytes (the Kinesis
//! API's shape). The decoded bytes are the record; a string that is not base64 is refused.

use std::borrow::Cow;

use base64::Engine as _;
use serde::de::IgnoredAny;

/// Why a body was refused: a 400 (not JSON) or a 422 (JSON of the wrong shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("malformed JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(String),
    /// A `Data` string that is not base64: refused like malformed JSON (400).
    #[error("{0}")]
    Base64(String),
}

fn shape(msg: impl Into<String>) -> BodyError {
    BodyError::Shape(msg.into())
}

/// One record of a Kafka REST proxy v2 produce request (json embedded format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord<'a> {
    /// The key's JSON text (the proxy serializes keys as JSON too); `None` when absent or null.
    pub key: Option<&'a [u8]>,
    /// The value's JSON text, exactly as sent.
    pub value: &'a [u8],
    /// An explicit partition; `None`: the producer's partitioner (by key) decides.
    pub partition: Option<i32>,
}

/// One record of a Kinesis-style request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord<'a> {
    /// The record's bytes: `Data`'s JSON text exactly as sent, or the bytes a base64
    /// string decodes to.
    pub data: Cow<'a, [u8]>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

/// `PUT /streams/{stream}/record` and `/records`: the records and the body's `StreamName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisBody<'a> {
    pub stream_name: Option<String>,
    pub records: Vec<KinesisRecord<'a>>,
}

/// `{"records":[{"key":..., "value":..., "partition":...}, ...]}`.
pub fn kafka(body: &[u8]) -> Result<Vec<KafkaRecord<'_>>, BodyError> {
    let mut c = Cursor::validated(body)?;
    let mut records = None;
    c.object("the body", |c, key| match key {
        "records" => {
            let mut out = Vec::new();
            c.array("records", |c, i| {
                let (mut k, mut value, mut partition) = (None, None, None);
                c.object(&format!("records[{i}]"), |c, key| {
                    match key {
                        "key" => {
                            let v = c.value()?;
                            k = (v != b"null").then_some(v);
                        }
                        "value" => value = Some(c.value()?),
                        "partition" => {
                            let v = c.value()?;
                            let p: Option<i32> = serde_json::from_slice(v).map_err(|_| {
                                shape(format!(
                                    "records[{i}].partition: expected a partition number, got {}",
                                    text(v)
                                ))
                            })?;
                            partition = p;
                        }
                        other => return Err(shape(format!("records[{i}]: unrecognized field {other:?}"))),
                    }
                    Ok(())
                })?;
                let value = value.ok_or_else(|| shape(format!("records[{i}]: no \"value\"")))?;
                out.push(KafkaRecord {
                    key: k,
                    value,
                    partition,
                });
                Ok(())
            })?;
            records = Some(out);
            Ok(())
        }
        other => Err(shape(format!("unrecognized field {other:?} (expected \"records\")"))),
    })?;
    let records = records.ok_or_else(|| shape("no \"records\" field"))?;
    if records.is_empty() {
        return Err(shape("\"records\" is empty"));
    }
    Ok(records)
}

/// `{"StreamName":..., "Data":{...}, "PartitionKey":...}`: one record.
pub fn kinesis_record(body: &[u8]) -> Result<KinesisBody<'_>, BodyError> {
    let mut c = Cursor::validated(body)?;
    let mut stream_name = None;
    let record = kinesis_entry(&mut c, "the body", Some(&mut stream_name))?;
    Ok(KinesisBody {
        stream_name,
        records: vec![record],
    })
}

/// `{"StreamName":..., "Records":[{"Data":{...}, "PartitionKey":...}, ...]}`.
pub fn kinesis_records(body: &[u8]) -> Result<KinesisBody<'_>, BodyError> {
    let mut c = Cursor::validated(body)?;
    let (mut stream_name, mut records) = (None, None);
    c.object("the body", |c, key| match key {
        "StreamName" => {
            stream_name = Some(c.string("StreamName")?);
            Ok(())
        }
        "StreamARN" => {
            stream_name = Some(stream_of_arn(&c.string("StreamARN")?)?);
            Ok(())
        }
        "Records" => {
            let mut out = Vec::new();
            c.array("Records", |c, i| {
                out.push(kinesis_entry(c, &format!("Records[{i}]"), None)?);
                Ok(())
            })?;
            records = Some(out);
            Ok(())
        }
        other => Err(shape(format!(
            "unrecognized field {other:?} (expected StreamName or StreamARN, Records)"
        ))),
    })?;
    let records = records.ok_or_else(|| shape("no \"Records\" field"))?;
    if records.is_empty() {
        return Err(shape("\"Records\" is empty"));
    }
    Ok(KinesisBody { stream_name, records })
}

/// One `{"Data":..., "PartitionKey":..., "ExplicitHashKey":...}` object; `StreamName` is
/// allowed too when `stream_name` is given (the single-record body).
fn kinesis_entry<'a>(
    c: &mut Cursor<'a>,
    at: &str,
    mut stream_name: Option<&mut Option<String>>,
) -> Result<KinesisRecord<'a>, BodyError> {
    let (mut data, mut pk, mut hash) = (None, None, None);
    c.object(at, |c, key| {
        match key {
            "Data" => data = Some(data_bytes(c.value()?, at)?),
            "PartitionKey" => pk = Some(c.string(&format!("{at}.PartitionKey"))?),
            "ExplicitHashKey" => hash = Some(c.string(&format!("{at}.ExplicitHashKey"))?),
            "StreamName" if stream_name.is_some() => {
                if let Some(s) = stream_name.as_deref_mut() {
                    *s = Some(c.string("StreamName")?);
                }
            }
            "StreamARN" if stream_name.is_some() => {
                if let Some(s) = stream_name.as_deref_mut() {
                    *s = Some(stream_of_arn(&c.string("StreamARN")?)?);
                }
            }
            // PutRecord's ordering hint: the gateway puts a request's records in order
            // anyway, one stream at a time, so it is accepted and not needed.
            "SequenceNumberForOrdering" if stream_name.is_some() => {
                c.string("SequenceNumberForOrdering")?;
            }
            other => return Err(shape(format!("{at}: unrecognized field {other:?}"))),
        }
        Ok(())
    })?;
    let data = data.ok_or_else(|| shape(format!("{at}: no \"Data\"")))?;
    let partition_key = pk.ok_or_else(|| shape(format!("{at}: no \"PartitionKey\"")))?;
    // The Kinesis limits: a key of 1 to 256 Unicode characters.
    let n = partition_key.chars().count();
    if !(1..=256).contains(&n) {
        return Err(shape(format!("{at}.PartitionKey: {n} characters (allowed: 1..=256)")));
    }
    Ok(KinesisRecord {
        data,
        partition_key,
        explicit_hash_key: hash,
    })
}

/// The stream name of `arn:<partition>:kinesis:<region>:<account>:stream/<name>` (what SDKs
/// send when the client names a stream by ARN).
fn stream_of_arn(arn: &str) -> Result<String, BodyError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "kinesis", _, _, resource] => resource
            .strip_prefix("stream/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_string)
            .ok_or_else(|| shape(format!("StreamARN {arn:?} names no stream"))),
        _ => Err(shape(format!("StreamARN {arn:?} is not a Kinesis stream ARN"))),
    }
}

/// Accepted base64: the standard alphabet (what the AWS SDKs, boto3 and the KPL send),
/// padded or not.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A `Data` value's record bytes: a string is base64 (decoded), anything else is the
/// record as JSON text (kept as sent).
fn data_bytes<'a>(v: &'a [u8], at: &str) -> Result<Cow<'a, [u8]>, BodyError> {
    if v.first() != Some(&b'"') {
        return Ok(Cow::Borrowed(v));
    }
    // A string in a validated body always deserializes; escapes (`\/`) are undone first.
    let s: Cow<'_, str> = serde_json::from_slice(v).map_err(|e| BodyError::Syntax(e.to_string()))?;
    BASE64
        .decode(s.as_bytes())
        .map(Cow::Owned)
        .map_err(|e| BodyError::Base64(format!("{at}.Data: a string must be the base64 of the record ({e})")))
}

/// A short quote of a JSON text for error messages.
fn text(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.into_owned(),
    }
}

/// A position in a body serde_json already accepted, so only the envelope's punctuation
/// is checked here; values are measured by serde_json itself.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn validated(b: &'a [u8]) -> Result<Self, BodyError> {
        // serde_json does not check the UTF-8 of strings it ignores; RFC 8259 requires it.
        let text = std::str::from_utf8(b)
            .map_err(|e| BodyError::Syntax(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        serde_json::from_str::<IgnoredAny>(text).map_err(|e| BodyError::Syntax(e.to_string()))?;
        Ok(Cursor { b, i: 0 })
    }

    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\n' | b'\t' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// The next value's exact text.
    fn value(&mut self) -> Result<&'a [u8], BodyError> {
        self.ws();
        let rest = &self.b[self.i..];
        let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
        match it.next() {
            Some(Ok(_)) => {
                let n = it.byte_offset();
                self.i += n;
                Ok(&rest[..n])
            }
            // Unreachable for a validated body; kept as an error rather than a panic.
            Some(Err(e)) => Err(BodyError::Syntax(e.to_string())),
            None => Err(BodyError::Syntax("unexpected end of input".into())),
        }
    }

    fn string(&mut self, at: &str) -> Result<String, BodyError> {
        let v = self.value()?;
        serde_json::from_slice(v).map_err(|_| shape(format!("{at}: expected a string, got {}", text(v))))
    }

    /// Calls `f` for each member of an object, with the cursor on the member's value; `f`
    /// must consume the value (or fail).
    fn object(
        &mut self,
        at: &str,
        mut f: impl FnMut(&mut Self, &str) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        if self.peek() != Some(b'{') {
            let v = self.value()?;
            return Err(shape(format!("{at}: expected an object, got {}", text(v))));
        }
        self.i += 1;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string(at)?;
            self.ws();
            self.i += 1; // ':'
            f(self, &key)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                _ => {
                    self.i += 1; // '}'
                    return Ok(());
                }
            }
        }
    }

    /// Calls `f` for each element of an array, with the cursor on the element.
    fn array(
        &mut self,
        at: &str,
        mut f: impl FnMut(&mut Self, usize) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        if self.peek() != Some(b'[') {
            let v = self.value()?;
            return Err(shape(format!("{at}: expected an array, got {}", text(v))));
        }
        self.i += 1;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        let mut n = 0;
        loop {
            f(self, n)?;
            n += 1;
            match self.peek() {
                Some(b',') => self.i += 1,
                _ => {
                    self.i += 1; // ']'
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_values_are_the_exact_bytes_sent() {
        let body = br#" { "records" : [ {"value": {"index": 1, "a": 1e400, "b": 18446744073709551616, "a": 2} },
            {"key":"k1","value":[1 , 2],"partition":2}, {"value":"x","key":null} ] } "#;
        let r = kafka(body).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].value,
            br#"{"index": 1, "a": 1e400, "b": 18446744073709551616, "a": 2}"#
        );
        assert_eq!(r[0].key, None);
        assert_eq!(r[1].key, Some(&b"\"k1\""[..]));
        assert_eq!(r[1].value, b"[1 , 2]");
        assert_eq!(r[1].partition, Some(2));
        assert_eq!(r[2].value, b"\"x\"");
        assert_eq!(r[2].key, None);
    }

    #[test]
    fn kafka_numbers_and_literals_end_where_they_should() {
        let r = kafka(br#"{"records":[{"value":12,"key":-3.5e2},{"value":true},{"value":null}]}"#).unwrap();
        assert_eq!(r[0].value, b"12");
        assert_eq!(r[0].key, Some(&b"-3.5e2"[..]));
        assert_eq!(r[1].value, b"true");
        assert_eq!(r[2].value, b"null");
    }

    #[test]
    fn kafka_bad_bodies_name_the_problem() {
        let syntax = |b: &[u8]| matches!(kafka(b), Err(BodyError::Syntax(_)));
        assert!(syntax(b"{\"records\":[{\"value\":NaN}]}"));
        assert!(syntax(b"\xef\xbb\xbf{\"records\":[]}"));
        assert!(syntax(b"{\"records\":[]} x"));
        assert!(syntax(b""));
        assert!(syntax(b"{\"records\":[{\"value\":\"\xff\"}]}"));
        let msg = |b: &[u8]| match kafka(b) {
            Err(BodyError::Shape(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(msg(b"{}"), "no \"records\" field");
        assert_eq!(msg(b"[]"), "the body: expected an object, got []");
        assert_eq!(msg(b"{\"records\":{}}"), "records: expected an array, got {}");
        assert_eq!(msg(b"{\"records\":[]}"), "\"records\" is empty");
        assert_eq!(msg(b"{\"records\":[{\"key\":1}]}"), "records[0]: no \"value\"");
        assert_eq!(msg(b"{\"records\":[1]}"), "records[0]: expected an object, got 1");
        assert!(msg(b"{\"records\":[{\"value\":1,\"partition\":\"a\"}]}").starts_with("records[0].partition"));
        assert!(msg(b"{\"records\":[{\"value\":1}],\"value_schema\":\"x\"}").contains("value_schema"));
    }

    #[test]
    fn kinesis_shapes() {
        let one = kinesis_record(
            br#"{"StreamName":"streaming-p-pin","Data":{"index":1,"title":"a \"q\" }"},"PartitionKey":"partition-1"}"#,
        )
        .unwrap();
        assert_eq!(one.stream_name.as_deref(), Some("streaming-p-pin"));
        assert_eq!(*one.records[0].data, br#"{"index":1,"title":"a \"q\" }"}"#[..]);
        assert_eq!(one.records[0].partition_key, "partition-1");
        let many = kinesis_records(
            br#"{"StreamName":"s","Records":[{"Data":{"a":1},"PartitionKey":"k"},{"Data":2,"PartitionKey":"\u00e9","ExplicitHashKey":"7"}]}"#,
        )
        .unwrap();
        assert_eq!(many.records.len(), 2);
        assert_eq!(*many.records[1].data, b"2"[..]);
        assert_eq!(many.records[1].partition_key, "é");
        assert_eq!(many.records[1].explicit_hash_key.as_deref(), Some("7"));
        let err = |r: Result<KinesisBody<'_>, BodyError>| r.unwrap_err().to_string();
        assert_eq!(err(kinesis_record(br#"{"Data":{}}"#)), "the body: no \"PartitionKey\"");
        assert_eq!(
            err(kinesis_record(br#"{"Data":{},"PartitionKey":""}"#)),
            "the body.PartitionKey: 0 characters (allowed: 1..=256)"
        );
        assert_eq!(err(kinesis_records(br#"{"Records":[]}"#)), "\"Records\" is empty");
        assert_eq!(
            err(kinesis_records(br#"{"Records":[{"PartitionKey":"k"}]}"#)),
            "Records[0]: no \"Data\""
        );
        assert!(err(kinesis_records(
            br#"{"Records":[{"Data":1,"PartitionKey":"k","StreamName":"s"}]}"#
        ))
        .contains("unrecognized field \"StreamName\""));
    }

    #[test]
    fn sdk_fields_stream_arn_and_ordering_hint() {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/streaming-p-pin";
        let body =
            format!(r#"{{"StreamARN":"{arn}","Data":"e30=","PartitionKey":"k","SequenceNumberForOrdering":"7"}}"#);
        let one = kinesis_record(body.as_bytes()).unwrap();
        assert_eq!(one.stream_name.as_deref(), Some("streaming-p-pin"));
        let body = format!(r#"{{"StreamARN":"{arn}","Records":[{{"Data":"e30=","PartitionKey":"k"}}]}}"#);
        let many = kinesis_records(body.as_bytes()).unwrap();
        assert_eq!(many.stream_name.as_deref(), Some("streaming-p-pin"));
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:kinesis:us-east-1:1:stream/",
            "arn:aws:kinesis:us-east-1:1:stream/a/consumer/c",
        ] {
            let body = format!(r#"{{"StreamARN":"{bad}","Data":"e30=","PartitionKey":"k"}}"#);
            assert!(
                matches!(kinesis_record(body.as_bytes()), Err(BodyError::Shape(m)) if m.contains("StreamARN")),
                "{bad}"
            );
        }
        // The ordering hint belongs to PutRecord only.
        assert!(kinesis_records(
            br#"{"Records":[{"Data":"e30=","PartitionKey":"k","SequenceNumberForOrdering":"1"}]}"#
        )
        .is_err());
    }

    #[test]
    fn kinesis_data_as_base64() {
        let one = kinesis_record(br#"{"Data":"eyJpbmQiOjF9","PartitionKey":"k"}"#).unwrap();
        assert_eq!(*one.records[0].data, br#"{"ind":1}"#[..]);
        // Unpadded; and padded with JSON escapes in the string (`\u003d` is `=`, `\/` is `/`).
        let one = kinesis_record(br#"{"Data":"eyJpbmQiOjEyfQ","PartitionKey":"k"}"#).unwrap();
        assert_eq!(*one.records[0].data, br#"{"ind":12}"#[..]);
        let one = kinesis_record(br#"{"Data":"eyJpbmQiOjEyfQ\u003d\u003d","PartitionKey":"k"}"#).unwrap();
        assert_eq!(*one.records[0].data, br#"{"ind":12}"#[..]);
        let one = kinesis_record(br#"{"Data":"AP\/\/","PartitionKey":"k"}"#).unwrap();
        assert_eq!(*one.records[0].data, [0u8, 255, 255][..]);
        let many =
            kinesis_records(br#"{"Records":[{"Data":"AP8=","PartitionKey":"k"},{"Data":"","PartitionKey":"k"}]}"#)
                .unwrap();
        assert_eq!(*many.records[0].data, [0u8, 255][..]);
        assert!(many.records[1].data.is_empty());
        for bad in [r#""not base64!""#, r#""eyJ""#, r#""eyJp bmQ=""#] {
            let body = format!(r#"{{"Records":[{{"PartitionKey":"k","Data":{bad}}}]}}"#);
            match kinesis_records(body.as_bytes()) {
                Err(BodyError::Base64(m)) => assert!(m.starts_with("Records[0].Data: "), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        /// Either shape of `Data` gives the record's bytes: the JSON value's exact text, or
        /// what the base64 string decodes to.
        #[test]
        fn kinesis_data_both_shapes(bytes in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..200),
                                    v in proptest::arbitrary::any::<Vec<(String, i64)>>(), ws in "[ \n\t]{0,3}") {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let value = serde_json::to_string(&v).unwrap();
            let body = format!("{{\"Records\":[{{\"Data\":{ws}\"{b64}\"{ws},\"PartitionKey\":\"k\"}},{{\"PartitionKey\":\"k\",\"Data\":{ws}{value}{ws}}}]}}");
            let r = kinesis_records(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(&*r.records[0].data, &bytes[..]);
            proptest::prop_assert_eq!(&*r.records[1].data, value.as_bytes());
        }

        /// Whatever JSON value a record holds, the span found is exactly its text.
        #[test]
        fn spans_round_trip(v in proptest::arbitrary::any::<Vec<(String, i64, bool)>>(), ws in "[ \n\t]{0,3}") {
            let value = serde_json::to_string(&v).unwrap();
            let body = format!("{{{ws}\"records\"{ws}:{ws}[{ws}{{\"key\":{ws}{value}{ws},{ws}\"value\"{ws}:{ws}{value}{ws}}}{ws}]{ws}}}");
            let r = kafka(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(r[0].value, value.as_bytes());
            proptest::prop_assert_eq!(r[0].key, Some(value.as_bytes()));
        }
    }
}
