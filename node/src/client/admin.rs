//! Typed client of a node's admin API (peer port), used by the operator's coordinator and tests.

use crate::admin_api::{
    ADMIN_PROTOCOL_VERSION, AdmitRequest, AdmitResponse, ErrorBody, HandoffRequest,
    HandoffResponse, HeartbeatRequest, HeartbeatResponse, InstallMapResponse, LogPosition,
};
use crate::map::{PartitionId, PartitionMap};
use crate::tls::ClientTls;
use std::time::Duration;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("building the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    #[error("loading the TLS settings of the admin client")]
    Tls(#[source] crate::tls::TlsError),
    #[error("sending {path} to {addr}")]
    Send {
        addr: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("node {addr} answered {status} to {path}: {code}: {message}")]
    Rejected {
        addr: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("decoding the answer to {path} from {addr}")]
    Decode {
        addr: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
}

impl AdminError {
    /// HTTP status of a rejection, if the node answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the node could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Send { .. })
    }
}

/// Client of the admin API of any number of nodes, addressed by `host:port` of their peer port.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    token: String,
    /// `https` when the nodes' peer ports serve TLS.
    scheme: &'static str,
}

impl AdminClient {
    /// `timeout` bounds every call (heartbeats want it well below the lease).
    pub fn new(token: impl Into<String>, timeout: Duration) -> Result<Self, AdminError> {
        Self::with_tls(token, timeout, &ClientTls::default(), false, None)
    }

    /// Like [`AdminClient::new`], with connections leaving from `local` when given.
    pub fn bound(
        token: impl Into<String>,
        timeout: Duration,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, AdminError> {
        Self::with_tls(token, timeout, &ClientTls::default(), false, local)
    }

    /// A client of nodes whose peer ports serve TLS (when `https`), trusting what `tls` says
    /// (the store's CA with `--tls-ca`); connections leave from `local` when given.
    pub fn with_tls(
        token: impl Into<String>,
        timeout: Duration,
        tls: &ClientTls,
        https: bool,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, AdminError> {
        let http = crate::tls::http_client_builder(tls)
            .map_err(AdminError::Tls)?
            .local_address(local)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(AdminError::BuildClient)?;
        Ok(Self {
            http,
            token: token.into(),
            scheme: crate::tls::scheme(https),
        })
    }

    pub async fn install_map(
        &self,
        addr: &str,
        map: &PartitionMap,
    ) -> Result<InstallMapResponse, AdminError> {
        self.call(
            addr,
            reqwest::Method::POST,
            "/admin/v1/map",
            Some(map),
            None,
        )
        .await
    }

    pub async fn heartbeat(
        &self,
        addr: &str,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, AdminError> {
        self.call(
            addr,
            reqwest::Method::POST,
            "/admin/v1/heartbeat",
            Some(req),
            None,
        )
        .await
    }

    pub async fn position(
        &self,
        addr: &str,
        partition: PartitionId,
    ) -> Result<LogPosition, AdminError> {
        let path = format!("/admin/v1/partitions/{partition}/position");
        self.call::<(), _>(addr, reqwest::Method::GET, &path, None, None)
            .await
    }

    pub async fn admit(
        &self,
        addr: &str,
        partition: PartitionId,
        req: &AdmitRequest,
    ) -> Result<AdmitResponse, AdminError> {
        let path = format!("/admin/v1/partitions/{partition}/admit");
        let extra = Duration::from_millis(req.timeout_ms);
        self.call(addr, reqwest::Method::POST, &path, Some(req), Some(extra))
            .await
    }

    /// The map the node persisted last (`GET /admin/v1/map`), also after a restart.
    pub async fn map(&self, addr: &str) -> Result<PartitionMap, AdminError> {
        self.call::<(), _>(addr, reqwest::Method::GET, "/admin/v1/map", None, None)
            .await
    }

    /// Hand-off waits on the node for up to `req.timeout_ms`, so the call's own timeout is extended.
    pub async fn handoff(
        &self,
        addr: &str,
        partition: PartitionId,
        req: &HandoffRequest,
    ) -> Result<HandoffResponse, AdminError> {
        let path = format!("/admin/v1/partitions/{partition}/handoff");
        let extra = Duration::from_millis(req.timeout_ms);
        self.call(addr, reqwest::Method::POST, &path, Some(req), Some(extra))
            .await
    }

    pub async fn drop_partition(
        &self,
        addr: &str,
        partition: PartitionId,
    ) -> Result<(), AdminError> {
        let path = format!("/admin/v1/partitions/{partition}");
        let resp = self
            .send::<()>(addr, reqwest::Method::DELETE, &path, None, None)
            .await?;
        Self::check(addr, &path, resp).await.map(|_| ())
    }

    async fn call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        extra_timeout: Option<Duration>,
    ) -> Result<R, AdminError> {
        let resp = self.send(addr, method, path, body, extra_timeout).await?;
        let resp = Self::check(addr, path, resp).await?;
        resp.json::<R>().await.map_err(|source| AdminError::Decode {
            addr: addr.to_owned(),
            path: path.to_owned(),
            source,
        })
    }

    async fn send<B: serde::Serialize>(
        &self,
        addr: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        extra_timeout: Option<Duration>,
    ) -> Result<reqwest::Response, AdminError> {
        let mut req = self
            .http
            .request(method, format!("{}://{addr}{path}", self.scheme))
            .bearer_auth(&self.token)
            .header(
                "x-shardedstore-protocol",
                ADMIN_PROTOCOL_VERSION.to_string(),
            );
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(extra) = extra_timeout {
            req = req.timeout(extra + Duration::from_secs(5));
        }
        req.send().await.map_err(|source| AdminError::Send {
            addr: addr.to_owned(),
            path: path.to_owned(),
            source,
        })
    }

    async fn check(
        addr: &str,
        path: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, AdminError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let (code, message) = match resp.json::<ErrorBody>().await {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (
                "unknown".to_owned(),
                status.canonical_reason().unwrap_or("").to_owned(),
            ),
        };
        Err(AdminError::Rejected {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status: status.as_u16(),
            code,
            message,
        })
    }
}
