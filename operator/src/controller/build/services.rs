//! The Services of a store: headless for peers, and the client Service users dial.

use super::Owner;
use super::names::{
    CLIENT_PORT, PEER_PORT, client_service_name, peer_service_name, selector_labels,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// Headless Service: stable per-pod DNS names for replication, published before pods are
/// Ready because replicas must catch up before they can become Ready.
pub fn peer_service(owner: &Owner) -> Service {
    Service {
        metadata: owner.child_meta(peer_service_name(&owner.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&owner.name)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Client Service: any node accepts any key, and topology-aware routing keeps
/// `consistency=local` reads inside the caller's zone.
pub fn client_service(owner: &Owner) -> Service {
    Service {
        metadata: owner.child_meta(client_service_name(&owner.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&owner.name)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            traffic_distribution: Some("PreferClose".to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
