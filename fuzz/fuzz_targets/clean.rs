//! Any bytes, each kind: a row or a reason, never a panic, within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinpipe_fuzz::clean::{clean, Kind, DEFAULT_MAX_RECORD_BYTES};

fuzz_target!(|data: &[u8]| {
    for kind in Kind::ALL {
        match clean(kind, data, DEFAULT_MAX_RECORD_BYTES) {
            Ok(row) => {
                let _ = row.unknown_fields();
            }
            Err(reject) => {
                // The dead-letter reason is never empty and names a rule.
                assert!(!reject.to_string().is_empty() && !reject.rule().is_empty());
            }
        }
    }
});
