//! The record contract: every fixture vector through the real cleaning path, and
//! property tests showing cleaning never panics and always decides.

mod support;

use pinpipe::clean::{
    self, CleanBatchBuilder, DeadLetterBatchBuilder, Kind, Lineage, Reject, DEFAULT_MAX_RECORD_BYTES,
};
use proptest::prelude::*;
use serde_json::Value;

const LINEAGE: Lineage<'static> = Lineage {
    source: "batch",
    stream: "fixtures",
    partition: "p",
    ingested_at: 0,
};

pub struct Vector {
    pub kind: Kind,
    pub case: String,
    pub raw: String,
    pub expect: Option<serde_json::Map<String, Value>>,
    pub reject: Option<String>,
}

fn vectors() -> Vec<Vector> {
    support::fixtures::vectors()
        .into_iter()
        .map(|(kind, v)| Vector {
            kind,
            case: v["case"].as_str().unwrap().to_string(),
            raw: v["raw"].as_str().unwrap().to_string(),
            expect: v["expect"].as_object().cloned(),
            reject: v["reject"].as_str().map(str::to_string),
        })
        .collect()
}

#[test]
fn every_fixture_vector() {
    let vs = vectors();
    assert!(vs.len() >= 60, "expected the shared fixtures, found {}", vs.len());
    for v in &vs {
        let what = format!("{} / {}", v.kind, v.case);
        match (
            clean::clean(v.kind, v.raw.as_bytes(), DEFAULT_MAX_RECORD_BYTES),
            &v.expect,
            &v.reject,
        ) {
            (Ok(row), Some(expect), None) => {
                let mut b = CleanBatchBuilder::new(v.kind);
                b.append(&row, &LINEAGE, "1");
                let batch = b.finish();
                let got = support::rows::row(&batch, 0);
                for (col, want) in expect {
                    assert_eq!(got.get(col), Some(want), "{what}: column {col}");
                }
                // The data columns are exactly the expected ones, in the spec's order.
                let data: Vec<&String> = got.keys().filter(|k| !k.starts_with('_')).collect();
                assert_eq!(data, expect.keys().collect::<Vec<_>>(), "{what}: column order");
            }
            (Err(reject), None, Some(want)) => {
                let msg = reject.to_string();
                assert!(
                    msg.starts_with(want.as_str()),
                    "{what}: error {msg:?} should start with {want:?}"
                );
                let mut d = DeadLetterBatchBuilder::default();
                d.append(&LINEAGE, "1", &msg, v.raw.as_bytes());
                let dl = d.finish();
                assert_eq!(
                    support::rows::row(&dl, 0)["raw"],
                    Value::String(v.raw.clone()),
                    "{what}: raw bytes kept"
                );
            }
            (got, expect, reject) => panic!("{what}: got {got:?}, expected {expect:?} / reject {reject:?}"),
        }
    }
}

#[test]
fn whole_record_rules_from_bytes() {
    // Invalid UTF-8 cannot be written as a fixture string; it is checked here.
    for kind in Kind::ALL {
        assert_eq!(
            clean::clean(kind, b"{\"ind\":1,\"x\":\"\xff\"}", DEFAULT_MAX_RECORD_BYTES),
            Err(Reject::InvalidUtf8)
        );
        let big = vec![b' '; 100];
        let r = clean::clean(kind, &big, 10).unwrap_err();
        assert!(r.to_string().starts_with("too large"), "{r}");
    }
}

#[test]
fn nasty_records_decide_without_panic() {
    let corpus = support::nasty::records();
    assert!(corpus.len() > 60);
    let mut rejected = 0;
    for (what, bytes) in &corpus {
        for kind in Kind::ALL {
            // Run on a thread with the default 2 MiB stack, as a tokio worker has: a
            // recursion that only a big main-thread stack survives fails here.
            let (b, what2) = (bytes.clone(), what.to_string());
            let decided = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    check_decides(kind, &b);
                    clean::clean(kind, &b, DEFAULT_MAX_RECORD_BYTES).is_err()
                })
                .unwrap()
                .join()
                .unwrap_or_else(|_| panic!("{kind} / {what2}: panicked"));
            rejected += decided as usize;
        }
    }
    eprintln!("{rejected} of {} (record, kind) pairs rejected", corpus.len() * 3);
    // Spot checks of the decisions that matter most.
    let reason = |kind, raw: &[u8]| match clean::clean(kind, raw, DEFAULT_MAX_RECORD_BYTES) {
        Ok(_) => "clean".to_string(),
        Err(r) => r.rule().to_string(),
    };
    // PINPIPE_SHOW_DECISIONS=1 prints every decision (to review the corpus against the spec).
    if std::env::var_os("PINPIPE_SHOW_DECISIONS").is_some() {
        for (what, b) in &corpus {
            eprintln!(
                "{what:40} pin={} geo={} user={}",
                reason(Kind::Pin, b),
                reason(Kind::Geo, b),
                reason(Kind::User, b)
            );
        }
    }
    let find = |name: &str| &corpus.iter().find(|(w, _)| *w == name).unwrap().1;
    assert_eq!(reason(Kind::Pin, find("deep arrays (100k)")), "not a json object");
    assert_eq!(reason(Kind::Pin, find("deep objects (50k)")), "invalid json");
    assert_eq!(
        reason(Kind::Pin, find("deep value inside an unknown field")),
        "invalid json"
    );
    assert_eq!(reason(Kind::Geo, find("-Infinity latitude")), "invalid json");
    assert_eq!(reason(Kind::Pin, find("index beyond i64")), "index");
    assert_eq!(reason(Kind::User, find("age beyond i32")), "age");
    assert_eq!(reason(Kind::Pin, find("lone surrogate escape")), "invalid json");
    assert_eq!(reason(Kind::Pin, find("NaN")), "invalid json");
    assert_eq!(reason(Kind::Pin, find("invalid utf-8 in a string")), "invalid utf-8");
    assert_eq!(reason(Kind::Pin, find("bom then record")), "invalid json");
    assert_eq!(reason(Kind::Pin, find("over 1 MiB")), "too large");
    assert_eq!(reason(Kind::Pin, find("trailing garbage")), "invalid json");
    assert_eq!(reason(Kind::Pin, find("1 MiB - 1 string")), "clean");
    // Its key and only unknown fields: another kind's record (rule 8), however many.
    assert_eq!(reason(Kind::Pin, find("10 000 unknown keys")), "wrong kind");
}

fn check_decides(kind: Kind, bytes: &[u8]) {
    match clean::clean(kind, bytes, DEFAULT_MAX_RECORD_BYTES) {
        Ok(row) => {
            let mut b = CleanBatchBuilder::new(kind);
            b.append(&row, &LINEAGE, "1");
            assert_eq!(b.finish().num_rows(), 1);
        }
        Err(reject) => {
            let msg = reject.to_string();
            assert!(!msg.is_empty() && !reject.rule().is_empty());
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("6k"),
            Just("1.5M"),
            Just("2020-01-01 00:00:00"),
            Just("  "),
            Just("User Info Error")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    let leaf = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Objects keyed with the contract's own field names, so the coercion rules are reached.
    let mut fields: Vec<&'static str> = Kind::ALL.iter().flat_map(|k| k.raw_fields().iter().copied()).collect();
    fields.push("extra");
    let names = prop::sample::select(fields);
    prop_oneof![
        1 => leaf.clone(),
        4 => prop::collection::vec((names, leaf), 0..12)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in Kind::ALL {
            check_decides(kind, &bytes);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let text = serde_json::to_vec(&v).unwrap();
        for kind in Kind::ALL {
            check_decides(kind, &text);
        }
    }
}
