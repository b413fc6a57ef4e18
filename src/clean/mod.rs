//! Per-record cleaning: raw message bytes in, a typed row or a dead-letter reason out.
//!
//! The rules are the record contract in `shared/spec/cleaning.md`. Cleaning is a pure
//! function of the bytes (no clock, no state), so re-reading a record after a crash routes
//! it to the same table as the first time: exactly-once relies on that.
//!
//! - [`value`]: strict JSON walk and the coercions shared by every kind.
//! - [`kinds`]: field lists and per-kind rules.
//! - [`batch`]: Arrow schemas and builders for clean and dead-letter rows.

pub mod batch;
pub mod kinds;
mod record;
pub mod value;

pub use batch::{
    dead_letter_schema, raw_schema, schema, CleanBatchBuilder, DeadLetterBatchBuilder, Lineage, RawBatchBuilder,
    RecordMeta, RAW_PARTITION,
};
pub use kinds::{GeoRow, PinRow, UserRow};
pub use record::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_record_rules() {
        let max = DEFAULT_MAX_RECORD_BYTES;
        assert_eq!(clean(Kind::User, b"\xff{}", max), Err(Reject::InvalidUtf8));
        assert_eq!(clean(Kind::User, b"[1]", max), Err(Reject::NotObject));
        assert!(matches!(
            clean(Kind::User, b"{\"ind\":1} x", max),
            Err(Reject::InvalidJson(_))
        ));
        assert!(matches!(clean(Kind::Geo, &[b' '; 10], 4), Err(Reject::TooLarge { .. })));
        let r = clean(Kind::User, br#"{"ind":1,"zz":{"a":[1,2]},"y":3,"age":null}"#, max).unwrap();
        assert_eq!(r.unknown_fields(), 2);
        // Rule 8: the key alone, or with only unknown fields, is another kind's record;
        // a known field counts as present whatever its value (rule 4 comes first).
        let wrong = Err(Reject::WrongKind(Kind::User));
        assert_eq!(clean(Kind::User, br#"{"ind":1,"zz":2}"#, max), wrong);
        assert_eq!(
            clean(Kind::User, br#"{"ind":1,"timestamp":"2020-01-01 00:00:00"}"#, max).map_err(|e| e.to_string()),
            Err("wrong kind: no user fields".to_string())
        );
        assert!(matches!(
            clean(Kind::Pin, br#"{"ind":1,"index":"x"}"#, max),
            Err(Reject::Field { field: "index", .. })
        ));
        assert!(clean(Kind::Geo, br#"{"ind":1,"country":""}"#, max).is_ok());
        let r = clean(Kind::User, br#"{"ind":1,"first_name":"A\u00e9"}"#, max).unwrap();
        assert!(matches!(r, Row::User(UserRow { user_name: Some(ref n), .. }) if n == "Aé"));
    }
}
