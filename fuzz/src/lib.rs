//! pinpipe's untrusted-input parsers, compiled from pinpipe's own source files: the record
//! cleaner (`src/clean/{record,kinds,value}.rs`, without the Arrow builders) and the
//! gateway's body parser (`src/gateway/body.rs`). Same code, no copy.
#![allow(dead_code)]

pub mod clean;
pub mod gateway;
