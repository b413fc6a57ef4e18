//! The three record kinds: their fields, their per-kind rules, and their clean rows.
//!
//! Each `parse_*` function turns one message into a row that borrows from the message,
//! or a [`Reject`] naming the rule or field that failed. Nothing here allocates for a
//! typical record except where a value must be rewritten (`user_name`, a number kept as
//! text).

use std::borrow::Cow;

use super::value::{parse_fields, to_float, to_int, to_str, to_timestamp, FieldError, Parsed, Raw};
use super::{Kind, Reject};

fn field_err(field: &'static str) -> impl Fn(FieldError) -> Reject {
    move |e| Reject::field(field, e)
}

/// Parses the top-level object, mapping the whole-record failures.
fn object<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Result<([Option<Raw<'a>>; N], u32), Reject> {
    match parse_fields(text, names) {
        Ok(Parsed::Object { fields, unknown }) => Ok((fields, unknown)),
        Ok(Parsed::NotObject) => Err(Reject::NotObject),
        Err(e) => Err(Reject::InvalidJson(e.to_string())),
    }
}

/// The key field (rule 4): present and an integer, else the record is rejected. Then rule
/// 8: at least one of the kind's other fields must be present (whatever its value), else
/// the record belongs to another kind. `fields[0]` is the key in every kind's list.
fn key<const N: usize>(fields: &[Option<Raw<'_>>; N], name: &'static str, kind: Kind) -> Result<i64, Reject> {
    let ind = match to_int(fields[0].clone(), i64::MIN, i64::MAX) {
        Ok(Some(v)) => v,
        Ok(None) => return Err(Reject::field(name, FieldError::Missing)),
        Err(e) => return Err(Reject::field(name, e)),
    };
    if fields[1..].iter().all(Option::is_none) {
        return Err(Reject::WrongKind(kind));
    }
    Ok(ind)
}

fn text<'a>(raw: Option<Raw<'a>>, name: &'static str) -> Result<Option<Cow<'a, str>>, Reject> {
    to_str(raw).map_err(field_err(name))
}

/// A string field whose placeholder values mean "no data".
fn text_or_placeholder<'a>(
    raw: Option<Raw<'a>>,
    name: &'static str,
    placeholders: &[&str],
) -> Result<Option<Cow<'a, str>>, Reject> {
    Ok(text(raw, name)?.filter(|s| !placeholders.contains(&s.as_ref())))
}

// ---------------------------------------------------------------------------------- pin

pub(crate) const PIN_FIELDS: [&str; 12] = [
    "index",
    "unique_id",
    "title",
    "description",
    "poster_name",
    "follower_count",
    "tag_list",
    "is_image_or_video",
    "image_src",
    "downloaded",
    "save_location",
    "category",
];

#[derive(Debug, Clone, PartialEq)]
pub struct PinRow<'a> {
    pub ind: i64,
    pub unique_id: Option<Cow<'a, str>>,
    pub title: Option<Cow<'a, str>>,
    pub description: Option<Cow<'a, str>>,
    pub follower_count: Option<i64>,
    pub poster_name: Option<Cow<'a, str>>,
    pub tag_list: Option<Cow<'a, str>>,
    pub is_image_or_video: Option<Cow<'a, str>>,
    pub image_src: Option<Cow<'a, str>>,
    pub save_location: Option<Cow<'a, str>>,
    pub category: Option<Cow<'a, str>>,
    pub downloaded: Option<i32>,
    pub unknown_fields: u32,
}

pub fn parse_pin(text_in: &str) -> Result<PinRow<'_>, Reject> {
    let (fields, unknown) = object(text_in, &PIN_FIELDS)?;
    let ind = key(&fields, "index", Kind::Pin)?;
    let [_, unique_id, title, description, poster, follower, tags, kind, image, downloaded, save, category] = fields;
    let follower_count = match text(follower, "follower_count")? {
        None => None,
        Some(s) if s == "User Info Error" => None,
        Some(s) => Some(parse_count(&s).map_err(field_err("follower_count"))?),
    };
    let save_location = text(save, "save_location")?.map(|s| match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.strip_prefix("Local save in ").unwrap_or(b)),
        Cow::Owned(o) => Cow::Owned(o.strip_prefix("Local save in ").unwrap_or(&o).to_owned()),
    });
    Ok(PinRow {
        ind,
        unique_id: text(unique_id, "unique_id")?,
        title: text_or_placeholder(title, "title", &["No Title Data Available"])?,
        description: text_or_placeholder(
            description,
            "description",
            &[
                "No description available",
                "No description available Story format",
                "Untitled",
            ],
        )?,
        follower_count,
        poster_name: text_or_placeholder(poster, "poster_name", &["User Info Error"])?,
        tag_list: text_or_placeholder(tags, "tag_list", &["N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"])?,
        is_image_or_video: text(kind, "is_image_or_video")?,
        image_src: text_or_placeholder(image, "image_src", &["Image src error."])?,
        save_location: save_location.filter(|s| !s.trim().is_empty()),
        category: text(category, "category")?,
        downloaded: to_int(downloaded, i32::MIN as i64, i32::MAX as i64)
            .map_err(field_err("downloaded"))?
            .map(|v| v as i32),
        unknown_fields: unknown,
    })
}

