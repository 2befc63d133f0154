//! Deleting backups: every object under a backup's prefix, manifest first (so a half-deleted
//! backup is never mistaken for a complete one).

use super::destination::{Destination, DestinationError};
use super::manifest::MANIFEST_NAME;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

/// Why a backup could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("opening the backup location")]
    Destination(#[from] DestinationError),
    #[error("deleting objects under {prefix}")]
    Delete {
        prefix: String,
        #[source]
        source: object_store::Error,
    },
}

/// Deletes the backup at `destination`; returns how many objects were removed.
pub async fn delete_backup(destination: &Destination) -> Result<usize, DeleteError> {
    let opened = destination.open()?;
    let err = |source| DeleteError::Delete {
        prefix: opened.prefix.to_string(),
        source,
    };
    let manifest = opened.path(MANIFEST_NAME);
    let mut removed = 0;
    match opened.store.delete(&manifest).await {
        Ok(()) => removed += 1,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(err(e)),
    }
    let listed: Vec<_> = opened
        .store
        .list(Some(&opened.prefix))
        .try_collect()
        .await
        .map_err(err)?;
    for meta in listed {
        match opened.store.delete(&meta.location).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(removed)
}

/// Which of `backups` (oldest first) to delete so that at most `keep` remain.
pub fn expired<T: Clone>(backups: &[T], keep: usize) -> Vec<T> {
    let n = backups.len().saturating_sub(keep);
    backups[..n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        assert_eq!(expired(&[1, 2, 3, 4], 2), [1, 2]);
        assert_eq!(expired(&[1, 2], 5), Vec::<i32>::new());
        assert_eq!(expired(&[1, 2], 0), [1, 2]);
    }
}
