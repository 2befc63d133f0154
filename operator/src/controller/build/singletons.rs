//! The PodDisruptionBudget, the partition-map ConfigMap and the peer-token Secret.

use super::Owner;
use super::names::{
    TOKEN_KEY, partition_map_name, peer_token_name, selector_labels, statefulset_name,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The budget for voluntary disruptions (drains, evictions): `max_unavailable` pods, which
/// reconcile derives from the partitions' health (`disruption::max_unavailable`). Pods that
/// are not Ready serve nothing, so evicting them is always allowed: a crash-looping pod must
/// not block a node drain.
pub fn pod_disruption_budget(owner: &Owner, max_unavailable: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.child_meta(statefulset_name(&owner.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The partition-map ConfigMap with metadata only. The coordinator is the only writer of its
/// `map.json`, so what the controller applies never names the data field.
pub fn partition_map(owner: &Owner) -> ConfigMap {
    ConfigMap {
        metadata: owner.child_meta(partition_map_name(&owner.name)),
        ..ConfigMap::default()
    }
}

/// The peer-token Secret with a fresh random token. Created once and never rotated by
/// reconcile: every node and the coordinator must agree on it.
pub fn peer_token(owner: &Owner, token: String) -> Secret {
    Secret {
        metadata: owner.child_meta(peer_token_name(&owner.name)),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), token)])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// A random token of 32 bytes, hex-encoded.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
