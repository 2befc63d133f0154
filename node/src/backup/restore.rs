//! Restoring a backup into a running store: read and validate the manifest, verify every
//! object (size, SHA-256, structure, header against the manifest) before writing anything,
//! then write every key through the store's client API — routed by the target store's own
//! map, so a store with a different partition count re-hashes the keys into its partitions.

use super::destination::{Destination, DestinationError, Opened};
use super::format::{Decoder, FormatError, Item, Record};
use super::manifest::{Checksum, MANIFEST_NAME, Manifest, ManifestError, PartitionObject};
use crate::client::{Condition, KvClient, KvError};
use futures::StreamExt;
use object_store::ObjectStoreExt;

/// Why a restore refused the backup or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("opening the backup location")]
    Destination(#[from] DestinationError),
    #[error(
        "no manifest at {0}: the backup is incomplete (it never finished) or the location is wrong"
    )]
    NoManifest(String),
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the manifest {path} is not valid JSON")]
    ManifestJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest {path} does not describe a complete backup")]
    Manifest {
        path: String,
        #[source]
        source: ManifestError,
    },
    #[error("object {path} of partition {partition} is missing: the backup is partial")]
    MissingObject { path: String, partition: u32 },
    #[error("object {path} has {found} bytes, the manifest says {expected}: corrupt or partial")]
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "object {path} has SHA-256 {found}, the manifest says {expected}: the object is corrupt"
    )]
    Checksum {
        path: String,
        expected: String,
        found: String,
    },
    #[error("object {path} is malformed")]
    Malformed {
        path: String,
        #[source]
        source: FormatError,
    },
    #[error("object {path} describes {found}, the manifest says {expected}")]
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
    #[error("writing key {key:?} into the store")]
    Write {
        key: String,
        #[source]
        source: KvError,
    },
}

/// Reads and validates the manifest of the backup at `destination`.
pub async fn read_manifest(opened: &Opened) -> Result<Manifest, RestoreError> {
    let path = opened.path(MANIFEST_NAME);
    let bytes = match opened.store.get(&path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RestoreError::NoManifest(path.to_string()));
        }
        Err(source) => {
            return Err(RestoreError::Read {
                path: path.to_string(),
                source,
            });
        }
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| RestoreError::ManifestJson {
            path: path.to_string(),
            source,
        })?;
    manifest
        .validate()
        .map_err(|source| RestoreError::Manifest {
            path: path.to_string(),
            source,
        })?;
    Ok(manifest)
}

/// Streams one object, checking it against the manifest; `each` sees every record.
async fn scan_object<F, Fut>(
    opened: &Opened,
    o: &PartitionObject,
    mut each: F,
) -> Result<(), RestoreError>
where
    F: FnMut(Record) -> Fut,
    Fut: std::future::Future<Output = Result<(), RestoreError>>,
{
    let path = opened.path(&o.object);
    let p = path.to_string();
    let got = match opened.store.get(&path).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RestoreError::MissingObject {
                path: p,
                partition: o.partition,
            });
        }
        Err(source) => return Err(RestoreError::Read { path: p, source }),
    };
    if got.meta.size != o.size {
        return Err(RestoreError::Size {
            path: p,
            expected: o.size,
            found: got.meta.size,
        });
    }
    let malformed = |source| RestoreError::Malformed {
        path: p.clone(),
        source,
    };
    let mut stream = got.into_stream();
    let mut sum = Checksum::default();
    let mut dec = Decoder::new();
    // A structural error is reported after the checksum: a damaged object says "corrupt".
    let mut broken: Option<FormatError> = None;
    let mut header_bad: Option<RestoreError> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| RestoreError::Read {
            path: p.clone(),
            source,
        })?;
        sum.update(&chunk);
        if broken.is_some() {
            continue;
        }
        dec.feed(&chunk);
        loop {
            let item = match dec.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            match item {
                Item::Header(h) => {
                    let found = (h.partition, h.epoch, h.seq);
                    let expected = (o.partition, o.epoch, o.seq);
                    if found != expected {
                        header_bad = Some(RestoreError::Mismatch {
                            path: p.clone(),
                            expected: format!("partition/epoch/seq {expected:?}"),
                            found: format!("{found:?}"),
                        });
                    }
                }
                Item::Record(r) => each(r).await?,
                Item::End(_) => {}
            }
        }
    }
    let found = sum.hex();
    if found != o.sha256 {
        return Err(RestoreError::Checksum {
            path: p,
            expected: o.sha256.clone(),
            found,
        });
    }
    if let Some(e) = broken {
        return Err(malformed(e));
    }
    if let Some(e) = header_bad {
        return Err(e);
    }
    let records = dec.finish().map_err(malformed)?;
    if records != o.keys {
        return Err(RestoreError::Mismatch {
            path: p,
            expected: format!("{} keys", o.keys),
            found: format!("{records} keys"),
        });
    }
    Ok(())
}

/// Reads the manifest and verifies every object; nothing is written.
pub async fn verify(destination: &Destination) -> Result<Manifest, RestoreError> {
    let opened = destination.open()?;
    let manifest = read_manifest(&opened).await?;
    for o in &manifest.objects {
        scan_object(&opened, o, |_| async { Ok(()) }).await?;
    }
    Ok(manifest)
}

/// Progress of a restore.
#[derive(Clone, Debug)]
pub enum RestoreEvent {
    /// Every object of the backup checked out.
    Verified(Manifest),
    /// The keys of one backed-up partition are written.
    PartitionRestored { partition: u32, keys: u64 },
}

/// Verifies the backup at `destination`, then writes every key into the store `kv` reaches,
/// `parallelism` writes at a time. Restored keys get new versions in the target store.
pub async fn restore(
    destination: &Destination,
    kv: &KvClient,
    parallelism: usize,
    on_event: &(dyn Fn(RestoreEvent) + Send + Sync),
) -> Result<Manifest, RestoreError> {
    let manifest = verify(destination).await?;
    on_event(RestoreEvent::Verified(manifest.clone()));
    let opened = destination.open()?;
    for o in &manifest.objects {
        let (tx, rx) = tokio::sync::mpsc::channel::<Record>(parallelism.max(1) * 4);
        let writer = async move {
            tokio_stream_from(rx)
                .map(|r| async move {
                    kv.put(&r.key, r.value, Condition::Always)
                        .await
                        .map(|_| ())
                        .map_err(|source| RestoreError::Write {
                            key: String::from_utf8_lossy(&r.key).into_owned(),
                            source,
                        })
                })
                .buffer_unordered(parallelism.max(1))
                .fold(Ok(0u64), |acc, r| async move {
                    match (acc, r) {
                        (Ok(n), Ok(())) => Ok(n + 1),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                })
                .await
        };
        let opened = opened.clone();
        let reader = async move {
            let out = scan_object(&opened, o, |r| {
                let tx = tx.clone();
                async move {
                    // A closed channel means the writer failed; its error is reported.
                    let _ = tx.send(r).await;
                    Ok(())
                }
            })
            .await;
            drop(tx);
            out
        };
        let (read, written) = tokio::join!(reader, writer);
        read?;
        let keys = written?;
        on_event(RestoreEvent::PartitionRestored {
            partition: o.partition,
            keys,
        });
    }
    Ok(manifest)
}

/// The receiving half of a channel as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
