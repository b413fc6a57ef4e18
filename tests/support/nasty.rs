//! A corpus of hostile records (the fault suite's bad-input list): each must end as a clean
//! row or a dead letter with its bytes kept, never a panic, a hang or a lost record.
//! None holds a raw `\n`, so each is exactly one JSON Lines record.

/// `(what it is, the record's bytes)`.
pub fn records() -> Vec<(&'static str, Vec<u8>)> {
    let deep = |depth: usize, open: &str, close: &str| format!("{}{}", open.repeat(depth), close.repeat(depth));
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty object", b"{}".to_vec()),
        ("json null", b"null".to_vec()),
        ("json string", b"\"index\"".to_vec()),
        ("json array of records", br#"[{"index":1}]"#.to_vec()),
        ("trailing garbage", br#"{"index":1}}"#.to_vec()),
        ("two objects on a line", br#"{"index":1} {"index":2}"#.to_vec()),
        ("unterminated string", br#"{"index":1,"title":"abc"#.to_vec()),
        // Nesting far past any recursion limit: an error, not a stack overflow.
        ("deep arrays (100k)", deep(100_000, "[", "]").into_bytes()),
        ("deep objects (50k)", deep(50_000, "{\"a\":", "}").into_bytes()),
        (
            "deep value inside a known field",
            format!("{{\"index\":1,\"title\":{}}}", deep(20_000, "[", "]")).into_bytes(),
        ),
        (
            "deep value inside an unknown field",
            format!("{{\"index\":1,\"zzz\":{}}}", deep(20_000, "{\"a\":", "}")).into_bytes(),
        ),
        ("unclosed deep arrays", "[".repeat(100_000).into_bytes()),
        // Non-JSON number literals.
        ("NaN", br#"{"index":NaN}"#.to_vec()),
        ("Infinity", br#"{"index":1,"follower_count":Infinity}"#.to_vec()),
        (
            "-Infinity latitude",
            br#"{"ind":1,"latitude":-Infinity,"longitude":0}"#.to_vec(),
        ),
        (
            "NaN as a string",
            br#"{"ind":1,"latitude":"NaN","longitude":"Infinity"}"#.to_vec(),
        ),
        // Numbers outside i64 and f64.
        ("index beyond i64", br#"{"index":9223372036854775808}"#.to_vec()),
        ("index below i64", br#"{"ind":-9223372036854775809,"age":1}"#.to_vec()),
        (
            "index with 400 digits",
            format!("{{\"index\":{}}}", "9".repeat(400)).into_bytes(),
        ),
        (
            "exponent beyond f64",
            br#"{"ind":1,"latitude":1e400,"longitude":-1e400}"#.to_vec(),
        ),
        (
            "tiny exponent",
            br#"{"ind":1,"latitude":1e-400,"longitude":0}"#.to_vec(),
        ),
        ("age beyond i32", br#"{"ind":1,"age":4294967296}"#.to_vec()),
        ("fractional index", br#"{"index":1.5}"#.to_vec()),
        // Duplicate keys: one decision, whichever value wins.
        ("duplicate index", br#"{"index":1,"index":2}"#.to_vec()),
        (
            "duplicate key, second invalid",
            br#"{"ind":1,"age":30,"age":"old"}"#.to_vec(),
        ),
        // Encodings.
        (
            "invalid utf-8 in a string",
            b"{\"index\":1,\"title\":\"\xff\xfe\"}".to_vec(),
        ),
        ("overlong utf-8", b"{\"index\":1,\"title\":\"\xc0\xaf\"}".to_vec()),
        (
            "utf-16 surrogate bytes",
            b"{\"index\":1,\"title\":\"\xed\xa0\x80\"}".to_vec(),
        ),
        ("lone surrogate escape", br#"{"index":1,"title":"\ud800"}"#.to_vec()),
        (
            "reversed surrogate pair",
            br#"{"index":1,"title":"\udc00\ud800"}"#.to_vec(),
        ),
        ("bom then record", b"\xef\xbb\xbf{\"index\":1}".to_vec()),
        ("nul bytes", b"{\"index\":1,\"title\":\"a\x00b\"}".to_vec()),
        (
            "raw control char in string",
            b"{\"index\":1,\"title\":\"a\x01b\"}".to_vec(),
        ),
        ("escaped nul", br#"{"index":1,"title":"a\u0000b"}"#.to_vec()),
        ("only whitespace", b" \t ".to_vec()),
        ("carriage return", b"{\"index\":1}\r".to_vec()),
        ("latin-1 text", b"{\"index\":1,\"title\":\"caf\xe9\"}".to_vec()),
        ("binary garbage", (0u8..=255).filter(|b| *b != b'\n').collect()),
        // Sizes: just under and just over the 1 MiB record limit, and a huge key.
        ("1 MiB - 1 string", {
            let head = br#"{"index":1,"description":""#;
            let tail = br#""}"#;
            let mut v = head.to_vec();
            v.extend(std::iter::repeat_n(b'x', (1 << 20) - head.len() - tail.len() - 1));
            v.extend_from_slice(tail);
            v
        }),
        (
            "over 1 MiB",
            format!("{{\"index\":1,\"description\":\"{}\"}}", "x".repeat(1 << 20)).into_bytes(),
        ),
        (
            "huge key",
            format!("{{\"{}\":1,\"index\":1}}", "k".repeat(100_000)).into_bytes(),
        ),
        (
            "10 000 unknown keys",
            format!(
                "{{\"index\":1,{}}}",
                (0..10_000)
                    .map(|i| format!("\"k{i}\":{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into_bytes(),
        ),
        (
            "many escapes",
            format!("{{\"index\":1,\"title\":\"{}\"}}", "\\u00e9\\n".repeat(20_000)).into_bytes(),
        ),
    ];
    // Each kind's fields with values of every wrong type.
    for bad in ["[]", "{}", "true", "null", "\"\"", "-0", "1e2"] {
        for field in [
            "index",
            "ind",
            "follower_count",
            "age",
            "latitude",
            "timestamp",
            "date_joined",
        ] {
            let leak: &'static str = Box::leak(format!("{field} = {bad}").into_boxed_str());
            out.push((
                leak,
                format!("{{\"index\":1,\"ind\":1,\"{field}\":{bad}}}").into_bytes(),
            ));
        }
    }
    out
}
