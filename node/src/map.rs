//! The partition map: which node holds which replica of every partition, and how a key finds its partition.
//!
//! The operator is the only writer of the map; nodes install it (only higher versions) and
//! obey it. It is serialized as JSON (ConfigMap key `map.json`, `GET /v1/map`, the admin API).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the map's serialized format. Bumped on incompatible changes.
pub const MAP_FORMAT: u32 = 1;

/// Identifier of a storage node: the pod name in Kubernetes, `node-<i>` in local mode.
pub type NodeId = String;

/// Partition number, `0..partition_count`.
pub type PartitionId = u32;

/// The partition of `key` among `partitions`: xxh3-64 of the key reduced by multiply-shift.
pub fn partition_of(key: &[u8], partitions: u32) -> PartitionId {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    ((u128::from(h) * u128::from(partitions)) >> 64) as PartitionId
}

/// Size limits the nodes enforce on client requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// Lifecycle state of a node as the operator sees it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
pub enum NodeState {
    /// Serving and eligible for new replicas.
    #[default]
    Active,
    /// Being emptied before removal (scale-in, or its replicas are being re-created elsewhere).
    Draining,
    /// Not answering or confirmed dead; replicas stay until `replaceAfter`.
    Down,
    /// Gone long enough that its replicas were re-created elsewhere.
    Replaced,
}

/// A node's addresses as observed by the operator (pod IP in Kubernetes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `host:port` of the client API (port 7000 in Kubernetes).
    pub client_addr: String,
    /// `host:port` of the peer/admin API (port 7100 in Kubernetes).
    pub peer_addr: String,
    /// Failure zone, when the cluster has zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub state: NodeState,
}

/// The replica set of one partition.
///
/// Invariants (checked by [`PartitionMap::validate`]): `primary ∈ in_sync ⊆ replicas`;
/// `learners ∩ replicas = ∅`; no duplicates. `replicas` are the voting members (in sync or
/// lagging); `learners` are new members still catching up, not yet eligible as primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PartitionEntry {
    /// Leader epoch; increases by one whenever the primary changes.
    pub epoch: u64,
    /// Current primary; `None` when the partition is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub in_sync: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<NodeId>,
}

impl PartitionEntry {
    /// Every node holding (or building) a copy of the partition.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.replicas.iter().chain(self.learners.iter())
    }

    pub fn is_member(&self, node: &str) -> bool {
        self.members().any(|n| n == node)
    }

    pub fn is_in_sync(&self, node: &str) -> bool {
        self.in_sync.iter().any(|n| n == node)
    }
}

/// The whole partition map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMap {
    /// Serialized format, [`MAP_FORMAT`].
    pub format: u32,
    /// Map version; increases by exactly one per change. Nodes install only higher versions.
    pub version: u64,
    /// Name of the store the map belongs to (a node refuses a map of another store).
    pub store: String,
    pub replication_factor: u32,
    /// Writes are refused (503) when fewer replicas are in sync.
    pub min_in_sync: u32,
    #[serde(default)]
    pub limits: Limits,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// One entry per partition; the length is the partition count and never changes.
    pub partitions: Vec<PartitionEntry>,
    /// Throughput limit of snapshot streams that catch replicas up (`rebalance.bandwidthBytesPerSecond`);
    /// nodes fall back to their own `--catchup-bytes-per-second` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_bandwidth_bytes_per_second: Option<u64>,
    /// The store is being filled from a backup: nodes refuse client reads and writes
    /// (503 `restoring`) except the restore's own, which carry [`RESTORE_TOKEN_HEADER`]
    /// with the store's peer token. The operator clears it once the restore is complete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restoring: bool,
    /// Per node, the disk identity (`diskId` of its database) whose copies the `inSync` lists
    /// mean: recorded by the operator in the maps that list the node in no `inSync` set or in
    /// which it enters one (the first map included), kept unchanged while it stays in sync. A
    /// node whose own database has another identity holds none of those copies and marks every
    /// copy it creates while listed in sync as unproven (`docs/protocol.md`, "Disk identity and
    /// unproven copies"). No entry: no disk recorded (maps written before this rule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disks: BTreeMap<NodeId, String>,
}

/// Header carrying the store's peer token on the client requests of a restore, the only
/// client requests a node serves while the map says `restoring`.
pub const RESTORE_TOKEN_HEADER: &str = "x-shardedstore-restore-token";

