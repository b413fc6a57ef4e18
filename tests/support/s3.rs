//! moto's S3 API (`moto_server`, PyPI) on a free port of 127.0.0.1, with its own empty
//! state: the object store of the tests' S3 tables and S3 leases. TESTING.md records what
//! was checked: conditional writes (`If-None-Match: *`, `If-Match`) give 412 like S3, and
//! bucket names must be valid S3 names.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pinpipe::sink::TablesConfig;

use super::http::http;
use super::{free_port, log_tail, tool};

/// An `Authorization` header in SigV4 form with a dummy signature. moto never checks
/// signatures, but a request without one is anonymous: it may create buckets and new
/// objects, yet gets 403 on GET/HEAD of a (private) object and on a conditional PUT over
/// an existing one. Send this with raw requests that must act as the table owner.
pub const FAKE_AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
);

/// A running `moto_server`; killed on drop. Its output goes to a log file whose tail is
/// shown if it fails to start.
pub struct S3Server {
    pub endpoint: String,
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> Self {
        let bin = tool("PINPIPE_MOTO_SERVER", "venv/bin/moto_server");
        // A retry covers the rare port taken by another process between free_port() and
        // moto's bind (moto then exits at once with "Address already in use").
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("moto_server exited at start three times; last log:\n{last_log}");
    }

    /// Starts moto and waits (30 s at most) until it answers; Err(log tail) if it exited.
    fn try_start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e} (run `bash .ci/install-servers.sh`)", bin.display()));
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("moto_server exited with {status}:\n{}", server.log_tail()));
            }
            if let Ok((200, _)) = http(port, "GET", "/", &[], b"") {
                return Ok(server);
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {port} did not answer within 30 s; log tail:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines moto wrote (one per request it served, and any traceback).
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("moto.log"), 40)
    }

    /// A raw request acting as the table owner (with [`FAKE_AUTH`] added).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut all = vec![FAKE_AUTH];
        all.extend_from_slice(headers);
        http(self.port, method, path, &all, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates a bucket with an unsigned `PUT /name` (moto allows anonymous bucket
    /// creation). The name must be a valid S3 bucket name: 3 to 63 characters.
    pub fn create_bucket(&self, name: &str) {
        let (code, body) = http(self.port, "PUT", &format!("/{name}"), &[], b"")
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert_eq!(code, 200, "creating bucket {name}: {body}\n{}", self.log_tail());
    }

    /// Storage options for deltalake / object_store pointing at this server.
    pub fn storage_options(&self) -> HashMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// pinpipe's `[tables]` section for tables (and leases) at `location` (`s3://bucket/..`)
    /// on this server: path-style, plain HTTP, static credentials.
    pub fn tables_config(&self, location: &str) -> TablesConfig {
        TablesConfig {
            location: location.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            path_style: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..Default::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
