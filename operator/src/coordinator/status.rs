//! What the coordinator reports: a status snapshot (for the custom resource's status and the
//! local control endpoint) and notable events (for Kubernetes Events and metrics).

use serde::{Deserialize, Serialize};
use shardedstore_node::map::{NodeId, NodeState, PartitionId};

/// Health counts over all partitions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    pub total: u32,
    /// Primary live and `inSync` at the replication factor.
    pub healthy: u32,
    /// Primary live but fewer in-sync replicas than the replication factor.
    pub under_replicated: u32,
    /// No live primary, or fewer in-sync replicas than `minInSync`.
    pub unavailable: u32,
    /// Partitions with a move in flight.
    pub moving: u32,
}

/// Step a move is at; each step is a separate map change, so a move resumes from the map.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveState {
    /// The destination is a learner catching up.
    CatchingUp,
    /// The primary admitted the learner; waiting for the map write adding it to `inSync`.
    Admitted,
    /// The moving replica is the primary; it hands off to the destination.
    HandingOff,
    /// The destination is in sync; the source replica is being removed.
    RemovingSource,
}

/// One move in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    pub partition: PartitionId,
    /// Replica being replaced; `None` when the move only adds a missing replica.
    pub from: Option<NodeId>,
    pub to: NodeId,
    pub state: MoveState,
    /// Bytes the destination holds so far (from heartbeats).
    pub bytes_done: u64,
    /// Why the move is not progressing, when it is stuck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One node's role in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: NodeId,
    pub state: NodeState,
    pub replicas: u32,
    pub primaries: u32,
}

/// Snapshot of the coordinator's view, refreshed every heartbeat interval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorStatus {
    /// Version of the map the coordinator last read or wrote (0: none yet).
    pub map_version: u64,
    pub partition_summary: PartitionSummary,
    pub moves: Vec<MoveStatus>,
    pub nodes: Vec<NodeStatus>,
    /// Nodes in the map that hold no replica or learner: safe to remove.
    pub empty_nodes: Vec<NodeId>,
    /// Every partition has a live primary and `inSync == replicas` at the replication factor,
    /// with no learners: nothing to wait for (rolling restart gate).
    pub all_in_sync: bool,
    /// Replicas and primaries are where placement wants them (no move or hand-off left).
    pub balanced: bool,
}

/// Notable happenings, for Kubernetes Events and metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CoordinatorEvent {
    MapWritten {
        version: u64,
    },
    /// The map store held no map (or an older one than a node): the newest map persisted on
    /// the nodes was written back to it.
    MapRecovered {
        version: u64,
        from: NodeId,
    },
    Failover {
        partition: PartitionId,
        from: Option<NodeId>,
        to: NodeId,
        epoch: u64,
        /// The old primary was confirmed dead (not merely silent).
        confirmed: bool,
    },
    /// A live primary handed the partition over to an in-sync replica (move, drain, cordon
    /// or primary balance).
    PrimaryHandedOff {
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
        epoch: u64,
    },
    /// A hand-off did not complete in time; the old primary was re-confirmed.
    HandoffAborted {
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
    },
    /// A partition lost its last in-sync candidate: it stays unavailable until one returns.
    PartitionUnavailable {
        partition: PartitionId,
    },
    /// A member left the partition's in-sync set; `reason` says why (dead, holding writes
    /// back beyond the lag timeout, an unproven copy or a new disk).
    InSyncShrunk {
        partition: PartitionId,
        node: NodeId,
        reason: String,
    },
    InSyncExpanded {
        partition: PartitionId,
        node: NodeId,
    },
    MoveStarted {
        partition: PartitionId,
        from: Option<NodeId>,
        to: NodeId,
    },
    MoveFinished {
        partition: PartitionId,
        from: Option<NodeId>,
        to: NodeId,
    },
    MoveFailed {
        partition: PartitionId,
        to: NodeId,
        reason: String,
    },
    NodeDown {
        node: NodeId,
        confirmed: bool,
    },
    NodeUp {
        node: NodeId,
    },
    NodeReplaced {
        node: NodeId,
    },
    /// A node started or stopped draining (scale in / cancelled scale in).
    NodeDraining {
        node: NodeId,
        draining: bool,
    },
    HeartbeatFailed {
        node: NodeId,
    },
    /// A stale replica on a node was dropped.
    ReplicaDropped {
        partition: PartitionId,
        node: NodeId,
    },
}
