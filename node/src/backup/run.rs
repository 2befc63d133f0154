//! Orchestration of a backup (used by the CLI, local mode and the operator): observe each
//! partition's backup point at its primary, have one in-sync replica per partition export its
//! snapshot (another replica when one fails), then write the manifest — last, so a backup
//! without a manifest is recognisably incomplete.

use super::destination::{Destination, DestinationError, Opened};
use super::export::ExportRequest;
use super::manifest::{MANIFEST_NAME, Manifest, ManifestError, PartitionObject};
use super::peers::{BackupPeers, PeerCallError};
use super::plan::export_candidates;
use crate::client::{KvClient, KvError};
use crate::map::{NodeId, PartitionId, PartitionMap};
use chrono::Utc;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("opening the destination")]
    Destination(#[from] DestinationError),
    #[error("a backup already exists at {0} (choose another prefix)")]
    Exists(String),
    #[error("checking the destination {path}")]
    Probe {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading the partition map")]
    Map(#[source] KvError),
    #[error("partition {partition}: no primary answered with a backup point within {waited_s} s")]
    NoPoint {
        partition: PartitionId,
        waited_s: u64,
        #[source]
        last: Option<PeerCallError>,
    },
    #[error("partition {partition}: the node refused the backup call (not retried)")]
    Refused {
        partition: PartitionId,
        #[source]
        source: PeerCallError,
    },
    #[error("partition {partition}: no in-sync replica exported it after {attempts} attempts")]
    Export {
        partition: PartitionId,
        attempts: u32,
        #[source]
        last: Option<PeerCallError>,
    },
    #[error("the collected objects do not form a complete backup")]
    Incomplete(#[from] ManifestError),
    #[error("encoding the manifest")]
    Encode(#[source] serde_json::Error),
    #[error("writing the manifest {path}")]
    WriteManifest {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

/// How a backup runs.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub destination: Destination,
    /// Partitions exported at once.
    pub parallelism: usize,
    /// How long to look for a partition's primary (failovers included).
    pub point_timeout: Duration,
    /// How long a replica may take to apply up to the backup point.
    pub apply_wait: Duration,
    /// Export attempts per partition (over its in-sync replicas).
    pub attempts: u32,
}

impl BackupSettings {
    pub fn new(destination: Destination) -> Self {
        Self {
            destination,
            parallelism: 4,
            point_timeout: Duration::from_secs(60),
            apply_wait: Duration::from_secs(30),
            attempts: 6,
        }
    }
}

/// Progress reported while a backup runs.
#[derive(Clone, Debug)]
pub enum BackupEvent {
    /// The backup covers these partitions of this map version.
    Started { partitions: u32, map_version: u64 },
    /// A partition's object is written.
    PartitionDone(PartitionObject),
    /// An export attempt failed; another replica (or the same later) is asked next.
    Retrying {
        partition: PartitionId,
        replica: NodeId,
        error: String,
    },
}

/// Runs a backup of the store that `kv` reaches and returns its manifest.
pub async fn run_backup(
    kv: &KvClient,
    peers: &BackupPeers,
    settings: &BackupSettings,
    on_event: &(dyn Fn(BackupEvent) + Send + Sync),
) -> Result<Manifest, BackupError> {
    let started_at = Utc::now();
    let opened = settings.destination.open()?;
    refuse_existing(&opened).await?;
    let map = kv.map().await.map_err(BackupError::Map)?;
    let partitions = map.partitions.len() as u32;
    on_event(BackupEvent::Started {
        partitions,
        map_version: map.version,
    });
    let results: Vec<Result<PartitionObject, BackupError>> = futures::stream::iter(0..partitions)
        .map(|p| async move {
            let o = backup_partition(kv, peers, settings, p, on_event).await?;
            on_event(BackupEvent::PartitionDone(o.clone()));
            Ok(o)
        })
        .buffer_unordered(settings.parallelism.max(1))
        .collect()
        .await;
    let objects = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let manifest = Manifest::new(
        map.store.clone(),
        partitions,
        map.version,
        started_at,
        Utc::now(),
        objects,
    );
    manifest.validate()?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(BackupError::Encode)?;
    let path = opened.path(MANIFEST_NAME);
    opened
        .store
        .put(&path, json.into())
        .await
        .map_err(|source| BackupError::WriteManifest {
            path: path.to_string(),
            source,
        })?;
    Ok(manifest)
}

async fn refuse_existing(opened: &Opened) -> Result<(), BackupError> {
    let path = opened.path(MANIFEST_NAME);
    match opened.store.head(&path).await {
        Ok(_) => Err(BackupError::Exists(path.to_string())),
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(BackupError::Probe {
            path: path.to_string(),
            source,
        }),
    }
}

fn peer_addr(map: &PartitionMap, node: &str) -> Option<String> {
    map.nodes.get(node).map(|n| n.peer_addr.clone())
}

/// Asks the partition's primary for its backup point, following failovers until the deadline.
async fn point_of(
    kv: &KvClient,
    peers: &BackupPeers,
    p: PartitionId,
    timeout: Duration,
) -> Result<u64, BackupError> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        if let Ok(map) = kv.map().await
            && let Some(addr) = map
                .entry(p)
                .and_then(|e| e.primary.as_deref())
                .and_then(|n| peer_addr(&map, n))
        {
            match peers.point(&addr, p).await {
                Ok(point) => return Ok(point.seq),
                Err(source) if source.is_final() => {
                    return Err(BackupError::Refused {
                        partition: p,
                        source,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(BackupError::NoPoint {
        partition: p,
        waited_s: timeout.as_secs(),
        last,
    })
}

async fn backup_partition(
    kv: &KvClient,
    peers: &BackupPeers,
    settings: &BackupSettings,
    p: PartitionId,
    on_event: &(dyn Fn(BackupEvent) + Send + Sync),
) -> Result<PartitionObject, BackupError> {
    let min_seq = point_of(kv, peers, p, settings.point_timeout).await?;
    let req = ExportRequest {
        destination: settings.destination.clone(),
        min_seq,
        wait_ms: settings.apply_wait.as_millis() as u64,
    };
    let mut failed: Vec<NodeId> = Vec::new();
    let mut last = None;
    for _ in 0..settings.attempts.max(1) {
        let map: Arc<PartitionMap> = match kv.map().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "reading the map");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(entry) = map.entry(p) else {
            break;
        };
        let Some((node, addr)) = export_candidates(entry, p, &failed)
            .into_iter()
            .find_map(|n| peer_addr(&map, &n).map(|a| (n, a)))
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        match peers.export(&addr, p, &req).await {
            Ok(o) => return Ok(o),
            Err(e) => {
                tracing::warn!(partition = p, replica = %node, error = %e, "export failed; trying another replica");
                on_event(BackupEvent::Retrying {
                    partition: p,
                    replica: node.clone(),
                    error: e.to_string(),
                });
                failed.retain(|n| n != &node);
                failed.push(node);
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Err(BackupError::Export {
        partition: p,
        attempts: settings.attempts,
        last,
    })
}
