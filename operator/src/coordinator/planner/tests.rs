//! Planner unit tests: one per failure and move case, on small hand-checked clusters.

use super::gray::ADMIT_WITHIN_ENTRIES;
use super::{Call, HandoffOutcome, Inputs, Observations, Plan, placement_nodes, plan};
use crate::coordinator::input::{MemberNode, Membership, Settings};
use crate::coordinator::liveness::Liveness;
use crate::coordinator::status::CoordinatorEvent;
use crate::placement::check;
use shardedstore_node::admin_api::{
    FollowerProgress, HeartbeatResponse, LogPosition, PartitionState, ReplicaRole,
};
use shardedstore_node::map::{NodeState, PartitionId, PartitionMap};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(super) fn member(i: u32) -> MemberNode {
    MemberNode {
        id: format!("node-{i}"),
        ordinal: i,
        client_addr: format!("127.0.0.1:{}", 7000 + i),
        peer_addr: format!("127.0.0.1:{}", 7100 + i),
        zone: None,
        ready: true,
        confirmed_dead: false,
    }
}

/// A node's report of one partition: its identity and role, everything else empty (tests
/// set what they need with `..state(..)`).
pub(super) fn state(partition: u32, role: ReplicaRole, epoch: u64) -> PartitionState {
    PartitionState {
        partition,
        role,
        epoch,
        position: LogPosition::default(),
        commit_seq: 0,
        applied_seq: 0,
        followers: Vec::new(),
        keys: 0,
        bytes: 0,
        unproven: false,
    }
}

/// A test world: membership, settings, observations and (once bootstrapped) the map.
pub(super) struct World {
    pub(super) membership: Membership,
    pub(super) settings: Settings,
    pub(super) obs: Observations,
    pub(super) map: Option<PartitionMap>,
    /// Most admissions [`World::settle`] grants per round (moves then finish one after
    /// another, as copies of different sizes do, instead of all in the same round).
    pub(super) admissions_per_round: usize,
}

impl World {
    pub(super) fn new(nodes: u32, partitions: u32, rf: u32) -> Self {
        let now = Instant::now();
        let mut w = Self {
            membership: Membership {
                nodes: (0..nodes).map(member).collect(),
                desired_nodes: nodes,
                cordoned: Default::default(),
            },
            settings: Settings {
                partitions,
                replication_factor: rf,
                min_in_sync: rf.min(2),
                ..Settings::default()
            },
            obs: Observations::new(now),
            map: None,
            admissions_per_round: usize::MAX,
        };
        for i in 0..nodes {
            w.set_alive(&format!("node-{i}"));
        }
        w
    }

    /// A bootstrapped world whose nodes all hold the current map.
    pub(super) fn running(nodes: u32, partitions: u32, rf: u32) -> Self {
        let mut w = Self::new(nodes, partitions, rf);
        let p = w.plan();
        w.apply(p);
        w
    }

    pub(super) fn plan(&self) -> Plan {
        plan(&Inputs {
            store: "s",
            map: self.map.as_ref(),
            membership: &self.membership,
            settings: &self.settings,
            obs: &self.obs,
        })
    }

    /// Installs the plan's map as a successful write, a push to every alive node and a
    /// heartbeat under it (every report is then made under the new map; tests of a push
    /// alone set `obs.installed` instead).
    pub(super) fn apply(&mut self, plan: Plan) {
        if let Some(map) = plan.map {
            let v = map.version;
            self.map = Some(map);
            for r in self.obs.reports.values_mut() {
                r.map_version = v;
            }
            self.obs.handoffs.clear();
        }
    }

    pub(super) fn map(&self) -> &PartitionMap {
        self.map.as_ref().unwrap_or_else(|| panic!("no map"))
    }

    /// Scale-out to one more node: `node-{i}` joins the membership, alive (and leased), and
    /// the desired count takes it in.
    pub(super) fn join(&mut self, i: u32) {
        self.membership.nodes.push(member(i));
        self.set_alive(&format!("node-{i}"));
        self.membership.desired_nodes = i + 1;
    }

    pub(super) fn set_alive(&mut self, id: &str) {
        self.obs.liveness.insert(id.to_owned(), Liveness::Alive);
        self.obs.leased.insert(id.to_owned());
        self.obs.dead_since.remove(id);
        let version = self.map.as_ref().map_or(0, |m| m.version);
        self.obs.reports.insert(
            id.to_owned(),
            HeartbeatResponse {
                node_id: id.to_owned(),
                map_version: version,
                partitions: Vec::new(),
                incarnation: 0,
                disk_id: String::new(),
                seq: 0,
                storage_stalled_ms: 0,
                lease_revoked: false,
            },
        );
    }

    pub(super) fn set_dead(&mut self, id: &str, confirmed: bool) {
        self.obs.liveness.insert(id.to_owned(), Liveness::Dead);
        self.obs.dead_since.insert(id.to_owned(), self.obs.now);
        self.obs.reports.remove(id);
        if let Some(m) = self.membership.nodes.iter_mut().find(|n| n.id == id) {
            m.confirmed_dead = confirmed;
            m.ready = false;
        }
    }

