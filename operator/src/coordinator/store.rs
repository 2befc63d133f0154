//! Where the authoritative partition map lives: the `MapStore` trait (compare-and-swap on a
//! revision) and the file-backed store of local mode.

use futures::future::BoxFuture;
use shardedstore_node::map::PartitionMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// Opaque revision of the stored map: the ConfigMap's `resourceVersion` in Kubernetes, the
/// map version in local mode. Only ever compared for equality by the store itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Revision(pub String);

/// Why a map store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MapStoreError {
    /// The stored map is not at the expected revision (or already exists on create):
    /// someone else wrote it. Reload and re-plan.
    #[error("the stored partition map changed concurrently (compare-and-swap conflict)")]
    Conflict,
    #[error("reading the stored partition map")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("writing the partition map")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("decoding the stored partition map")]
    Decode(#[source] serde_json::Error),
    #[error("encoding the partition map")]
    Encode(#[source] serde_json::Error),
}

/// The authoritative copy of the partition map. Every write is a compare-and-swap so that
/// the operator is a linearizable single writer even across restarts and leader changes.
pub trait MapStore: Send + Sync {
    /// The stored map and its revision, or `None` when no map exists yet.
    fn load(&self) -> BoxFuture<'_, Result<Option<(PartitionMap, Revision)>, MapStoreError>>;

    /// Stores `map` if the stored revision is `expected` (`None`: only if no map exists yet).
    /// Returns the new revision, or [`MapStoreError::Conflict`].
    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<&'a Revision>,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<Revision, MapStoreError>>;
}

/// Local mode's map store: one JSON file, replaced atomically (write + fsync + rename),
/// revision = map version. Compare-and-swap is serialized by an in-process lock; one operator
/// process owns a data directory.
#[derive(Debug)]
pub struct FileMapStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileMapStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(&self) -> Result<Option<(PartitionMap, Revision)>, MapStoreError> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MapStoreError::Read(Box::new(e))),
        };
        let map: PartitionMap = serde_json::from_slice(&bytes).map_err(MapStoreError::Decode)?;
        let rev = Revision(map.version.to_string());
        Ok(Some((map, rev)))
    }

    async fn write(&self, map: &PartitionMap) -> Result<(), MapStoreError> {
        let bytes = serde_json::to_vec_pretty(map).map_err(MapStoreError::Encode)?;
        let tmp = self.path.with_extension("json.tmp");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&tmp, &path, &bytes))
            .await
            .map_err(|e| MapStoreError::Write(Box::new(e)))?
            .map_err(|e| MapStoreError::Write(Box::new(e)))
    }
}

fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        // Makes the rename itself durable.
        d.sync_all()?;
    }
    Ok(())
}

impl MapStore for FileMapStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<(PartitionMap, Revision)>, MapStoreError>> {
        Box::pin(async move {
            let _guard = self.lock.lock().await;
            self.read().await
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<&'a Revision>,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<Revision, MapStoreError>> {
        Box::pin(async move {
            let _guard = self.lock.lock().await;
            let current = self.read().await?.map(|(_, rev)| rev);
            if current.as_ref() != expected {
                return Err(MapStoreError::Conflict);
            }
            self.write(map).await?;
            Ok(Revision(map.version.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_creates_then_swaps_and_detects_conflicts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = FileMapStore::new(dir.path().join("map.json"));
        assert!(
            store
                .load()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );

        let mut map = PartitionMap::empty("s", 4, 3, 2);
        let r0 = store
            .compare_and_swap(None, &map)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A second create must conflict.
        assert!(matches!(
            store.compare_and_swap(None, &map).await,
            Err(MapStoreError::Conflict)
        ));
        map.version = 1;
        let r1 = store
            .compare_and_swap(Some(&r0), &map)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(r0, r1);
        // A writer still holding the old revision loses.
        assert!(matches!(
            store.compare_and_swap(Some(&r0), &map).await,
            Err(MapStoreError::Conflict)
        ));
        let (loaded, rev) = store
            .load()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("map missing"));
        assert_eq!(loaded, map);
        assert_eq!(rev, r1);
    }
}
