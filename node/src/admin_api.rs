//! Wire types of the admin API (peer port 7100, `/admin/v1/...`): what the operator's
//! coordinator sends to nodes and what they answer. JSON, camelCase.
//!
//! Every request carries `Authorization: Bearer <peer token>`; without it a node answers 401
//! (no header) or 403 (wrong token) and changes nothing. Endpoints:
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `/admin/v1/map` | [`PartitionMap`] → [`InstallMapResponse`] (409 if older than the installed one) |
//! | GET | `/admin/v1/map` | → the installed (persisted) [`PartitionMap`], also after a restart; 404 `no_map` when none |
//! | POST | `/admin/v1/heartbeat` | [`HeartbeatRequest`] → [`HeartbeatResponse`] (409 `wrong_store`, 409 `wrong_node`) |
//! | GET | `/admin/v1/partitions/{p}/position` | → [`LogPosition`] |
//! | POST | `/admin/v1/partitions/{p}/admit` | [`AdmitRequest`] → [`AdmitResponse`] (primary only) |
//! | POST | `/admin/v1/partitions/{p}/handoff` | [`HandoffRequest`] → [`HandoffResponse`] (primary only) |
//! | DELETE | `/admin/v1/partitions/{p}` | → 204 (drops the local copy; refused with 409 while the installed map lists this node as a member) |
//!
//! Errors use the same JSON body as the client API: `{"error":{"code","message"}}`.
//!
//! Fields added after the first version carry `#[serde(default)]`, so a message from an
//! older peer still parses (the rules in `docs/protocol.md` say how such a message is treated).

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

/// Operator → node, every heartbeat interval.
///
/// Lease rule (`docs/protocol.md`, "Leases"): the node notes its monotonic receipt time of
/// every heartbeat `(coordinator, seq)` it answers. A heartbeat whose `confirmed_seq` names
/// such a heartbeat of the same coordinator sets the lease to end at `receipt(confirmed_seq) +
/// lease_ms`; a heartbeat that confirms nothing never extends the lease. The operator fences
/// from its receipt of the reply to `confirmed_seq`, which is later than the node's receipt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// Name of the store; a node of another store refuses (409 `wrong_store`).
    pub store: String,
    /// Version of the map the operator holds; if the node's is older, the operator pushes the map.
    pub map_version: u64,
    pub lease_ms: u64,
    /// Id of the node the operator believes it talks to; a node with another id refuses
    /// (409 `wrong_node`). Empty: not checked (older operators).
    #[serde(default)]
    pub node: NodeId,
    /// Random id of the sending coordinator, new on every coordinator start. Heartbeats of
    /// another coordinator start a fresh chain: they extend no lease until confirmed.
    #[serde(default)]
    pub coordinator: String,
    /// Number of this heartbeat, increasing per coordinator.
    #[serde(default)]
    pub seq: u64,
    /// Highest `seq` of this coordinator whose reply the operator has received.
    #[serde(default)]
    pub confirmed_seq: Option<u64>,
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
    /// Milliseconds since the primary last heard from it; `None` (JSON `null`) when it has
    /// not heard from it since it became primary.
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    /// `None` when the follower has acknowledged every entry the primary holds; else the
    /// milliseconds since it last acknowledged progress while entries were outstanding (or
    /// since entries became outstanding). Heartbeat answers do not reset it: a member with
    /// a hung disk or a broken primary→follower link shows a growing value.
    #[serde(default)]
    pub pending_since_ms: Option<u64>,
    /// The primary is sending it a snapshot (a new copy, or one too far behind for the log).
    #[serde(default)]
    pub copying: bool,
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
    /// True when this copy was created empty on this disk while the map already listed the
    /// node in `inSync` (a lost or foreign data directory): it is no valid in-sync member or
    /// failover candidate until a map has dropped it from `inSync` (it then rejoins as a learner).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unproven: bool,
}

/// Node → operator: the answer to a heartbeat.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub node_id: NodeId,
    /// Version of the map the node has installed (0 if none).
    pub map_version: u64,
    pub partitions: Vec<PartitionState>,
    /// Random value chosen at every process start. When it changes, the node restarted and
    /// leads no partition until a map with a higher epoch names it: the operator fails over
    /// the partitions it led (possibly to the same node).
    #[serde(default)]
    pub incarnation: u64,
    /// Random identity of the node's database, created with it and kept in its meta table.
    /// A new value means an empty or foreign data directory: its copies are learners only.
    #[serde(default)]
    pub disk_id: String,
    /// Echo of the request's `seq`.
    #[serde(default)]
    pub seq: u64,
    /// 0 when the storage writer has no pending write; else how long (ms) the oldest pending
    /// write has waited. A primary stalled beyond a bound gets no lease from heartbeats and
    /// serves nothing; the operator fails it over.
    #[serde(default)]
    pub storage_stalled_ms: u64,
    /// The storage is stalled beyond the bound and the node revoked its lease at its receipt
    /// of this heartbeat: it holds none and takes none from any heartbeat it received so far
    /// (the operator may fail it over at once, `docs/protocol.md`, "Gray failures").
    #[serde(default)]
    pub lease_revoked: bool,
}

/// Operator → primary: start treating `learner` as a member that must acknowledge before commit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmitRequest {
    /// Epoch the operator believes current; a primary at another epoch refuses (409).
    pub epoch: u64,
    pub learner: NodeId,
    /// How long the primary may wait for the learner to become ready before answering
    /// `ready: false` (0: answer at once). The operator's call timeout must exceed it.
    #[serde(default)]
    pub timeout_ms: u64,
    /// First wait (up to `timeout_ms`, without holding back any commit) until the learner
    /// has its copy and is within this many entries of the commit point, then admit it.
    /// Sent only to a primary that reports `copying` (older nodes do not know it): the
    /// operator can ask while the copy is still under way and hear back as soon as it is done.
    #[serde(default)]
    pub wait_for_copy_within: Option<u64>,
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
