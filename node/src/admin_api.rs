//! Wire types of the admin API (peer port 7100, `/admin/v1/...`): what the operator's
//! coordinator sends to nodes and what they answer. JSON, camelCase.
//!
//! Every request carries `Authorization: Bearer <peer token>`; without it a node answers 401
//! (no header) or 403 (wrong token) and changes nothing. Endpoints:
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `/admin/v1/map` | [`PartitionMap`] → [`InstallMapResponse`] (409 if older than the installed one) |
//! | POST | `/admin/v1/heartbeat` | [`HeartbeatRequest`] → [`HeartbeatResponse`] |
//! | GET | `/admin/v1/partitions/{p}/position` | → [`LogPosition`] |
//! | POST | `/admin/v1/partitions/{p}/admit` | [`AdmitRequest`] → [`AdmitResponse`] (primary only) |
//! | POST | `/admin/v1/partitions/{p}/handoff` | [`HandoffRequest`] → [`HandoffResponse`] (primary only) |
//! | DELETE | `/admin/v1/partitions/{p}` | → 204 (drops the local copy; refused with 409 while the installed map lists this node as a member) |
//!
//! Errors use the same JSON body as the client API: `{"error":{"code","message"}}`.

use crate::map::{NodeId, PartitionId};
use serde::{Deserialize, Serialize};

/// Version of the admin protocol; sent as header `x-shardedstore-protocol`.
pub const ADMIN_PROTOCOL_VERSION: u32 = 1;

/// Answer to installing a map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstallMapResponse {
    /// Map version the node holds after the call (equal to the sent one when installed).
    pub version: u64,
}

/// Operator → node, every heartbeat interval. Grants a lease of `lease_ms`, measured on the
/// node's monotonic clock from receipt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// Name of the store; a node of another store refuses (409).
    pub store: String,
    /// Version of the map the operator holds; if the node's is older, the operator pushes the map.
    pub map_version: u64,
    pub lease_ms: u64,
}

/// Role a node plays for a partition, according to its installed map and local state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaRole {
    Primary,
    /// Primary that is handing off: it takes no writes and redirects until a newer map.
    HandingOff,
    Follower,
    Learner,
    /// Holds data for a partition the installed map no longer gives it (to be dropped).
    Stale,
}

/// Where a replica's log ends: the epoch of its last entry and that entry's sequence number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct LogPosition {
    pub last_epoch: u64,
    pub last_seq: u64,
}

/// A follower's or learner's progress as the primary sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FollowerProgress {
    pub node: NodeId,
    /// Highest sequence number the follower has durably appended.
    pub acked_seq: u64,
    /// Milliseconds since the primary last heard from it.
    pub last_contact_ms: u64,
}

/// One partition's state on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionState {
    pub partition: PartitionId,
    pub role: ReplicaRole,
    /// Highest epoch this replica has seen (from the map or a replication message).
    pub epoch: u64,
    pub position: LogPosition,
    /// Highest committed sequence number known to this replica.
    pub commit_seq: u64,
    /// Highest sequence number applied to the data table.
    pub applied_seq: u64,
    /// Filled on the primary only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerProgress>,
    pub keys: u64,
    pub bytes: u64,
}

/// Node → operator: the answer to a heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub node_id: NodeId,
    /// Version of the map the node has installed (0 if none).
    pub map_version: u64,
    pub partitions: Vec<PartitionState>,
}

/// Operator → primary: start treating `learner` as a member that must acknowledge before commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmitRequest {
    /// Epoch the operator believes current; a primary at another epoch refuses (409).
    pub epoch: u64,
    pub learner: NodeId,
}

/// Primary → operator. Once `ready`, the learner holds every committed entry and the primary
/// waits for its acknowledgement on every commit, so the operator may list it in `inSync`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmitResponse {
    pub ready: bool,
    pub learner_acked_seq: u64,
    pub commit_seq: u64,
}

/// Operator → primary: stop taking writes and wait until `to` has acknowledged everything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HandoffRequest {
    pub epoch: u64,
    pub to: NodeId,
    /// How long the primary may wait for `to` to catch up before answering `ready: false`.
    pub timeout_ms: u64,
}

/// Primary → operator. When `ready`, `to` holds the whole log up to `position` and the old
/// primary takes no more writes at this epoch; the operator then writes `primary = to, epoch + 1`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HandoffResponse {
    pub ready: bool,
    pub position: LogPosition,
}

/// Body of every error answer, on both APIs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `key_too_large`, `stale_epoch`, `not_primary`.
    pub code: String,
    pub message: String,
    /// Map version of the answering node, on 421 and 409 answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_version: Option<u64>,
}
