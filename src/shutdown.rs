//! One way to stop: a [`Shutdown`] handed to every source loop and actor.
//!
//! `trigger()` (a signal, `--stop-after`, a failed source) cancels one token that every
//! loop selects on, and starts one grace period. From then on every wait on the way out
//! (draining actors, the last flush, the offset commit, the consumer's close, releasing
//! leases) is bounded by the same deadline through [`Shutdown::bounded`] or
//! [`Shutdown::wait_blocking`], so the process exits within the grace period whatever
//! the broker or the store does. Nothing past the deadline is needed for correctness:
//! positions live in the tables, and the next owner resumes from them.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The grace period ran out before the work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutdown took longer than the grace period of {0:?}: gave up; rows not committed yet are read again by the next owner")]
pub struct GraceExceeded(pub Duration);

/// The process's stop signal and its deadline.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    grace: Duration,
    deadline: Arc<OnceLock<Instant>>,
}

impl Shutdown {
    /// A shutdown whose waits get `grace` once triggered.
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            grace,
            deadline: Arc::new(OnceLock::new()),
        }
    }

    /// Asks everything to stop. The grace period starts at the first call.
    pub fn trigger(&self) {
        self.deadline.get_or_init(|| Instant::now() + self.grace);
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When every wait must be over; `None` before the trigger.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// Runs `fut` to its end, or, once triggered, until the deadline.
    pub async fn bounded<F: Future>(&self, fut: F) -> Result<F::Output, GraceExceeded> {
        let expired = async {
            self.triggered().await;
            let deadline = self.deadline().expect("set by trigger");
            tokio::time::sleep_until(deadline.into()).await;
        };
        tokio::select! {
            out = fut => Ok(out),
            _ = expired => Err(GraceExceeded(self.grace)),
        }
    }

    /// For a thread that must block (librdkafka's rebalance callback, the consumer's
    /// close): runs `fut` on `runtime` and waits for it, until the deadline once triggered.
    /// Past the deadline the work is left running and abandoned.
    pub fn wait_blocking<T: Send + 'static>(
        &self,
        runtime: &tokio::runtime::Handle,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, GraceExceeded> {
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        self.wait_channel(&rx)
    }

    /// Runs blocking `work` on a thread of its own and waits for it like
    /// [`Shutdown::wait_blocking`].
    pub fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GraceExceeded> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(work());
        });
        self.wait_channel(&rx)
    }

    fn wait_channel<T>(&self, rx: &std::sync::mpsc::Receiver<T>) -> Result<T, GraceExceeded> {
        // Polled in short steps: the trigger may come while this thread waits.
        const STEP: Duration = Duration::from_millis(50);
        loop {
            let step = match self.deadline() {
                Some(d) => d.saturating_duration_since(Instant::now()).min(STEP),
                None => STEP,
            };
            match rx.recv_timeout(step) {
                Ok(v) => return Ok(v),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.deadline().is_some_and(|d| Instant::now() >= d) {
                        return Err(GraceExceeded(self.grace));
                    }
                }
                // The work panicked or was dropped: nothing more will come.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(GraceExceeded(self.grace)),
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_wait_ends_by_the_deadline() {
        let s = Shutdown::new(Duration::from_millis(200));
        // Before the trigger a wait runs to its end.
        assert_eq!(s.bounded(async { 7 }).await, Ok(7));
        assert!(s.deadline().is_none());
        let started = Instant::now();
        s.trigger();
        s.trigger(); // the deadline is set once
        assert!(s.is_triggered());
        let never = std::future::pending::<()>();
        assert_eq!(s.bounded(never).await, Err(GraceExceeded(Duration::from_millis(200))));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        // Past the deadline, blocking waits give up at once.
        let rt = tokio::runtime::Handle::current();
        let s2 = s.clone();
        let r = tokio::task::spawn_blocking(move || s2.wait_blocking(&rt, std::future::pending::<()>()))
            .await
            .unwrap();
        assert!(r.is_err());
        assert!(s.run_blocking(|| std::thread::sleep(Duration::from_secs(5))).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_thread_is_released_when_the_trigger_comes() {
        let s = Shutdown::new(Duration::from_millis(100));
        let rt = tokio::runtime::Handle::current();
        let waiter = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.wait_blocking(&rt, std::future::pending::<()>()))
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        s.trigger();
        assert!(waiter.await.unwrap().is_err());
        assert!(t.elapsed() < Duration::from_millis(600), "{:?}", t.elapsed());
    }

    #[test]
    fn work_done_in_time_is_returned() {
        let s = Shutdown::new(Duration::from_secs(10));
        assert_eq!(s.run_blocking(|| 3), Ok(3));
        s.trigger();
        assert_eq!(s.run_blocking(|| 4), Ok(4));
    }
}
