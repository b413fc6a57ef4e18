//! `pinpipe::clean` without its Arrow builders (paths are relative to this file's folder).

#[path = "../../src/clean/kinds.rs"]
pub mod kinds;
#[path = "../../src/clean/record.rs"]
mod record;
#[path = "../../src/clean/value.rs"]
pub mod value;

pub use record::*;
