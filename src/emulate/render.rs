//! A record's bytes: the fields of a kind written as a JSON object the way the seed's
//! Python wrote them (`json.dumps` separators `", "` and `": "`), and the deliberate breaks
//! that make a record invalid for the dead-letter path.
//!
//! Every break must make the cleaner reject the record: `tests.rs` checks that a broken
//! record never cleans and a valid one always does, so a new break that the cleaner
//! accepts fails the suite.

use rand::rngs::StdRng;
use rand::RngExt;

/// A JSON value as written.
#[derive(Debug, Clone, Copy)]
pub(super) enum V<'a> {
    Str(&'a str),
    Int(i64),
    /// JSON text as is (a float already formatted, or something deliberately invalid).
    Raw(&'a str),
}

pub(super) type Field<'a> = (&'static str, V<'a>);

/// How a record is broken on purpose. Every one of them rejects the record.
#[derive(Debug)]
pub(super) enum Break {
    /// Cut short (at a character boundary, at least one byte kept).
    Truncate,
    /// A stray `}` after the object.
    Trailing,
    /// The field is left out.
    Remove(&'static str),
    /// The field gets this value instead.
    Set(&'static str, V<'static>),
}

/// The ways each kind (pin, geo, user) is broken, picked uniformly.
pub(super) const BREAKS: [&[Break]; 3] = [
    &[
        Break::Truncate,
        Break::Trailing,
        Break::Remove("index"),
        Break::Set("index", V::Str("abc")),
        Break::Set("follower_count", V::Str("lots")),
        Break::Set("follower_count", V::Str("12B")),
        Break::Set("downloaded", V::Str("yes")),
    ],
    &[
        Break::Truncate,
        Break::Trailing,
        Break::Remove("ind"),
        Break::Set("ind", V::Raw("null")),
        Break::Set("latitude", V::Raw("123.0")),
        Break::Set("longitude", V::Raw("-200.5")),
        Break::Set("latitude", V::Raw("NaN")),
        Break::Set("latitude", V::Str("north")),
        Break::Set("timestamp", V::Str("not a date")),
    ],
    &[
        Break::Truncate,
        Break::Trailing,
        Break::Remove("ind"),
        Break::Set("ind", V::Str("abc")),
        Break::Set("age", V::Str("abc")),
        Break::Set("age", V::Raw("20.5")),
        Break::Set("age", V::Int(3_000_000_000)),
        Break::Set("date_joined", V::Str("yesterday")),
    ],
];

/// Writes the object `{"k": v, ...}` (Python `json.dumps` separators), broken if asked.
pub(super) fn render(fields: &[Field<'_>], brk: Option<&Break>, rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() * 48 + 32);
    let (skip, replace) = match brk {
        Some(Break::Remove(k)) => (Some(*k), None),
        Some(Break::Set(k, v)) => (None, Some((*k, *v))),
        _ => (None, None),
    };
    out.push(b'{');
    let mut first = true;
    for &(key, value) in fields {
        if skip == Some(key) {
            continue;
        }
        let value = match replace {
            Some((k, v)) if k == key => v,
            _ => value,
        };
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\": ");
        match value {
            V::Str(s) => write_str(&mut out, s),
            V::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            V::Raw(t) => out.extend_from_slice(t.as_bytes()),
        }
    }
    out.push(b'}');
    match brk {
        Some(Break::Truncate) => {
            let text = std::str::from_utf8(&out).expect("records are UTF-8");
            let mut cut = rng.random_range(1..text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        Some(Break::Trailing) => out.push(b'}'),
        _ => {}
    }
    out
}

/// A JSON string; the common case (nothing to escape) is copied as is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}