    /// Runs rounds, granting every admission and hand-off the plan asks for, until the map
    /// stops changing; returns the number of rounds.
    pub(super) fn settle(&mut self) -> usize {
        self.settle_watching(|_, _| {})
    }

    /// [`World::settle`], showing `watch` each round's plan with the map it started from.
    pub(super) fn settle_watching(
        &mut self,
        mut watch: impl FnMut(Option<&PartitionMap>, &Plan),
    ) -> usize {
        for round in 0..200 {
            let p = self.plan();
            watch(self.map.as_ref(), &p);
            let mut admissions = self.admissions_per_round;
            let calls: Vec<Call> = p
                .calls
                .iter()
                .filter(|c| {
                    let admit = matches!(c, Call::Admit { .. });
                    let granted = !admit || admissions > 0;
                    admissions -= usize::from(admit && granted);
                    granted
                })
                .cloned()
                .collect();
            let changed = p.map.is_some();
            self.apply(p);
            for call in &calls {
                match call {
                    Call::Admit {
                        partition,
                        epoch,
                        node,
                        ..
                    } => {
                        self.obs.admitted.insert((*partition, *epoch, node.clone()));
                    }
                    Call::Handoff {
                        partition,
                        epoch,
                        to,
                        ..
                    } => {
                        self.obs.handoffs.insert(
                            *partition,
                            HandoffOutcome {
                                epoch: *epoch,
                                to: to.clone(),
                                ready: true,
                            },
                        );
                    }
                    Call::Positions {
                        partition,
                        epoch,
                        nodes,
                    } => {
                        let known = self.obs.positions.entry((*partition, *epoch)).or_default();
                        for n in nodes {
                            known.insert(n.clone(), LogPosition::default());
                        }
                    }
                    Call::Drop { .. } | Call::FetchMap { .. } => {}
                }
            }
            if !changed && calls.is_empty() {
                return round;
            }
        }
        panic!("did not settle: {:#?}", self.map)
    }

    /// Turns partition 0's first in-sync follower into a learner in a new map version that
    /// every node reports under; returns it and the partition's epoch.
    pub(super) fn follower_to_learner(&mut self) -> (String, u64) {
        let m = self.map.as_mut().unwrap_or_else(|| panic!("no map"));
        let e = &mut m.partitions[0];
        let learner = e
            .in_sync
            .iter()
            .find(|n| e.primary.as_ref() != Some(*n))
            .cloned()
            .unwrap_or_else(|| panic!("no follower: {e:?}"));
        e.in_sync.retain(|n| *n != learner);
        e.replicas.retain(|n| *n != learner);
        e.learners.push(learner.clone());
        let epoch = e.epoch;
        m.version += 1;
        let v = m.version;
        for r in self.obs.reports.values_mut() {
            r.map_version = v;
        }
        (learner, epoch)
    }

    pub(super) fn primaries_of(&self, id: &str) -> Vec<u32> {
        self.map()
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, e)| e.primary.as_deref() == Some(id))
            .map(|(p, _)| p as u32)
            .collect()
    }
}

fn assert_placement_ok(map: &PartitionMap) {
    let nodes = placement_nodes(map);
    let target = crate::placement::Target {
        partitions: map
            .partitions
            .iter()
            .map(|e| crate::placement::TargetPartition {
                replicas: {
                    let mut r = e.replicas.clone();
                    r.sort();
                    r
                },
                primary: e.primary.clone(),
            })
            .collect(),
    };
    let v = check(&target, &nodes, map.replication_factor);
    assert!(v.is_empty(), "{v:?}\n{map:#?}");
    assert!(map.validate().is_ok());
}

#[test]
fn bootstrap_waits_for_every_desired_node_then_writes_a_placed_map() {
    let mut w = World::new(3, 8, 3);
    w.obs.liveness.insert("node-2".into(), Liveness::Unknown);
    assert!(w.plan().map.is_none(), "must wait for node-2");
    w.set_alive("node-2");
    let p = w.plan();
    let map = p.map.unwrap_or_else(|| panic!("no map"));
    assert_eq!(map.version, 1);
    for e in &map.partitions {
        assert_eq!(e.epoch, 1);
        assert_eq!(e.in_sync.len(), 3);
    }
    assert_placement_ok(&map);
}

/// A node that answers but holds no lease yet (its first heartbeat) does not count: named
/// primary, it would answer every write `lease_expired` until its second heartbeat.
#[test]
fn bootstrap_waits_until_the_nodes_hold_leases() {
    let mut w = World::new(4, 8, 3);
    w.obs.leased.remove("node-1");
    assert!(w.plan().map.is_none(), "must wait for node-1's lease");
    w.obs.now += super::BOOTSTRAP_GRACE;
    let map = w.plan().map.unwrap_or_else(|| panic!("no map"));
    assert_eq!(
        map.nodes.len(),
        3,
        "after the grace, the nodes holding leases"
    );
    assert!(!map.nodes.contains_key("node-1"));
    assert!(
        map.partitions
            .iter()
            .all(|e| e.primary.as_deref() != Some("node-1"))
    );
}

