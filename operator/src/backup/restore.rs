//! Restores on Kubernetes: a ShardedStore with `spec.restore.from` is filled from the backup
//! once every partition has a primary, and its `Restored` condition says how that went
//! (written with its own field manager, so the store's reconcile keeps its other conditions).
//! A refused backup (corrupt, partial, missing) is reported and not tried again.

use super::access::{self, AccessError};
use super::controller::chain;
use crate::crd::ShardedStore;
use crate::crd::backup::{BackupPhase, RestoreSource, ShardedStoreBackup};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use shardedstore_node::backup::Destination;
use shardedstore_node::backup::restore::{self, RestoreError, RestoreEvent};
use std::collections::HashMap;
use std::time::Duration;

/// Field manager of the `Restored` condition.
const FIELD_MANAGER: &str = "shardedstore-operator-restore";
/// The condition type.
pub const RESTORED: &str = "Restored";
const SWEEP: Duration = Duration::from_secs(5);

/// Why a restore could not run.
#[derive(Debug, thiserror::Error)]
pub enum StoreRestoreError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("ShardedStoreBackup {0} has no completed backup")]
    NotCompleted(String),
    #[error("the backup was refused or could not be written")]
    Restore(#[from] RestoreError),
}

impl StoreRestoreError {
    /// A refused backup will not restore by trying again.
    fn reason(&self) -> &'static str {
        match self {
            Self::Restore(RestoreError::Write { .. }) | Self::Access(_) => "RestoreFailed",
            Self::Restore(_) | Self::NotCompleted(_) => "BackupRefused",
        }
    }
}

/// The store waits for a restore and serves only its writes: `spec.restore` is set and the
/// `Restored` condition is not `True` (a refused backup keeps the gate closed: the store is
/// empty, not restored; removing `spec.restore` opens it).
pub fn gates_clients(store: &ShardedStore) -> bool {
    store.spec.restore.is_some() && restored_condition(store).is_none_or(|c| c.status != "True")
}

fn restored_condition(store: &ShardedStore) -> Option<&Condition> {
    store
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == RESTORED)
}

async fn set_condition(
    client: &Client,
    store: &ShardedStore,
    status: bool,
    reason: &str,
    message: String,
) {
    let api: Api<ShardedStore> =
        Api::namespaced(client.clone(), &store.namespace().unwrap_or_default());
    let condition = Condition {
        type_: RESTORED.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: store.meta().generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let body = serde_json::json!({
        "apiVersion": ShardedStore::api_version(&()),
        "kind": ShardedStore::kind(&()),
        "status": { "conditions": [condition] },
    });
    if let Err(e) = api
        .patch_status(
            &store.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        tracing::warn!(store = %store.name_any(), error = %e, "writing the Restored condition");
    }
}

/// Where `from` points: the location and how to reach it.
async fn resolve(
    client: &Client,
    ns: &str,
    from: &RestoreSource,
) -> Result<Destination, StoreRestoreError> {
    if let Some(name) = &from.backup {
        let api: Api<ShardedStoreBackup> = Api::namespaced(client.clone(), ns);
        let backup = api
            .get_opt(name)
            .await
            .map_err(|source| AccessError::Read {
                kind: "ShardedStoreBackup",
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| AccessError::Missing {
                kind: "ShardedStoreBackup",
                name: name.clone(),
            })?;
        let status = backup.status.clone().unwrap_or_default();
        let url = match (&backup.spec.schedule, status.phase) {
            (Some(_), _) => status.backups.last().map(|b| b.url.clone()),
            (None, BackupPhase::Completed) => status.url.clone(),
            _ => None,
        }
        .ok_or_else(|| StoreRestoreError::NotCompleted(name.clone()))?;
        let s3 = access::s3_options(client, ns, backup.spec.destination.s3.as_ref()).await?;
        return Ok(Destination::new(url, s3));
    }
    let s3 = access::s3_options(client, ns, from.s3.as_ref()).await?;
    Ok(Destination::new(from.url.clone().unwrap_or_default(), s3))
}

async fn restore_store(client: Client, store: ShardedStore) {
    let name = store.name_any();
    let ns = store.namespace().unwrap_or_default();
    let Some(spec) = store.spec.restore.clone() else {
        return;
    };
    let outcome = async {
        let dest = resolve(&client, &ns, &spec.from).await?;
        let map = access::store_map(&client, &ns, &name).await?;
        let token = access::peer_token(&client, &ns, &name).await?;
        let tls = access::store_tls(&client, &ns, &store).await?;
        let kv = access::restore_client(&map, tls.as_ref(), &token)?;
        set_condition(
            &client,
            &store,
            false,
            "Restoring",
            format!("restoring from {}", dest.url),
        )
        .await;
        let on_event = |e: RestoreEvent| {
            if let RestoreEvent::PartitionRestored { partition, keys } = e {
                tracing::info!(store = %name, partition, keys, "restored a backed-up partition");
            }
        };
        let m = restore::restore(&dest, &kv, 64, &on_event).await?;
        Ok::<_, StoreRestoreError>((dest.url, m))
    }
    .await;
    match outcome {
        Ok((url, m)) => {
            tracing::info!(store = %name, %url, keys = m.total_keys, "restore completed");
            let msg = format!(
                "{} keys ({} bytes) from {url}, backed up from store {} with {} partitions",
                m.total_keys, m.total_bytes, m.store, m.partitions
            );
            set_condition(&client, &store, true, "Restored", msg).await;
        }
        Err(e) => {
            let msg = chain(&e);
            tracing::warn!(store = %name, error = %msg, "restore failed");
            set_condition(&client, &store, false, e.reason(), msg).await;
        }
    }
}

/// Looks for stores to restore every few seconds until aborted.
pub async fn run(client: Client, namespace: Option<String>) {
    let api: Api<ShardedStore> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        running.retain(|_, h| !h.is_finished());
        let stores = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!(error = %e, "listing stores to restore");
                continue;
            }
        };
        for store in stores {
            if store.spec.restore.is_none() {
                continue;
            }
            let key = format!(
                "{}/{}",
                store.namespace().unwrap_or_default(),
                store.name_any()
            );
            let done = restored_condition(&store)
                .is_some_and(|c| c.status == "True" || c.reason == "BackupRefused");
            if done || running.contains_key(&key) {
                continue;
            }
            let ns = store.namespace().unwrap_or_default();
            let serving = access::store_map(&client, &ns, &store.name_any())
                .await
                .is_ok_and(|m| {
                    !m.partitions.is_empty() && m.partitions.iter().all(|e| e.primary.is_some())
                });
            if !serving {
                continue;
            }
            running.insert(key, tokio::spawn(restore_store(client.clone(), store)));
        }
    }
}
