//! Desired children of a ShardedStore, built purely from the resource (no API calls).
//!
//! Every child carries the store's labels and a controller owner reference, so Kubernetes
//! garbage-collects them with the store and the controller is woken when they change.

mod names;
mod network;
mod pod;
mod services;
mod singletons;
mod statefulset;
mod tls;

pub use names::{
    CLIENT_PORT, MAP_KEY, METRICS_PORT, PEER_PORT, STORE_LABEL, TOKEN_KEY, client_service_name,
    partition_map_name, peer_service_name, peer_token_name, pod_ordinal, selector_labels,
    selector_string, statefulset_name,
};
pub use network::{OPERATOR_COMPONENT_LABEL, network_policy};
pub use pod::{RUN_AS, SHUTDOWN_HANDOFF_SECONDS, TERMINATION_GRACE_SECONDS};
pub use services::{client_service, peer_service};
pub use singletons::{partition_map, peer_token, pod_disruption_budget, random_token};
pub use statefulset::{
    ENV_NODE_ID, ENV_PEER_TOKEN_FILE, ENV_SHUTDOWN_HANDOFF, ENV_STORE, keep_volume_claims,
    statefulset, statefulset_replicas,
};
pub use tls::{TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY, tls_server_name};

use crate::crd::ShardedStore;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// Why the children of a store cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the ShardedStore has no {0} (it was not read from the API server)")]
    MissingMetadata(&'static str),
}

impl BuildError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
        }
    }
}

/// What every child shares: name, namespace, labels and the owner reference.
#[derive(Clone, Debug)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub owner_ref: OwnerReference,
}

impl Owner {
    pub fn of(store: &ShardedStore) -> Result<Self, BuildError> {
        let namespace = store
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        if store.metadata.uid.is_none() {
            return Err(BuildError::MissingMetadata("uid"));
        }
        let owner_ref = kube::Resource::controller_owner_ref(store, &())
            .ok_or(BuildError::MissingMetadata("name"))?;
        Ok(Self {
            name: store.name_any(),
            namespace,
            owner_ref,
        })
    }

    /// Metadata of a child called `name`.
    pub fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner_ref.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Labels of every child and pod: the selector plus the standard recommended labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = selector_labels(&self.name);
        labels.insert("app.kubernetes.io/instance".to_owned(), self.name.clone());
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "shardedstore-operator".to_owned(),
        );
        labels
    }
}

#[cfg(test)]
mod tests;