#[test]
fn bootstrap_starts_with_enough_nodes_after_the_grace_period() {
    let mut w = World::new(4, 8, 3);
    w.obs.liveness.insert("node-3".into(), Liveness::Unknown);
    assert!(w.plan().map.is_none());
    w.obs.now += super::BOOTSTRAP_GRACE;
    let map = w.plan().map.unwrap_or_else(|| panic!("no map"));
    assert_eq!(map.nodes.len(), 3);
}

#[test]
fn confirmed_dead_primary_fails_over_to_the_candidate_with_the_highest_log() {
    let mut w = World::running(3, 4, 3);
    let victim = "node-0";
    let led = w.primaries_of(victim);
    assert!(!led.is_empty());
    w.set_dead(victim, true);

    // First the candidates are asked for their positions.
    let p = w.plan();
    let asks: Vec<&Call> = p
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Positions { .. }))
        .collect();
    assert_eq!(asks.len(), led.len());
    w.apply(p);

    let part = led[0];
    let epoch = w.map().partitions[part as usize].epoch;
    let positions = w.obs.positions.entry((part, epoch)).or_default();
    positions.insert(
        "node-1".into(),
        LogPosition {
            last_epoch: 1,
            last_seq: 10,
        },
    );
    positions.insert(
        "node-2".into(),
        LogPosition {
            last_epoch: 1,
            last_seq: 12,
        },
    );
    let p = w.plan();
    assert!(p.events.iter().any(|e| matches!(e,
        CoordinatorEvent::Failover { partition, to, confirmed: true, .. } if *partition == part && to == "node-2")));
    w.apply(p);
    let e = &w.map().partitions[part as usize];
    assert_eq!(e.primary.as_deref(), Some("node-2"));
    assert_eq!(e.epoch, epoch + 1);
    assert!(!e.in_sync.contains(&victim.to_owned()), "{e:?}");
    assert!(e.in_sync.contains(&"node-1".to_owned()));
    assert_eq!(w.map().nodes[victim].state, NodeState::Down);
}

#[test]
fn suspected_primary_is_not_failed_over_before_its_lease_is_fenced() {
    let mut w = World::running(3, 4, 3);
    w.obs.liveness.insert("node-0".into(), Liveness::Suspected);
    w.obs.reports.remove("node-0");
    let p = w.plan();
    assert!(p.map.is_none(), "{:?}", p.map);
    assert!(
        !p.calls.iter().any(|c| matches!(c, Call::Positions { .. })),
        "{:?}",
        p.calls
    );
}

#[test]
fn out_of_sync_replicas_are_never_elected() {
    let mut w = World::running(3, 1, 3);
    // Only the primary is in sync; the followers lag.
    let primary = w.map().partitions[0].primary.clone().unwrap_or_default();
    let m = w.map.as_mut().unwrap_or_else(|| panic!());
    m.partitions[0].in_sync = vec![primary.clone()];
    w.set_dead(&primary, true);
    let p = w.plan();
    assert!(p.calls.iter().all(|c| !matches!(c, Call::Positions { .. })));
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::PartitionUnavailable { partition: 0 })),
        "{:?}",
        p.events
    );
    w.apply(p);
    assert!(
        !w.plan()
            .events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::PartitionUnavailable { .. })),
        "reported once"
    );
    let e = &w.map().partitions[0];
    assert_eq!(
        e.primary.as_ref(),
        Some(&primary),
        "stays unavailable: {e:?}"
    );
}

#[test]
fn dead_and_lagging_followers_leave_in_sync() {
    let mut w = World::running(3, 1, 3);
    let e = w.map().partitions[0].clone();
    let primary = e.primary.clone().unwrap_or_default();
    let followers: Vec<String> = e
        .in_sync
        .iter()
        .filter(|n| **n != primary)
        .cloned()
        .collect();
    // One follower lags: acknowledged far behind and silent for longer than lag_timeout.
    let report = w.obs.reports.get_mut(&primary).unwrap_or_else(|| panic!());
    report.partitions.push(PartitionState {
        partition: 0,
        role: ReplicaRole::Primary,
        epoch: e.epoch,
        position: LogPosition {
            last_epoch: 1,
            last_seq: 100,
        },
        commit_seq: 100,
        applied_seq: 100,
        followers: vec![
            FollowerProgress {
                node: followers[0].clone(),
                acked_seq: 40,
                last_contact_ms: Some(10_000),
                pending_since_ms: Some(10_000),
                copying: false,
            },
            FollowerProgress {
                node: followers[1].clone(),
                acked_seq: 100,
                last_contact_ms: Some(5),
                pending_since_ms: None,
                copying: false,
            },
        ],
        keys: 0,
        bytes: 0,
        unproven: false,
    });
    let p = w.plan();
    assert!(
        p.events.iter().any(
            |e| matches!(e, CoordinatorEvent::InSyncShrunk { node, reason, .. }
                if *node == followers[0] && reason.contains("lag timeout"))
        ),
        "{:?}",
        p.events
    );
    w.apply(p);
    assert_eq!(w.map().partitions[0].in_sync.len(), 2);
    assert!(!w.map().partitions[0].in_sync.contains(&followers[0]));

    w.set_dead(&followers[1], false);
    let p = w.plan();
    w.apply(p);
    assert_eq!(w.map().partitions[0].in_sync, vec![primary]);
}

