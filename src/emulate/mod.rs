//! The deterministic post generator: the seed project's `user_posting_emulation.py`,
//! made reproducible.
//!
//! A post is a pin, a geo and a user record sharing one integer index (`index` in pin,
//! `ind` in geo and user), serialized as the record contract's "Raw records" section says
//! (Python `json.dumps` style separators, datetimes as `"YYYY-MM-DD HH:MM:SS"`).
//!
//! Like the seed, which picked a random row out of three database tables, indexes are
//! drawn from a bounded pool (`0..index_pool`) and the content of a post is a function of
//! its index: the same `ind` always yields the same pin, geo and user, so posts repeat and
//! joins on `ind` match across kinds. Whether a record is made invalid is decided per
//! record, per draw.
//!
//! The seed's dirty data comes at realistic rates: story-format posts with every pin field
//! a placeholder (`"No Title Data Available"`, `"User Info Error"`, the spelled-out
//! `"N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"`, `"Image src error."`, ...), single placeholders,
//! empty strings, follower counts as `"211"`, `"6k"`, `"1.5k"`, `"1M"`, users under 18.
//! A configurable share of records (default 0.5%) is broken on purpose for the
//! dead-letter path: truncated JSON, trailing garbage, `NaN`, a missing or non-integer key,
//! `"abc"` for `age`, latitude `123.0`, ...
//!
//! Determinism: the same [`EmulatorConfig`] gives byte-identical posts, for a given `rand`
//! version (`Cargo.lock` pins it; `StdRng`'s algorithm may change across `rand` releases).
//! Every record is valid UTF-8 on a single line (no raw newline), never blank, so JSON
//! Lines files of posts split back into the same records.

pub mod files;
pub mod gateway;
pub mod kafka;
pub mod kinesis;
mod words;

use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::clean::Kind;
use words::{Category, CATEGORIES};

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmulatorConfig {
    /// Seed of every random choice: the same seed gives byte-identical posts.
    pub seed: u64,
    /// Share of records (each kind independently) made invalid on purpose, 0..=1.
    pub invalid_share: f64,
    /// Indexes are drawn from `0..index_pool`, so posts repeat like the seed's.
    pub index_pool: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: 42,
            invalid_share: 0.005,
            index_pool: 11_000,
        }
    }
}

/// A rejected [`EmulatorConfig`]; `field` names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmulateError {
    #[error("emulator config {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

/// One post: three raw JSON records sharing `ind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub ind: i64,
    pub pin: Vec<u8>,
    pub geo: Vec<u8>,
    pub user: Vec<u8>,
}

impl Post {
    /// The raw record of `kind`.
    pub fn record(&self, kind: Kind) -> &[u8] {
        match kind {
            Kind::Pin => &self.pin,
            Kind::Geo => &self.geo,
            Kind::User => &self.user,
        }
    }
}

/// The progress bar of an emulator run, counting posts (hidden when `progress` is off).
pub(crate) fn posts_bar(count: u64, progress: bool) -> indicatif::ProgressBar {
    let bar = if progress {
        indicatif::ProgressBar::new(count)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} posts ({per_sec}, eta {eta})",
        )
        .expect("static template"),
    );
    bar
}

/// Pools up to this size keep each index's rendered records (about 720 bytes an index):
/// repeated posts are then copies, several times faster than rendering again.
const CACHE_MAX_POOL: u64 = 1 << 16;

/// An endless, deterministic stream of posts.
pub struct Generator {
    cfg: EmulatorConfig,
    rng: StdRng,
    /// The valid records of each index once rendered (empty: not yet), if the pool is small.
    cache: Option<Vec<[Vec<u8>; 3]>>,
}

impl Generator {
    /// A generator with the `[emulate]` section's seed, invalid share and index pool.
    pub fn from_config(cfg: &crate::config::EmulateConfig) -> Result<Self, EmulateError> {
        Self::new(EmulatorConfig {
            seed: cfg.seed,
            invalid_share: cfg.invalid_share,
            index_pool: cfg.index_pool,
        })
    }

    pub fn new(cfg: EmulatorConfig) -> Result<Self, EmulateError> {
        let bad = |field, reason: String| Err(EmulateError::InvalidConfig { field, reason });
        if !(0.0..=1.0).contains(&cfg.invalid_share) {
            return bad(
                "invalid_share",
                format!("{} is outside the allowed 0..=1", cfg.invalid_share),
            );
        }
        if cfg.index_pool == 0 {
            return bad("index_pool", "must be at least 1".into());
        }
        if cfg.index_pool > 1 << 63 {
            return bad(
                "index_pool",
                format!("{} is more than indexes fit in int64", cfg.index_pool),
            );
        }
        let cache = (cfg.index_pool <= CACHE_MAX_POOL).then(|| vec![Default::default(); cfg.index_pool as usize]);
        Ok(Generator {
            cfg,
            rng: StdRng::seed_from_u64(cfg.seed),
            cache,
        })
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.cfg
    }

