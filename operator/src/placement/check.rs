//! Invariants of a target assignment ([`check`]) and movement accounting ([`moves`],
//! [`lower_bound_moves`]) used by the property tests and the coordinator's status.

use super::{PlacementNode, Target};
use shardedstore_node::map::{NodeId, NodeState, PartitionMap};
use std::collections::{BTreeMap, BTreeSet};

/// One broken placement invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("partition {partition}: node {node} listed twice")]
    DuplicateReplica { partition: u32, node: NodeId },
    #[error("partition {partition}: node {node} is unknown")]
    UnknownNode { partition: u32, node: NodeId },
    #[error("partition {partition}: node {node} is {state:?} and may not receive replicas")]
    IneligibleNode {
        partition: u32,
        node: NodeId,
        state: NodeState,
    },
    #[error("partition {partition}: {have} replicas, expected {want}")]
    WrongReplicaCount {
        partition: u32,
        have: usize,
        want: usize,
    },
    #[error("partition {partition}: two replicas in zone {zone:?} while another zone is unused")]
    ZoneCollision {
        partition: u32,
        zone: Option<String>,
    },
    #[error("replicas per Active node range from {min} ({min_node}) to {max} ({max_node})")]
    ReplicaImbalance {
        min_node: NodeId,
        min: u32,
        max_node: NodeId,
        max: u32,
    },
    #[error("partition {partition}: primary {node} is not an Active replica")]
    BadPrimary { partition: u32, node: NodeId },
    #[error("partition {partition}: has Active replicas but no primary")]
    MissingPrimary { partition: u32 },
    #[error("primaries per Active node range from {min} ({min_node}) to {max} ({max_node})")]
    PrimaryImbalance {
        min_node: NodeId,
        min: u32,
        max_node: NodeId,
        max: u32,
    },
}

/// Validates every placement invariant of `target` (see the module docs). Balance is required
/// only when zones are absent, or all zones have the same number of Active nodes and no Down
/// node holds replicas: otherwise zone spread takes precedence over balance. Primary balance is
/// also waived while a Down node holds replicas (its partitions' primaries are forced).
pub fn check(target: &Target, nodes: &[PlacementNode], replication_factor: u32) -> Vec<Violation> {
    let mut out = Vec::new();
    let by_id: BTreeMap<&str, &PlacementNode> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let active: Vec<&PlacementNode> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .collect();
    let mut zone_sizes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for n in &active {
        *zone_sizes.entry(n.zone.as_deref()).or_default() += 1;
    }
    let mut replicas: BTreeMap<&str, u32> = active.iter().map(|n| (n.id.as_str(), 0)).collect();
    let mut primaries = replicas.clone();
    let rf = replication_factor as usize;

    for (p, tp) in target.partitions.iter().enumerate() {
        let partition = p as u32;
        let mut seen = BTreeSet::new();
        let mut down = 0;
        let mut zones: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for id in &tp.replicas {
            if !seen.insert(id) {
                out.push(Violation::DuplicateReplica {
                    partition,
                    node: id.clone(),
                });
            }
            let Some(node) = by_id.get(id.as_str()) else {
                out.push(Violation::UnknownNode {
                    partition,
                    node: id.clone(),
                });
                continue;
            };
            match node.state {
                NodeState::Active => {
                    if let Some(c) = replicas.get_mut(id.as_str()) {
                        *c += 1;
                    }
                }
                NodeState::Down => down += 1,
                state => out.push(Violation::IneligibleNode {
                    partition,
                    node: id.clone(),
                    state,
                }),
            }
            *zones.entry(node.zone.as_deref()).or_default() += 1;
        }
        let want = rf.min(active.len() + down).max(down);
        if tp.replicas.len() != want {
            out.push(Violation::WrongReplicaCount {
                partition,
                have: tp.replicas.len(),
                want,
            });
        }
        let uncovered = zone_sizes.keys().any(|z| !zones.contains_key(z));
        if uncovered && let Some((zone, _)) = zones.iter().find(|(_, c)| **c > 1) {
            out.push(Violation::ZoneCollision {
                partition,
                zone: zone.map(str::to_owned),
            });
        }
        match &tp.primary {
            Some(primary) => {
                let ok = tp.replicas.contains(primary)
                    && by_id
                        .get(primary.as_str())
                        .is_some_and(|n| n.state == NodeState::Active);
                if ok {
                    if let Some(c) = primaries.get_mut(primary.as_str()) {
                        *c += 1;
                    }
                } else {
                    out.push(Violation::BadPrimary {
                        partition,
                        node: primary.clone(),
                    });
                }
            }
            None => {
                let has_active = tp.replicas.iter().any(|id| {
                    by_id
                        .get(id.as_str())
                        .is_some_and(|n| n.state == NodeState::Active)
                });
                if has_active {
                    out.push(Violation::MissingPrimary { partition });
                }
            }
        }
    }

    // Zone spread outranks balance: balance is owed when there are no zones, or when zones
    // are equal in size and no Down node pins replicas to its zone.
    let zoned = zone_sizes.len() > 1;
    let pinned = target
        .partitions
        .iter()
        .flat_map(|tp| &tp.replicas)
        .any(|id| {
            by_id
                .get(id.as_str())
                .is_some_and(|n| n.state == NodeState::Down)
        });
    let uniform_zones =
        !zoned || (!pinned && zone_sizes.values().collect::<BTreeSet<_>>().len() <= 1);
    if uniform_zones && let Some(v) = spread(&replicas, true) {
        out.push(v);
    }
    // A partition whose other replicas sit on Down nodes has a forced primary, so primary
    // balance is owed only while no Down node holds replicas.
    if uniform_zones
        && !pinned
        && let Some(v) = spread(&primaries, false)
    {
        out.push(v);
    }
    out
}

