//! A real S3-compatible server for the backup suites: moto's server mode (`moto_server`,
//! installed by `hack/install-tools.sh moto`), started on a free port (loopback, or an
//! address pods reach for the e2e suite) and killed when dropped.

use crate::node_harness::wait_until;
use crate::tools::require_tool;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Credentials the suites use (moto accepts any).
pub const ACCESS_KEY_ID: &str = "backup-test";
pub const SECRET_ACCESS_KEY: &str = "backup-test-secret";
pub const REGION: &str = "us-east-1";

/// A running `moto_server`.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts the server on loopback, or `None` (after printing `SKIPPED:`) when moto is not
    /// installed.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        Self::start_on("127.0.0.1").await
    }

    /// Starts the server listening on `host` (an address of this machine).
    pub async fn start_on(host: &str) -> anyhow::Result<Option<Self>> {
        let Some(bin) = require_tool("moto_server") else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind((host, 0))?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["-H", host, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self {
            child,
            endpoint: format!("http://{host}:{port}"),
        };
        let http = reqwest::Client::new();
        let url = format!("{}/", server.endpoint);
        wait_until(Duration::from_secs(30), "moto_server to answer", || {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.ok().map(|_| ()) }
        })
        .await?;
        Ok(Some(server))
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let resp = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "creating bucket {bucket}: {}",
            resp.status()
        );
        Ok(())
    }

    /// The `AWS_*` environment a process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }

    /// The S3 options of a destination on this server.
    pub fn options(&self) -> shardedstore_node::backup::S3Options {
        shardedstore_node::backup::S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.to_owned()),
            access_key_id: Some(ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(SECRET_ACCESS_KEY.to_owned()),
            session_token: None,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
