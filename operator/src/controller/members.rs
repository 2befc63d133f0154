//! What the coordinator is told about a store, derived purely from Kubernetes objects:
//! pods → members, spec → settings, coordinator status → the status view.

use super::build::{CLIENT_PORT, PEER_PORT, pod_ordinal};
use super::status::PartitionView;
use super::validate::parse_duration;
use crate::config::RunConfig;
use crate::coordinator::{CoordinatorStatus, MemberNode, Settings};
use crate::crd::{MoveStatus, NodeStatus, PartitionSummary, ShardedStoreSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use shardedstore_node::map::{Limits, PartitionMap};

/// The member a pod of `store` stands for; `zone` comes from the label of the pod's node.
/// `None` for pods that are not ordinals of the store's StatefulSet.
pub fn member_of(store: &str, pod: &Pod, zone: Option<String>) -> Option<MemberNode> {
    let name = pod.name_any();
    let ordinal = pod_ordinal(store, &name)?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    // Confirmed dead means the storage process certainly runs no more: its container
    // terminated or waits to (re)start (crash loop, not yet created), or the pod never ran
    // or finished (Pending, Failed, Succeeded). A deletionTimestamp alone is no proof (the
    // kubelet may be slow or cut off from the API server), and neither is phase Unknown
    // (the kubelet stopped reporting): such pods are suspected, and fenced by their lease.
    let not_running = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|st| st.terminated.is_some() || st.waiting.is_some())
            })
        });
    let never_ran_or_finished = match status.map(|s| s.phase.as_deref()) {
        None | Some(None) => true,
        Some(Some(phase)) => matches!(phase, "Pending" | "Failed" | "Succeeded"),
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let host = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
    let addr = |port: i32| {
        if host.is_empty() {
            String::new()
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    Some(MemberNode {
        id: name,
        ordinal,
        client_addr: addr(CLIENT_PORT),
        peer_addr: addr(PEER_PORT),
        zone,
        ready: ready && !deleting,
        confirmed_dead: not_running || never_ran_or_finished,
    })
}

/// Number of Ready storage pods.
pub fn ready_count(members: &[MemberNode]) -> i32 {
    i32::try_from(members.iter().filter(|m| m.ready).count()).unwrap_or(i32::MAX)
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Coordinator settings for a (validated) spec.
pub fn settings_for(spec: &ShardedStoreSpec, config: &RunConfig) -> Settings {
    let defaults = Settings::default();
    Settings {
        replication_factor: non_negative(spec.replication_factor),
        min_in_sync: non_negative(spec.effective_min_in_sync()),
        partitions: non_negative(spec.partitions),
        limits: Limits {
            max_key_bytes: non_negative(spec.limits.max_key_bytes),
            max_value_bytes: non_negative(spec.limits.max_value_bytes),
        },
        max_concurrent_moves_per_node: non_negative(spec.rebalance.max_concurrent_moves_per_node),
        max_move_bytes_per_node: u64::try_from(spec.rebalance.max_move_bytes_per_node)
            .unwrap_or(1)
            .max(1),
        bandwidth_bytes_per_second: spec
            .rebalance
            .bandwidth_bytes_per_second
            .and_then(|b| u64::try_from(b).ok()),
        paused: spec.rebalance.paused,
        replace_after: parse_duration(&spec.failover.replace_after)
            .unwrap_or(defaults.replace_after),
        max_concurrent_replacements: non_negative(spec.failover.max_concurrent_replacements),
        lag_timeout: super::validate::lag_timeout(spec).unwrap_or(defaults.lag_timeout),
        lease: config.node_lease(),
        heartbeat_interval: config.heartbeat_interval(),
        ..defaults
    }
}

fn clamp(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The status view of a coordinator snapshot.
pub fn view_of(status: &CoordinatorStatus) -> PartitionView {
    let s = &status.partition_summary;
    PartitionView {
        map_version: i64::try_from(status.map_version).unwrap_or(i64::MAX),
        summary: PartitionSummary {
            total: clamp(s.total),
            healthy: clamp(s.healthy),
            under_replicated: clamp(s.under_replicated),
            unavailable: clamp(s.unavailable),
            moving: clamp(s.moving),
        },
        moves: status
            .moves
            .iter()
            .map(|m| MoveStatus {
                partition: clamp(m.partition),
                from: m.from.clone().unwrap_or_default(),
                to: m.to.clone(),
                state: format!("{:?}", m.state),
                bytes_done: i64::try_from(m.bytes_done).unwrap_or(i64::MAX),
                reason: m.reason.clone(),
            })
            .collect(),
        nodes: status
            .nodes
            .iter()
            .map(|n| NodeStatus {
                name: n.name.clone(),
                state: n.state.into(),
                replicas: clamp(n.replicas),
                primaries: clamp(n.primaries),
            })
            .collect(),
        balanced: status.balanced,
    }
}

/// Whether pod `ordinal` of `store` holds no replica according to the stored partition map
/// (the authoritative one, not a coordinator's possibly not yet loaded view). Without any
/// stored map no pod holds data.
pub fn is_drained(store: &str, map: Option<&PartitionMap>, ordinal: u32) -> bool {
    let name = format!("{store}-{ordinal}");
    map.is_none_or(|m| !m.partitions.iter().any(|p| p.is_member(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{MoveState, NodeStatus as CoordNode};
    use clap::Parser;
    use shardedstore_node::map::NodeState;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_ready_pod_becomes_a_ready_member_with_its_ip_and_zone() {
        let p = pod(
            "metadata: {name: kv-2}\nstatus:\n  phase: Running\n  podIP: 10.1.2.3\n  conditions: [{type: Ready, status: 'True'}]\n",
        );
        let m = member_of("kv", &p, Some("z1".into())).unwrap_or_else(|| panic!("no member"));
        assert_eq!(m.id, "kv-2");
        assert_eq!(m.ordinal, 2);
        assert_eq!(m.client_addr, "10.1.2.3:7000");
        assert_eq!(m.peer_addr, "10.1.2.3:7100");
        assert_eq!(m.zone.as_deref(), Some("z1"));
        assert!(m.ready && !m.confirmed_dead);
    }

    #[test]
    fn pods_whose_process_is_not_running_are_confirmed_dead() {
        let running = "phase: Running\n  podIP: 10.0.0.1\n";
        let container = |state: &str| {
            format!(
                "  containerStatuses:\n  - {{name: node, image: x, imageID: '', ready: false, restartCount: 1, state: {state}}}\n"
            )
        };
        let cases = [
            (
                "terminated",
                format!(
                    "metadata: {{name: kv-0}}\nstatus:\n  {running}{}",
                    container("{terminated: {exitCode: 137}}")
                ),
            ),
            (
                "crash loop",
                format!(
                    "metadata: {{name: kv-0}}\nstatus:\n  {running}{}",
                    container("{waiting: {reason: CrashLoopBackOff}}")
                ),
            ),
            (
                "pending",
                "metadata: {name: kv-0}\nstatus:\n  phase: Pending\n".to_owned(),
            ),
            (
                "failed",
                "metadata: {name: kv-0}\nstatus:\n  phase: Failed\n  podIP: 10.0.0.1\n".to_owned(),
            ),
        ];
        for (what, yaml) in cases {
            let m = member_of("kv", &pod(&yaml), None).unwrap_or_else(|| panic!("no member"));
            assert!(m.confirmed_dead && !m.ready, "{what}: {m:?}");
        }
        let alive = format!(
            "metadata: {{name: kv-0}}\nstatus:\n  phase: Running\n  podIP: fd00::1\n{}",
            container("{running: {}}")
        );
        let m = member_of("kv", &pod(&alive), None).unwrap_or_else(|| panic!("no member"));
        assert!(
            !m.confirmed_dead && !m.ready,
            "running but not ready: {m:?}"
        );
        assert_eq!(m.peer_addr, "[fd00::1]:7100");
        assert!(member_of("kv", &pod("metadata: {name: other-0}\n"), None).is_none());
    }

    /// Issue item 3 (deleted pods): a pod with a deletionTimestamp whose container still runs,
    /// or whose kubelet stopped reporting (phase Unknown), is not confirmed dead: its process
    /// may still serve under a lease, so it is only suspected until fenced.
    #[test]
    fn deleting_or_unreported_pods_whose_container_may_run_are_not_confirmed_dead() {
        let running = "  containerStatuses:\n  - {name: node, image: x, imageID: '', ready: true, restartCount: 0, state: {running: {}}}\n";
        let cases = [
            (
                "deleting, container running",
                format!(
                    "metadata: {{name: kv-0, deletionTimestamp: '2026-01-01T00:00:00Z'}}\nstatus:\n  phase: Running\n  podIP: 10.0.0.1\n  conditions: [{{type: Ready, status: 'True'}}]\n{running}"
                ),
            ),
            (
                "kubelet unreachable",
                format!(
                    "metadata: {{name: kv-0}}\nstatus:\n  phase: Unknown\n  podIP: 10.0.0.1\n{running}"
                ),
            ),
        ];
        for (what, yaml) in cases {
            let m = member_of("kv", &pod(&yaml), None).unwrap_or_else(|| panic!("no member"));
            assert!(!m.confirmed_dead && !m.ready, "{what}: {m:?}");
        }
        let terminated = "metadata: {name: kv-0, deletionTimestamp: '2026-01-01T00:00:00Z'}\nstatus:\n  phase: Running\n  podIP: 10.0.0.1\n  containerStatuses:\n  - {name: node, image: x, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 0}}}\n";
        let m = member_of("kv", &pod(terminated), None).unwrap_or_else(|| panic!("no member"));
        assert!(m.confirmed_dead, "terminated in Pod status: {m:?}");
    }

    #[test]
    fn settings_follow_the_spec_and_the_process_config() {
        let spec: ShardedStoreSpec = serde_yaml::from_str(
            "nodes: 5\nimage: x\nreplicationFactor: 2\nfailover: {replaceAfter: 90s}\nrebalance: {paused: true, bandwidthBytesPerSecond: 1000}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: crate::config::RunConfig,
        }
        let config = Cli::parse_from(["run", "--node-lease-ms", "3000"]).run;
        let s = settings_for(&spec, &config);
        assert_eq!(s.replication_factor, 2);
        assert_eq!(s.min_in_sync, 2);
        assert_eq!(s.partitions, 256);
        assert!(s.paused);
        assert_eq!(s.bandwidth_bytes_per_second, Some(1000));
        assert_eq!(s.replace_after, std::time::Duration::from_secs(90));
        assert_eq!(s.lease, std::time::Duration::from_millis(3000));
    }

    #[test]
    fn drained_means_no_replica_or_learner_in_the_stored_map() {
        use shardedstore_node::map::PartitionEntry;
        assert!(is_drained("kv", None, 4));
        let mut map = PartitionMap::empty("kv", 2, 2, 1);
        map.partitions[0] = PartitionEntry {
            epoch: 1,
            primary: Some("kv-0".into()),
            replicas: vec!["kv-0".into(), "kv-3".into()],
            in_sync: vec!["kv-0".into(), "kv-3".into()],
            learners: vec![],
        };
        map.partitions[1].learners = vec!["kv-4".into()];
        assert!(
            !is_drained("kv", Some(&map), 3),
            "a replica holder is not drained"
        );
        assert!(!is_drained("kv", Some(&map), 4), "a learner holds data too");
        assert!(is_drained("kv", Some(&map), 5));
    }

    #[test]
    fn coordinator_status_maps_onto_the_crd_status() {
        let mut status = CoordinatorStatus {
            map_version: 3,
            ..CoordinatorStatus::default()
        };
        status.nodes = vec![CoordNode {
            name: "kv-3".into(),
            state: NodeState::Draining,
            replicas: 2,
            primaries: 1,
        }];
        status.moves.push(crate::coordinator::MoveStatus {
            partition: 1,
            from: Some("kv-3".into()),
            to: "kv-0".into(),
            state: MoveState::CatchingUp,
            bytes_done: 5,
            reason: None,
        });
        let view = view_of(&status);
        assert_eq!(view.map_version, 3);
        assert_eq!(view.moves[0].state, "CatchingUp");
        assert_eq!(view.moves[0].from, "kv-3");
        assert_eq!(view.nodes[0].state, crate::crd::NodeLifecycle::Draining);
        assert_eq!(view.nodes[0].primaries, 1);
    }
}
