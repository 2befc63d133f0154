//! Writing to the API server: server-side apply of children and status, and create-once of
//! the peer-token Secret.

use super::build::{Owner, TOKEN_KEY, peer_token, peer_token_name, random_token};
use crate::crd::{ShardedStore, ShardedStoreStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "shardedstore-operator";
/// Field manager of the `Reconciled` condition written when a reconcile fails. A separate
/// manager, so applying that one condition leaves the rest of the status in place (an apply
/// removes the fields its manager owned but left out).
pub const ERROR_FIELD_MANAGER: &str = "shardedstore-operator-errors";

/// Why writing to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {name}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating the peer-token Secret {name}")]
    CreateToken {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the peer-token Secret {0} has no usable `token` key")]
    MalformedToken(String),
    #[error("deleting {kind} {name}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the status of {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "ApplyFailed",
            Self::Read { .. } => "ReadFailed",
            Self::CreateToken { .. } | Self::MalformedToken(_) => "PeerTokenFailed",
            Self::Status { .. } => "StatusPatchFailed",
            Self::Delete { .. } => "DeleteFailed",
        }
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies `object` (which names itself) in `namespace`.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.name_any();
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| ApplyError::Apply {
            kind: kind_of::<K>(),
            name,
            source,
        })
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "StatefulSet" => "StatefulSet",
        "Service" => "Service",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        "ConfigMap" => "ConfigMap",
        "Secret" => "Secret",
        "NetworkPolicy" => "NetworkPolicy",
        _ => "object",
    }
}

/// Deletes an object that may not exist.
pub async fn delete_opt<K>(client: &Client, namespace: &str, name: &str) -> Result<(), ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ApplyError::Delete {
            kind: kind_of::<K>(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Reads an object that may not exist.
pub async fn get_opt<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|source| ApplyError::Read {
        kind: kind_of::<K>(),
        name: name.to_owned(),
        source,
    })
}

/// The store's peer token: read from its Secret, which is created with a random token the
/// first time. Never rotated here: nodes and the coordinator must agree on it.
pub async fn ensure_peer_token(client: &Client, owner: &Owner) -> Result<String, ApplyError> {
    let name = peer_token_name(&owner.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), &owner.namespace);
    let existing = match api.get_opt(&name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            let fresh = peer_token(owner, random_token());
            match api.create(&PostParams::default(), &fresh).await {
                Ok(created) => created,
                // Created concurrently (another reconcile, or a previous leader): use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.get(&name).await.map_err(|source| ApplyError::Read {
                        kind: "Secret",
                        name: name.clone(),
                        source,
                    })?
                }
                Err(source) => return Err(ApplyError::CreateToken { name, source }),
            }
        }
        Err(source) => {
            return Err(ApplyError::Read {
                kind: "Secret",
                name,
                source,
            });
        }
    };
    token_of(&existing).ok_or(ApplyError::MalformedToken(name))
}

/// The token in a peer-token Secret (`data`, or `stringData` as returned by a create).
pub fn token_of(secret: &Secret) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    from_data
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(TOKEN_KEY).cloned())
        })
        .filter(|t| !t.is_empty())
}

/// Server-side applies the status through the status subresource.
pub async fn patch_status(
    client: &Client,
    store: &ShardedStore,
    status: &ShardedStoreStatus,
) -> Result<(), ApplyError> {
    let namespace = store.namespace().unwrap_or_default();
    let name = store.name_any();
    let api: Api<ShardedStore> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": ShardedStore::api_version(&()),
        "kind": ShardedStore::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &apply_params(), &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|source| ApplyError::Status { name, source })
}

/// Server-side applies one condition of the status (as [`ERROR_FIELD_MANAGER`]), leaving the
/// other conditions and fields as they are.
pub async fn patch_condition(
    client: &Client,
    store: &ShardedStore,
    condition: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
) -> Result<(), ApplyError> {
    let namespace = store.namespace().unwrap_or_default();
    let name = store.name_any();
    let api: Api<ShardedStore> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": ShardedStore::api_version(&()),
        "kind": ShardedStore::kind(&()),
        "status": { "conditions": [condition] },
    });
    let params = PatchParams::apply(ERROR_FIELD_MANAGER).force();
    api.patch_status(&name, &params, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|source| ApplyError::Status { name, source })
}
