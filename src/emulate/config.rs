//! The generator's settings.

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
