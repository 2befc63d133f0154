//! Moves: adding learners where the target wants a replica (within the per-node budget: a
//! number of moves and a total of their partitions' bytes) and removing replicas the target
//! dropped once their replacements are in sync.

use super::partitions::Round;
use crate::coordinator::status::CoordinatorEvent;
use crate::placement::{Target, TargetPartition};
use shardedstore_node::admin_api::HeartbeatResponse;
use shardedstore_node::map::{NodeId, NodeState, PartitionEntry, PartitionId, PartitionMap};
use std::collections::BTreeMap;

/// Replicas being moved away: members the target no longer lists.
pub(super) fn extras<'e>(e: &'e PartitionEntry, tp: &TargetPartition) -> Vec<&'e NodeId> {
    e.members().filter(|n| !tp.replicas.contains(n)).collect()
}

/// What each node is moving: moves it takes part in (as destination or source) and the total
/// size of their partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Busy {
    moves: u32,
    bytes: u64,
}

/// The size of partition `p` in bytes: the largest figure its members report for it (the
/// primary's when it holds the most); 0 when nobody reported it.
fn partition_bytes(
    reports: &BTreeMap<NodeId, HeartbeatResponse>,
    p: PartitionId,
    e: &PartitionEntry,
) -> u64 {
    e.members()
        .filter_map(|n| reports.get(n))
        .filter_map(|r| r.partitions.iter().find(|s| s.partition == p))
        .map(|s| s.bytes)
        .max()
        .unwrap_or(0)
}

/// Moves each node takes part in (as destination or source), with their partitions' sizes.
pub(super) fn moves_in_flight(
    map: &PartitionMap,
    target: &Target,
    reports: &BTreeMap<NodeId, HeartbeatResponse>,
) -> BTreeMap<NodeId, Busy> {
    let mut busy: BTreeMap<NodeId, Busy> = BTreeMap::new();
    for (p, (e, tp)) in map.partitions.iter().zip(&target.partitions).enumerate() {
        let size = partition_bytes(reports, p as PartitionId, e);
        for l in &e.learners {
            add(&mut busy, l, size);
            if let Some(src) = extras(e, tp).into_iter().find(|n| !e.learners.contains(n)) {
                add(&mut busy, src, size);
            }
        }
    }
    busy
}

fn add(busy: &mut BTreeMap<NodeId, Busy>, n: &NodeId, bytes: u64) {
    let b = busy.entry(n.clone()).or_default();
    b.moves += 1;
    b.bytes = b.bytes.saturating_add(bytes);
}

/// Whether `n` may take part in one more move of `bytes`: fewer than `max_moves` moves in
/// flight, and either none at all or room for `bytes` within `max_bytes`.
fn has_room(
    busy: &BTreeMap<NodeId, Busy>,
    n: &str,
    bytes: u64,
    max_moves: u32,
    max_bytes: u64,
) -> bool {
    let b = busy.get(n).copied().unwrap_or_default();
    b.moves < max_moves && (b.moves == 0 || b.bytes.saturating_add(bytes) <= max_bytes)
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
/// within `maxConcurrentMovesPerNode` and `maxMoveBytesPerNode` on both the destination and
/// the source; nothing starts while paused.
pub(super) fn start_move(
    round: &Round<'_>,
    p: PartitionId,
    e: &mut PartitionEntry,
    tp: &TargetPartition,
    busy: &mut BTreeMap<NodeId, Busy>,
    events: &mut Vec<CoordinatorEvent>,
) {
    let settings = round.inputs.settings;
    if settings.paused || !e.learners.is_empty() {
        return;
    }
    let max_moves = settings.max_concurrent_moves_per_node.max(1);
    let max_bytes = settings.max_move_bytes_per_node.max(1);
    let size = partition_bytes(&round.inputs.obs.reports, p, e);
    let room = |n: &str| has_room(busy, n, size, max_moves, max_bytes);
    let source = extras(e, tp).into_iter().find(|n| round.alive(n)).cloned();
    if source.as_deref().is_some_and(|s| !room(s)) {
        return;
    }
    let Some(to) = tp
        .replicas
        .iter()
        .find(|n| {
            !e.is_member(n) && round.alive(n) && round.active(n) && round.current(n) && room(n)
        })
        .cloned()
    else {
        return;
    };
    e.learners.push(to.clone());
    add(busy, &to, size);
    if let Some(s) = &source {
        add(busy, s, size);
    }
    events.push(CoordinatorEvent::MoveStarted {
        partition: p,
        from: source,
        to,
    });
}
