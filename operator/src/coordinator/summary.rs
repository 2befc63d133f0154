//! Status computation (pure): partition health, moves in flight, per-node counts.

use super::planner::Observations;
use super::status::{CoordinatorStatus, MoveState, MoveStatus, NodeStatus, PartitionSummary};
use crate::placement::Target;
use shardedstore_node::map::PartitionMap;

/// Computes the status of `map` against the placement `target`.
pub fn summarize(
    map: &PartitionMap,
    target: Option<&Target>,
    obs: &Observations,
) -> CoordinatorStatus {
    let rf = map.replication_factor as usize;
    let mut summary = PartitionSummary {
        total: map.partition_count(),
        ..PartitionSummary::default()
    };
    let mut moves = Vec::new();
    let mut all_in_sync = true;
    let mut balanced = true;
    for (p, e) in map.partitions.iter().enumerate() {
        let p = p as u32;
        let primary_alive = e.primary.as_deref().is_some_and(|n| obs.is_alive(n));
        let want = rf.min(map.nodes.len());
        if !primary_alive || e.in_sync.len() < map.min_in_sync as usize {
            summary.unavailable += 1;
        } else if e.in_sync.len() < want {
            summary.under_replicated += 1;
        } else {
            summary.healthy += 1;
        }
        if !(primary_alive
            && e.learners.is_empty()
            && e.in_sync.len() == e.replicas.len()
            && e.replicas.len() >= want)
        {
            all_in_sync = false;
        }
        let tp = target.and_then(|t| t.partition(p));
        let extras: Vec<&String> = match tp {
            Some(tp) => e.members().filter(|n| !tp.replicas.contains(n)).collect(),
            None => Vec::new(),
        };
        let missing = tp.is_some_and(|tp| tp.replicas.iter().any(|n| !e.is_member(n)));
        let primary_off = tp.is_some_and(|tp| tp.primary.is_some() && tp.primary != e.primary);
        if !extras.is_empty() || missing || primary_off || !e.learners.is_empty() {
            balanced = false;
        }
        // A move is in flight from the moment its learner is added until the source replica
        // is removed; extras whose replacement has not started yet are not moves yet.
        let removal_due = tp.is_some_and(|tp| tp.replicas.iter().all(|n| e.in_sync.contains(n)));
        if !e.learners.is_empty() || (!extras.is_empty() && removal_due) {
            summary.moving += 1;
        }
        let source = extras
            .iter()
            .find(|n| !e.learners.contains(n))
            .map(|n| (*n).clone());
        for l in &e.learners {
            let bytes_done = obs
                .reports
                .get(l)
                .and_then(|r| r.partitions.iter().find(|s| s.partition == p))
                .map_or(0, |s| s.bytes);
            let reason = if !primary_alive {
                Some("the partition has no live primary".to_owned())
            } else if !obs.is_alive(l) {
                Some(format!("destination {l} is not answering"))
            } else {
                None
            };
            moves.push(MoveStatus {
                partition: p,
                from: source.clone(),
                to: l.clone(),
                state: MoveState::CatchingUp,
                bytes_done,
                reason,
            });
        }
        if e.learners.is_empty()
            && removal_due
            && let Some(src) = &source
            && let Some(tp) = tp
        {
            let state = if e.primary.as_ref() == Some(src) {
                MoveState::HandingOff
            } else {
                MoveState::RemovingSource
            };
            let to = tp
                .replicas
                .iter()
                .find(|n| !e.replicas.contains(n))
                .or_else(|| tp.replicas.first())
                .cloned()
                .unwrap_or_default();
            moves.push(MoveStatus {
                partition: p,
                from: Some(src.clone()),
                to,
                state,
                bytes_done: 0,
                reason: None,
            });
        }
    }
    let nodes: Vec<NodeStatus> = map
        .nodes
        .iter()
        .map(|(id, info)| NodeStatus {
            name: id.clone(),
            state: info.state,
            replicas: map.partitions.iter().filter(|e| e.is_member(id)).count() as u32,
            primaries: map
                .partitions
                .iter()
                .filter(|e| e.primary.as_ref() == Some(id))
                .count() as u32,
        })
        .collect();
    let empty_nodes = nodes
        .iter()
        .filter(|n| n.replicas == 0)
        .map(|n| n.name.clone())
        .collect();
    CoordinatorStatus {
        map_version: map.version,
        partition_summary: summary,
        moves,
        nodes,
        empty_nodes,
        all_in_sync,
        balanced,
    }
}
