//! Node side of a backup: stream one partition's consistent snapshot — a redb read
//! transaction whose applied sequence number is at least the point the orchestrator observed
//! at the primary when the backup started — into the destination, throttled like catch-up.
//!
//! A read transaction never blocks the writer (redb is MVCC), so writes go on meanwhile.

use super::destination::{Destination, DestinationError};
use super::format::{ObjectHeader, encode_header, encode_record, encode_trailer};
use super::manifest::{Checksum, PartitionObject};
use crate::map::PartitionId;
use crate::node::Node;
use crate::replication::replica::Replica;
use crate::replication::sender::throttle_delay;
use crate::storage::{StorageError, codec};
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of key/value pairs read from the snapshot per step.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Size of each part of the multipart upload (S3 wants at least 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently.
const UPLOAD_CONCURRENCY: usize = 2;

/// The point a backup must include for one partition, as the primary reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupPoint {
    pub partition: PartitionId,
    pub epoch: u64,
    /// The primary's last log sequence number: every acknowledged write is at or below it.
    pub seq: u64,
}

/// Ask a replica to write its snapshot of a partition to a destination.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
    pub destination: Destination,
    /// The snapshot must hold every write up to this sequence number.
    pub min_seq: u64,
    /// How long to wait for the replica's applied point to reach `min_seq`.
    pub wait_ms: u64,
}

/// Why a replica did not export its partition.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("this node holds no copy of partition {0}")]
    NoReplica(PartitionId),
    #[error("this node is not the primary of partition {0}")]
    NotPrimary(PartitionId),
    #[error("this node's replica of partition {0} is not in sync")]
    NotInSync(PartitionId),
    #[error(
        "partition {partition} applied only up to {applied} within {waited_ms} ms, the backup needs {wanted}"
    )]
    Behind {
        partition: PartitionId,
        applied: u64,
        wanted: u64,
        waited_ms: u64,
    },
    #[error("opening the destination")]
    Destination(#[from] DestinationError),
    #[error("reading the snapshot")]
    Storage(#[from] StorageError),
    #[error("decoding a stored value")]
    Decode(#[from] codec::CodecError),
    #[error("uploading {object}")]
    Upload {
        object: String,
        #[source]
        source: object_store::Error,
    },
}

impl ExportError {
    /// Machine-readable code for the JSON error answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoReplica(_) => "no_replica",
            Self::NotPrimary(_) => "not_primary",
            Self::NotInSync(_) => "not_in_sync",
            Self::Behind { .. } => "behind",
            Self::Destination(_) => "destination",
            Self::Storage(_) | Self::Decode(_) => "storage",
            Self::Upload { .. } => "upload",
        }
    }
}

/// The backup point of partition `p`, answered only by its serving primary.
pub fn backup_point(node: &Node, p: PartitionId) -> Result<BackupPoint, ExportError> {
    let r = node.replica(p).ok_or(ExportError::NoReplica(p))?;
    let st = r.lock();
    let serving = st.primary.as_ref().is_some_and(|pr| pr.handoff.is_none());
    if !serving || !node.ctx.lease.valid() {
        return Err(ExportError::NotPrimary(p));
    }
    Ok(BackupPoint {
        partition: p,
        epoch: st.epoch,
        seq: st.last.last_seq,
    })
}

/// Waits until the replica has applied `min_seq`, or `wait` elapsed.
async fn wait_applied(r: &Replica, min_seq: u64, wait: Duration) -> Result<(), ExportError> {
    let started = Instant::now();
    let mut applied = r.applied_tx.subscribe();
    let reached = tokio::time::timeout(wait, applied.wait_for(|a| *a >= min_seq)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ExportError::Behind {
            partition: r.partition,
            applied: r.lock().applied_seq,
            wanted: min_seq,
            waited_ms: started.elapsed().as_millis() as u64,
        }),
    }
}

/// Streams partition `p`'s snapshot into `object` under the request's destination.
pub async fn export_partition(
    node: &Node,
    p: PartitionId,
    object: String,
    req: &ExportRequest,
) -> Result<PartitionObject, ExportError> {
    let r = node.replica(p).ok_or(ExportError::NoReplica(p))?;
    {
        let st = r.lock();
        if st.installing.is_some() || !st.entry.is_in_sync(&node.ctx.node_id) {
            return Err(ExportError::NotInSync(p));
        }
    }
    wait_applied(&r, req.min_seq, Duration::from_millis(req.wait_ms)).await?;
    let opened = req.destination.open()?;
    let store = node.ctx.store.clone();
    let reader = Arc::new(
        tokio::task::spawn_blocking(move || store.snapshot(p))
            .await
            .map_err(|_| StorageError::WriterGone)??,
    );
    let seq = reader.applied_seq;
    if seq < req.min_seq {
        return Err(ExportError::Behind {
            partition: p,
            applied: seq,
            wanted: req.min_seq,
            waited_ms: 0,
        });
    }
    let header = ObjectHeader {
        partition: p,
        epoch: r.lock().history.epoch_at(seq),
        seq,
    };
    let path = opened.path(&object);
    let upload_err = |source| ExportError::Upload {
        object: path.to_string(),
        source,
    };
    let upload = opened
        .store
        .put_multipart(&path)
        .await
        .map_err(upload_err)?;
    let mut out = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    tracing::info!(partition = p, seq, object = %path, keys = reader.keys, "exporting a partition snapshot");
    let started = Instant::now();
    let mut sum = Checksum::default();
    let mut size = 0u64;
    let mut keys = 0u64;
    let mut after: Option<Vec<u8>> = None;
    let mut buf = encode_header(&header);
    let streamed: Result<(), ExportError> = async {
        loop {
            let rd = reader.clone();
            let from = after.clone();
            let items =
                tokio::task::spawn_blocking(move || rd.chunk(from.as_deref(), READ_CHUNK_BYTES))
                    .await
                    .map_err(|_| StorageError::WriterGone)??;
            let done = items.is_empty();
            after = items.last().map(|(k, _)| k.clone());
            for (k, stored) in &items {
                let (version, value) = codec::decode_value(stored)?;
                encode_record(&mut buf, k, version, value);
                keys += 1;
            }
            if done {
                buf.extend(encode_trailer(keys));
            }
            sum.update(&buf);
            size += buf.len() as u64;
            out.wait_for_capacity(UPLOAD_CONCURRENCY)
                .await
                .map_err(upload_err)?;
            out.write(&buf);
            buf.clear();
            if done {
                return Ok(());
            }
            if let Some(wait) = throttle_delay(size, node.ctx.catchup_rate(), started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    .await;
    if let Err(e) = streamed {
        if let Err(abort) = out.abort().await {
            tracing::warn!(partition = p, error = %abort, "aborting the upload");
        }
        return Err(e);
    }
    out.finish().await.map_err(upload_err)?;
    tracing::info!(
        partition = p,
        seq,
        keys,
        bytes = size,
        ms = started.elapsed().as_millis() as u64,
        "exported a partition snapshot"
    );
    Ok(PartitionObject {
        partition: p,
        epoch: header.epoch,
        seq,
        object,
        size,
        sha256: sum.hex(),
        keys,
        replica: node.ctx.node_id.clone(),
    })
}
