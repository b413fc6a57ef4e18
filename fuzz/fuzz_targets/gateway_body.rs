//! Any request body through the gateway's three parsers: records or a clear error, never a
//! panic; every value span handed on is valid JSON.
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
                assert!(serde_json::from_slice::<serde::de::IgnoredAny>(r.data).is_ok());
            }
        }
    }
});
