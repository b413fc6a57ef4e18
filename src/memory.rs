//! The process's heap: large buffers go back to the system when they are freed.
//!
//! glibc's malloc serves a request above its mmap threshold (128 KiB) with a fresh
//! mapping, returned to the kernel on `free`, but it raises that threshold to the size of
//! every mapped block freed (up to 32 MiB). pinpipe's column buffers are exactly such
//! blocks: built on the worker threads, freed on the writer threads after a flush. Once
//! the threshold has risen, they come from the arenas instead, where freed space is kept
//! and fragments, and the process's RSS settles far above what it holds. Fixing the
//! threshold (which also stops glibc moving it) made `pinpipe run`'s peak RSS 239-255 MiB
//! instead of 318-339 MiB at 360 partitions (`cargo bench --bench kafka`, BENCHMARKS.md).
//! Its price is fresh zeroed pages for every large buffer (`clear_page_erms` went from
//! 4.7 % to 10 % of the CPU in the profiles); the bench could not tell that cost from its
//! run-to-run noise.
//!
//! glibc's own `MALLOC_MMAP_THRESHOLD_` in the environment wins: set, pinpipe leaves the
//! allocator alone (any value; glibc applied it when the process started).

/// The fixed mmap threshold: glibc's initial one, kept.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// The environment variable through which glibc takes the threshold.
pub const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";

/// The threshold to set, given the environment's `MALLOC_MMAP_THRESHOLD_` (`None`: leave
/// glibc as the environment configured it).
pub fn threshold(env: Option<&std::ffi::OsStr>) -> Option<usize> {
    env.is_none().then_some(MMAP_THRESHOLD)
}

/// Fixes glibc's mmap threshold unless the environment sets it (see the module docs);
/// a no-op on other C libraries. Call once, first thing in `main`.
pub fn bound_heap() {
    let Some(bytes) = threshold(std::env::var_os(MMAP_THRESHOLD_ENV).as_deref()) else {
        return;
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a malloc parameter, before the process starts any
        // thread. It returns 0 when it refuses, and glibc's default stays: nothing to do
        // (the logger does not exist yet).
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_setting_wins_over_pinpipes_threshold() {
        assert_eq!(threshold(None), Some(MMAP_THRESHOLD));
        assert_eq!(threshold(Some("1048576".as_ref())), None);
        assert_eq!(threshold(Some("".as_ref())), None, "set, even empty: glibc's business");
    }
}