/// Finding L1 (docs/reliability.md): a follower whose acknowledgements stopped arriving
/// held the commit point back, so the primary's report shows it at the commit point. Once it
/// leaves `inSync` it must not be admitted again while it stays stuck: the commit point moves
/// on without it, and the primary would wait for it for the whole admit call.
#[test]
fn a_member_shrunk_for_being_stuck_is_not_admitted_while_it_stays_stuck() {
    let mut w = World::running(3, 1, 3);
    let e = w.map().partitions[0].clone();
    let primary = e.primary.clone().unwrap_or_default();
    let followers: Vec<String> = e
        .in_sync
        .iter()
        .filter(|n| **n != primary)
        .cloned()
        .collect();
    let report = w.obs.reports.get_mut(&primary).unwrap_or_else(|| panic!());
    report.partitions.push(PartitionState {
        partition: 0,
        role: ReplicaRole::Primary,
        epoch: e.epoch,
        position: LogPosition {
            last_epoch: 1,
            last_seq: 12,
        },
        // The stuck member held the commit point at its own position.
        commit_seq: 4,
        applied_seq: 4,
        followers: vec![
            FollowerProgress {
                node: followers[0].clone(),
                acked_seq: 4,
                last_contact_ms: Some(2_500),
                pending_since_ms: Some(2_500),
                copying: false,
            },
            FollowerProgress {
                node: followers[1].clone(),
                acked_seq: 12,
                last_contact_ms: Some(5),
                pending_since_ms: None,
                copying: false,
            },
        ],
        keys: 0,
        bytes: 0,
        unproven: false,
    });
    let p = w.plan();
    w.apply(p);
    assert!(!w.map().partitions[0].in_sync.contains(&followers[0]));
    let p = w.plan();
    let readmit: Vec<&Call> = p
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Admit { node, .. } if *node == followers[0]))
        .collect();
    assert!(
        readmit.is_empty(),
        "a stuck member is admitted again at once: {readmit:?}"
    );
}

#[test]
fn a_returning_replica_is_admitted_through_the_primary_before_it_is_in_sync() {
    let mut w = World::running(3, 1, 3);
    let e = w.map().partitions[0].clone();
    let primary = e.primary.clone().unwrap_or_default();
    let follower = e
        .in_sync
        .iter()
        .find(|n| **n != primary)
        .cloned()
        .unwrap_or_default();
    w.set_dead(&follower, true);
    let p = w.plan();
    w.apply(p);
    assert!(!w.map().partitions[0].in_sync.contains(&follower));

    w.set_alive(&follower);
    if let Some(m) = w.membership.nodes.iter_mut().find(|n| n.id == follower) {
        m.confirmed_dead = false;
    }
    let p = w.plan();
    // The node comes back Active, but is not in sync until the primary says ready.
    let admit = p.calls.iter().any(|c| matches!(c, Call::Admit { node, primary: pr, .. } if *node == follower && *pr == primary));
    w.apply(p);
    let p = w.plan();
    let admit = admit
        || p.calls
            .iter()
            .any(|c| matches!(c, Call::Admit { node, .. } if *node == follower));
    assert!(admit, "{:?}", p.calls);
    assert!(!w.map().partitions[0].in_sync.contains(&follower));
    w.obs
        .admitted
        .insert((0, w.map().partitions[0].epoch, follower.clone()));
    let p = w.plan();
    w.apply(p);
    assert!(w.map().partitions[0].in_sync.contains(&follower));
}

#[test]
fn scale_out_moves_replicas_through_learners_within_the_move_budget() {
    let mut w = World::running(3, 12, 3);
    w.settings.max_concurrent_moves_per_node = 1;
    for i in 3..5 {
        w.membership.nodes.push(member(i));
        w.set_alive(&format!("node-{i}"));
    }
    w.membership.desired_nodes = 5;
    let p = w.plan();
    w.apply(p);
    let m = w.map();
    assert_eq!(m.nodes.len(), 5);
    let learners: Vec<&String> = m.partitions.iter().flat_map(|e| &e.learners).collect();
    assert!(!learners.is_empty());
    for n in ["node-3", "node-4"] {
        let count = learners.iter().filter(|l| **l == n).count();
        assert!(count <= 1, "{n} takes {count} moves at once");
    }
    w.settle();
    assert_placement_ok(w.map());
    assert!(
        w.map()
            .partitions
            .iter()
            .all(|e| e.learners.is_empty() && e.in_sync == e.replicas)
    );
}

