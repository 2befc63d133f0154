//! The `ShardedStoreBackup` resource (`shardedstore.io/v1alpha1`, short name `sstb`): one
//! backup of a store, or with `schedule` a series of them with retention; and the `restore`
//! section of a ShardedStore's spec.
//!
//! Doc comments on these fields are user-facing: they become `kubectl explain` text.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A backup of a ShardedStore to object storage: every partition's consistent snapshot plus
/// a manifest. With `schedule`, a backup is taken at every scheduled time and the oldest
/// beyond `keep` are deleted from the bucket.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "shardedstore.io",
    version = "v1alpha1",
    kind = "ShardedStoreBackup",
    plural = "shardedstorebackups",
    shortname = "sstb",
    namespaced,
    status = "ShardedStoreBackupStatus",
    derive = "PartialEq",
    doc = "A backup (or a schedule of backups) of a ShardedStore to object storage.",
    printcolumn(
        name = "Store",
        type_ = "string",
        json_path = ".spec.store",
        description = "The store backed up"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Completed, Failed (or Scheduled)"
    ),
    printcolumn(
        name = "Done",
        type_ = "integer",
        json_path = ".status.partitionsDone",
        description = "Partitions written"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitionsTotal",
        description = "Partitions to write"
    ),
    printcolumn(
        name = "Bytes",
        type_ = "integer",
        json_path = ".status.sizeBytes",
        description = "Bytes written"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule, if any"
    ),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ShardedStoreBackupSpec {
    /// Name of the ShardedStore to back up, in the same namespace.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("store is immutable"))]
    pub store: String,

    /// Where the backup is written.
    pub destination: BackupDestination,

    /// Cron schedule (five fields: minute hour day-of-month month day-of-week, UTC), e.g.
    /// `0 3 * * *`. When set, a backup is taken at every scheduled time into
    /// `<destination.url>/<name>-<UTC time>`; when unset, one backup is taken at once into
    /// `destination.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,

    /// With a schedule: how many completed backups to keep; older ones are deleted from the
    /// destination. Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: Option<i32>,

    /// Partitions exported at once (each by one in-sync replica). Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: Option<i32>,
}

/// Where a backup lives.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// `s3://bucket/prefix` for an S3-compatible bucket. (`file:///path` is supported by the
    /// CLI and local mode, where every node can reach the path.)
    #[schemars(length(min = 6))]
    pub url: String,

    /// How to reach the S3-compatible service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Connection>,
}

/// Connection to an S3-compatible service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Connection {
    /// Endpoint URL of an S3-compatible service, e.g. `http://minio.backup:9000`. Unset for
    /// AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Region of the bucket. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Secret in the same namespace with the credentials, under the keys
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Lifecycle of a backup.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum BackupPhase {
    /// Not started yet (waiting for the store).
    #[default]
    Pending,
    /// Partitions are being written.
    Running,
    /// Every partition and the manifest are written.
    Completed,
    /// The backup stopped; see the conditions. A failed backup has no manifest and is never
    /// restored.
    Failed,
    /// A schedule waiting for its next time.
    Scheduled,
}

/// Progress of one partition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PartitionBackupStatus {
    pub partition: i32,
    /// Node whose replica was written.
    pub replica: String,
    /// The partition's writes up to this sequence number are in the backup.
    pub seq: i64,
    pub keys: i64,
    pub bytes: i64,
}

/// One completed backup of a schedule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackup {
    /// Location of the backup (`s3://...`), usable as `spec.restore.from.url`.
    pub url: String,
    /// When it started (RFC 3339): every write acknowledged before is included.
    pub start_time: String,
    pub completion_time: String,
    pub size_bytes: i64,
}

/// Observed state of a ShardedStoreBackup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardedStoreBackupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Phase of the current (or last) backup.
    #[serde(default)]
    pub phase: BackupPhase,

    /// Location of the current (or last) backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// When the current (or last) backup started (RFC 3339). Every write acknowledged
    /// before this instant is in the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,

    /// When it completed or failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,

    /// Map version of the store when the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_version: Option<i64>,

    /// Partitions of the store.
    #[serde(default)]
    pub partitions_total: i32,

    /// Partitions written so far.
    #[serde(default)]
    pub partitions_done: i32,

    /// Written partitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionBackupStatus>,

    /// Bytes written so far.
    #[serde(default)]
    pub size_bytes: i64,

    /// Keys written so far.
    #[serde(default)]
    pub keys: i64,

    /// With a schedule: completed backups still kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<ScheduledBackup>,

    /// With a schedule: the next scheduled time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,

    /// `Complete` and `Failed` (with the reason and message of a failure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Fill a new store from a backup before it serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The backup to restore: a ShardedStoreBackup or a location. The store's partition
    /// count may differ from the backed-up store's (keys are re-hashed).
    pub from: RestoreSource,
}

/// Where a restore reads from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.backup) != has(self.url)").message("set exactly one of backup and url"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Name of a completed ShardedStoreBackup in the same namespace (its last backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,

    /// Location of a backup, `s3://bucket/prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// How to reach the S3-compatible service of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Connection>,
}

/// Path of the committed CRD, relative to the workspace root.
pub const BACKUP_CRD_FILE: &str = "crds/shardedstore.io_shardedstorebackups.yaml";

/// The ShardedStoreBackup CRD as YAML, exactly as committed in `crds/`.
pub fn backup_crd_yaml() -> Result<String, super::CrdError> {
    use kube::CustomResourceExt;
    let body =
        serde_yaml::to_string(&ShardedStoreBackup::crd()).map_err(super::CrdError::Serialize)?;
    Ok(format!(
        "# Generated by `shardedstore-operator crd`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_backup_crd_is_up_to_date_in_crds_and_the_chart() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let generated = backup_crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        for path in [
            root.join(BACKUP_CRD_FILE),
            root.join("charts/shardedstore-operator")
                .join(BACKUP_CRD_FILE),
        ] {
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            assert!(
                committed == generated,
                "{} is stale: run `make crds`",
                path.display()
            );
        }
    }

    #[test]
    fn backup_crd_documents_fields_and_printer_columns() {
        let yaml = backup_crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        for needle in [
            "shortNames:\n    - sstb",
            "jsonPath: .status.phase",
            "jsonPath: .status.partitionsDone",
            "Cron schedule (five fields",
            "x-kubernetes-list-type: map",
            "subresources:\n      status: {}",
        ] {
            assert!(yaml.contains(needle), "backup CRD lacks {needle:?}");
        }
        // spec.restore of a ShardedStore names exactly one source.
        let store = super::super::crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        assert!(store.contains("has(self.backup) != has(self.url)"));
    }

    #[test]
    fn a_minimal_backup_parses() {
        let spec: ShardedStoreBackupSpec = serde_yaml::from_str(
            "store: demo\ndestination:\n  url: s3://bkt/demo\n  s3:\n    credentialsSecret: creds\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.store, "demo");
        assert_eq!(spec.schedule, None);
    }
}
