//! Property tests of placement over random clusters and random histories.

use super::bench::apply;
use super::{PlacementNode, Target, check, lower_bound_moves, moves, place};
use proptest::prelude::*;
use shardedstore_node::map::{NodeState, PartitionMap};

fn cluster(n: usize, zones: usize) -> Vec<PlacementNode> {
    (0..n)
        .map(|i| PlacementNode {
            id: format!("node-{i}"),
            state: NodeState::Active,
            zone: (zones > 0).then(|| format!("z{}", i % zones)),
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Step {
    AddNode,
    Drain(usize),
    Fail(usize),
    Replace(usize),
    Recover(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::AddNode),
        2 => (0usize..64).prop_map(Step::Drain),
        2 => (0usize..64).prop_map(Step::Fail),
        1 => (0usize..64).prop_map(Step::Replace),
        1 => (0usize..64).prop_map(Step::Recover),
    ]
}

/// Places, checks, asserts stability and movement, and applies the target.
fn place_and_apply(
    map: &mut PartitionMap,
    nodes: &[PlacementNode],
    rf: u32,
    strict_moves: bool,
) -> Result<Target, TestCaseError> {
    let target = place(map, nodes, rf);
    let violations = check(&target, nodes, rf);
    prop_assert!(violations.is_empty(), "{violations:?}\nnodes {nodes:?}");
    prop_assert_eq!(&place(map, nodes, rf), &target, "not deterministic");
    let made = moves(map, &target);
    let bound = lower_bound_moves(map, nodes, rf);
    if strict_moves {
        prop_assert!(made >= bound, "moves {made} below the lower bound {bound}?");
        // Augmenting paths may relocate a few kept replicas; anything more is needless movement.
        let slack = 2 + bound / 10;
        prop_assert!(made <= bound + slack, "moves {made} vs lower bound {bound}");
    }
    apply(map, &target, nodes);
    // Placing again from the result must be a fixed point (no oscillating moves).
    let again = place(map, nodes, rf);
    prop_assert_eq!(moves(map, &again), 0, "placement is not a fixed point");
    Ok(target)
}

/// Places after every step of `steps`, checking every invariant (`place_and_apply`).
fn run_history(
    start: usize,
    partitions: u32,
    rf: u32,
    zones: usize,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let mut nodes = cluster(start, zones);
    let mut next = start;
    let mut map = PartitionMap::empty("t", partitions, rf, 1);
    place_and_apply(&mut map, &nodes, rf, zones == 0)?;
    for s in steps {
        let len = nodes.len();
        if len == 0 && !matches!(s, Step::AddNode) {
            continue;
        }
        match s {
            Step::AddNode => {
                nodes.push(PlacementNode {
                    id: format!("node-{next}"),
                    state: NodeState::Active,
                    zone: (zones > 0).then(|| format!("z{}", next % zones)),
                });
                next += 1;
            }
            Step::Drain(i) => nodes[i % len].state = NodeState::Draining,
            Step::Fail(i) => nodes[i % len].state = NodeState::Down,
            Step::Replace(i) => {
                if nodes[i % len].state == NodeState::Down {
                    nodes[i % len].state = NodeState::Replaced;
                }
            }
            Step::Recover(i) => nodes[i % len].state = NodeState::Active,
        }
        // Zone-skewed clusters are checked for everything but the movement bound (the
        // bound assumes balance, which skewed zones trade for zone spread).
        place_and_apply(&mut map, &nodes, rf, zones == 0)?;
        // Drained and replaced nodes that hold nothing leave the cluster.
        nodes.retain(|n| {
            matches!(n.state, NodeState::Active | NodeState::Down)
                || map.partitions.iter().any(|e| e.is_member(&n.id))
        });
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_histories_keep_every_invariant(
        start in 1usize..8,
        partitions in 1u32..48,
        rf in 1u32..4,
        zones in prop_oneof![Just(0usize), Just(2), Just(3)],
        steps in prop::collection::vec(step(), 1..12),
    ) {
        run_history(start, partitions, rf, zones, steps)?;
    }

    #[test]
    fn scale_out_from_scratch_moves_only_what_balance_requires(
        start in 1usize..10,
        added in 1usize..6,
        partitions in 1u32..200,
        rf in 1u32..4,
    ) {
        let mut nodes = cluster(start, 0);
        let mut map = PartitionMap::empty("t", partitions, rf, 1);
        place_and_apply(&mut map, &nodes, rf, true)?;
        nodes = cluster(start + added, 0);
        place_and_apply(&mut map, &nodes, rf, true)?;
    }
}

#[test]
fn keeps_replicas_of_a_down_node_and_moves_those_of_a_replaced_one() {
    let rf = 3;
    let mut nodes = cluster(5, 0);
    let mut map = PartitionMap::empty("t", 16, rf, 2);
    let t = place(&map, &nodes, rf);
    apply(&mut map, &t, &nodes);
    nodes[0].state = NodeState::Down;
    let t = place(&map, &nodes, rf);
    assert!(check(&t, &nodes, rf).is_empty());
    assert_eq!(
        moves(&map, &t),
        0,
        "a Down node's replicas stay until replaced"
    );
    assert!(
        t.partitions
            .iter()
            .all(|p| p.primary.as_deref() != Some("node-0")),
        "a Down node is never primary"
    );
    nodes[0].state = NodeState::Replaced;
    let t = place(&map, &nodes, rf);
    assert!(
        check(&t, &nodes, rf).is_empty(),
        "{:?}",
        check(&t, &nodes, rf)
    );
    assert!(
        t.partitions
            .iter()
            .all(|p| !p.replicas.contains(&"node-0".to_owned()))
    );
}

#[test]
fn zones_are_spread_even_when_skewed() {
    let rf = 3;
    let mut nodes = cluster(7, 3);
    // Skew: one more node in zone z0.
    nodes.push(PlacementNode {
        id: "node-extra".into(),
        state: NodeState::Active,
        zone: Some("z0".into()),
    });
    let map = PartitionMap::empty("t", 64, rf, 2);
    let t = place(&map, &nodes, rf);
    assert!(
        check(&t, &nodes, rf).is_empty(),
        "{:?}",
        check(&t, &nodes, rf)
    );
}

#[test]
fn check_reports_violations() {
    let nodes = cluster(3, 0);
    let bad = Target {
        partitions: vec![super::TargetPartition {
            replicas: vec!["node-0".into(), "node-0".into()],
            primary: Some("node-9".into()),
        }],
    };
    let v = check(&bad, &nodes, 3);
    assert!(
        v.iter()
            .any(|v| matches!(v, super::Violation::DuplicateReplica { .. }))
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, super::Violation::WrongReplicaCount { .. }))
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, super::Violation::BadPrimary { .. }))
    );
}