/// Why a map is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("unsupported map format {0} (this build reads format {MAP_FORMAT})")]
    UnsupportedFormat(u32),
    #[error("map has no partitions")]
    NoPartitions,
    #[error(
        "replicationFactor {replication_factor} and minInSync {min_in_sync}: need 1 <= minInSync <= replicationFactor"
    )]
    BadReplication {
        replication_factor: u32,
        min_in_sync: u32,
    },
    #[error("partition {partition}: {problem}")]
    BadPartition {
        partition: PartitionId,
        problem: String,
    },
}

impl PartitionMap {
    /// An empty map (version 0) of `partitions` unassigned partitions.
    pub fn empty(store: &str, partitions: u32, replication_factor: u32, min_in_sync: u32) -> Self {
        Self {
            format: MAP_FORMAT,
            version: 0,
            store: store.to_owned(),
            replication_factor,
            min_in_sync,
            limits: Limits::default(),
            nodes: BTreeMap::new(),
            partitions: vec![PartitionEntry::default(); partitions as usize],
            rebalance_bandwidth_bytes_per_second: None,
            restoring: false,
            disks: BTreeMap::new(),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        partition_of(key, self.partition_count())
    }

    pub fn entry(&self, partition: PartitionId) -> Option<&PartitionEntry> {
        self.partitions.get(partition as usize)
    }

    /// Structural checks every map must pass before a node installs it.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.format != MAP_FORMAT {
            return Err(MapError::UnsupportedFormat(self.format));
        }
        if self.partitions.is_empty() {
            return Err(MapError::NoPartitions);
        }
        if self.min_in_sync == 0 || self.min_in_sync > self.replication_factor {
            return Err(MapError::BadReplication {
                replication_factor: self.replication_factor,
                min_in_sync: self.min_in_sync,
            });
        }
        for (i, p) in self.partitions.iter().enumerate() {
            let bad = |problem: String| MapError::BadPartition {
                partition: i as u32,
                problem,
            };
            let mut seen = std::collections::BTreeSet::new();
            for n in p.members() {
                if !seen.insert(n) {
                    return Err(bad(format!("node {n} listed twice")));
                }
                if !self.nodes.contains_key(n) {
                    return Err(bad(format!("node {n} is not in the node list")));
                }
            }
            for n in &p.in_sync {
                if !p.replicas.contains(n) {
                    return Err(bad(format!("in-sync node {n} is not a replica")));
                }
            }
            if let Some(primary) = &p.primary
                && !p.in_sync.contains(primary)
            {
                return Err(bad(format!("primary {primary} is not in sync")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_is_in_range_and_spreads() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            let p = partition_of(format!("key-{i}").as_bytes(), 16);
            counts[p as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(partition_of(b"anything", 1), 0);
    }

    #[test]
    fn validate_rejects_primary_out_of_sync() {
        let mut m = PartitionMap::empty("s", 1, 1, 1);
        m.nodes.insert(
            "a".into(),
            NodeInfo {
                client_addr: "x".into(),
                peer_addr: "y".into(),
                zone: None,
                state: NodeState::Active,
            },
        );
        m.partitions[0] = PartitionEntry {
            epoch: 1,
            primary: Some("a".into()),
            replicas: vec!["a".into()],
            in_sync: vec![],
            learners: vec![],
        };
        assert!(matches!(m.validate(), Err(MapError::BadPartition { .. })));
        m.partitions[0].in_sync.push("a".into());
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_min_in_sync_out_of_bounds() {
        for (rf, min) in [(3, 0), (3, 4), (1, 2)] {
            let m = PartitionMap::empty("s", 1, rf, min);
            assert_eq!(
                m.validate(),
                Err(MapError::BadReplication {
                    replication_factor: rf,
                    min_in_sync: min
                })
            );
        }
        assert_eq!(PartitionMap::empty("s", 1, 3, 3).validate(), Ok(()));
    }

    #[test]
    fn map_json_round_trips_in_camel_case() {
        let m = PartitionMap::empty("s", 2, 3, 2);
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert!(json.contains("\"replicationFactor\":3"), "{json}");
        let back: PartitionMap = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, m);
        // `restoring` is written only when set, so older readers see the same map.
        assert!(!json.contains("restoring"), "{json}");
        let mut r = m.clone();
        r.restoring = true;
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(json.contains("\"restoring\":true"), "{json}");
        let back: PartitionMap = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
    }
}
