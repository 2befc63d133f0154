//! The StatefulSet of storage pods, and how many replicas it may have during a scale-in.

use super::Owner;
use super::names::{
    CLIENT_PORT, METRICS_PORT, PEER_PORT, TOKEN_KEY, peer_service_name, peer_token_name,
    selector_labels, statefulset_name,
};
use super::pod::{
    SHUTDOWN_HANDOFF_SECONDS, TERMINATION_GRACE_SECONDS, affinity, container_security_context,
    default_resources, pod_security_context, probes, tmp_volume, topology_spread,
};
use super::tls::tls_pod_parts;
use crate::crd::ShardedStoreSpec;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, SecretVolumeSource,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// Environment of the storage node: its id (the pod name).
pub const ENV_NODE_ID: &str = "SHARDEDSTORE_NODE_ID";
/// Environment of the storage node: the store it belongs to.
pub const ENV_STORE: &str = "SHARDEDSTORE_STORE";
/// Environment of the storage node: the file holding the shared peer/admin token (the
/// Secret is mounted as a file rather than passed in the environment, which leaks into
/// crash reports and `/proc/<pid>/environ`).
pub const ENV_PEER_TOKEN_FILE: &str = "SHARDEDSTORE_PEER_TOKEN_FILE";
const TOKEN_VOLUME: &str = "peer-token";
const TOKEN_DIR: &str = "/var/run/shardedstore/peer-token";
/// Environment of the storage node: how long it waits on SIGTERM for its primaries to be
/// handed off (the operator cordons a terminating pod) before it stops serving.
pub const ENV_SHUTDOWN_HANDOFF: &str = "SHARDEDSTORE_SHUTDOWN_HANDOFF_SECONDS";
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
    let (tls_volumes, _, _) = tls_pod_parts(spec.tls.as_ref(), &owner.name, &owner.namespace);
    let mut volumes = vec![tmp_volume().0, token_volume(owner)];
    volumes.extend(tls_volumes);
    PodSpec {
        containers: vec![container(owner, spec)],
        volumes: Some(volumes),
        security_context: Some(pod_security_context()),
        // The node never talks to the API server.
        automount_service_account_token: Some(false),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        affinity: Some(affinity(&owner.name, placement.affinity.as_ref())),
        // Spread pods over zones (so placement can put replicas in distinct zones) and hosts.
        topology_spread_constraints: Some(topology_spread(&owner.name, &placement.zone_label)),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
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
    let (startup, readiness, liveness) = probes();
    let (_, tls_mounts, tls_env) = tls_pod_parts(spec.tls.as_ref(), &owner.name, &owner.namespace);
    let mut env = env(owner);
    env.extend(tuning_env(spec));
    env.extend(tls_env);
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        tmp_volume().1,
        VolumeMount {
            name: TOKEN_VOLUME.to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    mounts.extend(tls_mounts);
    Container {
        name: "node".to_owned(),
        image: spec.image.clone(),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_owned()),
        ports: Some(vec![
            port("client", CLIENT_PORT),
            port("peer", PEER_PORT),
            port("metrics", METRICS_PORT),
        ]),
        env: Some(env),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        startup_probe: Some(startup),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
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
        value(ENV_PEER_TOKEN_FILE, format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        value("SHARDEDSTORE_DATA_DIR", DATA_DIR.to_owned()),
        value("SHARDEDSTORE_CLIENT_ADDR", format!("0.0.0.0:{CLIENT_PORT}")),
        value("SHARDEDSTORE_PEER_ADDR", format!("0.0.0.0:{PEER_PORT}")),
        value(
            "SHARDEDSTORE_METRICS_ADDR",
            format!("0.0.0.0:{METRICS_PORT}"),
        ),
        value(ENV_SHUTDOWN_HANDOFF, SHUTDOWN_HANDOFF_SECONDS.to_string()),
    ]
}

/// The node settings `spec.tuning` sets, as the node's environment variables: none for an
/// unset field, so the template (and the pods) stay as they were until one is set. A value the
/// validation refuses is not passed on (the operator reports it and acts on nothing).
fn tuning_env(spec: &ShardedStoreSpec) -> Vec<EnvVar> {
    let t = &spec.tuning;
    let interval = crate::controller::validate::checkpoint_interval(spec);
    [
        (
            "SHARDEDSTORE_CHECKPOINT_INTERVAL_MS",
            interval.map(|d| d.as_millis().to_string()),
        ),
        (
            "SHARDEDSTORE_APPENDS_IN_FLIGHT",
            t.appends_in_flight.map(|n| n.to_string()),
        ),
        (
            "SHARDEDSTORE_LOG_WINDOW",
            t.log_window_entries.map(|n| n.to_string()),
        ),
        (
            "SHARDEDSTORE_LOG_WINDOW_BYTES",
            t.log_window_bytes.map(|n| n.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(|v| EnvVar {
            name: name.to_owned(),
            value: Some(v),
            value_from: None,
        })
    })
    .collect()
}

/// The peer-token Secret as a read-only file, readable by the node through its fsGroup.
fn token_volume(owner: &Owner) -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(peer_token_name(&owner.name)),
            items: Some(vec![KeyToPath {
                key: TOKEN_KEY.to_owned(),
                path: TOKEN_KEY.to_owned(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
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

/// Size and class of the data volume of a StatefulSet's claim template.
fn volume_of(sts: &StatefulSet) -> Option<(Option<String>, Option<String>)> {
    let pvc = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?;
    let spec = pvc.spec.as_ref()?;
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    Some((size, spec.storage_class_name.clone()))
}

/// Keeps the existing volume claim templates in `desired` when the store asks for others:
/// the API server refuses any change to them, and failing that apply would stop every other
/// change too. Returns what was refused, for the status.
pub fn keep_volume_claims(
    desired: &mut StatefulSet,
    current: Option<&StatefulSet>,
) -> Option<String> {
    let current = current?;
    let (was, wanted) = (volume_of(current)?, volume_of(desired)?);
    if was == wanted {
        return None;
    }
    let existing = current.spec.as_ref()?.volume_claim_templates.clone();
    if let Some(spec) = desired.spec.as_mut() {
        spec.volume_claim_templates = existing;
    }
    let show = |(size, class): &(Option<String>, Option<String>)| {
        format!(
            "size {} class {}",
            size.as_deref().unwrap_or("unset"),
            class.as_deref().unwrap_or("(default)")
        )
    };
    Some(format!(
        "spec.storage asks for {} but the pods' volumes were created with {}; a StatefulSet cannot change its volumes, so the change is not applied (set spec.storage back, or expand each PersistentVolumeClaim data-<store>-<n>)",
        show(&wanted),
        show(&was)
    ))
}
