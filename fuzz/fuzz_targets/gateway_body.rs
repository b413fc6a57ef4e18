//! Any request body through the gateway's three parsers: records or a clear error, never a
//! panic; every Kafka value span handed on is valid JSON, and every Kinesis `Data` is either
//! a JSON value's span or the bytes of a base64 string found in the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinpipe_fuzz::gateway::body;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = body::kafka(data) {
        for r in records {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(r.value).is_ok());
        }
    }
    for parsed in [body::kinesis_record(data), body::kinesis_records(data)] {
        if let Ok(b) = parsed {
            for r in b.records {
                match r.data {
                    std::borrow::Cow::Borrowed(span) => {
                        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(span).is_ok());
                        assert_ne!(span.first(), Some(&b'"'), "a string Data is base64, never a span");
                    }
                    std::borrow::Cow::Owned(bytes) => {
                        // The bytes are what one of the body's strings decodes to.
                        use base64::Engine as _;
                        let body: serde_json::Value = serde_json::from_slice(data).expect("a parsed body is JSON");
                        let mut strings = Vec::new();
                        collect_strings(&body, &mut strings);
                        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
                        assert!(
                            strings.iter().any(|s| b64.decode(s.trim_end_matches('=')).ok().as_deref() == Some(&bytes[..])),
                            "decoded Data is not from the body"
                        );
                    }
                }
            }
        }
    }
});

fn collect_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
