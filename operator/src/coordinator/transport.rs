//! How the coordinator talks to nodes: the `NodeTransport` trait over the admin API (and the
//! client API's `GET /v1/map`, used to recover a lost map), implemented by [`NodeClients`]
//! over the node crate's `AdminClient` and client library (and by in-memory fakes in tests).

use futures::future::BoxFuture;
use shardedstore_node::admin_api::{
    AdmitRequest, AdmitResponse, HandoffRequest, HandoffResponse, HeartbeatRequest,
    HeartbeatResponse, InstallMapResponse, LogPosition,
};
use shardedstore_node::client::kv::{KvClient, KvError, MapFetchError};
use shardedstore_node::client::{AdminClient, AdminError};
use shardedstore_node::map::{PartitionId, PartitionMap};
use shardedstore_node::tls::ClientTls;
use std::time::Duration;

/// Bound of one map fetch during recovery.
const FETCH_MAP_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the map persisted on a node could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchMapError {
    #[error("building the HTTP client")]
    BuildClient(#[source] KvError),
    #[error(transparent)]
    Fetch(#[from] MapFetchError),
}

/// The admin calls the coordinator makes, addressed by a node's peer address (`host:port`).
pub trait NodeTransport: Send + Sync {
    fn install_map<'a>(
        &'a self,
        addr: &'a str,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<InstallMapResponse, AdminError>>;

    fn heartbeat<'a>(
        &'a self,
        addr: &'a str,
        req: &'a HeartbeatRequest,
    ) -> BoxFuture<'a, Result<HeartbeatResponse, AdminError>>;

    fn position<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<LogPosition, AdminError>>;

    fn admit<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a AdmitRequest,
    ) -> BoxFuture<'a, Result<AdmitResponse, AdminError>>;

    fn handoff<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a HandoffRequest,
    ) -> BoxFuture<'a, Result<HandoffResponse, AdminError>>;

    fn drop_partition<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<(), AdminError>>;

    /// The map a node has installed (and persisted), from its client API at `client_addr`.
    fn fetch_map<'a>(
        &'a self,
        client_addr: &'a str,
    ) -> BoxFuture<'a, Result<PartitionMap, FetchMapError>>;
}

/// How the coordinator reaches a store's nodes: the admin client (peer ports) and, for
/// `GET /v1/map` on the client ports, the same trust and the peer token (which nodes accept
/// on their client port too, whatever client authentication they require).
#[derive(Clone, Debug)]
pub struct NodeClients {
    admin: AdminClient,
    /// `Some` when the store serves TLS.
    tls: Option<ClientTls>,
    token: String,
}

impl NodeClients {
    /// Clients of a store's nodes, over TLS trusting `tls` when given; `timeout` bounds every
    /// admin call, connections leave from `local` when given.
    pub fn new(
        token: impl Into<String>,
        timeout: Duration,
        tls: Option<ClientTls>,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, AdminError> {
        let token = token.into();
        let admin = AdminClient::with_tls(
            token.clone(),
            timeout,
            &tls.clone().unwrap_or_default(),
            tls.is_some(),
            local,
        )?;
        Ok(Self { admin, tls, token })
    }

    /// `GET /v1/map` on a node's client port, through the client library (the map is
    /// validated as every client validates it). Only used while recovering a lost map, so a
    /// short-lived client is good enough.
    async fn fetch_map_over_http(&self, addr: &str) -> Result<PartitionMap, FetchMapError> {
        let mut builder = KvClient::builder(&[addr]).request_timeout(FETCH_MAP_TIMEOUT);
        if let Some(tls) = &self.tls {
            // The token only ever travels encrypted.
            builder = builder.tls(tls.clone()).token(self.token.clone());
        }
        let client = builder.build().map_err(FetchMapError::BuildClient)?;
        Ok(client.map_from(addr).await?)
    }
}

impl NodeTransport for NodeClients {
    fn install_map<'a>(
        &'a self,
        addr: &'a str,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<InstallMapResponse, AdminError>> {
        Box::pin(self.admin.install_map(addr, map))
    }

    fn heartbeat<'a>(
        &'a self,
        addr: &'a str,
        req: &'a HeartbeatRequest,
    ) -> BoxFuture<'a, Result<HeartbeatResponse, AdminError>> {
        Box::pin(self.admin.heartbeat(addr, req))
    }

    fn position<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<LogPosition, AdminError>> {
        Box::pin(self.admin.position(addr, partition))
    }

    fn admit<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a AdmitRequest,
    ) -> BoxFuture<'a, Result<AdmitResponse, AdminError>> {
        Box::pin(self.admin.admit(addr, partition, req))
    }

    fn handoff<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a HandoffRequest,
    ) -> BoxFuture<'a, Result<HandoffResponse, AdminError>> {
        Box::pin(self.admin.handoff(addr, partition, req))
    }

    fn drop_partition<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(self.admin.drop_partition(addr, partition))
    }

    fn fetch_map<'a>(
        &'a self,
        client_addr: &'a str,
    ) -> BoxFuture<'a, Result<PartitionMap, FetchMapError>> {
        Box::pin(self.fetch_map_over_http(client_addr))
    }
}
