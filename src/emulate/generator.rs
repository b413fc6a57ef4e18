//! [`Generator`]: an endless, deterministic stream of [`Post`]s.
//!
//! Two random streams, so that caching cannot change the output:
//! - the *main* stream (seeded by `seed`) draws, per post, the index and whether (and how)
//!   each of its three records is broken, and where a truncation cuts;
//! - the *content* stream of an index (seeded by `(seed, ind)`, [`content_rng`]) draws
//!   what its pin, geo and user say. The same `ind` always yields the same records, so
//!   posts repeat and joins on `ind` match across kinds, like the seed's three tables.
//!
//! Small pools keep each index's valid records once rendered; a cached post is a copy.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::data::{GeoData, PinData, UserData};
use super::render::{render, Break, BREAKS};
use super::{EmulateConfig, EmulateError};
use crate::clean::Kind;

/// Pools up to this size keep each index's rendered records (about 720 bytes an index):
/// repeated posts are then copies, several times faster than rendering again.
const CACHE_MAX_POOL: u64 = 1 << 16;

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

/// An endless, deterministic stream of posts.
pub struct Generator {
    cfg: EmulateConfig,
    /// The main stream: indexes, breaks and cuts.
    rng: StdRng,
    /// The valid records of each index once rendered (empty: not yet), if the pool is small.
    cache: Option<Vec<[Vec<u8>; 3]>>,
}

impl Generator {
    /// A generator with the `[emulate]` section's seed, invalid share and index pool.
    pub fn from_config(cfg: &EmulateConfig) -> Result<Self, EmulateError> {
        Self::new(cfg.clone())
    }

    /// Refuses a config that [`EmulateConfig::validate`] refuses.
    pub fn new(cfg: EmulateConfig) -> Result<Self, EmulateError> {
        cfg.validate()?;
        let cache = (cfg.index_pool <= CACHE_MAX_POOL).then(|| vec![Default::default(); cfg.index_pool as usize]);
        Ok(Generator {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            cache,
        })
    }

    pub fn config(&self) -> &EmulateConfig {
        &self.cfg
    }

    pub fn next_post(&mut self) -> Post {
        self.next_post_marked().0
    }

    /// The next post and, per kind (pin, geo, user), whether its record was broken on purpose.
    pub(super) fn next_post_marked(&mut self) -> (Post, [bool; 3]) {
        let ind = self.rng.random_range(0..self.cfg.index_pool) as i64;
        let mut breaks = [None; 3];
        for (k, b) in breaks.iter_mut().enumerate() {
            if self.rng.random_bool(self.cfg.invalid_share) {
                *b = Some(&BREAKS[k][self.rng.random_range(0..BREAKS[k].len())]);
            }
        }
        let seed = self.cfg.seed;
        let [pin, geo, user] = match &mut self.cache {
            Some(cache) => {
                let slot = &mut cache[ind as usize];
                if slot[0].is_empty() {
                    *slot = Content::new(seed, ind).render(ind, [None; 3], &mut self.rng);
                }
                let mut out = slot.clone();
                if breaks.iter().any(Option::is_some) {
                    // The cache holds valid records: a broken one is rendered afresh. Only a
                    // truncation draws from the main stream, as it does uncached.
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
        (Post { ind, pin, geo, user }, breaks.map(|b| b.is_some()))
    }

    /// The same generator rendering every post afresh (tests compare both paths).
    #[cfg(test)]
    pub(super) fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// Whether rendered records are kept.
    #[cfg(test)]
    pub(super) fn caches(&self) -> bool {
        self.cache.is_some()
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

/// Everything a post says, as drawn for one index.
struct Content {
    pin: PinData,
    geo: GeoData,
    user: UserData,
}

impl Content {
    /// A function of `(seed, ind)` only: the main stream is not touched.
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

/// The generator of one index's content: a function of (seed, ind) via SplitMix64, so
/// neighbouring indexes get unrelated keys.
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
