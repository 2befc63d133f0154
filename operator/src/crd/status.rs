//! The observed state of a ShardedStore, written by the operator through the status
//! subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state of the store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardedStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Available, Progressing, Degraded and Reconciled (whether the last reconcile
    /// applied everything, with the reason when it did not).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,

    /// Storage pods that are ready.
    #[serde(default)]
    pub ready_nodes: i32,

    /// Storage pods running the current pod template (a rolling restart replaces the others
    /// one at a time).
    #[serde(default)]
    pub updated_nodes: i32,

    /// Image of the current pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Revision of the current pod template (the StatefulSet's update revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,

    /// Label selector of the storage pods, in string form (used by the scale subresource).
    #[serde(default)]
    pub selector: String,

    /// Version of the partition map; increases by one with every change.
    #[serde(default)]
    pub map_version: i64,

    /// Health of the partitions.
    #[serde(default)]
    pub partition_summary: PartitionSummary,

    /// Replica moves in flight.
    #[serde(default)]
    pub moves: Vec<MoveStatus>,

    /// Every storage node in the partition map.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// Health of the partitions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    /// Number of partitions.
    pub total: i32,
    /// Partitions with a primary and as many in-sync replicas as the replication factor.
    pub healthy: i32,
    /// Partitions with a primary but fewer in-sync replicas than the replication factor.
    pub under_replicated: i32,
    /// Partitions without a primary, or with fewer in-sync replicas than minInSync.
    pub unavailable: i32,
    /// Partitions with a replica move in flight.
    pub moving: i32,
}

/// One replica move in flight.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    /// The partition being moved.
    pub partition: i32,
    /// Pod the replica leaves.
    pub from: String,
    /// Pod the replica goes to.
    pub to: String,
    /// Step of the move, e.g. CatchingUp, HandingOff, Removing.
    pub state: String,
    /// Bytes copied to the destination so far.
    #[serde(default)]
    pub bytes_done: i64,
    /// Why the move makes no progress, when it is stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Lifecycle state of a storage node.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum NodeLifecycle {
    /// Serving and eligible for new replicas.
    #[default]
    Active,
    /// Its replicas are moving away before it is removed.
    Draining,
    /// Not answering, or its pod has failed.
    Down,
    /// Gone long enough that its replicas were re-created elsewhere.
    Replaced,
}

impl From<shardedstore_node::map::NodeState> for NodeLifecycle {
    fn from(state: shardedstore_node::map::NodeState) -> Self {
        use shardedstore_node::map::NodeState;
        match state {
            NodeState::Active => Self::Active,
            NodeState::Draining => Self::Draining,
            NodeState::Down => Self::Down,
            NodeState::Replaced => Self::Replaced,
        }
    }
}

/// One storage node as the partition map knows it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name (the pod name).
    pub name: String,
    /// Lifecycle state.
    pub state: NodeLifecycle,
    /// Replicas the node holds (in sync or catching up).
    pub replicas: i32,
    /// Partitions the node is primary of.
    pub primaries: i32,
}
