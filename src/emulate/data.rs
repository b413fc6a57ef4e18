//! What one index's pin, geo and user say: drawn field by field from an rng, with the
//! seed's dirty data at realistic rates. Story-format pins with every field a placeholder
//! (`"No Title Data Available"`, `"User Info Error"`, the spelled-out
//! `"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"`, `"Image src error."`, ...), single placeholders,
//! empty strings, follower counts as `"211"`, `"6k"`, `"1.5k"`, `"1M"`, users under 18.
//!
//! The order of draws is part of the output: drawing one more value (or one fewer) in any
//! `generate` changes every later field, so every seed's posts change. Keep the order when
//! editing, or say in the commit that seeds give new posts.

use std::borrow::Cow;

use chrono::{Datelike, Timelike};
use rand::rngs::StdRng;
use rand::RngExt;

use super::render::{Field, V};
use super::words::{self, Category, CATEGORIES};

fn pick<T: Copy>(r: &mut StdRng, items: &[T]) -> T {
    items[r.random_range(0..items.len())]
}

/// `true` with probability `per_mille / 1000`.
fn chance(r: &mut StdRng, per_mille: u32) -> bool {
    r.random_range(0..1000u32) < per_mille
}

// The seed's placeholders, spelled as its scraper wrote them: the cleaner maps each to null.
const NO_TITLE: &str = "No Title Data Available";
const NO_DESCRIPTION: &str = "No description available";
const NO_DESCRIPTION_STORY: &str = "No description available Story format";
const UNTITLED: &str = "Untitled";
const USER_INFO_ERROR: &str = "User Info Error";
const NO_TAGS: &str = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e";
const IMAGE_SRC_ERROR: &str = "Image src error.";
const IMAGE: &str = "image";
pub(super) const VIDEO: &str = "video";
pub(super) const STORY: &str = "multi-video(story page format)";

/// Placeholders and picked words are borrowed; only composed text is allocated.
type Text = Cow<'static, str>;

pub(super) struct PinData {
    unique_id: [u8; 36],
    title: Text,
    description: Text,
    poster_name: Text,
    follower_count: Text,
    tag_list: Text,
    is_image_or_video: &'static str,
    image_src: Text,
    downloaded: i64,
    save_location: String,
    category: &'static str,
}

impl PinData {
    pub(super) fn generate(r: &mut StdRng) -> Self {
        let cat: &Category = &CATEGORIES[r.random_range(0..CATEGORIES.len())];
        let mut id = [0u8; 16];
        r.fill(&mut id[..]);
        let mut unique_id = [0u8; 36];
        uuid::Builder::from_random_bytes(id)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut unique_id);
        let save_location = format!("Local save in /data/{}", cat.slug);
        if chance(r, 40) {
            // The seed's story-format pins: the scraper got nothing but the category.
            return PinData {
                unique_id,
                title: NO_TITLE.into(),
                description: NO_DESCRIPTION_STORY.into(),
                poster_name: USER_INFO_ERROR.into(),
                follower_count: USER_INFO_ERROR.into(),
                tag_list: NO_TAGS.into(),
                is_image_or_video: STORY,
                image_src: IMAGE_SRC_ERROR.into(),
                downloaded: 0,
                save_location,
                category: cat.slug,
            };
        }
        let topic = pick(r, cat.topics);
        let title: Text = match r.random_range(0..1000u32) {
            0..20 => NO_TITLE.into(),
            20..25 => "".into(),
            _ => title(r, topic).into(),
        };
        let description: Text = match r.random_range(0..1000u32) {
            0..30 => NO_DESCRIPTION.into(),
            30..35 => UNTITLED.into(),
            35..40 => "".into(),
            _ => description(r, topic).into(),
        };
        let (poster_name, follower_count): (Text, Text) = match r.random_range(0..1000u32) {
            0..10 => (USER_INFO_ERROR.into(), USER_INFO_ERROR.into()),
            10..15 => (poster_name(r).into(), USER_INFO_ERROR.into()),
            15..18 => ("".into(), follower_count(r).into()),
            _ => (poster_name(r).into(), follower_count(r).into()),
        };
        let tag_list: Text = match r.random_range(0..1000u32) {
            0..30 => NO_TAGS.into(),
            30..35 => "".into(),
            _ => tag_list(r, cat).into(),
        };
        let is_image_or_video = match r.random_range(0..100u32) {
            0..85 => IMAGE,
            85..97 => VIDEO,
            _ => STORY,
        };
        let image_ok = !chance(r, 10);
        let image_src: Text = if image_ok {
            image_src(r).into()
        } else {
            IMAGE_SRC_ERROR.into()
        };
        let downloaded = i64::from(image_ok && !chance(r, 30));
        PinData {
            unique_id,
            title,
            description,
            poster_name,
            follower_count,
            tag_list,
            is_image_or_video,
            image_src,
            downloaded,
            save_location,
            category: cat.slug,
        }
    }

    pub(super) fn fields(&self, ind: i64) -> [Field<'_>; 12] {
        [
            ("index", V::Int(ind)),
            (
                "unique_id",
                V::Str(std::str::from_utf8(&self.unique_id).expect("uuid text is ASCII")),
            ),
            ("title", V::Str(&self.title)),
            ("description", V::Str(&self.description)),
            ("poster_name", V::Str(&self.poster_name)),
            ("follower_count", V::Str(&self.follower_count)),
            ("tag_list", V::Str(&self.tag_list)),
            ("is_image_or_video", V::Str(self.is_image_or_video)),
            ("image_src", V::Str(&self.image_src)),
            ("downloaded", V::Int(self.downloaded)),
            ("save_location", V::Str(&self.save_location)),
            ("category", V::Str(self.category)),
        ]
    }
}

