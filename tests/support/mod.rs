//! Test harness shared by the integration tests, one module per thing it starts. Every
//! server runs on a free port of 127.0.0.1 with its own empty state and is stopped on drop.
//!
//! | module       | starts / provides                                                    |
//! |--------------|----------------------------------------------------------------------|
//! | `proc`       | `pinpipe` child processes: config, spawn, signals, row waits, lineage |
//! | `kafka`      | a Kafka-protocol broker (librdkafka's mock cluster), `[kafka]` config |
//! | `kinesis`    | a Kinesis API server (kinesis-local, kinesalite, moto), its SDK client |
//! | `s3`         | moto's S3 API, `[tables]` config for it                               |
//! | `prometheus` | Prometheus scraping pinpipe, and promtool                             |
//! | `proxy`      | a fault-injecting HTTP proxy in front of any of them                  |
//! | `http`       | a raw HTTP/1.1 client for requests a real client would not send       |
//! | `rows`       | reading Delta tables back as JSON rows; counting input records        |
//! | `fixtures`   | the shared cleaning vectors                                           |
//! | `nasty`      | a corpus of hostile records                                           |
//!
//! This file holds only what every server module needs: free ports, installed tools and
//! log tails.
#![allow(dead_code)]

pub mod fixtures;
pub mod http;
pub mod kafka;
pub mod kinesis;
pub mod nasty;
pub mod proc;
pub mod prometheus;
pub mod proxy;
pub mod rows;
pub mod s3;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). A port is handed out at
/// most once per test process, so servers started by parallel tests never race for one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A tool installed by `.ci/install-servers.sh`: the path in env `var`, else `cached`
/// under the default tools folder `$HOME/.cache/pinpipe-tools`.
pub fn tool(var: &str, cached: &str) -> PathBuf {
    let (p, from) = match std::env::var_os(var) {
        Some(p) => (PathBuf::from(p), format!("${var}")),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            let p = PathBuf::from(home).join(".cache/pinpipe-tools").join(cached);
            (p, format!("the default (set {var} to override)"))
        }
    };
    assert!(
        p.is_file(),
        "{} ({from}) not found: run `bash .ci/install-servers.sh` first (PINPIPE_TOOLS picks its folder)",
        p.display()
    );
    p
}

/// The last `n` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
