//! The deterministic post generator: the seed project's `user_posting_emulation.py`,
//! made reproducible, and the targets it writes to.
//!
//! A post is a pin, a geo and a user record sharing one integer index (`index` in pin,
//! `ind` in geo and user), serialized as the record contract's "Raw records" section says
//! (Python `json.dumps` style separators, datetimes as `"YYYY-MM-DD HH:MM:SS"`).
//!
//! Like the seed, which picked a random row out of three database tables, indexes are
//! drawn from a bounded pool (`0..index_pool`) and the content of a post is a function of
//! its index: the same `ind` always yields the same pin, geo and user, so posts repeat and
//! joins on `ind` match across kinds. Whether a record is made invalid is decided per
//! record, per draw: a configurable share (default 0.5%) is broken on purpose for the
//! dead-letter path (truncated JSON, trailing garbage, `NaN`, a missing or non-integer key,
//! `"abc"` for `age`, latitude `123.0`, ...).
//!
//! Determinism: the same [`EmulateConfig`] gives byte-identical posts, for a given `rand`
//! version (`Cargo.lock` pins it; `StdRng`'s algorithm may change across `rand` releases).
//! Every record is valid UTF-8 on a single line (no raw newline), never blank, so JSON
//! Lines files of posts split back into the same records.
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | `[emulate]`: [`EmulateConfig`], its defaults and validation |
//! | `generator.rs` | [`Generator`] and [`Post`]: which index, which breaks, the cache |
//! | `data.rs` | what an index's pin, geo and user say, dirty data included |
//! | `render.rs` | a record's JSON bytes and the deliberate breaks |
//! | `words.rs` | word tables (plain data) |
//! | `files.rs`, `kafka.rs`, `kinesis.rs`, `gateway.rs` | the targets: Kafka Connect files, produce, PutRecords, HTTP |

mod config;
mod data;
pub mod files;
pub mod gateway;
mod generator;
pub mod kafka;
pub mod kinesis;
mod render;
#[cfg(test)]
mod tests;
mod words;

pub use self::config::{EmulateConfig, EmulateError};
pub use generator::{Generator, Post};

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
