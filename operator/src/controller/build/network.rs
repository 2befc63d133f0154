//! The NetworkPolicy of a store's pods: the peer port (replication and the admin API the
//! operator drives) accepts only the store's own pods and the operator; the client port
//! accepts the peers the store names (everyone by default); the metrics port stays open to
//! scrapers.

use super::Owner;
use super::names::{CLIENT_PORT, METRICS_PORT, PEER_PORT, selector_labels};
use crate::crd::ShardedStoreSpec;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label of the operator's pods (set by the Helm chart) that the peer port admits.
pub const OPERATOR_COMPONENT_LABEL: (&str, &str) = ("shardedstore.io/component", "operator");

fn tcp(port: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    }])
}

fn pods(labels: BTreeMap<String, String>, any_namespace: bool) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        }),
        namespace_selector: any_namespace.then(LabelSelector::default),
        ip_block: None,
    }
}

/// The store's NetworkPolicy, or `None` when `spec.network.policy` is off. The operator may
/// run in any namespace, so its pods are admitted by label; the peer token still guards
/// every peer request.
pub fn network_policy(owner: &Owner, spec: &ShardedStoreSpec) -> Option<NetworkPolicy> {
    if !spec.network.policy {
        return None;
    }
    let (key, value) = OPERATOR_COMPONENT_LABEL;
    let operator = BTreeMap::from([(key.to_owned(), value.to_owned())]);
    let clients = &spec.network.clients_from;
    Some(NetworkPolicy {
        metadata: owner.child_meta(owner.name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![
                        pods(selector_labels(&owner.name), false),
                        pods(operator, true),
                    ]),
                    ports: tcp(PEER_PORT),
                },
                NetworkPolicyIngressRule {
                    // No `from`: any source, unless the store lists its clients.
                    from: (!clients.is_empty()).then(|| {
                        let mut from = clients.clone();
                        // Nodes forward client requests to the primary.
                        from.push(pods(selector_labels(&owner.name), false));
                        from
                    }),
                    ports: tcp(CLIENT_PORT),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: tcp(METRICS_PORT),
                },
            ]),
            egress: None,
        }),
    })
}