/// `"211"`, `"6k"`, `"1.5k"`, `"1M"` -> a whole count. Decimal arithmetic on the digits
/// (not f64) so `"1.1k"` is exactly 1100 and a fractional result is refused.
pub fn parse_count(s: &str) -> Result<i64, FieldError> {
    let s = s.trim();
    let (digits, mult): (&str, u128) = match s.as_bytes().last() {
        Some(b'k') => (&s[..s.len() - 1], 1_000),
        Some(b'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(FieldError::NotACount);
    }
    if whole.len() + frac.len() > 30 {
        return Err(FieldError::OutOfRange);
    }
    let mantissa: u128 = format!("{whole}{frac}").parse().map_err(|_| FieldError::NotACount)?;
    let scale = 10u128.pow(frac.len() as u32);
    let scaled = mantissa.checked_mul(mult).ok_or(FieldError::OutOfRange)?;
    if scaled % scale != 0 {
        return Err(FieldError::NotACount);
    }
    i64::try_from(scaled / scale).map_err(|_| FieldError::OutOfRange)
}

// ---------------------------------------------------------------------------------- geo

pub(crate) const GEO_FIELDS: [&str; 5] = ["ind", "timestamp", "latitude", "longitude", "country"];

#[derive(Debug, Clone, PartialEq)]
pub struct GeoRow<'a> {
    pub ind: i64,
    pub country: Option<Cow<'a, str>>,
    pub coordinates: Option<[f64; 2]>,
    pub timestamp: Option<i64>,
    pub unknown_fields: u32,
}

pub fn parse_geo(text_in: &str) -> Result<GeoRow<'_>, Reject> {
    let (fields, unknown) = object(text_in, &GEO_FIELDS)?;
    let ind = key(&fields, "ind", Kind::Geo)?;
    let [_, timestamp, lat, lon, country] = fields;
    let lat = to_float(lat).map_err(field_err("latitude"))?;
    let lon = to_float(lon).map_err(field_err("longitude"))?;
    if lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
        return Err(Reject::field("latitude", FieldError::OutOfRange));
    }
    if lon.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
        return Err(Reject::field("longitude", FieldError::OutOfRange));
    }
    Ok(GeoRow {
        ind,
        country: text(country, "country")?,
        coordinates: lat.zip(lon).map(|(a, b)| [a, b]),
        timestamp: to_timestamp(timestamp).map_err(field_err("timestamp"))?,
        unknown_fields: unknown,
    })
}

// --------------------------------------------------------------------------------- user

pub(crate) const USER_FIELDS: [&str; 5] = ["ind", "first_name", "last_name", "age", "date_joined"];

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow<'a> {
    pub ind: i64,
    pub user_name: Option<Cow<'a, str>>,
    pub age: Option<i32>,
    pub date_joined: Option<i64>,
    pub unknown_fields: u32,
}

pub fn parse_user(text_in: &str) -> Result<UserRow<'_>, Reject> {
    let (fields, unknown) = object(text_in, &USER_FIELDS)?;
    let ind = key(&fields, "ind", Kind::User)?;
    let [_, first, last, age, joined] = fields;
    let user_name = match (text(first, "first_name")?, text(last, "last_name")?) {
        (Some(f), Some(l)) => Some(Cow::Owned(format!("{f} {l}"))),
        (f, l) => f.or(l),
    };
    Ok(UserRow {
        ind,
        user_name,
        age: to_int(age, i32::MIN as i64, i32::MAX as i64)
            .map_err(field_err("age"))?
            .map(|v| v as i32),
        date_joined: to_timestamp(joined).map_err(field_err("date_joined"))?,
        unknown_fields: unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("211"), Ok(211));
        assert_eq!(parse_count("6k"), Ok(6000));
        assert_eq!(parse_count("1.5k"), Ok(1500));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("1.0001k"), Err(FieldError::NotACount));
        assert_eq!(parse_count("12B"), Err(FieldError::NotACount));
        assert_eq!(parse_count("k"), Err(FieldError::NotACount));
        assert_eq!(parse_count("1.k"), Err(FieldError::NotACount));
        assert_eq!(parse_count("-5"), Err(FieldError::NotACount));
        assert_eq!(parse_count("99999999999999M"), Err(FieldError::OutOfRange));
        assert_eq!(parse_count("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_count("9223372036854775808"), Err(FieldError::OutOfRange));
    }
}
