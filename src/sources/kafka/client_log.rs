//! librdkafka's complaints, said once per episode instead of on every retry.
//!
//! While a broker is unreachable librdkafka reports each failed connect through the error
//! callback and its own log lines, tens a second for as long as the outage lasts. An
//! operator needs three lines: when the brokers went down (with their address), a periodic
//! reminder that they still are, and when they came back. Every error is still counted in
//! `pinpipe_source_errors_total`; only the log lines are thinned.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;

/// How often a continuing outage is mentioned again. An episode with no error for this
/// long is over.
const REMINDER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Episode {
    /// When the first error of the current episode came.
    since: Option<Instant>,
    /// When the last line was written.
    said: Option<Instant>,
    /// When the last error came.
    last: Option<Instant>,
    /// Errors since the last line.
    unsaid: u64,
}

/// The log side of a librdkafka client (consumer or producer).
#[derive(Debug)]
pub struct ClientLog {
    brokers: String,
    episode: Mutex<Episode>,
}

impl ClientLog {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            episode: Mutex::new(Episode::default()),
        }
    }

    /// A client error or a warning-level log line: written if it starts an episode or a
    /// reminder is due, else only counted.
    pub fn problem(&self, what: &str) {
        let now = Instant::now();
        let mut e = self.episode.lock().expect("lock");
        let over = e.last.is_none_or(|t| now.duration_since(t) >= REMINDER);
        e.last = Some(now);
        if over {
            e.since = Some(now);
            e.said = Some(now);
            e.unsaid = 0;
            tracing::warn!(brokers = %self.brokers, error = %what, "kafka: brokers unreachable or failing; retrying (said again every 30 s while it lasts)");
        } else if e.said.is_some_and(|t| now.duration_since(t) >= REMINDER) {
            let secs = e.since.map_or(0, |t| now.duration_since(t).as_secs());
            tracing::warn!(brokers = %self.brokers, error = %what, for_s = secs, errors = e.unsaid + 1, "kafka: still failing");
            e.said = Some(now);
            e.unsaid = 0;
        } else {
            e.unsaid += 1;
            tracing::debug!(brokers = %self.brokers, error = %what, "kafka client error");
        }
    }

    /// The brokers answer again (statistics show one up): ends an episode, with a line.
    pub fn reachable(&self) {
        let mut e = self.episode.lock().expect("lock");
        if let Some(since) = e.since.take() {
            tracing::info!(brokers = %self.brokers, after_s = since.elapsed().as_secs(), "kafka: brokers reachable again");
            *e = Episode::default();
        }
    }

    /// librdkafka's own log lines: problems through [`ClientLog::problem`], the rest at
    /// debug level.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.problem(&format!("{fac}: {message}")),
            _ => tracing::debug!(fac, message, "librdkafka"),
        }
    }

    #[cfg(test)]
    fn unsaid(&self) -> u64 {
        self.episode.lock().expect("lock").unsaid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_then_reminders() {
        let l = ClientLog::new("127.0.0.1:1");
        for _ in 0..100 {
            l.problem("Connection refused");
        }
        // The first was said, the other 99 only counted.
        assert_eq!(l.unsaid(), 99);
        l.reachable();
        assert_eq!(l.unsaid(), 0);
        l.problem("again");
        assert_eq!(l.unsaid(), 0, "a new episode is said");
    }
}
