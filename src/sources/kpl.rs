//! KPL aggregation: the Kinesis Producer Library packs many user records into one Kinesis
//! record, as
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf)
//! ```
//!
//! where `AggregatedRecord { repeated string partition_key_table = 1; repeated string
//! explicit_hash_key_table = 2; repeated Record records = 3; }` and `Record { uint64
//! partition_key_index = 1; uint64 explicit_hash_key_index = 2; bytes data = 3; repeated
//! Tag tags = 4; }` (the KPL's published `messages.proto`).
//!
//! [`split`] tells a plain record from an aggregate and yields its user records. A record
//! with the magic prefix whose checksum or protobuf does not hold is [`Split::Corrupt`]: the
//! caller dead-letters it whole, since its user records cannot be trusted (the KCL instead
//! passes such a record on as one plain record; here it would fail cleaning anyway, and the
//! reason says why). The decoder is a few wire-format rules, not a protobuf code generator:
//! three message types of four field kinds, read without copying the payloads.

use md5::{Digest, Md5};

/// The KPL's magic prefix.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
}

/// What a Kinesis record's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split<'a> {
    /// Not an aggregate: one user record, the whole payload.
    Plain,
    /// An aggregate's user records, in order (their index is the sub-sequence number).
    Records(Vec<UserRecord<'a>>),
    /// The magic prefix, but not a valid aggregate: why.
    Corrupt(String),
}

/// Splits a Kinesis record's payload into its user records.
pub fn split(payload: &[u8]) -> Split<'_> {
    let Some(rest) = payload.strip_prefix(&MAGIC) else {
        return Split::Plain;
    };
    if rest.len() < DIGEST_LEN {
        return Split::Corrupt(format!(
            "{} bytes after the magic prefix, fewer than its MD5",
            rest.len()
        ));
    }
    let (message, digest) = rest.split_at(rest.len() - DIGEST_LEN);
    if Md5::digest(message).as_slice() != digest {
        return Split::Corrupt("MD5 checksum mismatch".into());
    }
    match decode(message) {
        Ok(records) if records.is_empty() => Split::Corrupt("no user records".into()),
        Ok(records) => Split::Records(records),
        Err(e) => Split::Corrupt(e),
    }
}

