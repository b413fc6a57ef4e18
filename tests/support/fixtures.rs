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

/// Every vector of every kind, in file order: `<kind>.jsonl`, then the vectors of rules
/// added since (`pending/<kind>.jsonl`, read while it exists: once merged into
/// `<kind>.jsonl` it is gone and nothing changes here).
pub fn vectors() -> Vec<(Kind, Value)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let path = dir().join(format!("{kind}.jsonl"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e} (set PINPIPE_FIXTURES)", path.display()));
        push_lines(&mut out, kind, &path, &text);
        let pending = dir().join("pending").join(format!("{kind}.jsonl"));
        if let Ok(text) = std::fs::read_to_string(&pending) {
            push_lines(&mut out, kind, &pending, &text);
        }
    }
    out
}

fn push_lines(out: &mut Vec<(Kind, Value)>, kind: Kind, path: &std::path::Path, text: &str) {
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
        out.push((kind, v));
    }
}

/// Checks that the row a vector became (`table`, `row` as read back from Delta) is what
/// the vector says: the clean table with the expected columns, or the dead-letter table
/// with the reason it names and the exact bytes.
pub fn check_row(kind: Kind, v: &Value, table: &str, row: &serde_json::Map<String, Value>) {
    let case = &v["case"];
    if let Some(expect) = v["expect"].as_object() {
        assert_eq!(table, kind.as_str(), "{kind} {case} should be clean: {row:?}");
        for (col, want) in expect {
            assert_eq!(&row[col], want, "{kind} {case}: column {col}");
        }
    } else {
        assert_eq!(table, format!("{kind}_dead_letter"), "{kind} {case}");
        let want = v["reject"].as_str().unwrap();
        let got = row["error"].as_str().unwrap();
        assert!(
            got.starts_with(want),
            "{kind} {case}: error {got:?} should start with {want:?}"
        );
        assert_eq!(row["raw"], v["raw"], "{kind} {case}: raw bytes kept");
    }
}
