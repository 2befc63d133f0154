//! HTTP client of other nodes' peer ports for replication frames (keep-alive connections).

use crate::map::PartitionId;
use crate::storage::codec::CodecError;
use crate::tls::ClientTls;
use std::time::Duration;

/// Why a replication call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("building the peer HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("loading the TLS settings of the peer client")]
    Tls(#[source] crate::tls::TlsError),
    #[error("sending {kind} to {addr}")]
    Send {
        addr: String,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{addr} answered {status} to {kind}")]
    Status {
        addr: String,
        kind: &'static str,
        status: u16,
    },
    #[error("decoding the answer to {kind} from {addr}")]
    Decode {
        addr: String,
        kind: &'static str,
        #[source]
        source: CodecError,
    },
}

/// Sends replication frames to other nodes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    token: String,
    /// `https` when the store's peer ports serve TLS.
    scheme: &'static str,
}

/// Header marking replication requests (and their protocol version).
pub const PEER_PROTOCOL_HEADER: &str = "x-shardedstore-protocol";

impl PeerClient {
    /// A plain-HTTP peer client.
    pub fn new(token: String, timeout: Duration) -> Result<Self, PeerError> {
        Self::with_tls(token, timeout, &ClientTls::default(), false, None)
    }

    /// A peer client speaking HTTPS (when `https`) and trusting what `tls` says; connections
    /// leave from `local` (the node's `--host`) when given.
    pub fn with_tls(
        token: String,
        timeout: Duration,
        tls: &ClientTls,
        https: bool,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, PeerError> {
        let http = crate::tls::http_client_builder(tls)
            .map_err(PeerError::Tls)?
            .local_address(local)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(PeerError::Build)?;
        Ok(Self {
            http,
            token,
            scheme: crate::tls::scheme(https),
        })
    }

    /// POSTs `body` to `/peer/v1/partitions/{p}/{kind}` and decodes the answer with `decode`.
    pub async fn call<T>(
        &self,
        addr: &str,
        partition: PartitionId,
        kind: &'static str,
        body: Vec<u8>,
        decode: fn(&[u8]) -> Result<T, CodecError>,
    ) -> Result<T, PeerError> {
        let scheme = self.scheme;
        let url = format!("{scheme}://{addr}/peer/v1/partitions/{partition}/{kind}");
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(PEER_PROTOCOL_HEADER, "1")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|source| PeerError::Send {
                addr: addr.to_owned(),
                kind,
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(PeerError::Status {
                addr: addr.to_owned(),
                kind,
                status: status.as_u16(),
            });
        }
        let bytes = resp.bytes().await.map_err(|source| PeerError::Send {
            addr: addr.to_owned(),
            kind,
            source,
        })?;
        decode(&bytes).map_err(|source| PeerError::Decode {
            addr: addr.to_owned(),
            kind,
            source,
        })
    }
}
