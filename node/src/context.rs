//! Node-wide shared state: identity, storage handles, the lease, the installed map,
//! configuration of replication, metrics, and the peer client.

use crate::map::PartitionMap;
use crate::metrics::NodeMetrics;
use crate::replication::peer_client::PeerClient;
use crate::storage::Store;
use crate::storage::writer::WriterHandle;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Tunables of replication and retention (from the command line).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// Log entries kept behind the applied point even when every replica has them.
    pub log_window: u64,
    /// Snapshot throughput limit when the map sets none (0 = unlimited).
    pub catchup_bytes_per_second: u64,
    /// Idle interval after which the primary sends an empty append (carries the commit point).
    pub idle_append: Duration,
    /// Most bytes of log entries in one append message.
    pub max_append_bytes: usize,
    /// How long a client write waits for its commit before answering 503.
    pub write_timeout: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            log_window: 100_000,
            catchup_bytes_per_second: 0,
            idle_append: Duration::from_millis(1000),
            max_append_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// The node's lease: granted by each heartbeat, measured on the monotonic clock from receipt.
#[derive(Default)]
pub struct Lease {
    until: Mutex<Option<Instant>>,
}

impl Lease {
    pub fn grant(&self, duration: Duration) {
        if let Ok(mut u) = self.until.lock() {
            *u = Some(Instant::now() + duration);
        }
    }

    pub fn valid(&self) -> bool {
        self.until
            .lock()
            .ok()
            .and_then(|u| *u)
            .is_some_and(|u| Instant::now() < u)
    }
}

/// Everything the node's parts share.
pub struct Ctx {
    pub node_id: String,
    pub store_name: String,
    pub store: Store,
    pub writer: WriterHandle,
    pub peers: PeerClient,
    pub lease: Lease,
    pub metrics: Arc<NodeMetrics>,
    pub config: ReplicationConfig,
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
            store_name,
            store,
            writer,
            peers,
            lease: Lease::default(),
            metrics,
            config,
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

    /// Snapshot throughput limit: the map's, else the node's flag (0 = unlimited).
    pub fn catchup_rate(&self) -> u64 {
        self.map()
            .and_then(|m| m.rebalance_bandwidth_bytes_per_second)
            .unwrap_or(self.config.catchup_bytes_per_second)
    }
}