fn title(r: &mut StdRng, topic: &str) -> String {
    match r.random_range(0..4u32) {
        0 => format!(
            "{} {topic} {}",
            pick(r, words::TITLE_ADJECTIVES),
            pick(r, words::TITLE_SUFFIXES)
        ),
        1 => format!(
            "{} {topic} {}",
            pick(r, words::TITLE_COUNTS),
            pick(r, words::TITLE_SUFFIXES)
        ),
        2 => format!("{topic} {}", pick(r, words::TITLE_TAILS)),
        _ => format!("{} {topic}", pick(r, words::TITLE_ADJECTIVES)),
    }
}

fn description(r: &mut StdRng, topic: &str) -> String {
    let mut d = format!(
        "{} {} {}",
        pick(r, words::DESCRIPTION_OPENERS),
        topic.to_lowercase(),
        pick(r, words::DESCRIPTION_CLOSERS)
    );
    if chance(r, 10) {
        d.push_str(words::DESCRIPTION_EXTRA);
    }
    d
}

fn poster_name(r: &mut StdRng) -> String {
    if r.random_bool(0.5) {
        format!("{} {}", pick(r, words::FIRST_NAMES), pick(r, words::LAST_NAMES))
    } else {
        format!("{} {}", pick(r, words::BRAND_FIRST), pick(r, words::BRAND_SECOND))
    }
}

/// `"211"`, `"6k"`, `"1.5k"`, `"1M"`, `"2.3M"`: at most one decimal, so always a whole count.
fn follower_count(r: &mut StdRng) -> String {
    match r.random_range(0..100u32) {
        0..30 => r.random_range(0..1000u32).to_string(),
        30..55 => format!("{}k", r.random_range(1..100u32)),
        55..72 => format!("{}k", r.random_range(100..1000u32)),
        72..88 => format!("{}.{}k", r.random_range(1..100u32), r.random_range(1..10u32)),
        88..96 => format!("{}M", r.random_range(1..10u32)),
        _ => format!("{}.{}M", r.random_range(1..10u32), r.random_range(1..10u32)),
    }
}

fn tag_list(r: &mut StdRng, cat: &Category) -> String {
    // A run of distinct tags starting anywhere in the category's list.
    let n = r.random_range(2..=6usize).min(cat.tags.len());
    let start = r.random_range(0..cat.tags.len());
    let mut s = String::with_capacity(64);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(cat.tags[(start + i) % cat.tags.len()]);
    }
    s
}

fn image_src(r: &mut StdRng) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    r.fill(&mut b[..]);
    let mut s = String::with_capacity(80);
    s.push_str("https://i.pinimg.com/originals/");
    let hex = |s: &mut String, byte: u8| {
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    };
    for &byte in &b[..3] {
        hex(&mut s, byte);
        s.push('/');
    }
    for &byte in &b {
        hex(&mut s, byte);
    }
    s.push_str(if b[3] & 3 == 0 { ".png" } else { ".jpg" });
    s
}

/// 2015-01-01, 2018-01-01 and 2023-01-01 00:00:00 UTC in seconds since the epoch.
pub(super) const T2015: i64 = 1_420_070_400;
pub(super) const T2018: i64 = 1_514_764_800;
pub(super) const T2023: i64 = 1_672_531_200;

pub(super) struct GeoData {
    timestamp: DateTime,
    latitude: String,
    longitude: String,
    country: &'static str,
}

impl GeoData {
    pub(super) fn generate(r: &mut StdRng) -> Self {
        GeoData {
            timestamp: DateTime::new(r.random_range(T2018..T2023)),
            latitude: coordinate(r, 90),
            longitude: coordinate(r, 180),
            country: if chance(r, 5) { "" } else { pick(r, words::COUNTRIES) },
        }
    }

