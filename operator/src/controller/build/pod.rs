//! What makes a storage pod fit for a production cluster: the Pod Security "restricted"
//! contexts, scheduling spread over hosts and zones, probes and default resources.

use super::names::selector_labels;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, EmptyDirVolumeSource, HTTPGetAction, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The unprivileged user and group the node runs as (the image's `nonroot`).
pub const RUN_AS: i64 = 65532;
/// Kubernetes node label naming the host.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Seconds between SIGTERM and SIGKILL of a storage pod.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// Of the grace period, how long the node waits for its primaries to be handed off before
/// it stops serving; the rest is for closing connections and the final fsync.
pub const SHUTDOWN_HANDOFF_SECONDS: i64 = TERMINATION_GRACE_SECONDS - 15;
/// Writable scratch directory (the root file system is read-only).
pub const TMP_VOLUME: &str = "tmp";
const TMP_DIR: &str = "/tmp";

/// Pod-level security: non-root, and `fsGroup` so a freshly formatted volume (owned by root)
/// becomes writable by the node. `OnRootMismatch` keeps restarts fast on large volumes.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// Container-level security: everything the "restricted" profile asks for, and a read-only
/// root file system (the node writes only to its volume and `/tmp`).
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The in-memory `/tmp` volume and its mount.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity("64Mi".to_owned())),
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: TMP_VOLUME.to_owned(),
            mount_path: TMP_DIR.to_owned(),
            ..VolumeMount::default()
        },
    )
}

/// Requests and limits when the store sets none: enough for a small store, and a memory
/// limit so a runaway node cannot starve its neighbours.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("250m")),
            ("memory".to_owned(), q("256Mi")),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), q("2")),
            ("memory".to_owned(), q("1Gi")),
        ])),
        claims: None,
    }
}

/// The three probes: `(startup, readiness, liveness)`. Opening storage replays the log before
/// any port binds, so the startup probe allows up to 30 minutes of recovery before liveness
/// (which would restart the pod after a minute) takes over.
pub fn probes() -> (Probe, Probe, Probe) {
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    (
        probe("/healthz", 5, 360),
        probe("/readyz", 2, 3),
        probe("/healthz", 10, 6),
    )
}

fn pod_selector(store: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(store)),
        match_expressions: None,
    }
}

/// Spread the pods evenly over zones and hosts. Both are soft: a small or single-zone cluster
/// still schedules every pod, and placement keeps replicas of a partition on distinct pods.
pub fn topology_spread(store: &str, zone_label: &str) -> Vec<TopologySpreadConstraint> {
    [zone_label, HOSTNAME_LABEL]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(pod_selector(store)),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

/// The user's affinity, with a preferred (soft) anti-affinity between pods of the store on
/// one host added unless the user set pod anti-affinity themselves.
pub fn affinity(store: &str, user: Option<&Affinity>) -> Affinity {
    let mut affinity = user.cloned().unwrap_or_default();
    if affinity.pod_anti_affinity.is_none() {
        affinity.pod_anti_affinity = Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(pod_selector(store)),
                        topology_key: HOSTNAME_LABEL.to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        });
    }
    affinity
}
