//! The shared cleaning vectors, read from `../shared/fixtures/cleaning` (never copied).

use std::path::PathBuf;

use pinpipe::clean::Kind;
use serde_json::Value;

/// The fixtures folder: `PINPIPE_FIXTURES`, else `../shared/fixtures/cleaning` next to the
/// repo, else the team's shared folder `/work/shared` (a CI clone may live elsewhere).
pub fn dir() -> PathBuf {
    if let Ok(d) = std::env::var("PINPIPE_FIXTURES") {
        return PathBuf::from(d);
    }
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/cleaning"),
        PathBuf::from("/work/shared/fixtures/cleaning"),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("cleaning fixtures not found in {candidates:?}; set PINPIPE_FIXTURES to the folder"))
}

/// Every vector of every kind, in file order.
pub fn vectors() -> Vec<(Kind, Value)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let path = dir().join(format!("{kind}.jsonl"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e} (set PINPIPE_FIXTURES)", path.display()));
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            out.push((kind, v));
        }
    }
    out
}