    pub fn next_post(&mut self) -> Post {
        self.next_post_marked().0
    }

    /// The next post and, per kind (pin, geo, user), whether its record was broken on purpose.
    fn next_post_marked(&mut self) -> (Post, [bool; 3]) {
        let ind = self.rng.random_range(0..self.cfg.index_pool) as i64;
        let mut breaks = [None; 3];
        for (k, b) in breaks.iter_mut().enumerate() {
            if self.rng.random_bool(self.cfg.invalid_share) {
                *b = Some(&BREAKS[k][self.rng.random_range(0..BREAKS[k].len())]);
            }
        }
        // The content depends on (seed, ind) only; the main stream decides the rest.
        let seed = self.cfg.seed;
        let out = match &mut self.cache {
            Some(cache) => {
                let slot = &mut cache[ind as usize];
                if slot[0].is_empty() {
                    *slot = Content::new(seed, ind).render(ind, [None; 3], &mut self.rng);
                }
                let mut out = slot.clone();
                if breaks.iter().any(Option::is_some) {
                    let broken = Content::new(seed, ind).render(ind, breaks, &mut self.rng);
                    for (k, b) in broken.into_iter().enumerate() {
                        if breaks[k].is_some() {
                            out[k] = b;
                        }
                    }
                }
                out
            }
            None => Content::new(seed, ind).render(ind, breaks, &mut self.rng),
        };
        let [pin, geo, user] = out;
        (Post { ind, pin, geo, user }, breaks.map(|b| b.is_some()))
    }
}

/// Everything a post says, as drawn for one index.
struct Content {
    pin: PinData,
    geo: GeoData,
    user: UserData,
}

impl Content {
    fn new(seed: u64, ind: i64) -> Self {
        let mut r = content_rng(seed, ind);
        let pin = PinData::generate(&mut r);
        let geo = GeoData::generate(&mut r);
        let user = UserData::generate(&mut r);
        Content { pin, geo, user }
    }

    /// The three records, each broken as asked (`rng` draws where to cut).
    fn render(&self, ind: i64, breaks: [Option<&Break>; 3], rng: &mut StdRng) -> [Vec<u8>; 3] {
        [
            render(&self.pin.fields(ind), breaks[0], rng),
            render(&self.geo.fields(ind), breaks[1], rng),
            render(&self.user.fields(ind), breaks[2], rng),
        ]
    }
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self
            .cache
            .as_ref()
            .map(|c| c.iter().filter(|r| !r[0].is_empty()).count());
        f.debug_struct("Generator")
            .field("cfg", &self.cfg)
            .field("cached_indexes", &cached)
            .finish_non_exhaustive()
    }
}

impl Iterator for Generator {
    type Item = Post;

    fn next(&mut self) -> Option<Post> {
        Some(self.next_post())
    }
}