/// A move that finishes frees its room in the move budget for the next move in the same map
/// version: admitting one learner of a node at its budget starts the node's next move in the
/// plan that lists it in sync, not in the plan after. And the budget holds in every map.
#[test]
fn a_finished_move_makes_room_for_the_next_in_the_same_map() {
    let mut w = World::running(3, 12, 3);
    w.settings.max_concurrent_moves_per_node = 2;
    w.join(3);
    let learning = |m: &PartitionMap| -> Vec<PartitionId> {
        (0..m.partitions.len() as PartitionId)
            .filter(|p| {
                m.partitions[*p as usize]
                    .learners
                    .iter()
                    .any(|l| l == "node-3")
            })
            .collect()
    };
    for _ in 0..3 {
        let p = w.plan();
        w.apply(p);
    }
    let before = learning(w.map());
    assert_eq!(before.len(), 2, "node-3 takes in two copies at once");
    let done = before[0];
    let epoch = w.map().partitions[done as usize].epoch;
    w.obs.admitted.insert((done, epoch, "node-3".to_owned()));
    let plan = w.plan();
    let started: Vec<PartitionId> = plan
        .events
        .iter()
        .filter_map(|e| match e {
            CoordinatorEvent::MoveStarted { partition, to, .. } if to == "node-3" => {
                Some(*partition)
            }
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{:?}", plan.events);
    w.apply(plan);
    let after = learning(w.map());
    assert!(
        w.map().partitions[done as usize]
            .in_sync
            .iter()
            .any(|n| n == "node-3")
    );
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&before[1]) && after.contains(&started[0]));
    // To the end of the scale-out, no node ever takes part in more than two moves at once.
    w.settle_watching(|_, plan| {
        if let Some(m) = &plan.map {
            let mut moves: BTreeMap<&str, usize> = BTreeMap::new();
            for e in &m.partitions {
                for l in &e.learners {
                    *moves.entry(l.as_str()).or_default() += 1;
                }
            }
            assert!(moves.values().all(|n| *n <= 2), "{moves:?}");
        }
    });
    assert_placement_ok(w.map());
}

/// A node is handed no primary role before it is known to hold a lease: one that just
/// joined (or restarted) answers every write `lease_expired` until its first lease, and
/// clients then wait a second. Its copies move in meanwhile; once it holds a lease, it gets
/// its share of primaries.
#[test]
fn no_primary_is_handed_to_a_node_without_a_lease() {
    let mut w = World::running(3, 12, 3);
    w.join(3);
    w.obs.leased.remove("node-3");
    w.settle_watching(|_, plan| {
        for e in &plan.events {
            if let CoordinatorEvent::PrimaryHandedOff { to, partition, .. } = e {
                assert_ne!(
                    to, "node-3",
                    "partition {partition} handed to node-3 without a lease"
                );
            }
        }
        for c in &plan.calls {
            assert!(
                !matches!(c, Call::Handoff { to, .. } if to == "node-3"),
                "{c:?}"
            );
        }
    });
    assert!(
        w.map()
            .partitions
            .iter()
            .any(|e| e.in_sync.iter().any(|n| n == "node-3"))
    );
    assert!(w.primaries_of("node-3").is_empty());
    w.obs.leased.insert("node-3".to_owned());
    w.settle();
    assert!(
        !w.primaries_of("node-3").is_empty(),
        "node-3 leads nothing once it holds a lease"
    );
    assert_placement_ok(w.map());
}

/// A node taking in copies does not become a primary meanwhile: a primary that leaves hands
/// off to an idle in-sync member, and hand-offs for balance wait until the node is done.
#[test]
fn no_hand_off_goes_to_a_node_taking_in_copies() {
    let mut w = World::running(3, 24, 3);
    w.settings.max_concurrent_moves_per_node = 3;
    w.admissions_per_round = 1;
    w.join(3);
    let mut handoffs = 0;
    w.settle_watching(|before, plan| {
        let ingesting: Vec<&String> = before
            .iter()
            .flat_map(|m| &m.partitions)
            .flat_map(|e| &e.learners)
            .collect();
        for e in &plan.events {
            if let CoordinatorEvent::PrimaryHandedOff { to, partition, .. } = e {
                handoffs += 1;
                assert!(
                    !ingesting.contains(&to),
                    "partition {partition} handed off to {to}, which takes in copies"
                );
            }
        }
    });
    assert_placement_ok(w.map());
    assert!(handoffs > 0, "the new node never received a primary");
    assert!(
        !w.primaries_of("node-3").is_empty(),
        "node-3 leads nothing after the scale-out"
    );
}

/// The move budget counts bytes as well as moves: a new node takes as many small partitions
/// at once as `maxConcurrentMovesPerNode` allows, but large ones only while their total stays
/// within `maxMoveBytesPerNode` — and always at least one, however large.
#[test]
fn scale_out_counts_the_partitions_bytes_against_the_move_budget() {
    let learners_on = |size: u64, max_bytes: u64| {
        let mut w = World::running(3, 12, 3);
        w.settings.max_concurrent_moves_per_node = 8;
        w.settings.max_move_bytes_per_node = max_bytes;
        // Each primary reports its partition's size.
        let entries = w.map().partitions.clone();
        for (p, e) in entries.iter().enumerate() {
            let primary = e.primary.clone().unwrap_or_default();
            if let Some(r) = w.obs.reports.get_mut(&primary) {
                r.partitions.push(PartitionState {
                    bytes: size,
                    ..state(p as u32, ReplicaRole::Primary, e.epoch)
                });
            }
        }
        w.membership.nodes.push(member(3));
        w.set_alive("node-3");
        w.membership.desired_nodes = 4;
        let p = w.plan();
        w.apply(p);
        let p = w.plan();
        w.apply(p);
        w.map()
            .partitions
            .iter()
            .filter(|e| e.learners.iter().any(|l| l == "node-3"))
            .count()
    };
    let mib = 1024 * 1024;
    assert_eq!(
        learners_on(mib, 512 * mib),
        8,
        "small partitions: the count limits"
    );
    assert_eq!(
        learners_on(200 * mib, 512 * mib),
        2,
        "200 MiB each: two fit in 512 MiB"
    );
    assert_eq!(
        learners_on(600 * mib, 512 * mib),
        1,
        "larger than the budget: one at a time"
    );
}