/// Runs the moves `place` asks for the way the coordinator does: at most `per_node` moves
/// per node at a time, each a learner that is admitted in a random later round, after which
/// the replica the target dropped leaves. Returns (moves started, moves cancelled).
fn run_moves(
    map: &mut PartitionMap,
    nodes: &[PlacementNode],
    rf: u32,
    per_node: usize,
    mut seed: u64,
) -> Result<(usize, usize), TestCaseError> {
    let mut coin = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.is_multiple_of(3)
    };
    let (mut started, mut cancelled) = (0, 0);
    for _round in 0..100_000 {
        let target = place(map, nodes, rf);
        let mut busy: std::collections::BTreeMap<String, usize> = Default::default();
        for (e, tp) in map.partitions.iter().zip(&target.partitions) {
            for l in &e.learners {
                *busy.entry(l.clone()).or_default() += 1;
                if let Some(src) = e.replicas.iter().find(|r| !tp.replicas.contains(r)) {
                    *busy.entry(src.clone()).or_default() += 1;
                }
            }
        }
        let mut changed = false;
        for (e, tp) in map.partitions.iter_mut().zip(&target.partitions) {
            // Admission of a learner that finished its copy.
            for l in e.learners.clone() {
                if tp.replicas.contains(&l) && coin() {
                    e.learners.retain(|m| *m != l);
                    e.replicas.push(l.clone());
                    e.in_sync.push(l);
                    changed = true;
                }
            }
            // Learners the target dropped are cancelled; replicas leave once the target's
            // replicas are all in sync (the primary through a hand-off).
            let before = e.learners.len();
            e.learners.retain(|l| tp.replicas.contains(l));
            cancelled += before - e.learners.len();
            if tp.replicas.iter().all(|n| e.in_sync.contains(n)) {
                let len = e.replicas.len();
                e.replicas.retain(|r| tp.replicas.contains(r));
                e.in_sync.retain(|r| tp.replicas.contains(r));
                changed |= len != e.replicas.len();
                if e.primary.as_ref().is_some_and(|p| !e.replicas.contains(p)) {
                    e.primary = tp.primary.clone();
                    e.epoch += 1;
                }
            }
            if !e.learners.is_empty() {
                continue;
            }
            let source = e
                .replicas
                .iter()
                .find(|r| !tp.replicas.contains(r))
                .cloned();
            let room = |n: &String| busy.get(n).copied().unwrap_or(0) < per_node;
            if source.as_ref().is_some_and(|s| !room(s)) {
                continue;
            }
            if let Some(to) = tp
                .replicas
                .iter()
                .find(|n| !e.is_member(n) && room(n))
                .cloned()
            {
                *busy.entry(to.clone()).or_default() += 1;
                if let Some(s) = source {
                    *busy.entry(s).or_default() += 1;
                }
                e.learners.push(to);
                started += 1;
                changed = true;
            }
        }
        let settled = map
            .partitions
            .iter()
            .zip(&target.partitions)
            .all(|(e, tp)| e.learners.is_empty() && e.replicas.len() == tp.replicas.len());
        if !changed && settled {
            prop_assert!(check(&target, nodes, rf).is_empty());
            return Ok((started, cancelled));
        }
    }
    Err(TestCaseError::fail("moves never settled"))
}

