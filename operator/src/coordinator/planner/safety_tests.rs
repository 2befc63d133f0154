//! Planner tests of the safety rules: map recovery, never failing over a node that may still
//! hold a lease, in-sync removal of members that stopped acknowledging.

use super::Call;
use super::tests::{World, state};
use crate::coordinator::liveness::Liveness;
use crate::coordinator::status::CoordinatorEvent;

/// Issue item 5 (losing the map): with no stored map but nodes holding one, the planner
/// fetches the newest node map and writes it back unchanged instead of bootstrapping.
#[test]
fn a_lost_map_is_recovered_from_the_newest_node_not_bootstrapped() {
    let mut old = World::running(3, 8, 3);
    // The history went on for a while: version 7 on node-1, 6 on the others.
    let mut newest = old.map().clone();
    newest.version = 7;
    newest.partitions[0].epoch = 4;
    old.map = None;
    for (id, r) in old.obs.reports.iter_mut() {
        r.map_version = if id == "node-1" { 7 } else { 6 };
    }
    let p = old.plan();
    assert!(p.map.is_none(), "must not bootstrap: {:?}", p.map);
    assert_eq!(
        p.calls,
        vec![Call::FetchMap {
            node: "node-1".into(),
            client_addr: "127.0.0.1:7001".into()
        }]
    );
    old.obs.node_maps.insert("node-1".into(), newest.clone());
    let p = old.plan();
    assert!(
        p.events.iter().any(
            |e| matches!(e, CoordinatorEvent::MapRecovered { version: 7, from } if from == "node-1")
        ),
        "{:?}",
        p.events
    );
    assert_eq!(p.map.as_ref(), Some(&newest), "written back unchanged");
    old.apply(p);
    // From then on the history continues from the nodes' version.
    old.settings.min_in_sync = 1;
    let next = old.plan().map.unwrap_or_else(|| panic!("no next map"));
    assert_eq!(next.version, 8);
    assert_eq!(next.partitions[0].epoch, 4);
}

/// Issue item 5: with no stored map, recovery waits (like the first map) until every member
/// answered or the grace period passed, so that the newest map is not missed.
#[test]
fn recovery_waits_for_every_member_before_choosing_the_newest_map() {
    let mut w = World::new(3, 8, 3);
    if let Some(r) = w.obs.reports.get_mut("node-0") {
        r.map_version = 5;
    }
    w.obs.liveness.insert("node-2".into(), Liveness::Unknown);
    let p = w.plan();
    assert!(p.map.is_none() && p.calls.is_empty(), "{p:?}");
    w.obs.now += super::BOOTSTRAP_GRACE;
    let p = w.plan();
    assert!(p.map.is_none());
    assert!(matches!(&p.calls[..], [Call::FetchMap { node, .. }] if node == "node-0"));
}

/// Issue item 5: a node holding a newer map than the store (the store was re-created or
/// rewound; such a node answers 409 to the store's map) is not "current"; the store adopts
/// the node's map before anything else is decided.
#[test]
fn a_store_behind_a_node_adopts_the_nodes_newer_map() {
    let mut w = World::running(3, 8, 3);
    let version = w.map().version;
    if let Some(r) = w.obs.reports.get_mut("node-2") {
        r.map_version = version + 3;
    }
    // Even a dead primary waits: the newer map may already have failed it over.
    w.set_dead("node-0", true);
    let p = w.plan();
    assert!(p.map.is_none(), "{:?}", p.map);
    assert!(
        matches!(&p.calls[..], [Call::FetchMap { node, .. }] if node == "node-2"),
        "{:?}",
        p.calls
    );
    let mut newer = w.map().clone();
    newer.version = version + 3;
    w.obs.node_maps.insert("node-2".into(), newer.clone());
    let p = w.plan();
    assert_eq!(p.map, Some(newer));
}

/// Issue item 5: bootstrapping stays the path of a store whose nodes hold no map at all.
#[test]
fn a_store_whose_nodes_hold_no_map_bootstraps() {
    let w = World::new(3, 8, 3);
    let p = w.plan();
    assert_eq!(p.map.map(|m| m.version), Some(1));
}