#[test]
fn settings_reach_the_map_bandwidth_included() {
    let mut w = World::running(3, 4, 3);
    w.settings.bandwidth_bytes_per_second = Some(1 << 20);
    w.settings.min_in_sync = 1;
    let p = w.plan();
    let map = p
        .map
        .unwrap_or_else(|| panic!("settings change must write the map"));
    assert_eq!(map.rebalance_bandwidth_bytes_per_second, Some(1 << 20));
    assert_eq!(map.min_in_sync, 1);
}

#[test]
fn a_restoring_store_starts_gated_and_the_gate_lifts_with_a_new_map() {
    let mut w = World::new(3, 4, 3);
    w.settings.restoring = true;
    let p = w.plan();
    w.apply(p);
    assert!(
        w.map().restoring,
        "the first map of a restoring store is gated"
    );
    assert!(w.plan().map.is_none(), "nothing changes while it restores");
    w.settings.restoring = false;
    let v = w.map().version;
    let map = w
        .plan()
        .map
        .unwrap_or_else(|| panic!("lifting the gate must write the map"));
    assert!(!map.restoring);
    assert_eq!(map.version, v + 1);
}

#[test]
fn paused_rebalance_starts_no_move() {
    let mut w = World::running(3, 12, 3);
    w.settings.paused = true;
    w.join(3);
    w.settle();
    assert!(w.map().partitions.iter().all(|e| !e.is_member("node-3")));
}

#[test]
fn scale_in_drains_and_reports_the_node_empty_and_raising_again_cancels() {
    let mut w = World::running(4, 12, 3);
    w.membership.desired_nodes = 3;
    let p = w.plan();
    w.apply(p);
    assert_eq!(w.map().nodes["node-3"].state, NodeState::Draining);
    // One round of moves, then cancel.
    let p = w.plan();
    w.apply(p);
    w.membership.desired_nodes = 4;
    w.settle();
    assert_eq!(w.map().nodes["node-3"].state, NodeState::Active);
    assert_placement_ok(w.map());
    assert!(w.map().partitions.iter().any(|e| e.is_member("node-3")));

    w.membership.desired_nodes = 3;
    w.settle();
    assert!(w.map().partitions.iter().all(|e| !e.is_member("node-3")));
    let status = crate::coordinator::summary::summarize(w.map(), None, &w.obs);
    assert_eq!(status.empty_nodes, vec!["node-3".to_owned()]);
}

#[test]
fn a_draining_primary_hands_off_and_an_aborted_hand_off_rewrites_the_map() {
    let mut w = World::running(4, 4, 3);
    let victim = w
        .map()
        .nodes
        .keys()
        .find(|n| !w.primaries_of(n).is_empty())
        .cloned()
        .unwrap_or_default();
    let ordinal: u32 = victim.trim_start_matches("node-").parse().unwrap_or(0);
    // Drain exactly the victim by making it the last ordinal.
    for m in w.membership.nodes.iter_mut() {
        if m.id == victim {
            m.ordinal = 3;
        } else if m.ordinal == 3 {
            m.ordinal = ordinal;
        }
    }
    w.membership.desired_nodes = 3;
    let part = w.primaries_of(&victim)[0];
    // Run until a hand-off of `part` is requested.
    let mut asked = None;
    for _ in 0..50 {
        let p = w.plan();
        asked = p.calls.iter().find_map(|c| match c {
            Call::Handoff {
                partition,
                epoch,
                to,
                ..
            } if *partition == part => Some((*epoch, to.clone())),
            _ => None,
        });
        let calls = p.calls.clone();
        w.apply(p);
        if asked.is_some() {
            break;
        }
        for c in calls {
            if let Call::Admit {
                partition,
                epoch,
                node,
                ..
            } = c
            {
                w.obs.admitted.insert((partition, epoch, node));
            }
        }
    }
    let (epoch, to) = asked.unwrap_or_else(|| panic!("no hand-off asked"));
    let version = w.map().version;
    w.obs.handoffs.insert(
        part,
        HandoffOutcome {
            epoch,
            to: to.clone(),
            ready: false,
        },
    );
    let p = w.plan();
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::HandoffAborted { .. }))
    );
    let map = p
        .map
        .clone()
        .unwrap_or_else(|| panic!("aborted hand-off must write a new map"));
    assert!(map.version > version);
    assert_eq!(
        map.partitions[part as usize].primary.as_ref(),
        Some(&victim)
    );
    w.apply(p);
    w.obs.handoffs.insert(
        part,
        HandoffOutcome {
            epoch,
            to: to.clone(),
            ready: true,
        },
    );
    let p = w.plan();
    w.apply(p);
    let e = &w.map().partitions[part as usize];
    assert_eq!(e.primary.as_ref(), Some(&to));
    assert_eq!(e.epoch, epoch + 1);
}

