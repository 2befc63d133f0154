//! The backup manifest (`manifest.json`, written last: a backup without one is incomplete)
//! and the checksum of partition objects. Pure code with unit tests.

use crate::map::PartitionId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Name of the manifest object under the backup's prefix.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Name of partition `p`'s object under the backup's prefix.
pub fn object_name(p: PartitionId) -> String {
    format!("partition-{p:05}.snap")
}

/// One partition's object in a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionObject {
    pub partition: PartitionId,
    /// Leader epoch of the entry at `seq`.
    pub epoch: u64,
    /// The snapshot holds every write of the partition up to this sequence number.
    pub seq: u64,
    /// Object name relative to the backup's prefix.
    pub object: String,
    /// Object size in bytes.
    pub size: u64,
    /// SHA-256 of the object, lowercase hex.
    pub sha256: String,
    /// Keys in the object.
    pub keys: u64,
    /// Node whose replica was read.
    pub replica: String,
}

/// What a complete backup holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// Name of the backed-up store.
    pub store: String,
    /// Partition count of the backed-up store.
    pub partitions: u32,
    /// Map version when the backup started.
    pub map_version: u64,
    /// Every write acknowledged before this instant is in the backup.
    pub started_at: DateTime<Utc>,
    /// When the last object was written; writes after `startedAt` may or may not be included.
    pub finished_at: DateTime<Utc>,
    pub total_bytes: u64,
    pub total_keys: u64,
    /// One object per partition, in partition order.
    pub objects: Vec<PartitionObject>,
}

/// Why a manifest cannot describe a complete backup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest format {0} is not supported (this build reads format {MANIFEST_FORMAT})")]
    UnsupportedFormat(u32),
    #[error("the manifest names no partitions")]
    NoPartitions,
    #[error("partition {0} has no object in the manifest (the backup is partial)")]
    MissingPartition(PartitionId),
    #[error("partition {0} is listed more than once")]
    DuplicatePartition(PartitionId),
    #[error("partition {partition} is out of range for {partitions} partitions")]
    OutOfRange {
        partition: PartitionId,
        partitions: u32,
    },
    #[error("object name {0:?} is not a plain name under the backup's prefix")]
    BadObjectName(String),
    #[error("checksum {0:?} is not a SHA-256 hex digest")]
    BadChecksum(String),
    #[error("the totals ({bytes} bytes, {keys} keys) do not match the objects")]
    BadTotals { bytes: u64, keys: u64 },
}

impl Manifest {
    /// Builds a manifest from the partition objects (sorted by partition) and computes totals.
    pub fn new(
        store: String,
        partitions: u32,
        map_version: u64,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        mut objects: Vec<PartitionObject>,
    ) -> Self {
        objects.sort_by_key(|o| o.partition);
        Self {
            format: MANIFEST_FORMAT,
            store,
            partitions,
            map_version,
            started_at,
            finished_at,
            total_bytes: objects.iter().map(|o| o.size).sum(),
            total_keys: objects.iter().map(|o| o.keys).sum(),
            objects,
        }
    }

    /// Checks that the manifest describes exactly one well-formed object per partition.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat(self.format));
        }
        if self.partitions == 0 {
            return Err(ManifestError::NoPartitions);
        }
        let mut seen = vec![false; self.partitions as usize];
        for o in &self.objects {
            let Some(slot) = seen.get_mut(o.partition as usize) else {
                return Err(ManifestError::OutOfRange {
                    partition: o.partition,
                    partitions: self.partitions,
                });
            };
            if std::mem::replace(slot, true) {
                return Err(ManifestError::DuplicatePartition(o.partition));
            }
            let plain = !o.object.is_empty()
                && o.object
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !o.object.starts_with('.');
            if !plain {
                return Err(ManifestError::BadObjectName(o.object.clone()));
            }
            let hex = o.sha256.len() == 64
                && o.sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !hex {
                return Err(ManifestError::BadChecksum(o.sha256.clone()));
            }
        }
        if let Some(p) = seen.iter().position(|s| !s) {
            return Err(ManifestError::MissingPartition(p as PartitionId));
        }
        let bytes = self.objects.iter().map(|o| o.size).sum();
        let keys = self.objects.iter().map(|o| o.keys).sum();
        if (bytes, keys) != (self.total_bytes, self.total_keys) {
            return Err(ManifestError::BadTotals {
                bytes: self.total_bytes,
                keys: self.total_keys,
            });
        }
        Ok(())
    }
}

/// SHA-256 over a stream of bytes.
pub struct Checksum(ring::digest::Context);

impl Default for Checksum {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Lowercase hex digest.
    pub fn hex(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(p: PartitionId) -> PartitionObject {
        PartitionObject {
            partition: p,
            epoch: 1,
            seq: 10,
            object: object_name(p),
            size: 100,
            sha256: "ab".repeat(32),
            keys: 5,
            replica: "node-1".into(),
        }
    }

    fn manifest(objects: Vec<PartitionObject>) -> Manifest {
        let now = Utc::now();
        Manifest::new("s".into(), 3, 7, now, now, objects)
    }

    #[test]
    fn a_complete_manifest_validates_and_round_trips() {
        let m = manifest(vec![object(2), object(0), object(1)]);
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.objects[0].partition, 0);
        assert_eq!((m.total_bytes, m.total_keys), (300, 15));
        let json = serde_json::to_string(&m).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(json.contains("\"mapVersion\":7"));
        let back: Manifest = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(back, m);
    }

    #[test]
    fn partial_or_malformed_manifests_are_refused() {
        let m = manifest(vec![object(0), object(2)]);
        assert_eq!(m.validate(), Err(ManifestError::MissingPartition(1)));
        let m = manifest(vec![object(0), object(1), object(1), object(2)]);
        assert_eq!(m.validate(), Err(ManifestError::DuplicatePartition(1)));
        let m = manifest(vec![object(0), object(1), object(3)]);
        assert!(matches!(
            m.validate(),
            Err(ManifestError::OutOfRange { .. })
        ));
        let mut bad = object(1);
        bad.object = "../escape".into();
        let m = manifest(vec![object(0), bad, object(2)]);
        assert!(matches!(m.validate(), Err(ManifestError::BadObjectName(_))));
        let mut bad = object(1);
        bad.sha256 = "xyz".into();
        let m = manifest(vec![object(0), bad, object(2)]);
        assert!(matches!(m.validate(), Err(ManifestError::BadChecksum(_))));
        let mut m = manifest(vec![object(0), object(1), object(2)]);
        m.total_keys += 1;
        assert!(matches!(m.validate(), Err(ManifestError::BadTotals { .. })));
        m.format = 2;
        assert_eq!(m.validate(), Err(ManifestError::UnsupportedFormat(2)));
    }

    #[test]
    fn checksum_is_sha256_hex() {
        let mut c = Checksum::default();
        c.update(b"ab");
        c.update(b"c");
        assert_eq!(
            c.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
