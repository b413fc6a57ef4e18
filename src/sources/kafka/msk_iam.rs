//! Amazon MSK IAM authentication: SASL/OAUTHBEARER whose token is a SigV4-presigned
//! `kafka-cluster:Connect` request, signed with credentials from the standard AWS chain
//! (environment, profile, web identity / IRSA, ECS, EC2 instance metadata).
//!
//! librdkafka asks for a token when it connects and again before the token expires
//! (15 minutes); [`AuthContext`] answers through rdkafka's `generate_oauth_token` hook.
//! The hook is synchronous and runs inside the consumer's poll, so the signer runs on a
//! thread of its own with a small runtime rather than on the caller's executor.

use std::error::Error;

use aws_credential_types::provider::SharedCredentialsProvider;
use rdkafka::client::OAuthToken;
use rdkafka::config::ClientConfig;
use rdkafka::ClientContext;

/// The Kafka principal librdkafka reports for the token; MSK derives the real identity
/// from the signature, so any non-empty name works.
const PRINCIPAL: &str = "pinpipe";

/// Sets the SASL properties MSK IAM needs when `region` (`kafka.msk_iam_region`) is set
/// (the config validation rejects properties that contradict them).
pub fn apply(region: &str, client: &mut ClientConfig) {
    if !region.is_empty() {
        client.set("security.protocol", "SASL_SSL");
        client.set("sasl.mechanism", "OAUTHBEARER");
    }
}

/// Client context of pinpipe's producers: supplies MSK IAM tokens, and says librdkafka's
/// errors once per outage.
#[derive(Debug, Clone, Default)]
pub struct AuthContext {
    /// AWS region of the MSK cluster; empty: MSK IAM is off and no token is ever asked for.
    pub region: String,
    log: Option<std::sync::Arc<super::client_log::ClientLog>>,
}

impl AuthContext {
    /// Tokens for an MSK cluster in `region`; empty: MSK IAM is off.
    pub fn new(region: &str) -> Self {
        AuthContext {
            region: region.to_string(),
            log: None,
        }
    }

    /// Logs of a client of `brokers`, once per outage.
    pub fn with_log(mut self, brokers: &str) -> Self {
        self.log = Some(std::sync::Arc::new(super::client_log::ClientLog::new(brokers)));
        self
    }
}

impl ClientContext for AuthContext {
    // librdkafka only raises token-refresh events with sasl.mechanism=OAUTHBEARER.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match &self.log {
            Some(l) => l.problem(&format!("{error}: {reason}")),
            None => tracing::warn!(%error, reason, "kafka client error"),
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        match &self.log {
            Some(l) => l.log(level, fac, log_message),
            None => tracing::debug!(fac, log_message, "librdkafka"),
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        if self.region.is_empty() {
            return Err("OAUTHBEARER token asked for, but kafka.msk_iam_region is not set".into());
        }
        let region = aws_types::region::Region::new(self.region.clone());
        let (token, lifetime_ms) = on_own_runtime(aws_msk_iam_sasl_signer::generate_auth_token(region))
            .map_err(|e| -> Box<dyn Error> { format!("MSK IAM token for {}: {e}", self.region).into() })?;
        Ok(OAuthToken {
            token,
            principal_name: PRINCIPAL.into(),
            lifetime_ms,
        })
    }
}

/// A token signed with explicit credentials (the same signing as the default chain's).
pub fn token_with(
    region: &str,
    credentials: SharedCredentialsProvider,
) -> Result<(String, i64), Box<dyn Error + Send + Sync>> {
    let region = aws_types::region::Region::new(region.to_string());
    on_own_runtime(aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
        region,
        credentials,
    ))
}

fn on_own_runtime<T, E>(
    fut: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, Box<dyn Error + Send + Sync>>
where
    T: Send + 'static,
    E: Error + Send + Sync + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(fut)
            .map_err(|e| Box::new(e) as Box<dyn Error + Send + Sync>)
    })
    .join()
    .map_err(|_| "MSK IAM signer thread panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use base64::Engine;

    #[test]
    fn token_is_a_presigned_connect_url_for_the_region() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let (token, expires_ms) = token_with("eu-west-1", SharedCredentialsProvider::new(creds)).unwrap();
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap();
        let url = url::Url::parse(std::str::from_utf8(&url).unwrap()).unwrap();
        assert_eq!(url.host_str(), Some("kafka.eu-west-1.amazonaws.com"));
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["Action"], "kafka-cluster:Connect");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert!(q["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"), "{q:?}");
        assert!(
            q["X-Amz-Credential"].contains("/eu-west-1/kafka-cluster/aws4_request"),
            "{q:?}"
        );
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        let now_ms = chrono::Utc::now().timestamp_millis();
        assert!(
            expires_ms > now_ms && expires_ms <= now_ms + 900_000 + 5_000,
            "{expires_ms} vs {now_ms}"
        );
    }

    #[test]
    fn no_region_no_token() {
        let Err(e) = AuthContext::default().generate_oauth_token(None) else {
            panic!("a token without a region")
        };
        assert!(e.to_string().contains("kafka.msk_iam_region"), "{e}");
    }

    /// The build links librdkafka with TLS and SASL: these properties would be rejected
    /// at client creation otherwise ("not built with SSL support").
    #[test]
    fn tls_scram_and_oauthbearer_are_supported_by_the_build() {
        use rdkafka::consumer::BaseConsumer;
        for (protocol, mechanism) in [
            ("SSL", None),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SASL_SSL", Some("OAUTHBEARER")),
        ] {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1").set("group.id", "t");
            c.set("security.protocol", protocol);
            if let Some(m) = mechanism {
                c.set("sasl.mechanism", m);
                c.set("sasl.username", "u").set("sasl.password", "p");
            }
            let r: Result<BaseConsumer, _> = c.create();
            assert!(r.is_ok(), "{protocol} {mechanism:?}: {:?}", r.err());
        }
    }
}
