//! The desired state of a ShardedStore: what the user writes in `spec`.
//!
//! Doc comments on these fields are user-facing: they become `kubectl explain` text.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::status::ShardedStoreStatus;

/// Default number of partitions.
pub const DEFAULT_PARTITIONS: i32 = 256;
/// Default number of replicas per partition.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 3;
/// Default node label holding the failure zone.
pub const DEFAULT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A partitioned, replicated key-value store: a set of storage pods holding a fixed number
/// of hash partitions, each replicated on several pods with one primary.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Several printer columns share a type; clippy reads those as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "shardedstore.io",
    version = "v1alpha1",
    kind = "ShardedStore",
    plural = "shardedstores",
    shortname = "sst",
    namespaced,
    status = "ShardedStoreStatus",
    derive = "PartialEq",
    doc = "A partitioned, replicated key-value store managed by the ShardedStore operator.",
    scale(
        spec_replicas_path = ".spec.nodes",
        status_replicas_path = ".status.readyNodes",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".spec.nodes",
        description = "Desired number of storage pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Storage pods that are ready"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".spec.partitions",
        description = "Number of partitions"
    ),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Replicas per partition"
    ),
    printcolumn(
        name = "Under-replicated",
        type_ = "integer",
        json_path = ".status.partitionSummary.underReplicated",
        description = "Partitions with fewer in-sync replicas than the replication factor"
    ),
    printcolumn(
        name = "Moving",
        type_ = "integer",
        json_path = ".status.partitionSummary.moving",
        description = "Partitions with a replica move in flight"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedNodes",
        description = "Storage pods running the current pod template"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        description = "Image of the current pod template",
        priority = 1
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the store is ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.nodes >= self.replicationFactor").message("nodes must be at least replicationFactor"))]
#[x_kube(validation = Rule::new("!has(self.minInSync) || self.minInSync <= self.replicationFactor").message("minInSync must not exceed replicationFactor"))]
#[x_kube(validation = Rule::new("has(self.tls) == has(oldSelf.tls)").message("tls cannot be turned on or off on an existing store (all of its nodes must speak the same protocol); create a new store with tls and restore a backup into it"))]
#[serde(rename_all = "camelCase")]
pub struct ShardedStoreSpec {
    /// Number of storage pods. `kubectl scale` changes this field. Lowering it drains the
    /// highest-numbered pods (their replicas move to the others) before they are removed.
    #[schemars(range(min = 1, max = 1000))]
    pub nodes: i32,

    /// Number of hash partitions the key space is divided into. Fixed at creation.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitions is immutable"))]
    pub partitions: i32,

    /// Number of copies of every partition, each on a different pod (and a different zone
    /// when the cluster has zones).
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 5))]
    pub replication_factor: i32,

    /// Writes to a partition are refused (HTTP 503) while fewer of its replicas are in sync.
    /// Defaults to the smaller of 2 and replicationFactor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub min_in_sync: Option<i32>,

    /// Container image of the storage node (shardedstore-node). Defaults to the node image
    /// the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// CPU and memory requests and limits of each storage pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent volume of each storage pod. Fixed at creation: a StatefulSet cannot change
    /// the volumes of its pods. To grow them, expand each PersistentVolumeClaim
    /// `data-<store>-<n>` (when its StorageClass allows expansion).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage is immutable: a StatefulSet cannot change its volumes; to grow them, expand each PersistentVolumeClaim data-<store>-<n> instead"))]
    pub storage: StorageSpec,

    /// Where storage pods run and how replicas are spread across failure zones.
    #[serde(default)]
    pub placement: PlacementSpec,

    /// Limits on moving partitions between pods (scale out, scale in, replacement).
    #[serde(default)]
    pub rebalance: RebalanceSpec,

    /// How the store reacts to pods that fail.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Size limits on keys and values.
    #[serde(default)]
    pub limits: LimitsSpec,

    /// Settings of the storage nodes' write path and log retention; each unset field keeps
    /// the node's default. A change restarts the pods one at a time, like an image change.
    #[serde(default)]
    pub tuning: TuningSpec,

    /// Fill the new store's partitions from a backup before it serves. Set at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<super::backup::RestoreSpec>,

    /// Which network traffic reaches the storage pods.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Serve the client and peer ports over TLS with the certificate of a Secret, and
    /// optionally authenticate clients. Set at creation: all nodes of a store must speak the
    /// same protocol, so TLS cannot be turned on or off on a running store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::TlsSpec>,
}

/// Which network traffic reaches the storage pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Create a NetworkPolicy: the peer port (replication, admin) accepts only the store's
    /// pods and the operator; the metrics port accepts anyone; the client port accepts
    /// `clientsFrom`. Only clusters whose network plugin enforces NetworkPolicies honour it.
    #[serde(default = "default_true")]
    pub policy: bool,

    /// Who may reach the client port (port 7000), as NetworkPolicy peers; anyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients_from: Vec<NetworkPolicyPeer>,
}

/// When the kubelet pulls the image.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Never pull; the image must already be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value of a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Persistent volume of each storage pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each pod's volume, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Where storage pods run and how replicas are spread across failure zones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Label of the Kubernetes nodes that names their failure zone. Replicas of one partition
    /// are placed in distinct zones when the pods run in more than one.
    #[serde(default = "default_zone_label")]
    #[schemars(length(min = 1))]
    pub zone_label: String,

    /// Node labels a storage pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the storage pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity rules of the storage pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

