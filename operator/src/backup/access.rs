//! Reaching a store and a bucket from the operator: the store's partition map (node client
//! addresses), its peer token, and S3 connection settings with credentials from a Secret.

use crate::controller::apply::token_of;
use crate::controller::build::{partition_map_name, peer_token_name};
use crate::crd::backup::S3Connection;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use shardedstore_node::backup::S3Options;
use shardedstore_node::client::{KvClient, KvError, RetryPolicy};
use shardedstore_node::map::PartitionMap;
use shardedstore_node::tls::ClientTls;
use std::time::Duration;

/// Why a store or a bucket could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("reading {kind} {name}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} does not exist")]
    Missing { kind: &'static str, name: String },
    #[error("the store has no partition map yet")]
    NoMap,
    #[error("decoding the partition map")]
    Map(#[source] crate::coordinator::MapStoreError),
    #[error("the peer-token Secret {0} has no token")]
    Token(String),
    #[error("Secret {secret} has no key {key}")]
    CredentialKey { secret: String, key: &'static str },
    #[error("building the store client")]
    Client(#[source] KvError),
    #[error("the store's TLS Secrets")]
    Tls(#[source] crate::controller::tls::TlsSecretError),
}

async fn get<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<K, AccessError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(AccessError::Missing {
            kind,
            name: name.to_owned(),
        }),
        Err(source) => Err(AccessError::Read {
            kind,
            name: name.to_owned(),
            source,
        }),
    }
}

/// The store's current partition map.
pub async fn store_map(
    client: &Client,
    ns: &str,
    store: &str,
) -> Result<PartitionMap, AccessError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = get(&api, "ConfigMap", &partition_map_name(store)).await?;
    crate::k8s_map_store::decode(&cm)
        .map_err(AccessError::Map)?
        .ok_or(AccessError::NoMap)
}

/// The store's peer token.
pub async fn peer_token(client: &Client, ns: &str, store: &str) -> Result<String, AccessError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = peer_token_name(store);
    let secret = get(&api, "Secret", &name).await?;
    token_of(&secret).ok_or(AccessError::Token(name))
}

/// How the operator trusts the nodes of `store` (`None` when it does not serve TLS).
pub async fn store_tls(
    client: &Client,
    ns: &str,
    store: &crate::crd::ShardedStore,
) -> Result<Option<ClientTls>, AccessError> {
    let name = kube::ResourceExt::name_any(store);
    crate::controller::tls::store_client_tls(client, ns, &name, store.spec.tls.as_ref())
        .await
        .map_err(AccessError::Tls)
}

/// The ShardedStore `name`.
pub async fn store(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<crate::crd::ShardedStore, AccessError> {
    let api: Api<crate::crd::ShardedStore> = Api::namespaced(client.clone(), ns);
    get(&api, "ShardedStore", name).await
}

/// Over TLS the requests carry the peer token, which the nodes accept on their client port
/// whatever client authentication they require (it only travels encrypted).
fn client_builder(
    map: &PartitionMap,
    tls: Option<&ClientTls>,
    peer_token: &str,
) -> shardedstore_node::client::KvClientBuilder {
    let seeds: Vec<String> = map.nodes.values().map(|n| n.client_addr.clone()).collect();
    let builder = KvClient::builder(&seeds).retry_policy(RetryPolicy {
        deadline: Duration::from_secs(60),
        ..RetryPolicy::default()
    });
    match tls {
        Some(tls) => builder.tls(tls.clone()).token(peer_token),
        None => builder,
    }
}

/// A client of the store through its nodes' addresses in `map` (pod IPs).
pub fn store_client(
    map: &PartitionMap,
    tls: Option<&ClientTls>,
    peer_token: &str,
) -> Result<KvClient, AccessError> {
    client_builder(map, tls, peer_token)
        .build()
        .map_err(AccessError::Client)
}

/// The restore's client: its requests carry the peer token, so the nodes of a store that
/// is still being restored (and refuses every other client) serve them.
pub fn restore_client(
    map: &PartitionMap,
    tls: Option<&ClientTls>,
    peer_token: &str,
) -> Result<KvClient, AccessError> {
    client_builder(map, tls, peer_token)
        .restore_token(peer_token)
        .build()
        .map_err(AccessError::Client)
}

/// The text of `key` in a Secret (`data`, or `stringData` of an object not yet stored).
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
}

/// S3 options of a connection, with the credentials read from its Secret.
pub async fn s3_options(
    client: &Client,
    ns: &str,
    s3: Option<&S3Connection>,
) -> Result<S3Options, AccessError> {
    let Some(s3) = s3 else {
        return Ok(S3Options::default());
    };
    let mut out = S3Options {
        endpoint: s3.endpoint.clone(),
        region: Some(s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned())),
        ..S3Options::default()
    };
    if let Some(name) = &s3.credentials_secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let secret = get(&api, "Secret", name).await?;
        let need = |key: &'static str| {
            secret_value(&secret, key).ok_or_else(|| AccessError::CredentialKey {
                secret: name.clone(),
                key,
            })
        };
        out.access_key_id = Some(need("AWS_ACCESS_KEY_ID")?);
        out.secret_access_key = Some(need("AWS_SECRET_ACCESS_KEY")?);
        out.session_token = secret_value(&secret, "AWS_SESSION_TOKEN");
    }
    Ok(out)
}
