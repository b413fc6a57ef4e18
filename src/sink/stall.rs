//! A table that cannot be committed to.
//!
//! After `writer.commit_attempts` failed attempts in a row (a full or read-only disk, a
//! store refusing writes, a damaged log), or at once when the table's schema is no longer
//! the one pinpipe writes (another tool changed it), the table is **stalled**: the process
//! keeps running and keeps every buffered row, the flush is tried again once per pause
//! (1 s doubling to 30 s) and the first success ends the stall. Nothing is dropped and
//! nothing is skipped, so once the cause is gone every row is committed exactly once. While
//! stalled, [`Stall`] tells the sources to stop handing this kind's rows over (they pause
//! fetching: backpressure), readiness names the table and the error, and
//! `pinpipe_table_stalled{table}` is 1. The log says it once when the stall starts, at
//! most once a minute while it lasts, and once when it ends. Exiting instead would not
//! help: a restarted process meets the same disk, schema or log, and a crash loop re-reads
//! every partition of every kind each time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// A table's stall as the rest of the process sees it, without asking its writer: set
/// while the table is stalled (since when, and the last error), clear otherwise.
#[derive(Debug, Default)]
pub struct Stall(Mutex<Option<(Instant, String)>>);

impl Stall {
    pub fn is_stalled(&self) -> bool {
        self.0.lock().expect("lock").is_some()
    }

    /// `commits stopped for 42 s: <error>` while stalled.
    pub fn reason(&self) -> Option<String> {
        let s = self.0.lock().expect("lock");
        s.as_ref()
            .map(|(since, error)| format!("commits stopped for {} s: {error}", since.elapsed().as_secs()))
    }

    pub(super) fn set(&self, state: Option<(Instant, String)>) {
        *self.0.lock().expect("lock") = state;
    }
}

/// The writer's side of a stall: when to try again and what to say.
pub(super) struct Stalled {
    pub(super) since: Instant,
    pub(super) error: String,
    pub(super) attempts: u64,
    pub(super) next_try: Instant,
    pub(super) backoff: Backoff,
    /// When the last "still stalled" line was logged (one a minute at most).
    pub(super) logged: Instant,
}

/// Pauses between the attempts of a stalled table.
pub(super) const STALL_RETRY_MIN: Duration = Duration::from_secs(1);
pub(super) const STALL_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often a stall that goes on is logged again.
pub(super) const STALL_LOG_EVERY: Duration = Duration::from_secs(60);