impl Default for PlacementSpec {
    fn default() -> Self {
        Self {
            zone_label: default_zone_label(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
        }
    }
}

/// Limits on moving partitions between pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Largest number of partition moves a single pod takes part in at once (as source or
    /// destination).
    #[serde(default = "default_max_moves_per_node")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_moves_per_node: i32,

    /// Largest total size, in bytes, of the partitions a single pod is moving at once (as
    /// source or destination), by the sizes their replicas report. A move starts on a pod
    /// only while both this and `maxConcurrentMovesPerNode` allow it; a pod with no move in
    /// flight may always start one, however large its partition.
    #[serde(default = "default_max_move_bytes_per_node")]
    #[schemars(range(min = 1))]
    pub max_move_bytes_per_node: i64,

    /// Bandwidth cap of each catch-up stream in bytes per second; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bandwidth_bytes_per_second: Option<i64>,

    /// Stops starting new moves. Moves in flight finish; failover still happens.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            max_concurrent_moves_per_node: default_max_moves_per_node(),
            max_move_bytes_per_node: default_max_move_bytes_per_node(),
            bandwidth_bytes_per_second: None,
            paused: false,
        }
    }
}

/// How the store reacts to pods that fail.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// How long a failed pod may stay away before its replicas are re-created on other pods,
    /// as a duration such as `90s`, `5m` or `1h30m`. Primaries fail over at once regardless.
    #[serde(default = "default_replace_after")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub replace_after: String,

    /// Largest number of failed pods whose replicas are re-created at the same time.
    #[serde(default = "default_max_replacements")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_replacements: i32,

    /// Follower lag bound: an in-sync replica that has had entries outstanding without
    /// acknowledging progress for this long (a hung disk, a broken link from its primary)
    /// leaves the in-sync set (never below `minInSync`), as a duration such as `2s` or
    /// `1500ms`. Writes to its partitions wait for it until then.
    #[serde(default = "default_lag_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub lag_timeout: String,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            replace_after: default_replace_after(),
            max_concurrent_replacements: default_max_replacements(),
            lag_timeout: default_lag_timeout(),
        }
    }
}

/// Settings of the storage nodes' write path and log retention (`docs/operations.md`,
/// "Tuning"). Unset fields keep the node's defaults and add nothing to the pod template, so
/// a store that sets none of them is not restarted when the operator is upgraded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TuningSpec {
    /// How often each node checkpoints its database (commits it durably, so older
    /// write-ahead log records can be dropped), as a duration from `50ms` to `60s`; default
    /// `1s`. Shorter: smaller bursts of disk write-back, more commits; longer: fewer
    /// commits, larger bursts, and more log to replay after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('50ms') && duration(self) <= duration('60s')").message("tuning.checkpointInterval must be from 50ms to 60s"))]
    pub checkpoint_interval: Option<String>,

    /// Replication appends a primary keeps in flight per partition and member, 1 to 4;
    /// default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4))]
    pub appends_in_flight: Option<i32>,

    /// Log entries each replica keeps behind its applied point, so a restarted replica
    /// catches up from the log rather than by a snapshot; default 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub log_window_entries: Option<i64>,

    /// Most bytes of those entries kept per partition (never more than the partition's
    /// data once that exceeds 4 MiB); default 67108864 (64 MiB). Counts toward the volume
    /// size a pod needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub log_window_bytes: Option<i64>,
}

/// Size limits on keys and values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest key in bytes; longer keys are refused with HTTP 413.
    #[serde(default = "default_max_key_bytes")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_key_bytes: i32,

    /// Largest value in bytes; larger values are refused with HTTP 413.
    #[serde(default = "default_max_value_bytes")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_value_bytes: i32,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_key_bytes: default_max_key_bytes(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            policy: true,
            clients_from: Vec::new(),
        }
    }
}

impl ShardedStoreSpec {
    /// The spec with `image` defaulted to `default_image` when unset.
    pub fn with_default_image(&self, default_image: Option<&str>) -> Self {
        let mut spec = self.clone();
        if spec.image.is_none() {
            spec.image = default_image.map(str::to_owned);
        }
        spec
    }

    /// `minInSync` with its default applied: the smaller of 2 and the replication factor.
    pub fn effective_min_in_sync(&self) -> i32 {
        self.min_in_sync
            .unwrap_or_else(|| self.replication_factor.min(2))
    }
}

fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    DEFAULT_PARTITIONS
}
fn default_replication_factor() -> i32 {
    DEFAULT_REPLICATION_FACTOR
}
fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}
fn default_zone_label() -> String {
    DEFAULT_ZONE_LABEL.to_owned()
}
fn default_max_moves_per_node() -> i32 {
    8
}
fn default_max_move_bytes_per_node() -> i64 {
    512 * 1024 * 1024
}
fn default_replace_after() -> String {
    "5m".to_owned()
}
fn default_max_replacements() -> i32 {
    1
}
fn default_lag_timeout() -> String {
    "2s".to_owned()
}
fn default_max_key_bytes() -> i32 {
    1024
}
fn default_max_value_bytes() -> i32 {
    1024 * 1024
}