/// Packs user records into an aggregate (tests, benches and the emulator's KPL mode).
pub fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut message = Vec::new();
    let mut bodies = Vec::new();
    for (key, data) in records {
        let index = keys.iter().position(|k| k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        let mut body = Vec::new();
        put_varint(&mut body, 1 << 3); // partition_key_index, varint
        put_varint(&mut body, index as u64);
        put_bytes(&mut body, 3, data);
        bodies.push(body);
    }
    for key in &keys {
        put_bytes(&mut message, 1, key.as_bytes());
    }
    for body in &bodies {
        put_bytes(&mut message, 3, body);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&message);
    out.extend_from_slice(Md5::digest(&message).as_slice());
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A protobuf field's value, as far as these messages need.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Reads protobuf fields one by one.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length beyond memory")?;
        if n > self.buf.len() {
            return Err(format!("field of {n} bytes, {} left", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next (field number, value), or None at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Bytes(self.take(8)?),
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Bytes(self.take(4)?),
            wire => return Err(format!("unsupported wire type {wire}")),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn decode(message: &[u8]) -> Result<Vec<UserRecord<'_>>, String> {
    let mut keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut fields = Fields { buf: message };
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => {
                keys.push(std::str::from_utf8(b).map_err(|_| "partition key is not UTF-8")?);
            }
            (3, Value::Bytes(b)) => raw_records.push(b),
            (1 | 3, Value::Varint(_)) => return Err(format!("field {field} has the wrong wire type")),
            // Explicit hash keys and unknown fields: not needed to read the records.
            _ => {}
        }
    }
    raw_records
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut index = None;
            let mut data = None;
            let mut f = Fields { buf: body };
            while let Some((field, value)) = f.next_field()? {
                match (field, value) {
                    (1, Value::Varint(v)) => index = Some(v),
                    (3, Value::Bytes(b)) => data = Some(b),
                    (1 | 3, _) => return Err(format!("record {i}: field {field} has the wrong wire type")),
                    _ => {}
                }
            }
            let index = index.ok_or_else(|| format!("record {i} has no partition key index"))?;
            let partition_key = usize::try_from(index)
                .ok()
                .and_then(|k| keys.get(k).copied())
                .ok_or_else(|| format!("record {i}: partition key index {index} of {}", keys.len()))?;
            Ok(UserRecord {
                partition_key,
                data: data.ok_or_else(|| format!("record {i} has no data"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_record_is_not_split() {
        assert_eq!(split(br#"{"ind": 1}"#), Split::Plain);
        assert_eq!(split(b""), Split::Plain);
        assert_eq!(split(&MAGIC[..3]), Split::Plain);
    }

    #[test]
    fn an_aggregate_splits_into_its_records_in_order() {
        let agg = aggregate(&[("a", b"one"), ("b", b""), ("a", b"three")]);
        let Split::Records(records) = split(&agg) else {
            panic!("not split: {:?}", split(&agg));
        };
        let got: Vec<(&str, &[u8])> = records.iter().map(|r| (r.partition_key, r.data)).collect();
        assert_eq!(got, [("a", &b"one"[..]), ("b", b""), ("a", b"three")]);
    }

    /// What the Python `aws-kinesis-agg` 1.2.3 library (the KPL's format, from PyPI) made of
    /// the user records ("pk1", "hello"), ("pk2", "world"), ("pk1", "again"): the decoder
    /// reads the KPL's own layout, and [`aggregate`] writes the same bytes.
    #[test]
    fn the_kpl_libraries_bytes_decode_and_aggregate_reproduces_them() {
        const REFERENCE: &str = "f3899ac20a03706b310a03706b321a0908001a0568656c6c6f1a0908011a05776f726c64\
                                 1a0908001a05616761696e409f94288dcfdfc68512a12f9436f7ac";
        let agg = hex::decode(REFERENCE).unwrap();
        let Split::Records(r) = split(&agg) else {
            panic!("not split: {:?}", split(&agg));
        };
        let got: Vec<(&str, &[u8])> = r.iter().map(|r| (r.partition_key, r.data)).collect();
        assert_eq!(got, [("pk1", &b"hello"[..]), ("pk2", b"world"), ("pk1", b"again")]);
        assert_eq!(aggregate(&got), agg);
    }

    #[test]
    fn a_damaged_aggregate_is_corrupt_never_a_panic() {
        let agg = aggregate(&[("k", b"{\"ind\": 1}"), ("k", b"{\"ind\": 2}")]);
        // A flipped payload byte: the checksum no longer holds.
        let mut flipped = agg.clone();
        flipped[10] ^= 0x01;
        assert_eq!(split(&flipped), Split::Corrupt("MD5 checksum mismatch".into()));
        // Too short for the checksum.
        assert!(matches!(split(&agg[..12]), Split::Corrupt(_)));
        // Every truncation and a valid checksum over garbage: corrupt or split, no panic.
        for n in 0..agg.len() {
            let _ = split(&agg[..n]);
        }
        let garbage = [0xFFu8; 9];
        let mut fake = MAGIC.to_vec();
        fake.extend_from_slice(&garbage);
        fake.extend_from_slice(Md5::digest(garbage).as_slice());
        assert!(matches!(split(&fake), Split::Corrupt(_)));
        // An index past the key table.
        let mut message = Vec::new();
        put_bytes(&mut message, 3, &[0x08, 0x05, 0x1a, 0x00]);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&message);
        bad.extend_from_slice(Md5::digest(&message).as_slice());
        assert!(matches!(split(&bad), Split::Corrupt(e) if e.contains("index 5")));
        // An aggregate of no records carries nothing to clean: corrupt, not silently empty.
        let empty = aggregate(&[]);
        assert_eq!(split(&empty), Split::Corrupt("no user records".into()));
    }
}
