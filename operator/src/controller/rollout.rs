//! Rolling restart after an image or resource change (pure planning).
//!
//! The StatefulSet uses `OnDelete`, so a changed pod template only takes effect when the
//! operator deletes a pod. One pod at a time, highest ordinal first: the pod is cordoned so
//! the coordinator hands its primaries off, it is deleted once it leads nothing, and the next
//! one waits until every pod is Ready again and every partition is fully in sync.

use crate::coordinator::CoordinatorStatus;
use shardedstore_node::map::PartitionMap;

/// The facts about one storage pod that the rollout needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRevision {
    pub name: String,
    pub ordinal: u32,
    /// The pod's `controller-revision-hash` label.
    pub revision: Option<String>,
    pub ready: bool,
    pub deleting: bool,
    pub uid: Option<String>,
}

/// What the rollout wants now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every pod runs the current template.
    Done,
    /// Pods remain to restart, but not now (reason for the status).
    Waiting { pending: usize, reason: String },
    /// Cordon `pod` so its primaries move away; delete it once it leads nothing.
    Cordon { pending: usize, pod: String },
    /// `pod` leads nothing: delete it (it comes back with the new template).
    Delete {
        pending: usize,
        pod: String,
        uid: Option<String>,
    },
}

impl Rollout {
    /// The pod the coordinator must treat as cordoned, if any.
    pub fn cordoned(&self) -> Option<&str> {
        match self {
            Self::Cordon { pod, .. } | Self::Delete { pod, .. } => Some(pod),
            _ => None,
        }
    }

    /// Pods still on an old revision.
    pub fn pending(&self) -> usize {
        match self {
            Self::Done => 0,
            Self::Waiting { pending, .. }
            | Self::Cordon { pending, .. }
            | Self::Delete { pending, .. } => *pending,
        }
    }
}