/// Places `partitions` on `start` nodes, adds `added` and runs the scale-out move by move
/// (`run_moves`): (moves first planned, moves started, moves cancelled).
fn scale_out(
    start: usize,
    added: usize,
    partitions: u32,
    rf: u32,
    zones: usize,
    per_node: usize,
    seed: u64,
) -> Result<(usize, usize, usize), TestCaseError> {
    let mut map = PartitionMap::empty("t", partitions, rf, 1);
    place_and_apply(&mut map, &cluster(start, zones), rf, zones == 0)?;
    let nodes = cluster(start + added, zones);
    let planned = moves(&map, &place(&map, &nodes, rf));
    let (started, cancelled) = run_moves(&mut map, &nodes, rf, per_node, seed)?;
    Ok((planned, started, cancelled))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A move the placement asked for is not cancelled by the placement itself while it is in
    /// flight: each cancellation throws a copy away and starts another.
    #[test]
    fn moves_in_flight_are_not_cancelled_by_placement(
        start in 1usize..7,
        added in 1usize..4,
        partitions in 1u32..160,
        rf in 1u32..4,
        zones in prop_oneof![Just(0usize), Just(2), Just(3)],
        per_node in 1usize..10,
        seed in 1u64..u64::MAX,
    ) {
        let (planned, started, cancelled) =
            scale_out(start, added, partitions, rf, zones, per_node, seed)?;
        prop_assert_eq!(cancelled, 0, "{} of {} moves cancelled ({} planned)", cancelled, started, planned);
        prop_assert!(few_more_moves(started, planned), "{} moves for {} planned", started, planned);
    }
}

/// Each finished move changes the loads the next target is computed from, so a few more
/// moves than first planned may be needed; never many. Over 100 000 random scale-outs of
/// this test's shape, 0.7 % more moves were made than first planned in all, 15 runs needed
/// more than a fifth more (plus two), 2 more than a quarter, none more than a third: the
/// worst were single-node additions at RF 3, where the source of a move in flight changes
/// as loads shift and another replica must then move between two old nodes. (Since the
/// shedding and fill order of 2026-12-04, 0.13 % over 5 000: `measure_scale_out_moves`.)
fn few_more_moves(started: usize, planned: usize) -> bool {
    started <= planned + 2 + planned / 3
}

/// A scale-out that needed more than a fifth more moves than planned (found by the property
/// test above): 18 moves for 13.
#[test]
fn a_scale_out_whose_sources_shift_still_makes_few_extra_moves() -> Result<(), TestCaseError> {
    let (planned, started, cancelled) = scale_out(4, 1, 21, 3, 2, 4, 6_379_157_611_681_563_370)?;
    assert_eq!(cancelled, 0);
    assert!(started >= planned, "{started} moves for {planned} planned");
    assert!(
        few_more_moves(started, planned),
        "{started} moves for {planned} planned"
    );
    Ok(())
}

