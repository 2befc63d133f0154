//! The map's node table: addresses as observed, and each node's state (Active, Draining,
//! Down, Replaced) from liveness, the desired node count and `replaceAfter`.

use super::Inputs;
use crate::coordinator::input::MemberNode;
use crate::coordinator::liveness::Liveness;
use crate::coordinator::status::CoordinatorEvent;
use shardedstore_node::map::{NodeInfo, NodeState, PartitionMap};

pub(super) fn info(n: &MemberNode, state: NodeState) -> NodeInfo {
    NodeInfo {
        client_addr: n.client_addr.clone(),
        peer_addr: n.peer_addr.clone(),
        zone: n.zone.clone(),
        state,
    }
}

fn holds_replicas(map: &PartitionMap, node: &str) -> bool {
    map.partitions.iter().any(|e| e.is_member(node))
}

/// Updates addresses and states of the map's nodes and adds new alive members.
pub(super) fn update(
    inputs: &Inputs<'_>,
    map: &mut PartitionMap,
    events: &mut Vec<CoordinatorEvent>,
) {
    let Inputs {
        membership,
        settings,
        obs,
        ..
    } = inputs;
    // Nodes being replaced right now (Replaced but still holding replicas) use up the
    // `maxConcurrentReplacements` budget.
    let mut replacing = map
        .nodes
        .iter()
        .filter(|(id, n)| n.state == NodeState::Replaced && holds_replicas(map, id))
        .count() as u32;

    let mut ids: Vec<String> = map.nodes.keys().cloned().collect();
    for n in &membership.nodes {
        if !map.nodes.contains_key(&n.id) {
            ids.push(n.id.clone());
        }
    }
    for id in ids {
        let member = membership.node(&id);
        let previous = map.nodes.get(&id).map(|n| n.state);
        let liveness = match (member, obs.liveness(&id)) {
            (Some(_), l) => l,
            // Gone from the membership (pod deleted): dead once fenced, suspected until then
            // (a force-deleted pod's container may still run).
            (None, Liveness::Dead) => Liveness::Dead,
            (None, _) => Liveness::Suspected,
        };
        let draining = member.is_some_and(|m| m.ordinal >= membership.desired_nodes);
        let state = match (liveness, previous) {
            (Liveness::Alive, _) if draining => NodeState::Draining,
            (Liveness::Alive, _) => NodeState::Active,
            (Liveness::Dead, Some(NodeState::Replaced)) => NodeState::Replaced,
            (Liveness::Dead, Some(_)) => {
                let since = obs.dead_since.get(&id).copied().unwrap_or(obs.now);
                if obs.now >= since + settings.replace_after
                    && replacing < settings.max_concurrent_replacements
                {
                    replacing += 1;
                    NodeState::Replaced
                } else {
                    NodeState::Down
                }
            }
            // Suspected or not yet contacted: keep what the map says.
            (_, Some(state)) => state,
            // Never in the map and not answering: not part of the store yet.
            (_, None) => continue,
        };
        if previous != Some(state) {
            events.push(match state {
                NodeState::Active if previous == Some(NodeState::Draining) => {
                    CoordinatorEvent::NodeDraining {
                        node: id.clone(),
                        draining: false,
                    }
                }
                NodeState::Active => CoordinatorEvent::NodeUp { node: id.clone() },
                NodeState::Draining => CoordinatorEvent::NodeDraining {
                    node: id.clone(),
                    draining: true,
                },
                NodeState::Down => CoordinatorEvent::NodeDown {
                    node: id.clone(),
                    confirmed: member.is_none_or(|m| m.confirmed_dead),
                },
                NodeState::Replaced => CoordinatorEvent::NodeReplaced { node: id.clone() },
            });
        }
        let entry = match member {
            Some(m) => info(m, state),
            None => match map.nodes.get(&id) {
                Some(old) => NodeInfo {
                    state,
                    ..old.clone()
                },
                None => continue,
            },
        };
        map.nodes.insert(id, entry);
    }
}

/// Drops nodes that left the membership and hold nothing any more.
pub(super) fn forget_empty(inputs: &Inputs<'_>, map: &mut PartitionMap) {
    let gone: Vec<String> = map
        .nodes
        .keys()
        .filter(|id| inputs.membership.node(id).is_none() && !holds_replicas(map, id))
        .cloned()
        .collect();
    for id in gone {
        map.nodes.remove(&id);
    }
}

/// Records in `next.disks` the disk identity of every node whose `inSync` membership starts
/// afresh: one that `current` lists in no `inSync` (or the first map) or that `next` lists in
/// none. While a node stays listed in sync its record is kept, so it keeps naming the disk
/// whose copies the `inSync` lists mean, even if the node answers from another disk now (an
/// operator restarted while a disk was wiped never saw the old identity; the node compares
/// the record with its own and marks the copies it has to create unproven, `docs/protocol.md`).
///
/// The identity is the one of the node's latest heartbeat answer. A node entering `inSync`
/// without one (it cannot be: admission needs an alive node) loses its record rather than
/// keep a stale one; records of nodes that left the map are dropped.
pub(super) fn record_disks(
    inputs: &Inputs<'_>,
    current: Option<&PartitionMap>,
    next: &mut PartitionMap,
) {
    let in_sync = |m: &PartitionMap, n: &str| m.partitions.iter().any(|e| e.is_in_sync(n));
    let ids: Vec<String> = next.nodes.keys().cloned().collect();
    for id in ids {
        let was = current.is_some_and(|m| in_sync(m, &id));
        let is = in_sync(next, &id);
        if was && is {
            continue;
        }
        let reported = inputs
            .obs
            .reports
            .get(&id)
            .map(|r| r.disk_id.as_str())
            .filter(|d| !d.is_empty());
        match reported {
            Some(d) => {
                next.disks.insert(id, d.to_owned());
            }
            None if is => {
                next.disks.remove(&id);
            }
            None => {}
        }
    }
    let nodes = &next.nodes;
    next.disks.retain(|id, _| nodes.contains_key(id));
}
