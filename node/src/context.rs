//! Node-wide shared state: identity (node id, incarnation, disk identity), storage handles,
//! the lease, the installed map, configuration of replication, metrics, and the peer client.

pub use crate::lease::Lease;
use crate::map::PartitionMap;
use crate::metrics::NodeMetrics;
use crate::replication::peer_client::PeerClient;
use crate::storage::Store;
use crate::storage::writer::WriterHandle;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A storage writer stalled longer than this takes no lease from heartbeats and serves
/// nothing: the operator fails it over instead of waiting for a disk that may never return.
pub const STORAGE_STALL_BOUND: Duration = Duration::from_secs(2);

/// Tunables of replication and retention (from the command line).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Log entries kept behind the applied point even when every replica has them.
    pub log_window: u64,
    /// Most bytes of those entries kept (never more than the partition's data, nor less than
    /// 4 MiB of it).
    pub log_window_bytes: u64,
    /// Snapshot throughput limit when the map sets none (0 = unlimited).
    pub catchup_bytes_per_second: u64,
    /// Idle interval after which the primary sends an empty append (carries the commit point).
    pub idle_append: Duration,
    /// Most bytes of log entries in one append message.
    pub max_append_bytes: usize,
    /// How long a client write waits for its commit before answering 503.
    pub write_timeout: Duration,
    /// Appends in flight per partition and member, at most
    /// [`crate::replication::session::APPENDS_IN_FLIGHT`].
    pub appends_in_flight: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            log_window: 100_000,
            log_window_bytes: 64 * 1024 * 1024,
            catchup_bytes_per_second: 0,
            idle_append: Duration::from_millis(1000),
            max_append_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            appends_in_flight: 1,
        }
    }
}

/// Everything the node's parts share.
pub struct Ctx {
    pub node_id: String,
    /// Random value chosen at every process start (reported in heartbeat answers).
    pub incarnation: u64,
    pub store_name: String,
    pub store: Store,
    pub writer: WriterHandle,
    pub peers: PeerClient,
    pub lease: Lease,
    pub metrics: Arc<NodeMetrics>,
    pub config: ReplicationConfig,
    /// Ids of the replication sessions this node opens as a primary.
    pub sessions: crate::replication::session::SessionIds,
    /// Set once a heartbeat without a coordinator id arrived: the operator predates the
    /// incarnation rule and will not fail over a restarted primary, so the restart epoch
    /// floor is not applied (`docs/protocol.md`, "Epochs on restart").
    pub legacy_operator: AtomicBool,
    map: RwLock<Option<Arc<PartitionMap>>>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: String,
        store_name: String,
        store: Store,
        writer: WriterHandle,
        peers: PeerClient,
        metrics: Arc<NodeMetrics>,
        config: ReplicationConfig,
        map: Option<PartitionMap>,
    ) -> Self {
        Self {
            node_id,
            incarnation: rand::random(),
            store_name,
            store,
            writer,
            peers,
            lease: Lease::default(),
            metrics,
            config,
            sessions: Default::default(),
            legacy_operator: AtomicBool::new(false),
            map: RwLock::new(map.map(Arc::new)),
        }
    }

    /// The installed map, if any.
    pub fn map(&self) -> Option<Arc<PartitionMap>> {
        self.map.read().ok().and_then(|m| m.clone())
    }

    pub fn set_map(&self, map: Arc<PartitionMap>) {
        if let Ok(mut m) = self.map.write() {
            *m = Some(map);
        }
    }

    pub fn map_version(&self) -> u64 {
        self.map().map_or(0, |m| m.version)
    }

    /// Peer address of `node` in the installed map.
    pub fn peer_addr(&self, node: &str) -> Option<String> {
        self.map()?.nodes.get(node).map(|n| n.peer_addr.clone())
    }

    /// Whether the storage writer has been stuck longer than [`STORAGE_STALL_BOUND`].
    pub fn storage_stalled(&self) -> bool {
        self.writer.stalled_for() > STORAGE_STALL_BOUND
    }

    /// The lease holds and storage is not stalled: the node may serve as primary.
    pub fn may_serve(&self) -> bool {
        self.lease.valid() && !self.storage_stalled()
    }

    /// Snapshot throughput limit: the map's, else the node's flag (0 = unlimited).
    pub fn catchup_rate(&self) -> u64 {
        self.map()
            .and_then(|m| m.rebalance_bandwidth_bytes_per_second)
            .unwrap_or(self.config.catchup_bytes_per_second)
    }
}
