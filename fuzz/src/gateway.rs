//! `pinpipe::gateway::body` alone (paths are relative to this file's folder).

#[path = "../../src/gateway/body.rs"]
pub mod body;
