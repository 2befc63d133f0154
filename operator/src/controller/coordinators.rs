//! The running coordinators, one per ShardedStore: started on the first reconcile, fed the
//! observed pods and the spec's settings on every reconcile, stopped when the store goes.

use super::events::{Digest, Events, note_of};
use crate::coordinator::{
    CoordinatorHandle, CoordinatorStatus, Membership, NodeClients, Settings, StoreIdentity,
};
use crate::k8s_map_store::ConfigMapMapStore;
use crate::metrics::{Metrics, StoreLabels};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use shardedstore_node::client::AdminError;
use shardedstore_node::tls::ClientTls;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Everything needed to start the coordinator of one store.
pub struct Start {
    pub labels: StoreLabels,
    pub regarding: ObjectReference,
    pub owner: OwnerReference,
    pub token: String,
    /// How to trust the nodes when the store serves TLS.
    pub tls: Option<ClientTls>,
    pub settings: Settings,
    pub membership: Membership,
}

struct Running {
    handle: CoordinatorHandle,
    token: String,
    tls: Option<ClientTls>,
    settings: Settings,
    forwarder: JoinHandle<()>,
}

/// The coordinators of this operator process (only the leader runs any).
pub struct Coordinators {
    client: kube::Client,
    metrics: Arc<Metrics>,
    events: Events,
    running: Mutex<HashMap<StoreLabels, Running>>,
}

impl Coordinators {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, events: Events) -> Self {
        Self {
            client,
            metrics,
            events,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StoreLabels, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the store's coordinator runs with these inputs; returns its latest status.
    /// A changed peer token or CA restarts it (its transport authenticates with the token and
    /// trusts the CA).
    pub fn ensure(&self, start: Start) -> Result<CoordinatorStatus, AdminError> {
        let mut running = self.lock();
        if let Some(r) = running.get_mut(&start.labels)
            && r.token == start.token
            && r.tls == start.tls
        {
            if r.settings != start.settings {
                r.handle.update_settings(start.settings.clone());
                r.settings = start.settings;
            }
            r.handle.update_membership(start.membership);
            return Ok(r.handle.status());
        }
        if let Some(old) = running.remove(&start.labels) {
            old.forwarder.abort();
            drop(old.handle);
        }
        let timeout = (start.settings.lease / 2).max(Duration::from_millis(200));
        let transport = Arc::new(NodeClients::new(
            start.token.clone(),
            timeout,
            start.tls.clone(),
            None,
        )?);
        let map_store = Arc::new(ConfigMapMapStore::new(
            self.client.clone(),
            &start.labels.namespace,
            &start.labels.store,
            Some(start.owner),
        ));
        tracing::info!(namespace = %start.labels.namespace, store = %start.labels.store, "starting coordinator");
        let handle = CoordinatorHandle::spawn(
            StoreIdentity {
                name: start.labels.store.clone(),
            },
            start.settings.clone(),
            start.membership,
            map_store,
            transport,
        );
        let forwarder = tokio::spawn(forward(
            handle.events(),
            handle.watch_status(),
            start.labels.clone(),
            start.regarding,
            self.metrics.clone(),
            self.events.clone(),
        ));
        let status = handle.status();
        running.insert(
            start.labels,
            Running {
                handle,
                token: start.token,
                tls: start.tls,
                settings: start.settings,
                forwarder,
            },
        );
        Ok(status)
    }

    /// The latest status of the store.s coordinator, if it runs.
    pub fn status(&self, labels: &StoreLabels) -> Option<CoordinatorStatus> {
        self.lock().get(labels).map(|r| r.handle.status())
    }

    /// Stops the coordinators of stores for which `keep` is false.
    pub async fn retain(&self, keep: impl Fn(&StoreLabels) -> bool) {
        let gone: Vec<(StoreLabels, Running)> = {
            let mut running = self.lock();
            let keys: Vec<StoreLabels> = running.keys().filter(|k| !keep(k)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| running.remove(&k).map(|r| (k, r)))
                .collect()
        };
        for (labels, r) in gone {
            tracing::info!(namespace = %labels.namespace, store = %labels.store, "stopping coordinator");
            r.forwarder.abort();
            r.handle.stop().await;
            self.metrics.forget_store(&labels);
        }
    }

    /// Stops every coordinator (on shutdown or lost leadership).
    pub async fn stop_all(&self) {
        self.retain(|_| false).await;
    }
}

/// How often per-partition Events are summarised and published.
const DIGEST_INTERVAL: Duration = Duration::from_secs(10);

/// Forwards a coordinator's events to metrics and Kubernetes Events (per-partition ones
/// summarised every [`DIGEST_INTERVAL`]), and its status to the partition gauges, until the
/// coordinator stops.
async fn forward(
    mut events: tokio::sync::broadcast::Receiver<crate::coordinator::CoordinatorEvent>,
    mut status: tokio::sync::watch::Receiver<CoordinatorStatus>,
    labels: StoreLabels,
    regarding: ObjectReference,
    metrics: Arc<Metrics>,
    publisher: Events,
) {
    let mut digest = Digest::default();
    let mut flush = tokio::time::interval(DIGEST_INTERVAL);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = flush.tick() => {
                for note in digest.flush() {
                    publisher.publish(&regarding, note).await;
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    metrics.observe_event(&labels, &event);
                    if let Some(note) = note_of(&event).and_then(|n| digest.add(n)) {
                        publisher.publish(&regarding, note).await;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, store = %labels.store, "coordinator events dropped");
                }
                Err(RecvError::Closed) => {
                    for note in digest.flush() {
                        publisher.publish(&regarding, note).await;
                    }
                    return;
                }
            },
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = status.borrow_and_update().clone();
                metrics.observe_status(&labels, &snapshot);
            }
        }
    }
}
