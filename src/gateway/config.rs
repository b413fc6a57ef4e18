//! `[gateway]`: where the gateway listens, who may produce, and the limits that keep a
//! request's cost bounded. Validation names the key; whether tokens exist is checked when
//! the gateway starts, since other commands do not need them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Environment variable with extra API keys / bearer tokens (comma-separated), so secrets
/// can stay out of config files.
pub const TOKENS_ENV: &str = "PINPIPE_GATEWAY_TOKENS";

/// `[gateway]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// host:port to listen on. The REST proxy's port by default, on loopback.
    pub listen: String,
    /// `token`: every produce request needs `Authorization: Bearer <token>` or
    /// `X-API-Key: <token>`; `none`: no authentication (only when said explicitly).
    pub auth: String,
    /// Accepted tokens (plus those in `PINPIPE_GATEWAY_TOKENS`).
    pub tokens: Vec<String>,
    /// The Kinesis JSON API route (`POST /`): AWS access key id → secret access key. An
    /// AWS SDK signs its requests with one of them (Signature Version 4) and the gateway
    /// checks the signature; no key, no request (unless `auth = "none"`). From the
    /// environment: `PINPIPE__GATEWAY__AWS_KEYS__<key id>=<secret>`.
    pub aws_keys: BTreeMap<String, String>,
    /// Largest request body (bytes); a larger one gets a 413 before it is read.
    pub max_body_bytes: usize,
    /// Most records in one request.
    pub max_records: usize,
    /// Largest record value / `Data` (bytes): Kinesis' and Kafka's default limit is 1 MiB.
    pub max_record_bytes: usize,
    /// Topics clients may produce to; empty: the `[kafka]` topics (`<prefix>.pin|geo|user`).
    pub topics: Vec<String>,
    /// Streams clients may put to; empty: the `[kinesis]` streams.
    pub streams: Vec<String>,
    /// Which routes the gateway serves: `kafka` (the REST proxy, to `[kafka]`'s brokers)
    /// and/or `kinesis` (to `[kinesis]`'s endpoint). Independent of `kafka.enabled` and
    /// `kinesis.enabled`, which say what `pinpipe run` reads.
    pub produce_to: Vec<String>,
    /// How long a request waits for the broker's acknowledgements (milliseconds).
    pub produce_timeout_ms: u64,
    /// Records sent and not acknowledged yet, over all requests: beyond it, 503.
    pub max_inflight_records: usize,
    /// The `Retry-After` of a 503 (seconds), and how often a down broker is probed.
    pub retry_after_s: u64,
    /// HTTP worker threads.
    pub workers: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            auth: "token".into(),
            tokens: Vec::new(),
            aws_keys: BTreeMap::new(),
            max_body_bytes: 5 << 20,
            max_records: 500,
            max_record_bytes: 1 << 20,
            topics: Vec::new(),
            streams: Vec::new(),
            produce_to: vec!["kafka".into(), "kinesis".into()],
            produce_timeout_ms: 10_000,
            max_inflight_records: 50_000,
            retry_after_s: 1,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl GatewayConfig {
    /// Whether the gateway serves `target`'s routes (`kafka` or `kinesis`).
    pub fn produces_to(&self, target: &str) -> bool {
        self.produce_to.iter().any(|t| t == target)
    }

    /// The address to bind.
    pub fn addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .trim()
            .parse()
            .map_err(|e| format!("{:?} is not host:port with an IP host ({e})", self.listen))
    }

    /// Checks the section; errors name the key. (Whether tokens exist is checked when the
    /// gateway starts: other commands do not need them.)
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.addr().map_err(|m| ("gateway.listen", m))?;
        let known = self.produce_to.iter().all(|t| t == "kafka" || t == "kinesis");
        if !known || self.produce_to.is_empty() {
            return Err((
                "gateway.produce_to",
                format!("{:?} (allowed: kafka, kinesis, or both)", self.produce_to),
            ));
        }
        if !["token", "none"].contains(&self.auth.as_str()) {
            return Err(("gateway.auth", format!("{:?} (allowed: token, none)", self.auth)));
        }
        if self.tokens.iter().any(|t| t.trim().is_empty() || t.trim() != t) {
            return Err(("gateway.tokens", "a token is empty or has surrounding spaces".into()));
        }
        // Access key ids are upper-case letters and digits (AKIA..., ASIA...); a secret
        // with spaces around it is a copy-paste slip that would fail every signature.
        for (id, secret) in &self.aws_keys {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err((
                    "gateway.aws_keys",
                    format!("access key id {id:?}: letters and digits only"),
                ));
            }
            if secret.is_empty() || secret.trim() != secret {
                return Err((
                    "gateway.aws_keys",
                    format!("the secret of {id}: empty or with surrounding spaces"),
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(("gateway.max_body_bytes", "must be at least 1024".into()));
        }
        if !(1..=10_000).contains(&self.max_records) {
            return Err((
                "gateway.max_records",
                format!("{} (allowed: 1..=10000)", self.max_records),
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > self.max_body_bytes {
            return Err((
                "gateway.max_record_bytes",
                format!(
                    "{} (allowed: 1..=gateway.max_body_bytes = {})",
                    self.max_record_bytes, self.max_body_bytes
                ),
            ));
        }
        if self.produce_timeout_ms < 100 {
            return Err(("gateway.produce_timeout_ms", "must be at least 100".into()));
        }
        if self.max_inflight_records < self.max_records {
            return Err((
                "gateway.max_inflight_records",
                format!(
                    "{} is below gateway.max_records ({}): no request could ever be sent",
                    self.max_inflight_records, self.max_records
                ),
            ));
        }
        if self.max_inflight_records > u32::MAX as usize >> 3 {
            return Err(("gateway.max_inflight_records", "too large".into()));
        }
        if self.retry_after_s == 0 {
            return Err(("gateway.retry_after_s", "must be at least 1".into()));
        }
        if !(1..=256).contains(&self.workers) {
            return Err(("gateway.workers", format!("{} (allowed: 1..=256)", self.workers)));
        }
        Ok(())
    }

    /// The accepted tokens: config plus `PINPIPE_GATEWAY_TOKENS` (`env`).
    pub fn all_tokens(&self, env: Option<&str>) -> BTreeSet<String> {
        let from_env = env
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty());
        self.tokens
            .iter()
            .map(String::as_str)
            .chain(from_env)
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        GatewayConfig::default().validate().unwrap();
        let check = |f: fn(&mut GatewayConfig), key: &str| {
            let mut c = GatewayConfig::default();
            f(&mut c);
            assert_eq!(c.validate().unwrap_err().0, key);
        };
        check(|c| c.listen = "localhost".into(), "gateway.listen");
        check(|c| c.auth = "basic".into(), "gateway.auth");
        check(|c| c.tokens = vec![" t".into()], "gateway.tokens");
        check(
            |c| c.aws_keys = [("AKIA X".into(), "s".into())].into(),
            "gateway.aws_keys",
        );
        check(
            |c| c.aws_keys = [("AKIAX".into(), "s ".into())].into(),
            "gateway.aws_keys",
        );
        check(|c| c.max_body_bytes = 10, "gateway.max_body_bytes");
        check(|c| c.max_records = 0, "gateway.max_records");
        check(|c| c.max_record_bytes = 10 << 20, "gateway.max_record_bytes");
        check(|c| c.produce_timeout_ms = 0, "gateway.produce_timeout_ms");
        check(|c| c.max_inflight_records = 10, "gateway.max_inflight_records");
        check(|c| c.retry_after_s = 0, "gateway.retry_after_s");
        check(|c| c.workers = 0, "gateway.workers");
    }

    #[test]
    fn tokens_come_from_config_and_env() {
        let c = GatewayConfig {
            tokens: vec!["a".into()],
            ..Default::default()
        };
        let t = c.all_tokens(Some(" b, ,c"));
        assert_eq!(t.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(GatewayConfig::default().all_tokens(None).is_empty());
    }
}
