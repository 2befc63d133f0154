//! Moves: adding learners where the target wants a replica (within the per-node budget) and
//! removing replicas the target dropped once their replacements are in sync.

use super::partitions::Round;
use crate::coordinator::status::CoordinatorEvent;
use crate::placement::{Target, TargetPartition};
use shardedstore_node::map::{NodeId, NodeState, PartitionEntry, PartitionId, PartitionMap};
use std::collections::BTreeMap;

/// Replicas being moved away: members the target no longer lists.
pub(super) fn extras<'e>(e: &'e PartitionEntry, tp: &TargetPartition) -> Vec<&'e NodeId> {
    e.members().filter(|n| !tp.replicas.contains(n)).collect()
}

/// Moves each node takes part in (as destination or source).
pub(super) fn moves_in_flight(map: &PartitionMap, target: &Target) -> BTreeMap<NodeId, u32> {
    let mut busy: BTreeMap<NodeId, u32> = BTreeMap::new();
    for (e, tp) in map.partitions.iter().zip(&target.partitions) {
        for l in &e.learners {
            *busy.entry(l.clone()).or_default() += 1;
            if let Some(src) = extras(e, tp).into_iter().find(|n| !e.learners.contains(n)) {
                *busy.entry(src.clone()).or_default() += 1;
            }
        }
    }
    busy
}

/// Removes members the target dropped: cancelled learners and dead replicas at once, live
/// replicas once every target replica is in sync. The primary leaves through a hand-off.
pub(super) fn remove_extras(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    tp: &TargetPartition,
    primary: &str,
    events: &mut Vec<CoordinatorEvent>,
) {
    let target_in_sync = tp.replicas.iter().all(|n| e.in_sync.contains(n));
    let leaving: Vec<NodeId> = extras(e, tp)
        .into_iter()
        .filter(|n| n.as_str() != primary)
        .cloned()
        .collect();
    for n in leaving {
        let learner = e.learners.contains(&n);
        let gone =
            round.states.get(&n) == Some(&NodeState::Replaced) || !round.states.contains_key(&n);
        if !(learner || gone || target_in_sync) {
            continue;
        }
        e.learners.retain(|m| *m != n);
        e.replicas.retain(|m| *m != n);
        e.in_sync.retain(|m| *m != n);
        let to = tp
            .replicas
            .iter()
            .find(|t| {
                !round
                    .inputs
                    .map
                    .is_some_and(|m| m.partitions[p as usize].replicas.contains(t))
            })
            .or_else(|| tp.replicas.first())
            .cloned();
        match (learner, to) {
            (true, _) | (false, None) => events.push(CoordinatorEvent::MoveFailed {
                partition: p,
                to: n,
                reason: "cancelled: the placement no longer wants this replica".into(),
            }),
            (false, Some(to)) => events.push(CoordinatorEvent::MoveFinished {
                partition: p,
                from: Some(n),
                to,
            }),
        }
    }
}

/// Starts one move (adds a learner) where the target wants a replica the partition lacks,
/// within `maxConcurrentMovesPerNode`; nothing starts while paused.
pub(super) fn start_move(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    tp: &TargetPartition,
    busy: &mut BTreeMap<NodeId, u32>,
    events: &mut Vec<CoordinatorEvent>,
) {
    let settings = round.inputs.settings;
    if settings.paused || !e.learners.is_empty() {
        return;
    }
    let max = settings.max_concurrent_moves_per_node.max(1);
    let source = extras(e, tp).into_iter().find(|n| round.alive(n)).cloned();
    if source
        .as_ref()
        .is_some_and(|s| busy.get(s).copied().unwrap_or(0) >= max)
    {
        return;
    }
    let Some(to) = tp
        .replicas
        .iter()
        .find(|n| {
            !e.is_member(n)
                && round.alive(n)
                && round.active(n)
                && round.current(n)
                && busy.get(*n).copied().unwrap_or(0) < max
        })
        .cloned()
    else {
        return;
    };
    e.learners.push(to.clone());
    *busy.entry(to.clone()).or_default() += 1;
    if let Some(s) = &source {
        *busy.entry(s.clone()).or_default() += 1;
    }
    events.push(CoordinatorEvent::MoveStarted {
        partition: p,
        from: source,
        to,
    });
}