#[test]
fn a_cordoned_primary_hands_off_its_partitions() {
    let mut w = World::running(3, 6, 3);
    w.membership.cordoned.insert("node-1".into());
    w.settle();
    assert!(w.primaries_of("node-1").is_empty());
    assert_placement_ok_replicas_only(w.map());
}

fn assert_placement_ok_replicas_only(map: &PartitionMap) {
    assert!(map.validate().is_ok());
    assert!(map.partitions.iter().all(|e| e.in_sync.len() == 3));
}

#[test]
fn a_node_down_past_replace_after_is_replaced_one_at_a_time() {
    let mut w = World::running(5, 10, 3);
    w.settings.replace_after = Duration::from_secs(60);
    w.set_dead("node-0", true);
    w.set_dead("node-1", true);
    w.settle();
    assert_eq!(w.map().nodes["node-0"].state, NodeState::Down);
    assert!(
        w.map().partitions.iter().any(|e| e.is_member("node-0")),
        "kept until replaceAfter"
    );

    w.obs.now += Duration::from_secs(61);
    let p = w.plan();
    w.apply(p);
    let replaced = w
        .map()
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Replaced)
        .count();
    assert_eq!(replaced, 1, "maxConcurrentReplacements = 1");
    w.settle();
    // Both end up replaced once the first one no longer holds replicas.
    let m = w.map();
    assert!(
        m.partitions
            .iter()
            .all(|e| !e.is_member("node-0") && !e.is_member("node-1"))
    );
    assert!(
        m.partitions
            .iter()
            .all(|e| e.replicas.len() == 3 && e.in_sync.len() == 3)
    );
}

#[test]
fn stale_copies_reported_by_a_node_are_dropped() {
    let mut w = World::running(3, 4, 2);
    let node = "node-0";
    let stale = w
        .map()
        .partitions
        .iter()
        .position(|e| !e.is_member(node))
        .unwrap_or_else(|| panic!("node-0 holds everything")) as u32;
    let report = w.obs.reports.get_mut(node).unwrap_or_else(|| panic!());
    report.partitions.push(state(stale, ReplicaRole::Stale, 1));
    let p = w.plan();
    assert!(
        p.calls.contains(&Call::Drop {
            node: node.into(),
            partition: stale
        }),
        "{:?}",
        p.calls
    );
}

#[test]
fn a_restarted_coordinator_changes_nothing_until_nodes_answer() {
    let mut w = World::running(3, 8, 3);
    let before = w.map().clone();
    w.obs.liveness.clear();
    w.obs.reports.clear();
    let p = w.plan();
    assert!(p.map.is_none(), "{:?}", p.map);
    assert!(p.calls.is_empty());
    assert_eq!(w.map(), &before);
}

#[test]
fn a_node_gone_from_the_membership_counts_as_dead_once_fenced() {
    let mut w = World::running(3, 4, 3);
    let led = w.primaries_of("node-2");
    assert!(!led.is_empty());
    w.membership.nodes.retain(|n| n.id != "node-2");
    w.obs.reports.remove("node-2");
    // The runner reports a gone node silent; until its fence passes it is only suspected.
    w.obs.liveness.insert("node-2".into(), Liveness::Suspected);
    let p = w.plan();
    assert!(p.map.is_none(), "{:?}", p.map);
    assert!(p.calls.is_empty(), "{:?}", p.calls);
    w.obs.liveness.insert("node-2".into(), Liveness::Dead);
    w.settle();
    assert!(w.primaries_of("node-2").is_empty());
    assert_eq!(w.map().nodes["node-2"].state, NodeState::Down);
}

/// A member admitted a moment ago is not dropped again for its latest report, which it made
/// under the map before (where it was a learner). The runner pushes the new map at once, so
/// the node holds it, but its report is from before the push; only a report made under the
/// current map says what the member is now. (Seen in a scale-out: every admission was
/// followed by a removal and a new admission, a map write each, until the next heartbeat.)
#[test]
fn a_member_admitted_a_moment_ago_is_not_dropped_for_its_report_from_before() {
    let mut w = World::running(3, 1, 3);
    let (learner, epoch) = w.follower_to_learner();
    if let Some(r) = w.obs.reports.get_mut(&learner) {
        r.partitions = vec![state(0, ReplicaRole::Learner, epoch)];
    }
    // The primary answered the admission ready: the member is listed in sync.
    w.obs.admitted.insert((0, epoch, learner.clone()));
    let p = w.plan();
    let next = p
        .map
        .unwrap_or_else(|| panic!("the admission must write the map"));
    assert!(next.partitions[0].in_sync.contains(&learner), "{next:?}");
    // Written and pushed (as the runner does): every node holds it, reports are from before.
    let v = next.version;
    w.map = Some(next);
    for n in ["node-0", "node-1", "node-2"] {
        w.obs.installed.insert(n.to_owned(), v);
    }
    let p = w.plan();
    let shrunk: Vec<&CoordinatorEvent> = p
        .events
        .iter()
        .filter(|e| matches!(e, CoordinatorEvent::InSyncShrunk { .. }))
        .collect();
    assert!(shrunk.is_empty(), "dropped again: {shrunk:?}");
    assert!(
        p.map
            .as_ref()
            .is_none_or(|m| m.partitions[0].in_sync.contains(&learner)),
        "{:?}",
        p.map
    );
}