/// Found by `random_histories_keep_every_invariant`: three Down nodes in zone z0 hold 62
/// replicas, and a partition with one of them needs no Active member in z0. Zone quotas that
/// ignored this asked z0's two Active nodes for 27 replicas, 4 more than zone spread let them
/// take; the relaxed fill then left a target from which placing again moved 2 more replicas
/// (not a fixed point).
#[test]
fn a_history_of_failures_drains_and_additions_in_two_zones_reaches_a_fixed_point()
-> Result<(), TestCaseError> {
    use Step::{AddNode, Drain, Fail};
    run_history(
        6,
        43,
        3,
        2,
        vec![
            Fail(14),
            Fail(18),
            AddNode,
            Drain(10),
            Fail(33),
            AddNode,
            AddNode,
        ],
    )
}

/// Found by `random_histories_keep_every_invariant`: node-2 is drained while node-0 is Down.
/// Eight of node-2's partitions also hold a replica on node-3 and can go to node-1 only; ten
/// hold one on node-0 and can go to node-1 or node-3. Filled in partition order, node-1 took
/// some of the ten first and the eight then had to shift replicas from node-1 to node-3: 22
/// moves where 18 do.
#[test]
fn a_drain_beside_a_down_node_moves_only_what_balance_requires() -> Result<(), TestCaseError> {
    use Step::{AddNode, Drain, Fail};
    run_history(
        1,
        41,
        2,
        0,
        vec![AddNode, AddNode, Fail(24), AddNode, Drain(6)],
    )
}

/// Found while changing the fill order: node-0 comes back after a drain and a failure and
/// must take 4 replicas, one from each node above the quota. Shedding a partition node-0
/// already holds sends it to a full node, which must shed another one to node-0: 7 moves
/// where 4 do. The shedding nodes now give away partitions an underloaded node can take.
#[test]
fn a_recovered_node_is_given_partitions_it_does_not_hold() -> Result<(), TestCaseError> {
    use Step::{AddNode, Drain, Fail, Recover};
    run_history(
        6,
        42,
        3,
        0,
        vec![
            Fail(0),
            Drain(63),
            AddNode,
            AddNode,
            Fail(38),
            Drain(20),
            Drain(45),
            Recover(35),
        ],
    )
}

/// Not a test: measures the moves made by random scale-outs of the property test's shape
/// against the moves first planned (`docs/benchmarks.md`, "Moves made during a scale-out").
/// `RUNS=100000 cargo test -p shardedstore-operator --lib measure_scale_out_moves --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement; prints figures"]
fn measure_scale_out_moves() {
    let runs: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // The same runs every time (a splitmix64 sequence: the figures in docs/benchmarks.md).
    let mut state: u64 = 0x1234_5678;
    let mut draw = move |below: u64| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    };
    let (mut planned_all, mut made_all, mut cancelled_all, mut failed) = (0, 0, 0, 0);
    let mut over = [0usize; 3]; // above planned + 2 + planned/5, /4, /3
    for _ in 0..runs {
        let start = 1 + draw(6) as usize;
        let added = 1 + draw(3) as usize;
        let partitions = 1 + draw(159) as u32;
        let rf = 1 + draw(3) as u32;
        let zones = [0usize, 2, 3][draw(3) as usize];
        let per_node = 1 + draw(9) as usize;
        let seed = 1 + draw(u64::MAX - 1);
        let Ok((planned, made, cancelled)) =
            scale_out(start, added, partitions, rf, zones, per_node, seed)
        else {
            failed += 1;
            continue;
        };
        planned_all += planned;
        made_all += made;
        cancelled_all += cancelled;
        for (i, d) in [5, 4, 3].into_iter().enumerate() {
            over[i] += usize::from(made > planned + 2 + planned / d);
        }
    }
    println!(
        "{runs} scale-outs: {planned_all} moves planned, {made_all} made ({} more), \
         {cancelled_all} cancelled, {failed} failed a check or never settled; runs above planned + 2 + \
         planned/5: {}, /4: {}, /3: {}",
        made_all - planned_all,
        over[0],
        over[1],
        over[2]
    );
}