    pub(super) fn fields(&self, ind: i64) -> [Field<'_>; 5] {
        [
            ("ind", V::Int(ind)),
            ("timestamp", V::Str(self.timestamp.as_str())),
            ("latitude", V::Raw(&self.latitude)),
            ("longitude", V::Raw(&self.longitude)),
            ("country", V::Str(self.country)),
        ]
    }
}

/// A float in `[-max, max]` with 4 to 6 decimals, printed like Python's `repr` (`-173.293`,
/// `10.0`).
fn coordinate(r: &mut StdRng, max: i64) -> String {
    let decimals = r.random_range(4..=6u32);
    let scale = 10i64.pow(decimals);
    let v = r.random_range(-max * scale..=max * scale);
    let mut frac = format!("{:0width$}", v.abs() % scale, width = decimals as usize);
    while frac.len() > 1 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{}{}.{frac}", if v < 0 { "-" } else { "" }, v.abs() / scale)
}

pub(super) struct UserData {
    first_name: &'static str,
    last_name: &'static str,
    age: i64,
    date_joined: DateTime,
}

impl UserData {
    pub(super) fn generate(r: &mut StdRng) -> Self {
        UserData {
            first_name: if chance(r, 3) { "" } else { pick(r, words::FIRST_NAMES) },
            last_name: if chance(r, 5) { "" } else { pick(r, words::LAST_NAMES) },
            age: if chance(r, 20) {
                r.random_range(13..18)
            } else {
                r.random_range(18..=70)
            },
            date_joined: DateTime::new(r.random_range(T2015..T2023)),
        }
    }

    pub(super) fn fields(&self, ind: i64) -> [Field<'_>; 5] {
        [
            ("ind", V::Int(ind)),
            ("first_name", V::Str(self.first_name)),
            ("last_name", V::Str(self.last_name)),
            ("age", V::Int(self.age)),
            ("date_joined", V::Str(self.date_joined.as_str())),
        ]
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a UTC instant (chrono's `%Y-%m-%d %H:%M:%S`), kept inline:
/// no allocation per record.
struct DateTime([u8; 19]);

impl DateTime {
    /// `secs` since the epoch; years 0..=9999 only (the generator draws 2015..2023).
    ///
    /// chrono does the calendar; the digits are written here because chrono's formatter
    /// (even with pre-parsed items, into a stack buffer) costs about 80 ns more per
    /// datetime, which made uncached generation (two datetimes a post) about 10% slower.
    fn new(secs: i64) -> Self {
        let t = chrono::DateTime::from_timestamp(secs, 0)
            .expect("a year chrono represents")
            .naive_utc();
        let year = u32::try_from(t.year()).expect("a year after 0");
        debug_assert!(year <= 9999, "a year of 4 digits");
        let mut b = *b"0000-00-00 00:00:00";
        for (at, width, v) in [
            (0, 4, year),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, t.second()),
        ] {
            zero_padded(&mut b[at..at + width], v);
        }
        DateTime(b)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("datetime text is ASCII")
    }
}

/// `v`'s last `out.len()` decimal digits, zero-padded.
fn zero_padded(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(DateTime::new(0).as_str(), "1970-01-01 00:00:00");
        assert_eq!(DateTime::new(T2015).as_str(), "2015-01-01 00:00:00");
        assert_eq!(DateTime::new(T2018).as_str(), "2018-01-01 00:00:00");
        assert_eq!(DateTime::new(T2023 - 1).as_str(), "2022-12-31 23:59:59");
        assert_eq!(DateTime::new(1_598_586_767).as_str(), "2020-08-28 03:52:47");
        assert_eq!(DateTime::new(951_782_400).as_str(), "2000-02-29 00:00:00");
        for secs in (T2015..T2023).step_by(7_777_777) {
            let us = crate::clean::value::parse_timestamp(DateTime::new(secs).as_str()).unwrap();
            assert_eq!(us, secs * 1_000_000);
        }
        // Byte for byte chrono's own `%Y-%m-%d %H:%M:%S`, across the generator's range.
        for secs in (T2015..T2023).step_by(86_399) {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(DateTime::new(secs).as_str(), t.format("%Y-%m-%d %H:%M:%S").to_string());
        }
    }

    #[test]
    fn coordinates_print_like_python() {
        let mut r = StdRng::seed_from_u64(1);
        for _ in 0..10_000 {
            let s = coordinate(&mut r, 90);
            let v: f64 = s.parse().unwrap();
            assert!((-90.0..=90.0).contains(&v), "{s}");
            let (_, frac) = s.split_once('.').unwrap();
            assert!((1..=6).contains(&frac.len()), "{s}");
            assert!(frac.len() == 1 || !frac.ends_with('0'), "{s}");
            assert_ne!(s, "-0.0");
        }
    }
}
