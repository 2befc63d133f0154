//! How the coordinator talks to nodes: the `NodeTransport` trait over the admin API, implemented
//! by the node crate's `AdminClient` (and by in-memory fakes in tests).

use futures::future::BoxFuture;
use shardedstore_node::admin_api::{
    AdmitRequest, AdmitResponse, HandoffRequest, HandoffResponse, HeartbeatRequest,
    HeartbeatResponse, InstallMapResponse, LogPosition,
};
use shardedstore_node::client::{AdminClient, AdminError};
use shardedstore_node::map::{PartitionId, PartitionMap};

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
}

impl NodeTransport for AdminClient {
    fn install_map<'a>(
        &'a self,
        addr: &'a str,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<InstallMapResponse, AdminError>> {
        Box::pin(AdminClient::install_map(self, addr, map))
    }

    fn heartbeat<'a>(
        &'a self,
        addr: &'a str,
        req: &'a HeartbeatRequest,
    ) -> BoxFuture<'a, Result<HeartbeatResponse, AdminError>> {
        Box::pin(AdminClient::heartbeat(self, addr, req))
    }

    fn position<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<LogPosition, AdminError>> {
        Box::pin(AdminClient::position(self, addr, partition))
    }

    fn admit<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a AdmitRequest,
    ) -> BoxFuture<'a, Result<AdmitResponse, AdminError>> {
        Box::pin(AdminClient::admit(self, addr, partition, req))
    }

    fn handoff<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
        req: &'a HandoffRequest,
    ) -> BoxFuture<'a, Result<HandoffResponse, AdminError>> {
        Box::pin(AdminClient::handoff(self, addr, partition, req))
    }

    fn drop_partition<'a>(
        &'a self,
        addr: &'a str,
        partition: PartitionId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(AdminClient::drop_partition(self, addr, partition))
    }
}