/// The generator of one index's content: a function of (seed, ind) via SplitMix64.
fn content_rng(seed: u64, ind: i64) -> StdRng {
    let mut state = seed ^ (ind as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut key = [0u8; 32];
    for chunk in key.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    StdRng::from_seed(key)
}

fn pick<T: Copy>(r: &mut StdRng, items: &[T]) -> T {
    items[r.random_range(0..items.len())]
}

/// `true` with probability `per_mille / 1000`.
fn chance(r: &mut StdRng, per_mille: u32) -> bool {
    r.random_range(0..1000u32) < per_mille
}

// ------------------------------------------------------------------------------ content

const NO_TITLE: &str = "No Title Data Available";
const NO_DESCRIPTION: &str = "No description available";
const NO_DESCRIPTION_STORY: &str = "No description available Story format";
const UNTITLED: &str = "Untitled";
const USER_INFO_ERROR: &str = "User Info Error";
const NO_TAGS: &str = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e";
const IMAGE_SRC_ERROR: &str = "Image src error.";
const IMAGE: &str = "image";
const VIDEO: &str = "video";
const STORY: &str = "multi-video(story page format)";

type Text = Cow<'static, str>;

struct PinData {
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
    fn generate(r: &mut StdRng) -> Self {
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

    fn fields(&self, ind: i64) -> [Field<'_>; 12] {
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
const T2015: i64 = 1_420_070_400;
const T2018: i64 = 1_514_764_800;
const T2023: i64 = 1_672_531_200;

struct GeoData {
    timestamp: DateTime,
    latitude: String,
    longitude: String,
    country: &'static str,
}

impl GeoData {
    fn generate(r: &mut StdRng) -> Self {
        GeoData {
            timestamp: DateTime::new(r.random_range(T2018..T2023)),
            latitude: coordinate(r, 90),
            longitude: coordinate(r, 180),
            country: if chance(r, 5) { "" } else { pick(r, words::COUNTRIES) },
        }
    }

    fn fields(&self, ind: i64) -> [Field<'_>; 5] {
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

struct UserData {
    first_name: &'static str,
    last_name: &'static str,
    age: i64,
    date_joined: DateTime,
}

impl UserData {
    fn generate(r: &mut StdRng) -> Self {
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

    fn fields(&self, ind: i64) -> [Field<'_>; 5] {
        [
            ("ind", V::Int(ind)),
            ("first_name", V::Str(self.first_name)),
            ("last_name", V::Str(self.last_name)),
            ("age", V::Int(self.age)),
            ("date_joined", V::Str(self.date_joined.as_str())),
        ]
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a UTC instant.
struct DateTime([u8; 19]);

impl DateTime {
    fn new(secs: i64) -> Self {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let mut b = *b"0000-00-00 00:00:00";
        let mut put = |at: usize, v: i64, width: usize| {
            let mut v = v;
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, y, 4);
        put(5, m, 2);
        put(8, d, 2);
        put(11, rem / 3600, 2);
        put(14, rem % 3600 / 60, 2);
        put(17, rem % 60, 2);
        DateTime(b)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("datetime text is ASCII")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// ---------------------------------------------------------------------- serialization

/// A JSON value as written.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Str(&'a str),
    Int(i64),
    /// JSON text as is (a float already formatted, or something deliberately invalid).
    Raw(&'a str),
}

type Field<'a> = (&'static str, V<'a>);

/// How a record is broken on purpose. Every one of them rejects the record.
#[derive(Debug)]
enum Break {
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
const BREAKS: [&[Break]; 3] = [
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
fn render(fields: &[Field<'_>], brk: Option<&Break>, rng: &mut StdRng) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::clean::{clean, Row, DEFAULT_MAX_RECORD_BYTES};

    fn gen(seed: u64, invalid_share: f64) -> Generator {
        Generator::new(EmulatorConfig {
            seed,
            invalid_share,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn config_is_validated() {
        assert!(Generator::new(EmulatorConfig::default()).is_ok());
        for share in [-0.1, 1.5, f64::NAN] {
            let e = Generator::new(EmulatorConfig {
                invalid_share: share,
                ..Default::default()
            })
            .unwrap_err();
            assert!(
                matches!(
                    e,
                    EmulateError::InvalidConfig {
                        field: "invalid_share",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("invalid_share"));
        }
        let e = Generator::new(EmulatorConfig {
            index_pool: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                EmulateError::InvalidConfig {
                    field: "index_pool",
                    ..
                }
            ),
            "{e}"
        );
        assert!(Generator::new(EmulatorConfig {
            invalid_share: 1.0,
            index_pool: 1,
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn same_seed_same_posts() {
        let a: Vec<Post> = gen(7, 0.005).take(1000).collect();
        let b: Vec<Post> = gen(7, 0.005).take(1000).collect();
        assert_eq!(a, b);
        let c: Vec<Post> = gen(8, 0.005).take(1000).collect();
        assert_ne!(a, c);
        let differing = a.iter().zip(&c).filter(|(x, y)| x.pin != y.pin).count();
        assert!(differing > 900, "{differing}");
    }

    #[test]
    fn cache_changes_nothing() {
        let cached = gen(9, 0.05);
        assert!(cached.cache.is_some());
        let mut uncached = gen(9, 0.05);
        uncached.cache = None;
        let a: Vec<Post> = cached.take(5_000).collect();
        let b: Vec<Post> = uncached.take(5_000).collect();
        assert!(a == b);
        let big = Generator::new(EmulatorConfig {
            index_pool: 1 << 40,
            ..Default::default()
        })
        .unwrap();
        assert!(big.cache.is_none());
        assert!(big.take(100).all(|p| (0..1 << 40).contains(&p.ind)));
    }

    #[test]
    fn same_index_same_content() {
        let mut g = Generator::new(EmulatorConfig {
            seed: 3,
            invalid_share: 0.0,
            index_pool: 5,
        })
        .unwrap();
        let mut seen: HashMap<i64, Post> = HashMap::new();
        for p in g.by_ref().take(200) {
            assert!((0..5).contains(&p.ind));
            if let Some(q) = seen.get(&p.ind) {
                assert_eq!(&p, q);
            }
            seen.insert(p.ind, p);
        }
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn records_look_like_the_seed() {
        let p = gen(1, 0.0).next_post();
        let pin: serde_json::Value = serde_json::from_slice(&p.pin).unwrap();
        let keys: Vec<&str> = pin.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = crate::clean::Kind::Pin.raw_fields().to_vec();
        let mut got = keys.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(pin["index"], p.ind);
        assert!(
            p.pin.starts_with(b"{\"index\": "),
            "{}",
            String::from_utf8_lossy(&p.pin)
        );
        let geo = String::from_utf8(p.geo.clone()).unwrap();
        assert!(
            geo.starts_with(&format!("{{\"ind\": {}, \"timestamp\": \"20", p.ind)),
            "{geo}"
        );
        let user = String::from_utf8(p.user.clone()).unwrap();
        assert!(
            user.starts_with(&format!("{{\"ind\": {}, \"first_name\": ", p.ind)),
            "{user}"
        );
    }

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

    /// Cleans `n` posts: (rejected records, clean rows per kind). Panics if a record's fate
    /// differs from what the generator meant, or if `ind` disagrees across kinds.
    fn clean_posts(g: &mut Generator, n: usize, mut each: impl FnMut(&Post, [Option<Row<'_>>; 3])) -> usize {
        let mut rejected = 0;
        for _ in 0..n {
            let (post, broken) = g.next_post_marked();
            let mut rows = [None, None, None];
            for (k, kind) in Kind::ALL.into_iter().enumerate() {
                let raw = post.record(kind);
                assert!(!raw.is_empty() && !raw.contains(&b'\n') && !raw.trim_ascii().is_empty());
                assert!(std::str::from_utf8(raw).is_ok());
                match clean(kind, raw, DEFAULT_MAX_RECORD_BYTES) {
                    Ok(row) => {
                        assert!(
                            !broken[k],
                            "broken {kind} record cleaned: {}",
                            String::from_utf8_lossy(raw)
                        );
                        let ind = match &row {
                            Row::Pin(r) => r.ind,
                            Row::Geo(r) => r.ind,
                            Row::User(r) => r.ind,
                        };
                        assert_eq!(ind, post.ind);
                        assert_eq!(row.unknown_fields(), 0);
                        rows[k] = Some(row);
                    }
                    Err(e) => {
                        assert!(
                            broken[k],
                            "valid {kind} record rejected ({e}): {}",
                            String::from_utf8_lossy(raw)
                        );
                        rejected += 1;
                    }
                }
            }
            each(&post, rows);
        }
        rejected
    }

    #[test]
    fn rejects_are_the_invalid_share() {
        let mut g = gen(11, 0.005);
        let rejected = clean_posts(&mut g, 20_000, |_, _| {});
        let share = rejected as f64 / 60_000.0;
        println!("{rejected} of 60000 records rejected ({:.3}%)", share * 100.0);
        assert!((0.002..0.01).contains(&share), "{rejected} rejected, share {share}");

        let mut g = gen(11, 0.0);
        assert_eq!(clean_posts(&mut g, 20_000, |_, _| {}), 0);

        // Every way of breaking a record is used and rejects it.
        let mut g = gen(12, 1.0);
        assert_eq!(clean_posts(&mut g, 2_000, |_, _| {}), 6_000);
    }

    #[test]
    fn dirty_patterns_appear() {
        #[derive(Default, Debug)]
        struct Seen {
            follower_k: usize,
            follower_k_fraction: usize,
            follower_m: usize,
            follower_plain: usize,
            follower_null: usize,
            title_null: usize,
            description_null: usize,
            poster_null: usize,
            tags_null: usize,
            image_null: usize,
            story: usize,
            video: usize,
            not_downloaded: usize,
            country_null: usize,
            user_name_partial: usize,
            under_18: usize,
            escaped: usize,
            non_ascii: usize,
        }
        let mut s = Seen::default();
        let mut g = gen(5, 0.0);
        let mut categories = std::collections::BTreeSet::new();
        let mut countries = std::collections::BTreeSet::new();
        clean_posts(&mut g, 20_000, |post, rows| {
            let pin_raw: serde_json::Value = serde_json::from_slice(&post.pin).unwrap();
            let fc = pin_raw["follower_count"].as_str().unwrap();
            if fc.ends_with('k') {
                s.follower_k += 1;
                s.follower_k_fraction += usize::from(fc.contains('.'));
            } else if fc.ends_with('M') {
                s.follower_m += 1;
            } else if fc.bytes().all(|b| b.is_ascii_digit()) {
                s.follower_plain += 1;
            }
            s.escaped += usize::from(post.pin.windows(2).any(|w| w == b"\\\""));
            s.non_ascii += usize::from(!post.user.is_ascii());
            let [Some(Row::Pin(pin)), Some(Row::Geo(geo)), Some(Row::User(user))] = rows else {
                panic!("a valid post did not clean");
            };
            s.follower_null += usize::from(pin.follower_count.is_none());
            s.title_null += usize::from(pin.title.is_none());
            s.description_null += usize::from(pin.description.is_none());
            s.poster_null += usize::from(pin.poster_name.is_none());
            s.tags_null += usize::from(pin.tag_list.is_none());
            s.image_null += usize::from(pin.image_src.is_none());
            s.story += usize::from(pin.is_image_or_video.as_deref() == Some(STORY));
            s.video += usize::from(pin.is_image_or_video.as_deref() == Some(VIDEO));
            s.not_downloaded += usize::from(pin.downloaded == Some(0));
            let cat = pin.category.as_deref().unwrap().to_string();
            assert_eq!(pin.save_location.as_deref(), Some(format!("/data/{cat}").as_str()));
            categories.insert(cat);
            assert!(pin
                .unique_id
                .as_deref()
                .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok()));
            if let Some(c) = &geo.country {
                countries.insert(c.to_string());
            }
            s.country_null += usize::from(geo.country.is_none());
            let ts = geo.timestamp.unwrap();
            assert!((T2018 * 1_000_000..T2023 * 1_000_000).contains(&ts));
            let [lat, lon] = geo.coordinates.unwrap();
            assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
            // Both names empty is possible (rarely): then there is no user_name at all.
            s.user_name_partial += usize::from(user.user_name.as_deref().is_none_or(|n| !n.contains(' ')));
            let age = user.age.unwrap();
            assert!((13..=70).contains(&age));
            s.under_18 += usize::from(age < 18);
            let joined = user.date_joined.unwrap();
            assert!((T2015 * 1_000_000..T2023 * 1_000_000).contains(&joined));
        });
        println!("{s:?}");
        assert_eq!(categories.len(), CATEGORIES.len());
        assert_eq!(countries.len(), words::COUNTRIES.len());
        let counts = [
            s.follower_k,
            s.follower_k_fraction,
            s.follower_m,
            s.follower_plain,
            s.follower_null,
            s.title_null,
            s.description_null,
            s.poster_null,
            s.tags_null,
            s.image_null,
            s.story,
            s.video,
            s.not_downloaded,
            s.country_null,
            s.user_name_partial,
            s.under_18,
            s.escaped,
            s.non_ascii,
        ];
        assert!(counts.iter().all(|&c| c >= 20), "{s:?}");
        // Placeholders stay a minority: most pins carry real data.
        assert!(s.title_null < 2_000 && s.follower_null < 2_000, "{s:?}");
    }

    /// `cargo test --release --lib emulate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn generation_rate() {
        let n = 1_000_000;
        for index_pool in [11_000, 1 << 40] {
            let mut g = Generator::new(EmulatorConfig {
                index_pool,
                ..Default::default()
            })
            .unwrap();
            let started = std::time::Instant::now();
            let bytes: usize = g
                .by_ref()
                .take(n)
                .map(|p| p.pin.len() + p.geo.len() + p.user.len())
                .sum();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "index_pool {index_pool}: {n} posts, {:.1} MB in {secs:.2}s: {:.0} posts/s, {:.1} MB/s",
                bytes as f64 / 1e6,
                n as f64 / secs,
                bytes as f64 / 1e6 / secs
            );
        }
    }

    /// `cargo test --release --lib emulate::tests::samples -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn samples() {
        let mut g = gen(42, 0.05);
        for _ in 0..20 {
            let (p, broken) = g.next_post_marked();
            for (k, kind) in Kind::ALL.into_iter().enumerate() {
                let mark = if broken[k] { "BROKEN " } else { "" };
                println!("{mark}{}", String::from_utf8_lossy(p.record(kind)));
            }
        }
    }
}
