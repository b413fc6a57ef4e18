//! Zero-copy parsing of one JSON object into per-field raw values, and the coercion rules
//! of the record contract (`shared/spec/cleaning.md`, "General, every kind").
//!
//! Why not `serde_json::Value`: building a map per record allocates for every key and
//! value. Here the top-level object is walked once, values of known fields are kept as
//! borrowed slices of the input and unknown fields are skipped without allocating. The
//! same rules apply to every kind, so each kind only lists its field names and types.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value as it arrived, before coercion. Strings borrow from the input where they
/// contain no escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An object or an array: never coercible to a column of this contract.
    Nested,
}

/// Why a field could not be coerced. The text after the field name in the dead-letter
/// `error` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    Missing,
    NotAnInteger,
    NotANumber,
    NotAString,
    NotATimestamp,
    NotACount,
    OutOfRange,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldError::Missing => "missing",
            FieldError::NotAnInteger => "not an integer",
            FieldError::NotANumber => "not a number",
            FieldError::NotAString => "not a string",
            FieldError::NotATimestamp => "not a timestamp",
            FieldError::NotACount => "not a count",
            FieldError::OutOfRange => "out of range",
        })
    }
}

/// The outcome of walking the top level of a message.
pub enum Parsed<'a, const N: usize> {
    Object { fields: [Option<Raw<'a>>; N], unknown: u32 },
    NotObject,
}

/// Parses `text` as one strict RFC 8259 JSON value. If it is an object, the values of the
/// keys in `names` are captured (a repeated key: the last value wins) and other keys are
/// counted as unknown. Trailing garbage, `NaN`, a BOM: `Err`.
pub fn parse_fields<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Result<Parsed<'a, N>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_any(TopVisitor { names })?;
    de.end()?;
    Ok(parsed)
}

struct TopVisitor<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> Visitor<'de> for TopVisitor<N> {
    type Value = Parsed<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: [Option<Raw<'de>>; N] = std::array::from_fn(|_| None);
        let mut unknown = 0u32;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => fields[i] = Some(map.next_value::<Raw<'de>>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                    unknown += 1;
                }
            }
        }
        Ok(Parsed::Object { fields, unknown })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Parsed::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Parsed::NotObject)
    }
}

impl<'de> de::Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Nested)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Nested)
    }
}

// `Cow<str>` keys: serde's impl for Cow always allocates, so borrow explicitly.
struct KeySeed;
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Str(s) => Ok(s),
            _ => Err(de::Error::custom("object key is not a string")),
        }
    }
}

use serde::Deserialize as _;

/// A string that is empty or only whitespace means "no data".
fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Coerces a raw value to an integer column, enforcing `[min, max]`.
pub fn to_int(raw: Option<Raw<'_>>, min: i64, max: i64) -> Result<Option<i64>, FieldError> {
    let v = match raw {
        None | Some(Raw::Null) => return Ok(None),
        Some(Raw::I64(v)) => v as i128,
        Some(Raw::U64(v)) => v as i128,
        Some(Raw::F64(f)) => return float_to_int(f, min, max).map(Some),
        Some(Raw::Str(s)) => {
            if blank(&s) {
                return Ok(None);
            }
            return str_to_int(s.trim(), min, max).map(Some);
        }
        Some(Raw::Bool(_)) | Some(Raw::Nested) => return Err(FieldError::NotAnInteger),
    };
    if v < min as i128 || v > max as i128 {
        return Err(FieldError::OutOfRange);
    }
    Ok(Some(v as i64))
}

fn float_to_int(f: f64, min: i64, max: i64) -> Result<i64, FieldError> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(FieldError::NotAnInteger);
    }
    // Compare in f64: `min as f64` is exact for the i32/i64 bounds used here, and the
    // upper bound is exclusive at 2^63 because `i64::MAX as f64` rounds up to exactly 2^63.
    if f < min as f64 || f > max as f64 || f >= i64::MAX as f64 {
        return Err(FieldError::OutOfRange);
    }
    Ok(f as i64)
}

fn str_to_int(s: &str, min: i64, max: i64) -> Result<i64, FieldError> {
    match s.parse::<i128>() {
        Ok(v) if v < min as i128 || v > max as i128 => Err(FieldError::OutOfRange),
        Ok(v) => Ok(v as i64),
        Err(_) if is_decimal_number(s) => {
            if s.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') {
                // All digits but did not fit i128: certainly out of range.
                return Err(FieldError::OutOfRange);
            }
            let f: f64 = s.parse().map_err(|_| FieldError::NotAnInteger)?;
            float_to_int(f, min, max)
        }
        Err(_) => Err(FieldError::NotAnInteger),
    }
}

/// JSON-number-like text: `-12`, `3.5`, `1e3`. Rejects Rust-only forms such as `inf`,
/// `NaN` and `+`-less oddities that `str::parse::<f64>` would accept.
fn is_decimal_number(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    !b.is_empty()
        && b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
}

