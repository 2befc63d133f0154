//! The StatefulSet of storage pods, and how many replicas it may have during a scale-in.

use super::Owner;
use super::names::{
    CLIENT_PORT, METRICS_PORT, PEER_PORT, TOKEN_KEY, peer_service_name, peer_token_name,
    selector_labels, statefulset_name,
};
use crate::crd::ShardedStoreSpec;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, TopologySpreadConstraint, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// Environment of the storage node: its id (the pod name).
pub const ENV_NODE_ID: &str = "SHARDEDSTORE_NODE_ID";
/// Environment of the storage node: the store it belongs to.
pub const ENV_STORE: &str = "SHARDEDSTORE_STORE";
/// Environment of the storage node: the shared peer/admin token.
pub const ENV_PEER_TOKEN: &str = "SHARDEDSTORE_PEER_TOKEN";
const DATA_VOLUME: &str = "data";
const DATA_DIR: &str = "/data";

/// The StatefulSet running `replicas` storage pods of the store.
pub fn statefulset(owner: &Owner, spec: &ShardedStoreSpec, replicas: i32) -> StatefulSet {
    let labels = owner.labels();
    StatefulSet {
        metadata: owner.child_meta(statefulset_name(&owner.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(peer_service_name(&owner.name)),
            // Pods start and stop together; the operator orders what matters itself.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator rolls pods one at a time after handing off their primaries.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(owner, spec)),
            },
            volume_claim_templates: Some(vec![volume_claim(spec)]),
            // A pod removed by scale-in was drained first, so its volume holds nothing the
            // store needs; volumes outlive the store itself, in case it was deleted by mistake.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Delete".to_owned()),
                    when_deleted: Some("Retain".to_owned()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(owner: &Owner, spec: &ShardedStoreSpec) -> PodSpec {
    let placement = &spec.placement;
    PodSpec {
        containers: vec![container(owner, spec)],
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        affinity: placement.affinity.clone(),
        // Spread pods over zones so the coordinator can place replicas in distinct zones.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: placement.zone_label.clone(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                match_expressions: None,
            }),
            ..TopologySpreadConstraint::default()
        }]),
        termination_grace_period_seconds: Some(30),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

fn container(owner: &Owner, spec: &ShardedStoreSpec) -> Container {
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: "node".to_owned(),
        image: spec.image.clone(),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_owned()),
        ports: Some(vec![
            port("client", CLIENT_PORT),
            port("peer", PEER_PORT),
            port("metrics", METRICS_PORT),
        ]),
        env: Some(env(owner)),
        resources: spec.resources.clone(),
        readiness_probe: Some(probe("/readyz", 2, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

fn env(owner: &Owner) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    vec![
        EnvVar {
            name: ENV_NODE_ID.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        value(ENV_STORE, owner.name.clone()),
        EnvVar {
            name: ENV_PEER_TOKEN.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: peer_token_name(&owner.name),
                    key: TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        },
        value("SHARDEDSTORE_DATA_DIR", DATA_DIR.to_owned()),
        value("SHARDEDSTORE_CLIENT_ADDR", format!("0.0.0.0:{CLIENT_PORT}")),
        value("SHARDEDSTORE_PEER_ADDR", format!("0.0.0.0:{PEER_PORT}")),
        value(
            "SHARDEDSTORE_METRICS_ADDR",
            format!("0.0.0.0:{METRICS_PORT}"),
        ),
    ]
}

fn volume_claim(spec: &ShardedStoreSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    spec.storage.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The StatefulSet replica count for `desired` nodes when it currently runs `current`.
///
/// Scaling out is immediate. Scaling in removes pods from the highest ordinal down, and only
/// pods that hold no replica (`drained(ordinal)`), so data always moves away before its pod
/// is deleted. With no knowledge of the pods' contents, nothing is removed.
pub fn statefulset_replicas(
    desired: i32,
    current: Option<i32>,
    drained: impl Fn(u32) -> bool,
) -> i32 {
    let Some(current) = current else {
        return desired;
    };
    if desired >= current {
        return desired;
    }
    let mut replicas = current;
    while replicas > desired && u32::try_from(replicas - 1).is_ok_and(&drained) {
        replicas -= 1;
    }
    replicas
}