/// Issue item 4 (hand-offs abortable): a hand-off that was not ready in time (or got no
/// answer) is aborted with a new map naming the primary again, and is not asked again before
/// the retry interval, so the primary serves in between instead of being stalled forever.
#[test]
fn a_failed_hand_off_is_aborted_and_not_reissued_at_once() {
    use super::{HANDOFF_RETRY_AFTER, HandoffOutcome};
    let mut w = World::running(3, 6, 3);
    let led = w.primaries_of("node-1");
    assert!(!led.is_empty());
    w.membership.cordoned.insert("node-1".into());
    let p = w.plan();
    let (part, epoch, to) = p
        .calls
        .iter()
        .find_map(|c| match c {
            Call::Handoff {
                partition,
                epoch,
                to,
                ..
            } => Some((*partition, *epoch, to.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no hand-off asked: {:?}", p.calls));
    w.apply(p);
    // The call timed out: the runner records a not-ready answer and the failure time.
    w.obs.handoffs.insert(
        part,
        HandoffOutcome {
            epoch,
            to,
            ready: false,
        },
    );
    w.obs.handoff_failed_at.insert(part, w.obs.now);
    let version = w.map().version;
    let p = w.plan();
    assert!(p.events.iter().any(
        |e| matches!(e, CoordinatorEvent::HandoffAborted { partition, .. } if *partition == part)
    ));
    let map = p
        .map
        .clone()
        .unwrap_or_else(|| panic!("abort writes a map"));
    assert!(map.version > version);
    assert_eq!(
        map.partitions[part as usize].primary.as_deref(),
        Some("node-1")
    );
    w.apply(p);
    let asks = |p: &super::Plan| {
        p.calls
            .iter()
            .any(|c| matches!(c, Call::Handoff { partition, .. } if *partition == part))
    };
    assert!(!asks(&w.plan()), "re-asked at once");
    w.obs.now += HANDOFF_RETRY_AFTER;
    assert!(asks(&w.plan()), "asked again after the retry interval");
}

/// Issue item 1 (same-epoch restart): a primary that restarted answers heartbeats again before
/// anyone saw it dead, but it never leads the epoch it led before (it reports itself a
/// follower). The planner fails the partition over at epoch + 1 — here back to the same node,
/// whose durable log is the longest — instead of leaving it without a primary.
#[test]
fn a_primary_that_restarted_within_its_lease_is_failed_over_at_a_new_epoch() {
    use shardedstore_node::admin_api::{LogPosition, ReplicaRole};
    let mut w = World::running(3, 1, 3);
    let e = w.map().partitions[0].clone();
    let primary = e.primary.clone().unwrap_or_else(|| panic!("no primary"));
    let state = |role| state(0, role, e.epoch);
    // Serving normally: nothing to do.
    if let Some(r) = w.obs.reports.get_mut(&primary) {
        r.partitions = vec![state(ReplicaRole::Primary)];
    }
    assert!(w.plan().map.is_none());
    // Restarted: same map, same epoch, but it no longer leads.
    if let Some(r) = w.obs.reports.get_mut(&primary) {
        r.partitions = vec![state(ReplicaRole::Follower)];
        r.incarnation += 1;
    }
    let p = w.plan();
    let asked = p.calls.iter().find_map(|c| match c {
        Call::Positions { nodes, epoch, .. } => Some((nodes.clone(), *epoch)),
        _ => None,
    });
    let (nodes, epoch) = asked.unwrap_or_else(|| panic!("no positions asked: {p:?}"));
    assert_eq!(epoch, e.epoch);
    assert!(
        nodes.contains(&primary),
        "the restarted primary is a candidate: {nodes:?}"
    );
    let known = w.obs.positions.entry((0, e.epoch)).or_default();
    for n in &nodes {
        let last_seq = if *n == primary { 10 } else { 9 };
        known.insert(
            n.clone(),
            LogPosition {
                last_epoch: e.epoch,
                last_seq,
            },
        );
    }
    let next = w.plan().map.unwrap_or_else(|| panic!("no failover"));
    assert_eq!(next.partitions[0].epoch, e.epoch + 1);
    assert_eq!(
        next.partitions[0].primary.as_deref(),
        Some(primary.as_str())
    );
    assert!(next.partitions[0].in_sync.contains(&primary));
}

/// Issue item 6 (empty disk): an in-sync member whose copy was created empty reports itself a
/// learner; when the primary dies it is never elected, even with the only answer.
#[test]
fn an_unproven_copy_is_never_elected() {
    use shardedstore_node::admin_api::{PartitionState, ReplicaRole};
    let mut w = World::running(3, 1, 3);
    let e = w.map().partitions[0].clone();
    let primary = e.primary.clone().unwrap_or_else(|| panic!("no primary"));
    let others: Vec<String> = e
        .in_sync
        .iter()
        .filter(|n| **n != primary)
        .cloned()
        .collect();
    if let Some(r) = w.obs.reports.get_mut(&others[0]) {
        r.partitions = vec![PartitionState {
            unproven: true,
            ..state(0, ReplicaRole::Learner, e.epoch)
        }];
    }
    w.set_dead(&primary, true);
    let p = w.plan();
    let asked: Vec<String> = p
        .calls
        .iter()
        .flat_map(|c| match c {
            Call::Positions { nodes, .. } => nodes.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(asked, vec![others[1].clone()], "{p:?}");
}

/// The primary and the two followers of partition 0 of a running RF 3 world.
fn roles(w: &World) -> (String, String, String) {
    let e = &w.map().partitions[0];
    let primary = e.primary.clone().unwrap_or_else(|| panic!("no primary"));
    let others: Vec<String> = e
        .in_sync
        .iter()
        .filter(|n| **n != primary)
        .cloned()
        .collect();
    assert_eq!(others.len(), 2, "{e:?}");
    (primary, others[0].clone(), others[1].clone())
}

/// Issue item 6 (empty disk): an in-sync follower that answers with a new disk identity holds
/// nothing proven; it leaves `inSync` at once, even when that drops the partition below
/// `minInSync` (writes then stall until it is admitted again, which is the safe outcome: a
/// member that holds nothing must not count).
#[test]
fn a_follower_on_a_new_disk_leaves_in_sync_even_below_min_in_sync() {
    let mut w = World::running(3, 1, 3);
    assert_eq!(w.map().min_in_sync, 2);
    let (primary, wiped, other) = roles(&w);
    w.set_dead(&other, true);
    w.obs.new_disks.insert(wiped.clone());
    let p = w.plan();
    let map = p.map.clone().unwrap_or_else(|| panic!("no map written"));
    assert_eq!(map.partitions[0].in_sync, vec![primary.clone()], "{map:?}");
    assert_eq!(map.partitions[0].primary.as_deref(), Some(primary.as_str()));
    assert!(p.events.iter().any(
        |e| matches!(e, CoordinatorEvent::InSyncShrunk { node, reason, .. }
                if *node == wiped && reason.contains("new disk"))
    ));
    // The dead member leaves in the same round, and says so.
    assert!(p.events.iter().any(
        |e| matches!(e, CoordinatorEvent::InSyncShrunk { node, reason, .. }
            if *node == other && reason == "dead")
    ));
    // The same holds with both followers alive: the new disk is dropped, the other stays.
    let mut w = World::running(3, 1, 3);
    let (primary, wiped, other) = roles(&w);
    w.obs.new_disks.insert(wiped.clone());
    let map = w.plan().map.unwrap_or_else(|| panic!("no map written"));
    let mut in_sync = map.partitions[0].in_sync.clone();
    in_sync.sort();
    let mut want = vec![primary, other];
    want.sort();
    assert_eq!(in_sync, want);
}

/// Issue item 6 (empty disk): an in-sync follower that reports its copy unproven (created
/// empty while listed in sync) leaves `inSync` like one on a new disk, with the primary alive
/// (not only when the primary fails).
#[test]
fn a_follower_reporting_an_unproven_copy_leaves_in_sync() {
    use shardedstore_node::admin_api::{PartitionState, ReplicaRole};
    let mut w = World::running(3, 1, 3);
    let epoch = w.map().partitions[0].epoch;
    let (primary, wiped, other) = roles(&w);
    w.set_dead(&other, true);
    if let Some(r) = w.obs.reports.get_mut(&wiped) {
        r.partitions = vec![PartitionState {
            unproven: true,
            ..state(0, ReplicaRole::Learner, epoch)
        }];
    }
    let map = w.plan().map.unwrap_or_else(|| panic!("no map written"));
    assert_eq!(map.partitions[0].in_sync, vec![primary]);
    assert!(
        map.partitions[0].replicas.contains(&wiped),
        "it stays a replica"
    );
}

/// Issue item 6 (empty disk): a primary that comes back on a new disk before anyone saw it
/// dead (it may even report itself primary: at epoch 1 its empty copy is not marked) is
/// failed over to another in-sync member — never to itself — and leaves `inSync`.
#[test]
fn a_primary_on_a_new_disk_is_failed_over_never_to_itself() {
    use shardedstore_node::admin_api::LogPosition;
    let mut w = World::running(3, 1, 3);
    let epoch = w.map().partitions[0].epoch;
    let (primary, a, b) = roles(&w);
    w.obs.new_disks.insert(primary.clone());
    let p = w.plan();
    let mut asked: Vec<String> = p
        .calls
        .iter()
        .flat_map(|c| match c {
            Call::Positions { nodes, .. } => nodes.clone(),
            _ => Vec::new(),
        })
        .collect();
    asked.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(asked, want, "{p:?}");
    let known = w.obs.positions.entry((0, epoch)).or_default();
    for n in [&a, &b] {
        known.insert(
            n.clone(),
            LogPosition {
                last_epoch: epoch,
                last_seq: 5,
            },
        );
    }
    let map = w.plan().map.unwrap_or_else(|| panic!("no failover"));
    let e = &map.partitions[0];
    assert_eq!(e.epoch, epoch + 1);
    assert!(e.primary.as_ref().is_some_and(|n| *n != primary), "{e:?}");
    assert!(!e.in_sync.contains(&primary), "{e:?}");
}

/// Issue item 6 (empty disk): a primary on a new disk with no other live in-sync member keeps
/// no role: the partition goes without a primary (unavailable) rather than being led by a
/// copy that holds nothing, and is failed over to a member that held the data once it answers.
#[test]
fn a_primary_on_a_new_disk_without_candidates_loses_the_role() {
    use shardedstore_node::admin_api::LogPosition;
    let mut w = World::running(3, 1, 3);
    let epoch = w.map().partitions[0].epoch;
    let (primary, a, b) = roles(&w);
    w.set_dead(&a, false);
    w.set_dead(&b, false);
    w.obs.new_disks.insert(primary.clone());
    let p = w.plan();
    let map = p.map.clone().unwrap_or_else(|| panic!("no map written"));
    let e = &map.partitions[0];
    assert_eq!(e.primary, None, "{e:?}");
    assert!(!e.in_sync.contains(&primary), "{e:?}");
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, CoordinatorEvent::PartitionUnavailable { partition: 0 }))
    );
    w.apply(p);
    w.obs.new_disks.clear();
    w.set_alive(&a);
    if let Some(m) = w.membership.nodes.iter_mut().find(|n| n.id == a) {
        m.ready = true;
    }
    let p = w.plan();
    assert!(
        p.calls
            .iter()
            .any(|c| matches!(c, Call::Positions { nodes, .. } if *nodes == vec![a.clone()])),
        "{p:?}"
    );
    w.obs.positions.entry((0, epoch)).or_default().insert(
        a.clone(),
        LogPosition {
            last_epoch: epoch,
            last_seq: 5,
        },
    );
    let map = w.plan().map.unwrap_or_else(|| panic!("no failover"));
    assert_eq!(map.partitions[0].primary.as_deref(), Some(a.as_str()));
}

/// Issue item 6 (empty disk): a node on a new disk is no hand-off target, and an admission
/// it was granted from its old disk does not list it in sync again; it is admitted through
/// the primary once a map dropped it from `inSync`.
#[test]
fn a_new_disk_is_neither_handed_off_to_nor_listed_in_sync_from_an_old_admission() {
    let mut w = World::running(3, 1, 3);
    let epoch = w.map().partitions[0].epoch;
    let (primary, wiped, other) = roles(&w);
    w.obs.new_disks.insert(wiped.clone());
    w.obs.admitted.insert((0, epoch, wiped.clone()));
    w.membership.cordoned.insert(primary.clone());
    let p = w.plan();
    for c in &p.calls {
        if let Call::Handoff { to, .. } = c {
            assert_eq!(*to, other, "{p:?}");
        }
    }
    let map = p.map.clone().unwrap_or_else(|| panic!("no map written"));
    assert!(!map.partitions[0].in_sync.contains(&wiped), "{map:?}");
    w.apply(p);
    // The map no longer lists it in sync: the runner forgets the new disk; the stale
    // admission is not taken for a new one, the primary is asked again.
    w.obs.new_disks.clear();
    w.obs.admitted.clear();
    w.membership.cordoned.clear();
    let p = w.plan();
    assert!(
        p.calls
            .iter()
            .any(|c| matches!(c, Call::Admit { node, .. } if *node == wiped)),
        "{p:?}"
    );
}

/// Issue item 6 (empty disk across an operator restart): the map records the disk each node
/// had when it entered `inSync` (here the first map), and keeps that record while the node
/// stays listed in sync, even when the node now answers from another disk that this
/// coordinator takes as its baseline (it started while the disk was wiped). The node compares
/// the record with its own disk and reports its copies unproven; the map dropping it from
/// every `inSync` records the new disk, which admission then lists in sync again.
#[test]
fn the_map_records_each_nodes_disk_until_it_leaves_in_sync() {
    use shardedstore_node::admin_api::{PartitionState, ReplicaRole};
    let mut w = World::new(3, 2, 3);
    for (id, r) in w.obs.reports.iter_mut() {
        r.disk_id = format!("{id}-old");
    }
    let first = w.plan();
    w.apply(first);
    for i in 0..3 {
        let id = format!("node-{i}");
        assert_eq!(
            w.map().disks.get(&id).map(String::as_str),
            Some(format!("{id}-old").as_str()),
            "{:?}",
            w.map().disks
        );
    }
    // A coordinator started while node-2's disk was wiped: no new-disk observation, and the
    // record stays in every map that keeps node-2 in sync.
    if let Some(r) = w.obs.reports.get_mut("node-2") {
        r.disk_id = "node-2-new".into();
    }
    w.settings.min_in_sync = 1;
    let p = w.plan();
    let changed = p.map.clone().unwrap_or_else(|| panic!("no map written"));
    assert!(changed.partitions.iter().all(|e| e.is_in_sync("node-2")));
    assert_eq!(
        changed.disks.get("node-2").map(String::as_str),
        Some("node-2-old")
    );
    w.apply(p);
    // node-2 reports its copies unproven (the record differs from its disk): the map drops it
    // from every inSync and records the new disk.
    let epochs: Vec<u64> = w.map().partitions.iter().map(|e| e.epoch).collect();
    if let Some(r) = w.obs.reports.get_mut("node-2") {
        r.partitions = epochs
            .iter()
            .enumerate()
            .map(|(p, &epoch)| PartitionState {
                unproven: true,
                ..state(p as u32, ReplicaRole::Learner, epoch)
            })
            .collect();
    }
    let dropped = w.plan().map.unwrap_or_else(|| panic!("no map written"));
    assert!(
        dropped.partitions.iter().all(|e| !e.is_in_sync("node-2")),
        "{dropped:?}"
    );
    assert_eq!(
        dropped.disks.get("node-2").map(String::as_str),
        Some("node-2-new")
    );
    assert_eq!(
        dropped.disks.get("node-0").map(String::as_str),
        Some("node-0-old")
    );
}