/// A node joining the store is only probed (no heartbeat report) until a map lists it; once
/// it answered the push of that map, moves to it start in the same tick.
#[test]
fn moves_to_a_joining_node_start_once_it_answered_the_push() {
    let mut w = World::running(3, 12, 3);
    w.join(3);
    w.obs.reports.remove("node-3");
    let p = w.plan();
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::NodeUp { node } if node == "node-3")),
        "{:?}",
        p.events
    );
    let map = p.map.unwrap_or_else(|| panic!("the node joins the map"));
    let v = map.version;
    w.map = Some(map);
    // The push after the write: every node answered it, node-3 without any report yet.
    for n in 0..4 {
        w.obs.installed.insert(format!("node-{n}"), v);
    }
    let p = w.plan();
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::MoveStarted { to, .. } if to == "node-3")),
        "{:?}",
        p.events
    );
}

/// A learner is admitted (which makes the primary wait for it on every write) only once the
/// primary's report shows it holding a copy near the commit point: not while the report does
/// not list it yet, nor while its snapshot is on the way.
#[test]
fn a_learner_is_admitted_only_once_its_copy_is_in() {
    let mut w = World::running(3, 1, 3);
    let primary = w.map().partitions[0].primary.clone().unwrap_or_default();
    let (learner, epoch) = w.follower_to_learner();
    let admits = |w: &World| {
        w.plan()
            .calls
            .iter()
            .any(|c| matches!(c, Call::Admit { node, .. } if *node == learner))
    };
    let report = |w: &mut World, followers: Vec<FollowerProgress>| {
        if let Some(r) = w.obs.reports.get_mut(&primary) {
            r.partitions = vec![PartitionState {
                commit_seq: 348,
                followers,
                ..state(0, ReplicaRole::Primary, epoch)
            }];
        }
    };
    let progress = |node: &str, acked_seq: u64| FollowerProgress {
        node: node.to_owned(),
        acked_seq,
        last_contact_ms: Some(5),
        pending_since_ms: Some(40),
        copying: false,
    };
    let other = w.map().partitions[0]
        .in_sync
        .iter()
        .find(|n| **n != primary)
        .cloned()
        .unwrap_or_default();
    // A report from before the learner was added.
    report(&mut w, vec![progress(&other, 348)]);
    assert!(!admits(&w), "admitted on a report that does not list it");
    // Listed, snapshot on the way: nothing acknowledged.
    report(&mut w, vec![progress(&other, 348), progress(&learner, 0)]);
    assert!(!admits(&w), "admitted while its snapshot is on the way");
    // Snapshot in, streaming the last entries.
    report(&mut w, vec![progress(&other, 348), progress(&learner, 300)]);
    assert!(admits(&w), "not admitted once its copy is in");
    let admit_of = |w: &World| admit_call(w, &learner);
    assert_eq!(
        admit_of(&w),
        Some(None),
        "a learner near the commit point is admitted at once"
    );
}

/// The planned admit call for `learner`, if any: its `wait_for_copy_within`.
fn admit_call(w: &World, learner: &str) -> Option<Option<u64>> {
    w.plan().calls.into_iter().find_map(|c| match c {
        Call::Admit {
            node,
            wait_for_copy_within,
            ..
        } if node == learner => Some(wait_for_copy_within),
        _ => None,
    })
}

/// A primary that reports a learner's copy under way (only primaries that can wait for it
/// report it) is asked right away to admit the learner once the copy is in, so the answer
/// comes when the copy ends, not at the report after it; not if the copy is stuck.
#[test]
fn a_copying_learner_is_admitted_by_a_call_that_waits_for_the_copy() {
    let mut w = World::running(3, 1, 3);
    let primary = w.map().partitions[0].primary.clone().unwrap_or_default();
    let (learner, epoch) = w.follower_to_learner();
    let admit_of = |w: &World| admit_call(w, &learner);
    let report = |w: &mut World, pending_since_ms: u64| {
        if let Some(r) = w.obs.reports.get_mut(&primary) {
            r.partitions = vec![PartitionState {
                commit_seq: 348,
                followers: vec![FollowerProgress {
                    node: learner.clone(),
                    acked_seq: 0,
                    last_contact_ms: Some(5),
                    pending_since_ms: Some(pending_since_ms),
                    copying: true,
                }],
                ..state(0, ReplicaRole::Primary, epoch)
            }];
        }
    };
    report(&mut w, 40);
    assert_eq!(admit_of(&w), Some(Some(ADMIT_WITHIN_ENTRIES)));
    // A copy that made no progress for longer than the lag bound is not waited for.
    let bound = w.settings.lag_timeout.as_millis() as u64;
    report(&mut w, bound + 1);
    assert_eq!(admit_of(&w), None, "waiting on a stuck copy");
}
