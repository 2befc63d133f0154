//! Client of the backup endpoints of the nodes' peer ports (see `http::backup_api`).

use super::export::{BackupPoint, ExportRequest};
use super::manifest::PartitionObject;
use crate::admin_api::ErrorBody;
use crate::map::PartitionId;
use std::time::Duration;

/// Why a call to a node's backup endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("the TLS settings of the HTTP client")]
    Tls(#[source] crate::tls::TlsError),
    #[error("calling {addr}")]
    Send {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{addr} answered {status}: {code}: {message}")]
    Refused {
        addr: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("decoding the answer of {addr}")]
    Decode {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
}

impl PeerCallError {
    /// True when asking again cannot help: the token is missing or wrong, the port wants
    /// TLS, or the node's certificate is not trusted. Such errors end a backup at once.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Build(_) | Self::Tls(_) => true,
            Self::Refused { status, code, .. } => {
                matches!(status, 401 | 403) || code == "tls_required"
            }
            Self::Send { source, .. } => crate::tls::handshake_error(source).is_some(),
            Self::Decode { .. } => false,
        }
    }
}

/// Calls nodes' backup endpoints with the peer token.
#[derive(Clone, Debug)]
pub struct BackupPeers {
    http: reqwest::Client,
    token: String,
    /// `https` when the nodes' peer ports serve TLS.
    scheme: &'static str,
}

impl BackupPeers {
    /// `export_timeout` bounds one partition's export (it streams the whole partition).
    pub fn new(token: impl Into<String>, export_timeout: Duration) -> Result<Self, PeerCallError> {
        Self::with_tls(token, export_timeout, None)
    }

    /// Like [`BackupPeers::new`], over TLS trusting `tls` when given (the store serves TLS).
    pub fn with_tls(
        token: impl Into<String>,
        export_timeout: Duration,
        tls: Option<&crate::tls::ClientTls>,
    ) -> Result<Self, PeerCallError> {
        let http = crate::tls::http_client_builder(&tls.cloned().unwrap_or_default())
            .map_err(PeerCallError::Tls)?
            .connect_timeout(Duration::from_secs(3))
            .timeout(export_timeout)
            .build()
            .map_err(PeerCallError::Build)?;
        Ok(Self {
            http,
            token: token.into(),
            scheme: crate::tls::scheme(tls.is_some()),
        })
    }

    pub async fn point(&self, addr: &str, p: PartitionId) -> Result<BackupPoint, PeerCallError> {
        let req = self
            .http
            .get(format!(
                "{}://{addr}/admin/v1/backup/partitions/{p}/point",
                self.scheme
            ))
            .timeout(Duration::from_secs(5));
        self.send(addr, req).await
    }

    pub async fn export(
        &self,
        addr: &str,
        p: PartitionId,
        body: &ExportRequest,
    ) -> Result<PartitionObject, PeerCallError> {
        let req = self
            .http
            .post(format!(
                "{}://{addr}/admin/v1/backup/partitions/{p}/export",
                self.scheme
            ))
            .json(body);
        self.send(addr, req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, PeerCallError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| PeerCallError::Send {
                addr: addr.to_owned(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let (code, message) = match resp.json::<ErrorBody>().await {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => ("unknown".to_owned(), String::new()),
            };
            return Err(PeerCallError::Refused {
                addr: addr.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        resp.json().await.map_err(|source| PeerCallError::Decode {
            addr: addr.to_owned(),
            source,
        })
    }
}
