//! The one retry pause of the crate: exponential from a base up to a cap, with jitter.
//!
//! Every retry loop (a failed flush, a throttled GetRecords, a PutRecords entry refused for
//! throughput, a 503 from the gateway) waits `next()`: uniform in `[cap/2, cap]` where
//! `cap = base * 2^attempt`, at most `max`. The jitter keeps many writers or readers that
//! failed together from retrying in step; the lower half bound keeps the pause growing.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Pauses between the attempts of one retried operation.
#[derive(Debug)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Pauses from `base` (doubled each attempt) up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(base, max, seed)
    }

    /// Like [`Backoff::new`] with a fixed seed (tests).
    pub fn with_seed(base: Duration, max: Duration, seed: u64) -> Self {
        let base_ms = (base.as_millis() as u64).max(1);
        Self {
            base_ms,
            max_ms: (max.as_millis() as u64).max(base_ms),
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The pause before the next attempt; counts the attempt.
    pub fn next_pause(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let cap = self
            .base_ms
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.max_ms)
            .max(2);
        Duration::from_millis(self.rng.random_range(cap / 2..=cap))
    }

    /// Retries so far (pauses handed out since the last [`Backoff::reset`]).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The operation succeeded: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut b = Backoff::with_seed(Duration::from_millis(100), Duration::from_millis(1000), 1);
        let pauses: Vec<u64> = (0..8).map(|_| ms(b.next_pause())).collect();
        for (i, p) in pauses.iter().enumerate() {
            let cap = (100u64 << (i + 1)).min(1000);
            assert!(
                (cap / 2..=cap).contains(p),
                "attempt {}: {p} outside [{}, {cap}]",
                i + 1,
                cap / 2
            );
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(ms(b.next_pause()) <= 200);
        // Seeds differ between processes: two backoffs rarely pause the same.
        let mut a = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(60), 1);
        let mut c = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(60), 2);
        let same = (0..10).filter(|_| a.next_pause() == c.next_pause()).count();
        assert!(same < 5, "{same} of 10 pauses equal");
        // A huge attempt count neither overflows nor exceeds the cap.
        let mut big = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(5), 3);
        for _ in 0..100 {
            assert!(big.next_pause() <= Duration::from_secs(5));
        }
    }
}
