//! State shared by every reconciliation: the client, settings, metrics, Events, backoff, the
//! running coordinators and a cache of node labels (for zones).

use super::backoff::Backoff;
use super::coordinators::Coordinators;
use super::events::Events;
use crate::config::RunConfig;
use crate::crd::ShardedStore;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

pub struct Context {
    pub client: kube::Client,
    pub config: RunConfig,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub backoff: Backoff,
    pub coordinators: Coordinators,
    /// The controller's cache of ShardedStores, to stop coordinators of deleted stores.
    stores: OnceLock<Store<ShardedStore>>,
    /// Labels of Kubernetes nodes by name; a node's zone does not change while it exists.
    node_labels: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        config: RunConfig,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Self {
        let events = Events::new(client.clone(), identity);
        Self {
            coordinators: Coordinators::new(client.clone(), metrics.clone(), events.clone()),
            client,
            config,
            metrics,
            events,
            backoff: Backoff::default(),
            stores: OnceLock::new(),
            node_labels: Mutex::new(HashMap::new()),
        }
    }

    /// Gives the context the controller's store cache (once).
    pub fn set_store_cache(&self, stores: Store<ShardedStore>) {
        let _ = self.stores.set(stores);
    }

    /// Stops coordinators whose store no longer exists.
    pub async fn sweep_coordinators(&self) {
        let Some(stores) = self.stores.get() else {
            return;
        };
        self.coordinators
            .retain(|k| {
                stores
                    .get(&ObjectRef::new(&k.store).within(&k.namespace))
                    .is_some()
            })
            .await;
    }

    /// The zone of the node `pod` runs on, from the node's `label`. Unknown (None) when the
    /// pod is not scheduled or the node cannot be read; replicas then spread by pod only.
    pub async fn zone_of(&self, pod: &Pod, label: &str) -> Option<String> {
        let node = pod.spec.as_ref()?.node_name.clone()?;
        let cached = self
            .node_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned();
        let labels = match cached {
            Some(labels) => labels,
            None => {
                let api: Api<Node> = Api::all(self.client.clone());
                match api.get(&node).await {
                    Ok(n) => {
                        let labels = n.labels().clone();
                        self.node_labels
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(node, labels.clone());
                        labels
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "reading the node of a pod failed; its zone is unknown");
                        return None;
                    }
                }
            }
        };
        labels.get(label).cloned()
    }
}
