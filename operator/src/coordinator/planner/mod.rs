//! The pure planner: (map, membership, settings, observations) → a plan of one map change
//! (at most) and the node calls whose answers the next rounds need.
//!
//! Every decision is here and unit-tested; the runner only gathers observations and executes.
//! A round changes the map by at most one version; multi-step procedures (failover after
//! asking positions, learner admission, hand-off, moves) advance by one step per round, so a
//! restarted coordinator resumes from whatever the stored map says.

mod gray;
mod handoff;
mod moves;
mod nodes;
mod partitions;
mod recover;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;

use super::input::{Membership, Settings};
use super::liveness::Liveness;
use super::status::CoordinatorEvent;
use crate::placement::{PlacementNode, Target, place};
use shardedstore_node::admin_api::{HeartbeatResponse, LogPosition};
use shardedstore_node::map::{NodeId, NodeState, PartitionId, PartitionMap};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Answer of a primary to a hand-off request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffOutcome {
    pub epoch: u64,
    pub to: NodeId,
    pub ready: bool,
}

/// What the coordinator has seen, as of `now`.
#[derive(Clone, Debug)]
pub struct Observations {
    pub now: Instant,
    /// When this coordinator started (the first map waits a little for all nodes).
    pub started: Instant,
    pub liveness: BTreeMap<NodeId, Liveness>,
    /// First time each dead node was seen dead.
    pub dead_since: BTreeMap<NodeId, Instant>,
    /// Latest heartbeat answer of each alive node. Its `map_version` is the map the node held
    /// when it answered, so what it says about partitions is as of that map.
    pub reports: BTreeMap<NodeId, HeartbeatResponse>,
    /// Map versions nodes installed since their latest heartbeat answer (the answers to this
    /// coordinator's pushes): the node holds that map, but its report still describes the
    /// partitions as of the older one.
    pub installed: BTreeMap<NodeId, u64>,
    /// Log positions of failover candidates, per (partition, epoch asked at).
    pub positions: BTreeMap<(PartitionId, u64), BTreeMap<NodeId, LogPosition>>,
    /// Learners (or lagging replicas) the primary reported ready: (partition, epoch, node).
    pub admitted: BTreeSet<(PartitionId, u64, NodeId)>,
    pub handoffs: BTreeMap<PartitionId, HandoffOutcome>,
    /// When a hand-off of each partition last failed (not ready in time, or no answer):
    /// it is not asked again before [`HANDOFF_RETRY_AFTER`] has passed.
    pub handoff_failed_at: BTreeMap<PartitionId, Instant>,
    /// Maps fetched from nodes while recovering a lost map.
    pub node_maps: BTreeMap<NodeId, PartitionMap>,
    /// Nodes that answered with another disk identity than before in this coordinator's
    /// life (an empty or foreign data directory) while the stored map still lists them in
    /// sync. Until a stored map lists them in no `inSync`, they are removed from every
    /// `inSync`, never elected, handed off to or admitted, and get no map pushed (issue
    /// item 6).
    pub new_disks: BTreeSet<NodeId>,
    /// Nodes known to hold a lease of this coordinator ([`Health::holds_lease`]): only
    /// they are handed a primary role. A node that just (re)started or joined holds none for
    /// its first heartbeat or two, and a primary without a lease answers every write
    /// `lease_expired` (clients then wait a second).
    ///
    /// [`Health::holds_lease`]: crate::coordinator::liveness::Health::holds_lease
    pub leased: BTreeSet<NodeId>,
}

impl Observations {
    pub fn new(now: Instant) -> Self {
        Self {
            now,
            started: now,
            liveness: BTreeMap::new(),
            dead_since: BTreeMap::new(),
            reports: BTreeMap::new(),
            installed: BTreeMap::new(),
            positions: BTreeMap::new(),
            admitted: BTreeSet::new(),
            handoffs: BTreeMap::new(),
            handoff_failed_at: BTreeMap::new(),
            node_maps: BTreeMap::new(),
            new_disks: BTreeSet::new(),
            leased: BTreeSet::new(),
        }
    }

    pub fn liveness(&self, node: &str) -> Liveness {
        self.liveness
            .get(node)
            .copied()
            .unwrap_or(Liveness::Unknown)
    }

    pub fn is_alive(&self, node: &str) -> bool {
        self.liveness(node) == Liveness::Alive
    }

    /// The node answered and holds exactly map `version` (one that refused it as older
    /// than its own is not current: the store is behind and gets recovered first). A push
    /// it answered counts without a heartbeat report: a node joining the store is only
    /// probed until a map lists it, and its first moves need not wait for the next tick.
    fn has_map(&self, node: &str, version: u64) -> bool {
        let reported = self.reports.get(node).map_or(0, |r| r.map_version);
        self.is_alive(node)
            && reported.max(self.installed.get(node).copied().unwrap_or(0)) == version
    }

    /// The node's latest report was made with map `version` installed: its roles and
    /// positions are as of that map. (Right after a push the node holds the map, but its
    /// report predates it: a learner just admitted still reports itself a learner.)
    fn reported_under(&self, node: &str, version: u64) -> bool {
        self.is_alive(node)
            && self
                .reports
                .get(node)
                .is_some_and(|r| r.map_version == version)
    }
}

