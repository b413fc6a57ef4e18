//! The record's decision: the three kinds, why a record is rejected, and [`clean`] itself.
//! Apart from Arrow (in [`super::batch`]), so the fuzz targets in `fuzz/` build this
//! without the rest of pinpipe.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::kinds::{self, GeoRow, PinRow, UserRow};
use super::value::FieldError;

/// The three event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pin,
    Geo,
    User,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pin, Kind::Geo, Kind::User];

    /// The fields of the raw record, in the contract's order (unknown ones are ignored).
    pub fn raw_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pin => &kinds::PIN_FIELDS,
            Kind::Geo => &kinds::GEO_FIELDS,
            Kind::User => &kinds::USER_FIELDS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pin => "pin",
            Kind::Geo => "geo",
            Kind::User => "user",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pin" => Ok(Kind::Pin),
            "geo" => Ok(Kind::Geo),
            "user" => Ok(Kind::User),
            other => Err(format!("unknown kind {other:?} (allowed: pin, geo, user)")),
        }
    }
}

/// Why a record goes to the dead-letter table. `Display` is the `error` column: the text
/// before `:` names the rule or the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    InvalidUtf8,
    InvalidJson(String),
    NotObject,
    TooLarge {
        size: usize,
        max: usize,
    },
    /// Rule 8: the key is there but none of the kind's other fields (a record of another
    /// kind posted to this kind's topic or stream).
    WrongKind(Kind),
    Field {
        field: &'static str,
        error: FieldError,
    },
    /// A Kinesis record with the KPL's magic prefix that is not a valid aggregate (why):
    /// its user records cannot be trusted, so it is dead-lettered whole.
    CorruptAggregate(String),
}

impl Reject {
    pub fn field(field: &'static str, error: FieldError) -> Self {
        Reject::Field { field, error }
    }

    /// A short, bounded label for metrics (`invalid json`, `age`, ...).
    pub fn rule(&self) -> &'static str {
        match self {
            Reject::InvalidUtf8 => "invalid utf-8",
            Reject::InvalidJson(_) => "invalid json",
            Reject::NotObject => "not a json object",
            Reject::TooLarge { .. } => "too large",
            Reject::WrongKind(_) => "wrong kind",
            Reject::Field { field, .. } => field,
            Reject::CorruptAggregate(_) => "corrupt kpl aggregate",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::InvalidUtf8 => f.write_str("invalid utf-8"),
            Reject::InvalidJson(e) => write!(f, "invalid json: {e}"),
            Reject::NotObject => f.write_str("not a json object"),
            Reject::TooLarge { size, max } => {
                write!(f, "too large: {size} bytes (limit {max})")
            }
            Reject::WrongKind(kind) => write!(f, "wrong kind: no {kind} fields"),
            Reject::Field { field, error } => write!(f, "{field}: {error}"),
            Reject::CorruptAggregate(why) => write!(f, "corrupt KPL aggregate: {why}"),
        }
    }
}

/// A clean row of any kind, borrowing from the message it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Row<'a> {
    Pin(PinRow<'a>),
    Geo(GeoRow<'a>),
    User(UserRow<'a>),
}

impl Row<'_> {
    /// Fields the record carried that the contract does not know (counted, not errors).
    pub fn unknown_fields(&self) -> u32 {
        match self {
            Row::Pin(r) => r.unknown_fields,
            Row::Geo(r) => r.unknown_fields,
            Row::User(r) => r.unknown_fields,
        }
    }
}

/// Largest message cleaned; a larger one is a dead letter (its bytes are still kept).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Cleans one message of `kind`.
pub fn clean(kind: Kind, raw: &[u8], max_bytes: usize) -> Result<Row<'_>, Reject> {
    if raw.len() > max_bytes {
        return Err(Reject::TooLarge {
            size: raw.len(),
            max: max_bytes,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| Reject::InvalidUtf8)?;
    match kind {
        Kind::Pin => kinds::parse_pin(text).map(Row::Pin),
        Kind::Geo => kinds::parse_geo(text).map(Row::Geo),
        Kind::User => kinds::parse_user(text).map(Row::User),
    }
}
