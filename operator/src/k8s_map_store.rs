//! The partition map in Kubernetes: key `map.json` of the `<store>-partition-map` ConfigMap,
//! written with compare-and-swap on the ConfigMap's `resourceVersion`.
//!
//! The controller applies only the ConfigMap's labels and owner reference (server-side apply,
//! manager `shardedstore-operator`); this store writes only `data` under its own field
//! manager, so neither ever removes what the other owns.

use crate::controller::build::{MAP_KEY, partition_map_name};
use crate::coordinator::{MapStore, MapStoreError, Revision};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use shardedstore_node::map::PartitionMap;
use std::collections::BTreeMap;

/// Field manager of map writes (distinct from the controller's, see the module docs).
pub const MAP_FIELD_MANAGER: &str = "shardedstore-coordinator";

/// A [`MapStore`] backed by the store's partition-map ConfigMap.
#[derive(Clone)]
pub struct ConfigMapMapStore {
    api: Api<ConfigMap>,
    name: String,
    /// Set on the ConfigMap when the store has to create it (before reconcile did).
    owner: Option<OwnerReference>,
}

impl ConfigMapMapStore {
    /// The map store of `store` in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        store: &str,
        owner: Option<OwnerReference>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: partition_map_name(store),
            owner,
        }
    }

    fn revision_of(cm: &ConfigMap) -> Result<Revision, MapStoreError> {
        cm.metadata
            .resource_version
            .clone()
            .map(Revision)
            .ok_or_else(|| MapStoreError::Write(Box::new(MissingResourceVersion)))
    }

    async fn get(&self) -> Result<Option<ConfigMap>, MapStoreError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|e| MapStoreError::Read(Box::new(e)))
    }

    async fn create(&self, json: String) -> Result<Revision, MapStoreError> {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(MAP_KEY.to_owned(), json)])),
            ..ConfigMap::default()
        };
        let params = PostParams {
            field_manager: Some(MAP_FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = self.api.create(&params, &cm).await.map_err(write_error)?;
        Self::revision_of(&created)
    }

    /// Merge-patches `map.json`, conditional on `revision`: the API server refuses (409) when
    /// the ConfigMap's resourceVersion has moved on.
    async fn swap(&self, revision: &Revision, json: String) -> Result<Revision, MapStoreError> {
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": revision.0 },
            "data": { MAP_KEY: json },
        });
        let params = PatchParams {
            field_manager: Some(MAP_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patched = self
            .api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(write_error)?;
        Self::revision_of(&patched)
    }
}

/// The API server answered without a resourceVersion (it always sets one).
#[derive(Debug, thiserror::Error)]
#[error("the API server returned the ConfigMap without a resourceVersion")]
struct MissingResourceVersion;

/// 409 (stale resourceVersion, or created concurrently) and 404 (deleted meanwhile) both mean
/// the caller's view is outdated: reload.
fn write_error(e: kube::Error) -> MapStoreError {
    match &e {
        kube::Error::Api(status) if status.code == 409 || status.code == 404 => {
            MapStoreError::Conflict
        }
        _ => MapStoreError::Write(Box::new(e)),
    }
}

/// The map stored in `cm`, if it has one.
pub fn decode(cm: &ConfigMap) -> Result<Option<PartitionMap>, MapStoreError> {
    match cm.data.as_ref().and_then(|d| d.get(MAP_KEY)) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(MapStoreError::Decode),
    }
}

impl MapStore for ConfigMapMapStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<(PartitionMap, Revision)>, MapStoreError>> {
        Box::pin(async move {
            let Some(cm) = self.get().await? else {
                return Ok(None);
            };
            match decode(&cm)? {
                None => Ok(None),
                Some(map) => Ok(Some((map, Self::revision_of(&cm)?))),
            }
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<&'a Revision>,
        map: &'a PartitionMap,
    ) -> BoxFuture<'a, Result<Revision, MapStoreError>> {
        Box::pin(async move {
            let json = serde_json::to_string(map).map_err(MapStoreError::Encode)?;
            match expected {
                Some(revision) => self.swap(revision, json).await,
                // First map: the ConfigMap may not exist yet, or exist without data.
                None => match self.get().await? {
                    None => self.create(json).await,
                    Some(cm) if decode(&cm)?.is_some() => Err(MapStoreError::Conflict),
                    Some(cm) => self.swap(&Self::revision_of(&cm)?, json).await,
                },
            }
        })
    }
}
