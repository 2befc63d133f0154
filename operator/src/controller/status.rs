//! Status of a ShardedStore computed purely from what reconcile applied and observed, and
//! from the coordinator's view of the partitions.

use super::build::selector_string;
use super::conditions::{self, AVAILABLE, DEGRADED, Observed, PROGRESSING, READY, RECONCILED};
use super::validate::{CapacityProblem, SpecProblem};
use crate::crd::{
    MoveStatus, NodeLifecycle, NodeStatus, PartitionSummary, ShardedStoreSpec, ShardedStoreStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What the coordinator reports about the partitions of one store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionView {
    pub map_version: i64,
    pub summary: PartitionSummary,
    pub moves: Vec<MoveStatus>,
    pub nodes: Vec<NodeStatus>,
    /// The placement is the target: no move is left to start.
    pub balanced: bool,
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub store_name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a ShardedStoreSpec,
    /// Problems of the spec; non-empty means nothing was applied.
    pub problems: &'a [SpecProblem],
    pub capacity: Option<&'a CapacityProblem>,
    /// Replica count of the StatefulSet as applied.
    pub statefulset_replicas: i32,
    /// Storage pods of the store that are Ready.
    pub ready_pods: i32,
    /// `None` until the coordinator of the store has reported.
    pub partitions: Option<&'a PartitionView>,
    /// Pods still running an old pod template (rolling restart in progress).
    pub restarts_pending: usize,
    /// The rollout as applied and observed.
    pub rollout: RolloutView,
    /// A change the StatefulSet cannot take (its volumes), kept out of what was applied.
    pub refused_storage_change: Option<String>,
    /// Something outside the spec that stops the reconcile before anything is applied
    /// (e.g. the TLS Secret is missing): the condition reason and the message.
    pub blocked: Option<(&'static str, String)>,
}

/// The pod template as applied and how many pods run it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutView {
    pub image: Option<String>,
    pub update_revision: Option<String>,
    /// Pods of the StatefulSet on `update_revision`.
    pub updated_pods: i32,
}

/// The status to write, keeping previous condition transition times where nothing flipped.
pub fn compute(obs: &Observation<'_>, previous: &[Condition], now: &Time) -> ShardedStoreStatus {
    let view = obs.partitions.cloned().unwrap_or_default();
    ShardedStoreStatus {
        observed_generation: obs.generation,
        conditions: conditions::merge(previous, &observe(obs), obs.generation, now),
        ready_nodes: obs.ready_pods,
        updated_nodes: obs.rollout.updated_pods,
        image: obs.rollout.image.clone(),
        update_revision: obs.rollout.update_revision.clone(),
        selector: selector_string(obs.store_name),
        map_version: view.map_version,
        partition_summary: view.summary,
        moves: view.moves,
        nodes: view.nodes,
    }
}

fn observe(obs: &Observation<'_>) -> Vec<Observed> {
    let nodes = obs.spec.nodes;
    let view = obs.partitions;
    let available = match view {
        None => Observed::new(
            AVAILABLE,
            false,
            "NoPartitionMap",
            "the coordinator has not reported a partition map yet",
        ),
        Some(v) if v.map_version == 0 => Observed::new(
            AVAILABLE,
            false,
            "NoPartitionMap",
            "waiting for enough ready pods to create the partition map",
        ),
        Some(v) if v.summary.unavailable > 0 => Observed::new(
            AVAILABLE,
            false,
            "PartitionsUnavailable",
            format!(
                "{} of {} partitions have no primary or fewer in-sync replicas than minInSync",
                v.summary.unavailable, v.summary.total
            ),
        ),
        Some(v) => Observed::new(
            AVAILABLE,
            true,
            "AllPartitionsAvailable",
            format!("all {} partitions accept reads and writes", v.summary.total),
        ),
    };

    let draining = obs.statefulset_replicas > nodes;
    let moving = view.is_some_and(|v| !v.moves.is_empty() || (v.map_version > 0 && !v.balanced));
    let progressing = if let Some(problem) = obs.capacity {
        Observed::new(
            PROGRESSING,
            false,
            "InsufficientCapacity",
            problem.to_string(),
        )
    } else if !obs.problems.is_empty() {
        Observed::new(
            PROGRESSING,
            false,
            "InvalidSpec",
            "the spec must be fixed first",
        )
    } else if let Some((reason, message)) = &obs.blocked {
        Observed::new(PROGRESSING, false, reason, message.clone())
    } else if draining {
        Observed::new(
            PROGRESSING,
            true,
            "Draining",
            format!(
                "scaling in to {nodes} nodes: moving replicas off the pods with ordinal >= {nodes} before removing them ({} pods now)",
                obs.statefulset_replicas
            ),
        )
    } else if obs.restarts_pending > 0 {
        Observed::new(
            PROGRESSING,
            true,
            "RollingRestart",
            format!(
                "{} pods to restart with the new pod template, one at a time",
                obs.restarts_pending
            ),
        )
    } else if obs.ready_pods < nodes {
        Observed::new(
            PROGRESSING,
            true,
            "PodsStarting",
            format!("{}/{nodes} pods ready", obs.ready_pods),
        )
    } else if moving {
        let count = view.map_or(0, |v| v.moves.len());
        Observed::new(
            PROGRESSING,
            true,
            "MovingPartitions",
            format!("{count} replica moves in flight"),
        )
    } else {
        Observed::new(
            PROGRESSING,
            false,
            "Idle",
            "every pod is ready and the partitions are balanced",
        )
    };

    let down: Vec<&str> = view
        .map(|v| {
            v.nodes
                .iter()
                .filter(|n| n.state == NodeLifecycle::Down)
                .map(|n| n.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    let degraded = match view {
        Some(v) if v.summary.under_replicated > 0 => Observed::new(
            DEGRADED,
            true,
            "UnderReplicated",
            format!(
                "{} of {} partitions have fewer in-sync replicas than replicationFactor",
                v.summary.under_replicated, v.summary.total
            ),
        ),
        Some(_) if !down.is_empty() => Observed::new(
            DEGRADED,
            true,
            "NodesDown",
            format!("nodes down: {}", down.join(", ")),
        ),
        _ => Observed::new(
            DEGRADED,
            false,
            "Healthy",
            "no partition is under-replicated",
        ),
    };

    let ready = if !obs.problems.is_empty() {
        let text: Vec<String> = obs.problems.iter().map(ToString::to_string).collect();
        Observed::new(READY, false, "InvalidSpec", text.join("; "))
    } else if let Some((reason, message)) = &obs.blocked {
        Observed::new(READY, false, reason, message.clone())
    } else if let Some(problem) = obs.capacity {
        Observed::new(READY, false, "InsufficientCapacity", problem.to_string())
    } else if obs.ready_pods < nodes {
        Observed::new(
            READY,
            false,
            "PodsNotReady",
            format!("{}/{nodes} pods ready", obs.ready_pods),
        )
    } else if !available.status {
        Observed::new(READY, false, available.reason, available.message.clone())
    } else {
        Observed::new(
            READY,
            true,
            "Ready",
            format!("{nodes} pods ready, all partitions available"),
        )
    };
    let reconciled = if !obs.problems.is_empty() {
        Observed::new(
            RECONCILED,
            false,
            "InvalidSpec",
            "nothing was applied: the spec must be fixed first",
        )
    } else if let Some((reason, message)) = &obs.blocked {
        Observed::new(
            RECONCILED,
            false,
            reason,
            format!("nothing was applied: {message}"),
        )
    } else if let Some(change) = &obs.refused_storage_change {
        Observed::new(RECONCILED, false, "StorageImmutable", change.clone())
    } else {
        Observed::new(RECONCILED, true, "Applied", "every child object is applied")
    };
    vec![ready, available, progressing, degraded, reconciled]
}

/// The `Reconciled` condition of a failed reconcile: the failure's category and its cause.
pub fn reconcile_failed(
    previous: &[Condition],
    category: &'static str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let observed = Observed::new(RECONCILED, false, category, message);
    let mut merged = conditions::merge(previous, &[observed], generation, now);
    merged.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn spec(nodes: i32) -> ShardedStoreSpec {
        serde_yaml::from_str(&format!("nodes: {nodes}\nimage: x\n"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1000).unwrap_or_else(|e| panic!("{e}")))
    }

    fn healthy(total: i32) -> PartitionView {
        PartitionView {
            map_version: 7,
            summary: PartitionSummary {
                total,
                healthy: total,
                ..PartitionSummary::default()
            },
            balanced: true,
            ..PartitionView::default()
        }
    }

    fn cond<'a>(s: &'a ShardedStoreStatus, t: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&s.conditions, t).unwrap_or_else(|| panic!("no {t}"));
        (c.status.as_str(), c.reason.as_str())
    }

    fn obs<'a>(
        spec: &'a ShardedStoreSpec,
        replicas: i32,
        ready: i32,
        view: Option<&'a PartitionView>,
    ) -> Observation<'a> {
        Observation {
            store_name: "kv",
            generation: Some(3),
            spec,
            problems: &[],
            capacity: None,
            statefulset_replicas: replicas,
            ready_pods: ready,
            partitions: view,
            restarts_pending: 0,
            rollout: RolloutView::default(),
            refused_storage_change: None,
            blocked: None,
        }
    }

    #[test]
    fn a_settled_store_is_ready_available_idle_and_healthy() {
        let s = spec(3);
        let v = healthy(256);
        let st = compute(&obs(&s, 3, 3, Some(&v)), &[], &now());
        assert_eq!(cond(&st, READY), ("True", "Ready"));
        assert_eq!(cond(&st, AVAILABLE), ("True", "AllPartitionsAvailable"));
        assert_eq!(cond(&st, PROGRESSING), ("False", "Idle"));
        assert_eq!(cond(&st, DEGRADED), ("False", "Healthy"));
        assert_eq!(cond(&st, RECONCILED), ("True", "Applied"));
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(st.ready_nodes, 3);
        assert_eq!(st.map_version, 7);
        assert_eq!(st.partition_summary.total, 256);
        assert_eq!(
            st.selector,
            "app.kubernetes.io/name=shardedstore-node,shardedstore.io/store=kv"
        );
        assert!(
            st.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn invalid_spec_lists_every_problem_in_ready() {
        let s = spec(3);
        let problems = [
            SpecProblem::EmptyImage,
            SpecProblem::PartitionsOutOfRange(0),
        ];
        let mut o = obs(&s, 0, 0, None);
        o.problems = &problems;
        let st = compute(&o, &[], &now());
        assert_eq!(cond(&st, READY), ("False", "InvalidSpec"));
        let msg = &conditions::find(&st.conditions, READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            msg.contains("image must not be empty") && msg.contains("partitions must be"),
            "{msg}"
        );
        assert_eq!(cond(&st, PROGRESSING), ("False", "InvalidSpec"));
    }

    #[test]
    fn a_blocked_reconcile_names_its_reason_in_every_condition_it_stops() {
        let s = spec(3);
        let mut o = obs(&s, 0, 0, None);
        o.blocked = Some((
            "TLSSecretInvalid",
            "Secret kv-tls has no key ca.crt".to_owned(),
        ));
        let st = compute(&o, &[], &now());
        assert_eq!(cond(&st, READY), ("False", "TLSSecretInvalid"));
        assert_eq!(cond(&st, PROGRESSING), ("False", "TLSSecretInvalid"));
        assert_eq!(cond(&st, RECONCILED), ("False", "TLSSecretInvalid"));
        let ready = conditions::find(&st.conditions, READY).map(|c| c.message.clone());
        assert_eq!(ready.as_deref(), Some("Secret kv-tls has no key ca.crt"));
    }

    #[test]
    fn scale_in_is_draining_and_refused_below_the_replication_factor() {
        let s = spec(3);
        let mut v = healthy(16);
        v.balanced = false;
        let st = compute(&obs(&s, 5, 5, Some(&v)), &[], &now());
        assert_eq!(cond(&st, PROGRESSING), ("True", "Draining"));
        assert_eq!(cond(&st, READY), ("True", "Ready"));

        let small = spec(2);
        let problem = CapacityProblem::FewerNodesThanReplicas {
            nodes: 2,
            replication_factor: 3,
        };
        let mut o = obs(&small, 3, 3, Some(&v));
        o.capacity = Some(&problem);
        let st = compute(&o, &[], &now());
        assert_eq!(cond(&st, PROGRESSING), ("False", "InsufficientCapacity"));
        assert_eq!(cond(&st, READY), ("False", "InsufficientCapacity"));
    }

    #[test]
    fn missing_pods_moves_and_under_replication_show_up() {
        let s = spec(3);
        let st = compute(&obs(&s, 3, 1, None), &[], &now());
        assert_eq!(cond(&st, READY), ("False", "PodsNotReady"));
        assert_eq!(cond(&st, AVAILABLE), ("False", "NoPartitionMap"));
        assert_eq!(cond(&st, PROGRESSING), ("True", "PodsStarting"));

        let mut v = healthy(8);
        v.summary.healthy = 5;
        v.summary.under_replicated = 2;
        v.summary.unavailable = 1;
        v.moves.push(MoveStatus {
            partition: 1,
            from: "kv-0".into(),
            to: "kv-3".into(),
            state: "CatchingUp".into(),
            bytes_done: 10,
            reason: None,
        });
        let st = compute(&obs(&s, 3, 3, Some(&v)), &[], &now());
        assert_eq!(cond(&st, READY), ("False", "PartitionsUnavailable"));
        assert_eq!(cond(&st, PROGRESSING), ("True", "MovingPartitions"));
        assert_eq!(cond(&st, DEGRADED), ("True", "UnderReplicated"));
        assert_eq!(st.moves.len(), 1);
    }

    #[test]
    fn recomputing_an_unchanged_status_keeps_transition_times() {
        let s = spec(3);
        let v = healthy(4);
        let first = compute(&obs(&s, 3, 3, Some(&v)), &[], &now());
        let later = Time(Timestamp::from_second(5000).unwrap_or_else(|e| panic!("{e}")));
        let second = compute(&obs(&s, 3, 3, Some(&v)), &first.conditions, &later);
        assert_eq!(first, second);
        let third = compute(&obs(&s, 3, 2, Some(&v)), &second.conditions, &later);
        let ready =
            conditions::find(&third.conditions, READY).map(|c| c.last_transition_time.clone());
        assert_eq!(ready, Some(later));
    }

    #[test]
    fn pending_restarts_show_as_a_rolling_restart() {
        let s = spec(3);
        let v = healthy(4);
        let mut o = obs(&s, 3, 3, Some(&v));
        o.restarts_pending = 2;
        let st = compute(&o, &[], &now());
        assert_eq!(cond(&st, PROGRESSING), ("True", "RollingRestart"));
        assert_eq!(cond(&st, READY), ("True", "Ready"));
    }

    #[test]
    fn rollout_shows_image_and_updated_pods_and_refused_storage_changes() {
        let s = spec(3);
        let v = healthy(4);
        let mut o = obs(&s, 3, 3, Some(&v));
        o.restarts_pending = 1;
        o.rollout = RolloutView {
            image: Some("node:2".into()),
            update_revision: Some("kv-abc".into()),
            updated_pods: 2,
        };
        o.refused_storage_change = Some("spec.storage changed".into());
        let st = compute(&o, &[], &now());
        assert_eq!(st.image.as_deref(), Some("node:2"));
        assert_eq!(st.update_revision.as_deref(), Some("kv-abc"));
        assert_eq!(st.updated_nodes, 2);
        assert_eq!(cond(&st, RECONCILED), ("False", "StorageImmutable"));
        // Everything else still works: the store stays Ready.
        assert_eq!(cond(&st, READY), ("True", "Ready"));
    }

    #[test]
    fn a_failed_reconcile_sets_reconciled_false_with_its_category() {
        let s = spec(3);
        let v = healthy(4);
        let st = compute(&obs(&s, 3, 3, Some(&v)), &[], &now());
        let later = Time(Timestamp::from_second(2000).unwrap_or_else(|e| panic!("{e}")));
        let c = reconcile_failed(
            &st.conditions,
            "ApplyFailed",
            "applying StatefulSet kv: forbidden".into(),
            Some(3),
            &later,
        );
        assert_eq!(c.type_, RECONCILED);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "ApplyFailed");
        assert_eq!(c.last_transition_time, later);
        assert!(c.message.contains("forbidden"));
    }
}
