//! Disruptions the operator did not start (drains, evictions, node upgrades), as pure rules:
//! how many pods the PodDisruptionBudget lets go, and how a terminating pod hands off its
//! primaries instead of failing them over.
//!
//! A pod being deleted gets SIGTERM only after its `deletionTimestamp` is set, and the node
//! keeps serving for up to `SHUTDOWN_HANDOFF_SECONDS` after SIGTERM while it still leads a
//! partition. The reconcile triggered by the pod update cordons it, so the coordinator hands
//! each of its primaries to an in-sync replica (no epoch-fenced failover, no failed writes);
//! once it leads nothing the node stops. Only when its container has exited is it dead.

use super::status::PartitionView;
use crate::crd::ShardedStoreSpec;
use k8s_openapi::api::core::v1::Pod;

/// `maxUnavailable` of the store's PodDisruptionBudget. One pod may go only while every
/// partition is fully in sync and has a replica to spare above `minInSync`; otherwise (a
/// partition already degraded, the partition map not yet known, or `minInSync` equal to the
/// replication factor) an eviction could stop writes, so none is allowed.
pub fn max_unavailable(spec: &ShardedStoreSpec, view: Option<&PartitionView>) -> i32 {
    let spare = spec.replication_factor > spec.effective_min_in_sync();
    let settled = view.is_some_and(|v| {
        v.map_version > 0
            && v.summary.total > 0
            && v.summary.healthy == v.summary.total
            && v.summary.unavailable == 0
    });
    i32::from(spare && settled)
}

/// Whether `pod` is terminating while its storage container still runs: it must be cordoned
/// (hand its primaries off) and is not dead yet.
pub fn handing_off(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_none() {
        return false;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c.state.as_ref().is_some_and(|st| st.running.is_some())
                        && c.started != Some(false)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PartitionSummary;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn spec(rf: i32, min: Option<i32>) -> ShardedStoreSpec {
        let mut s: ShardedStoreSpec =
            serde_yaml::from_str("nodes: 3\nimage: x\n").unwrap_or_else(|e| panic!("{e}"));
        s.replication_factor = rf;
        s.min_in_sync = min;
        s
    }

    fn view(total: i32, healthy: i32, unavailable: i32) -> PartitionView {
        PartitionView {
            map_version: 3,
            summary: PartitionSummary {
                total,
                healthy,
                under_replicated: total - healthy - unavailable,
                unavailable,
                moving: 0,
            },
            ..PartitionView::default()
        }
    }

    #[test]
    fn one_pod_may_go_only_while_every_partition_has_a_replica_to_spare() {
        let rf3 = spec(3, None);
        assert_eq!(max_unavailable(&rf3, Some(&view(16, 16, 0))), 1);
        // One partition at minInSync (2 of 3 in sync): another eviction could stop writes.
        assert_eq!(max_unavailable(&rf3, Some(&view(16, 15, 0))), 0);
        assert_eq!(max_unavailable(&rf3, Some(&view(16, 15, 1))), 0);
        // Unknown health: the coordinator has not reported or there is no map yet.
        assert_eq!(max_unavailable(&rf3, None), 0);
        let mut no_map = view(16, 16, 0);
        no_map.map_version = 0;
        assert_eq!(max_unavailable(&rf3, Some(&no_map)), 0);
        // No replica to spare at all.
        assert_eq!(max_unavailable(&spec(2, Some(2)), Some(&view(4, 4, 0))), 0);
        assert_eq!(max_unavailable(&spec(1, None), Some(&view(4, 4, 0))), 0);
        assert_eq!(max_unavailable(&spec(2, Some(1)), Some(&view(4, 4, 0))), 1);
    }

    fn pod(deleting: bool, state: Option<ContainerState>) -> Pod {
        let mut p = Pod::default();
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        p.status = Some(PodStatus {
            container_statuses: state.map(|s| {
                vec![ContainerStatus {
                    name: "node".into(),
                    state: Some(s),
                    started: Some(true),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn a_terminating_pod_hands_off_until_its_container_exits() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated::default()),
            ..ContainerState::default()
        };
        assert!(handing_off(&pod(true, Some(running.clone()))));
        assert!(!handing_off(&pod(false, Some(running))));
        assert!(!handing_off(&pod(true, Some(exited))));
        assert!(!handing_off(&pod(true, None)));
    }
}