/// Coerces a raw value to a float column.
pub fn to_float(raw: Option<Raw<'_>>) -> Result<Option<f64>, FieldError> {
    match raw {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::I64(v)) => Ok(Some(v as f64)),
        Some(Raw::U64(v)) => Ok(Some(v as f64)),
        Some(Raw::F64(v)) => Ok(Some(v)),
        Some(Raw::Str(s)) if blank(&s) => Ok(None),
        Some(Raw::Str(s)) => {
            let t = s.trim();
            match t.parse::<f64>() {
                Ok(f) if is_decimal_number(t) && f.is_finite() => Ok(Some(f)),
                _ => Err(FieldError::NotANumber),
            }
        }
        Some(Raw::Bool(_)) | Some(Raw::Nested) => Err(FieldError::NotANumber),
    }
}

/// Coerces a raw value to a string column: blank -> null, a number -> its JSON text.
pub fn to_str<'a>(raw: Option<Raw<'a>>) -> Result<Option<Cow<'a, str>>, FieldError> {
    match raw {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::Str(s)) if blank(&s) => Ok(None),
        Some(Raw::Str(s)) => Ok(Some(s)),
        Some(Raw::I64(v)) => Ok(Some(Cow::Owned(v.to_string()))),
        Some(Raw::U64(v)) => Ok(Some(Cow::Owned(v.to_string()))),
        // serde_json's own float formatting (shortest round-trip text).
        Some(Raw::F64(v)) => Ok(Some(Cow::Owned(
            serde_json::Number::from_f64(v)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ))),
        Some(Raw::Bool(_)) | Some(Raw::Nested) => Err(FieldError::NotAString),
    }
}

/// Coerces a raw value to a UTC timestamp in microseconds since the epoch.
pub fn to_timestamp(raw: Option<Raw<'_>>) -> Result<Option<i64>, FieldError> {
    match raw {
        None | Some(Raw::Null) => Ok(None),
        Some(Raw::Str(s)) if blank(&s) => Ok(None),
        Some(Raw::Str(s)) => parse_timestamp(s.trim()).map(Some).ok_or(FieldError::NotATimestamp),
        Some(_) => Err(FieldError::NotATimestamp),
    }
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`; no zone means UTC.
///
/// Hand-written instead of `chrono::NaiveDateTime::parse_from_str` because it runs once per
/// geo and user record and the format-string interpreter dominated the cleaning profile;
/// chrono still validates the calendar (no 30 February).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b' ' | b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = chrono::NaiveTime::from_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    let mut i = 19;
    let mut micros = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => ([*h1, *h2], [*m1, *m2]),
                [h1, h2] => ([*h1, *h2], [b'0', b'0']),
                _ => return None,
            };
            let two = |d: [u8; 2]| -> Option<i64> {
                (d[0].is_ascii_digit() && d[1].is_ascii_digit()).then(|| ((d[0] - b'0') * 10 + (d[1] - b'0')) as i64)
            };
            let (h, m) = (two(h)?, two(m)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let naive = date.and_time(time).and_utc().timestamp();
    Some((naive - offset_secs) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_timestamp("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00-0130"), Some(5_400_000_000));
        assert_eq!(parse_timestamp("2020-02-30 00:00:00"), None);
        assert_eq!(parse_timestamp("2020-01-01 00:00:00 "), None);
        assert_eq!(parse_timestamp("2020-01-01 00:00:00."), None);
    }

    #[test]
    fn ints() {
        assert_eq!(to_int(Some(Raw::F64(20.0)), i64::MIN, i64::MAX), Ok(Some(20)));
        assert_eq!(to_int(Some(Raw::F64(20.5)), 0, 9), Err(FieldError::NotAnInteger));
        assert_eq!(
            to_int(Some(Raw::F64(1e23)), i64::MIN, i64::MAX),
            Err(FieldError::OutOfRange)
        );
        assert_eq!(
            to_int(Some(Raw::U64(u64::MAX)), i64::MIN, i64::MAX),
            Err(FieldError::OutOfRange)
        );
        assert_eq!(to_int(Some(Raw::Str(" 42 ".into())), 0, 99), Ok(Some(42)));
        assert_eq!(to_int(Some(Raw::Str("42.0".into())), 0, 99), Ok(Some(42)));
        assert_eq!(
            to_int(Some(Raw::Str("inf".into())), 0, 99),
            Err(FieldError::NotAnInteger)
        );
        assert_eq!(
            to_int(
                Some(Raw::Str("123456789012345678901234567890123456789012".into())),
                0,
                99
            ),
            Err(FieldError::OutOfRange)
        );
        assert_eq!(to_int(Some(Raw::Bool(true)), 0, 99), Err(FieldError::NotAnInteger));
    }

    #[test]
    fn strings_and_floats() {
        assert_eq!(to_str(Some(Raw::I64(5))), Ok(Some(Cow::Borrowed("5"))));
        assert_eq!(to_str(Some(Raw::Str("  ".into()))), Ok(None));
        assert_eq!(to_str(Some(Raw::Bool(false))), Err(FieldError::NotAString));
        assert_eq!(to_float(Some(Raw::Str("NaN".into()))), Err(FieldError::NotANumber));
        assert_eq!(to_float(Some(Raw::Str("-1.5".into()))), Ok(Some(-1.5)));
    }
}