/// A node call whose answer feeds a later round.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// Ask failover candidates where their logs end.
    Positions {
        partition: PartitionId,
        epoch: u64,
        nodes: Vec<NodeId>,
    },
    /// Ask the primary to admit a learner or lagging replica into the commit quorum.
    Admit {
        partition: PartitionId,
        epoch: u64,
        primary: NodeId,
        node: NodeId,
        /// Asked while the learner's copy is still under way: the primary waits for the copy
        /// (holding nothing back) until the learner is within this many entries of the
        /// commit point, then admits it ([`AdmitRequest::wait_for_copy_within`]).
        ///
        /// [`AdmitRequest::wait_for_copy_within`]: shardedstore_node::admin_api::AdmitRequest::wait_for_copy_within
        wait_for_copy_within: Option<u64>,
    },
    /// Ask the primary to hand off to an in-sync replica.
    Handoff {
        partition: PartitionId,
        epoch: u64,
        from: NodeId,
        to: NodeId,
    },
    /// Tell a node to drop its stale copy of a partition.
    Drop {
        node: NodeId,
        partition: PartitionId,
    },
    /// Fetch the map a node persisted (map recovery), from its client API.
    FetchMap { node: NodeId, client_addr: String },
}

/// The outcome of one planning round.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The next map (version + 1), when anything changes.
    pub map: Option<PartitionMap>,
    pub events: Vec<CoordinatorEvent>,
    pub calls: Vec<Call>,
    /// The placement target the round worked towards.
    pub target: Option<Target>,
}

/// Everything the planner reads.
pub struct Inputs<'a> {
    pub store: &'a str,
    pub map: Option<&'a PartitionMap>,
    pub membership: &'a Membership,
    pub settings: &'a Settings,
    pub obs: &'a Observations,
}

/// How long a partition whose hand-off failed keeps its primary before another hand-off is
/// asked (so that a target that cannot catch up does not stall the primary again and again).
pub const HANDOFF_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long the first map waits for every desired node before starting with enough of them.
pub const BOOTSTRAP_GRACE: Duration = Duration::from_secs(10);

/// Plans one round.
pub fn plan(inputs: &Inputs<'_>) -> Plan {
    match (inputs.map, recover::newest_on_nodes(inputs)) {
        (None, Some((node, version))) => recover::recover(inputs, &node, version),
        (Some(map), Some((node, version))) if version > map.version => {
            recover::recover(inputs, &node, version)
        }
        (None, None) => bootstrap(inputs),
        (Some(map), _) => evolve(inputs, map),
    }
}

/// The placement view of the map's nodes.
pub(crate) fn placement_nodes(map: &PartitionMap) -> Vec<PlacementNode> {
    map.nodes
        .iter()
        .map(|(id, info)| PlacementNode {
            id: id.clone(),
            state: info.state,
            zone: info.zone.clone(),
        })
        .collect()
}

/// The first map, when no node holds any: once every desired node answers and holds a lease
/// (or enough of them after a grace period).
fn bootstrap(inputs: &Inputs<'_>) -> Plan {
    let Inputs {
        store,
        membership,
        settings,
        obs,
        ..
    } = inputs;
    let desired: Vec<_> = membership
        .nodes
        .iter()
        .filter(|n| n.ordinal < membership.desired_nodes)
        .collect();
    // Only nodes that hold a lease count: a primary without one answers every write
    // `lease_expired` (clients then wait a second), and a lease takes two heartbeats.
    let alive: Vec<_> = desired
        .iter()
        .filter(|n| obs.is_alive(&n.id) && obs.leased.contains(&n.id))
        .collect();
    let enough = alive.len()
        >= (settings.replication_factor as usize)
            .min(desired.len())
            .max(1);
    let all = !desired.is_empty() && alive.len() == desired.len();
    if !(all || (enough && obs.now >= obs.started + BOOTSTRAP_GRACE)) {
        return Plan::default();
    }
    let mut map = PartitionMap::empty(
        store,
        settings.partitions,
        settings.replication_factor,
        settings.min_in_sync,
    );
    map.limits = settings.limits;
    map.rebalance_bandwidth_bytes_per_second = settings.bandwidth_bytes_per_second;
    map.restoring = settings.restoring;
    for n in alive {
        map.nodes
            .insert(n.id.clone(), nodes::info(n, NodeState::Active));
    }
    let target = place(&map, &placement_nodes(&map), settings.replication_factor);
    for (entry, tp) in map.partitions.iter_mut().zip(&target.partitions) {
        entry.epoch = 1;
        entry.primary = tp.primary.clone();
        entry.replicas = tp.replicas.clone();
        entry.in_sync = tp.replicas.clone();
    }
    nodes::record_disks(inputs, None, &mut map);
    map.version = 1;
    Plan {
        events: vec![CoordinatorEvent::MapWritten { version: 1 }],
        map: Some(map),
        calls: Vec::new(),
        target: Some(target),
    }
}

fn evolve(inputs: &Inputs<'_>, current: &PartitionMap) -> Plan {
    let mut next = current.clone();
    let mut events = Vec::new();
    let mut calls = Vec::new();
    next.replication_factor = inputs.settings.replication_factor;
    next.min_in_sync = inputs.settings.min_in_sync;
    next.limits = inputs.settings.limits;
    next.rebalance_bandwidth_bytes_per_second = inputs.settings.bandwidth_bytes_per_second;
    next.restoring = inputs.settings.restoring;

    nodes::update(inputs, &mut next, &mut events);
    let target = place(
        &next,
        &placement_nodes(&next),
        inputs.settings.replication_factor,
    );
    let force = partitions::plan_partitions(inputs, &target, &mut next, &mut events, &mut calls);
    nodes::forget_empty(inputs, &mut next);
    nodes::record_disks(inputs, Some(current), &mut next);

    let map = if next == *current && !force {
        None
    } else {
        next.version = current.version + 1;
        events.push(CoordinatorEvent::MapWritten {
            version: next.version,
        });
        Some(next)
    };
    calls.sort();
    calls.dedup();
    Plan {
        map,
        events,
        calls,
        target: Some(target),
    }
}