fn spread(counts: &BTreeMap<&str, u32>, replicas: bool) -> Option<Violation> {
    let (max_node, max) = counts.iter().max_by_key(|(_, c)| **c)?;
    let (min_node, min) = counts.iter().min_by_key(|(_, c)| **c)?;
    if max - min <= 1 {
        return None;
    }
    let (min_node, max_node, min, max) = (min_node.to_string(), max_node.to_string(), *min, *max);
    Some(if replicas {
        Violation::ReplicaImbalance {
            min_node,
            min,
            max_node,
            max,
        }
    } else {
        Violation::PrimaryImbalance {
            min_node,
            min,
            max_node,
            max,
        }
    })
}

/// Replica copies the target needs: (partition, node) pairs not already held (as replica or
/// learner) in `previous`.
pub fn moves(previous: &PartitionMap, target: &Target) -> usize {
    target
        .partitions
        .iter()
        .enumerate()
        .map(|(p, tp)| {
            let entry = previous.partitions.get(p);
            tp.replicas
                .iter()
                .filter(|n| !entry.is_some_and(|e| e.is_member(n)))
                .count()
        })
        .sum()
}

/// A lower bound on [`moves`] for any balanced target: both every partition's missing
/// replicas and, per node, what the quotas force to be copied.
pub fn lower_bound_moves(
    previous: &PartitionMap,
    nodes: &[PlacementNode],
    replication_factor: u32,
) -> usize {
    let state: BTreeMap<&str, NodeState> = nodes.iter().map(|n| (n.id.as_str(), n.state)).collect();
    let active = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .count();
    let rf = replication_factor as usize;
    let mut per_partition = 0;
    let mut total = 0;
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &previous.partitions {
        let members: Vec<&NodeId> = e.members().collect();
        let down = members
            .iter()
            .filter(|n| state.get(n.as_str()) == Some(&NodeState::Down))
            .count()
            .min(rf);
        let want = rf.min(active + down).saturating_sub(down);
        let have: Vec<&NodeId> = members
            .into_iter()
            .filter(|n| state.get(n.as_str()) == Some(&NodeState::Active))
            .collect();
        per_partition += want.saturating_sub(have.len());
        total += want;
        for n in have {
            *held.entry(n.as_str()).or_default() += 1;
        }
    }
    if active == 0 {
        return per_partition;
    }
    let (floor, rem) = (total / active, total % active);
    let mut counts: Vec<usize> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .map(|n| held.get(n.id.as_str()).copied().unwrap_or(0))
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let keepable: usize = counts
        .iter()
        .enumerate()
        .map(|(rank, &c)| c.min(floor + usize::from(rank < rem)))
        .sum();
    per_partition.max(total.saturating_sub(keepable))
}