/// The next rollout step for pods of a StatefulSet at `update_revision` with `replicas` pods,
/// given the stored partition map and the coordinator's latest report.
pub fn plan(
    pods: &[PodRevision],
    update_revision: Option<&str>,
    replicas: i32,
    map: Option<&PartitionMap>,
    coordinator: &CoordinatorStatus,
) -> Rollout {
    let Some(target_revision) = update_revision else {
        return Rollout::Done;
    };
    let in_set = |p: &&PodRevision| i64::from(p.ordinal) < i64::from(replicas);
    let mut outdated: Vec<&PodRevision> = pods
        .iter()
        .filter(in_set)
        .filter(|p| p.revision.as_deref() != Some(target_revision))
        .collect();
    if outdated.is_empty() {
        return Rollout::Done;
    }
    let pending = outdated.len();
    let present = pods.iter().filter(in_set).count();
    let unready = pods
        .iter()
        .filter(in_set)
        .filter(|p| !p.ready || p.deleting)
        .count();
    if unready > 0 || i64::try_from(present).unwrap_or(i64::MAX) < i64::from(replicas) {
        return Rollout::Waiting {
            pending,
            reason: "waiting for every pod to be Ready before restarting the next".to_owned(),
        };
    }
    if let Some(m) = map
        && coordinator.map_version < m.version
    {
        // Just started (e.g. after an operator restart): its view is not the map's yet.
        return Rollout::Waiting {
            pending,
            reason: "waiting for the coordinator to load the partition map".to_owned(),
        };
    }
    if map.is_some() && !coordinator.all_in_sync {
        return Rollout::Waiting {
            pending,
            reason:
                "waiting for every partition to be fully in sync before restarting the next pod"
                    .to_owned(),
        };
    }
    outdated.sort_by_key(|p| p.ordinal);
    let Some(target) = outdated.pop() else {
        return Rollout::Done;
    };
    let leads = map.is_some_and(|m| {
        m.partitions
            .iter()
            .any(|p| p.primary.as_deref() == Some(target.name.as_str()))
    });
    if leads {
        Rollout::Cordon {
            pending,
            pod: target.name.clone(),
        }
    } else {
        Rollout::Delete {
            pending,
            pod: target.name.clone(),
            uid: target.uid.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardedstore_node::map::PartitionEntry;

    fn pod(ordinal: u32, revision: &str) -> PodRevision {
        PodRevision {
            name: format!("kv-{ordinal}"),
            ordinal,
            revision: Some(revision.to_owned()),
            ready: true,
            deleting: false,
            uid: Some(format!("uid-{ordinal}")),
        }
    }

    /// A map (version 4) where partition `i` has primary `kv-<primaries[i]>`.
    fn map(primaries: &[u32]) -> PartitionMap {
        let mut m = PartitionMap::empty("kv", u32::try_from(primaries.len()).unwrap_or(0), 1, 1);
        m.version = 4;
        for (entry, p) in m.partitions.iter_mut().zip(primaries) {
            let node = format!("kv-{p}");
            *entry = PartitionEntry {
                epoch: 1,
                primary: Some(node.clone()),
                replicas: vec![node.clone()],
                in_sync: vec![node],
                learners: vec![],
            };
        }
        m
    }

    fn settled() -> CoordinatorStatus {
        CoordinatorStatus {
            map_version: 4,
            all_in_sync: true,
            ..CoordinatorStatus::default()
        }
    }

    #[test]
    fn nothing_to_do_when_every_pod_is_current() {
        let pods = [pod(0, "new"), pod(1, "new")];
        let m = map(&[0, 1]);
        assert_eq!(
            plan(&pods, Some("new"), 2, Some(&m), &settled()),
            Rollout::Done
        );
        assert_eq!(plan(&pods, None, 2, Some(&m), &settled()), Rollout::Done);
    }

    #[test]
    fn highest_outdated_pod_is_cordoned_then_deleted_once_it_leads_nothing() {
        let pods = [pod(0, "old"), pod(1, "old"), pod(2, "new")];
        let step = plan(&pods, Some("new"), 3, Some(&map(&[0, 1, 2])), &settled());
        assert_eq!(
            step,
            Rollout::Cordon {
                pending: 2,
                pod: "kv-1".into()
            }
        );
        assert_eq!(step.cordoned(), Some("kv-1"));
        let step = plan(&pods, Some("new"), 3, Some(&map(&[0, 0, 2])), &settled());
        assert_eq!(
            step,
            Rollout::Delete {
                pending: 2,
                pod: "kv-1".into(),
                uid: Some("uid-1".into())
            }
        );
        assert_eq!(step.cordoned(), Some("kv-1"));
    }

    #[test]
    fn waits_for_ready_pods_full_in_sync_and_a_current_coordinator() {
        let m = map(&[0, 1, 2]);
        let mut pods = vec![pod(0, "old"), pod(1, "new"), pod(2, "new")];
        pods[2].ready = false;
        assert!(matches!(
            plan(&pods, Some("new"), 3, Some(&m), &settled()),
            Rollout::Waiting { pending: 1, .. }
        ));
        pods[2].ready = true;
        let mut lagging = settled();
        lagging.all_in_sync = false;
        let step = plan(&pods, Some("new"), 3, Some(&m), &lagging);
        assert!(
            matches!(step, Rollout::Waiting { pending: 1, .. }),
            "{step:?}"
        );
        assert_eq!(step.cordoned(), None);
        // A coordinator that has not loaded the stored map (fresh operator) reports nothing
        // trustworthy yet.
        let step = plan(
            &pods,
            Some("new"),
            3,
            Some(&m),
            &CoordinatorStatus::default(),
        );
        assert!(matches!(step, Rollout::Waiting { .. }), "{step:?}");
        // A missing pod (deleted, not yet recreated) also blocks.
        assert!(matches!(
            plan(&pods[..2], Some("new"), 3, Some(&m), &settled()),
            Rollout::Waiting { .. }
        ));
    }

    #[test]
    fn without_a_map_pods_restart_without_hand_off_and_draining_pods_are_ignored() {
        let pods = [pod(0, "old"), pod(1, "old"), pod(5, "old")];
        let step = plan(&pods, Some("new"), 2, None, &CoordinatorStatus::default());
        assert_eq!(
            step,
            Rollout::Delete {
                pending: 2,
                pod: "kv-1".into(),
                uid: Some("uid-1".into())
            }
        );
    }
}
