//! Names, labels and ports shared by the children of a store and the code that reads them.

use std::collections::BTreeMap;

/// Client API port of a storage node.
pub const CLIENT_PORT: i32 = 7000;
/// Peer (replication and admin) port of a storage node.
pub const PEER_PORT: i32 = 7100;
/// Metrics and health port of a storage node.
pub const METRICS_PORT: i32 = 9100;
/// Label naming the store a pod belongs to; the pod watch maps pods back to stores with it.
pub const STORE_LABEL: &str = "shardedstore.io/store";
/// Key of the peer token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// Key of the partition map in its ConfigMap.
pub const MAP_KEY: &str = "map.json";

pub fn statefulset_name(store: &str) -> String {
    store.to_owned()
}

/// The client Service carries the store's own name: `<store>.<ns>.svc` is what users dial.
pub fn client_service_name(store: &str) -> String {
    store.to_owned()
}

/// The headless Service giving pods stable DNS names for peer traffic.
pub fn peer_service_name(store: &str) -> String {
    format!("{store}-peers")
}

pub fn partition_map_name(store: &str) -> String {
    format!("{store}-partition-map")
}

pub fn peer_token_name(store: &str) -> String {
    format!("{store}-peer-token")
}

/// Labels selecting the storage pods of `store`.
pub fn selector_labels(store: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "shardedstore-node".to_owned(),
        ),
        (STORE_LABEL.to_owned(), store.to_owned()),
    ])
}

/// The selector in `key=value,...` form, as the scale subresource expects in status.
pub fn selector_string(store: &str) -> String {
    selector_labels(store)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The StatefulSet ordinal of a pod of `store` (`<store>-<ordinal>`), if the name has that form.
pub fn pod_ordinal(store: &str, pod: &str) -> Option<u32> {
    let suffix = pod.strip_prefix(store)?.strip_prefix('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}
