//! Unit tests of the pure schedule.

use super::*;

fn cfg(network: bool) -> NemesisConfig {
    with_tools(network, true)
}

fn with_tools(network: bool, disk: bool) -> NemesisConfig {
    NemesisConfig {
        keys: 5,
        base_nodes: 3,
        max_nodes: 4,
        lease: Duration::from_millis(2000),
        duration: Duration::from_secs(60),
        min_gap: Duration::from_millis(500),
        max_gap: Duration::from_millis(3000),
        network,
        disk,
    }
}

fn all_faults(network: bool, seeds: u64) -> Vec<Fault> {
    (0..seeds)
        .flat_map(|s| schedule(s, &cfg(network)))
        .map(|s| s.fault)
        .collect()
}

#[test]
fn a_seed_always_yields_the_same_schedule() {
    assert_eq!(schedule(7, &cfg(true)), schedule(7, &cfg(true)));
    assert_ne!(schedule(7, &cfg(true)), schedule(8, &cfg(true)));
}

fn check_bounds(f: &Fault, c: &NemesisConfig) {
    match f {
        Fault::PauseNode { millis, key, .. } | Fault::Partition { millis, key, .. } => {
            assert!(*millis > 2000, "must outlast the lease: {f:?}");
            assert!(*key < c.keys);
        }
        Fault::KillNode { key, .. }
        | Fault::StopNode { key, .. }
        | Fault::PowerLoss { key, .. } => {
            assert!(*key < c.keys)
        }
        Fault::Disk {
            key, disk, millis, ..
        } => {
            assert!(*key < c.keys);
            match disk {
                DiskFault::SlowFsync { millis: d } => {
                    assert!((20..=400).contains(d), "{f:?}");
                    assert!(*millis >= 1000, "{f:?}");
                }
                DiskFault::Full { slack } => {
                    assert!(*slack <= 256 * 1024, "{f:?}");
                    assert!(*millis > 2000, "must outlast the lease: {f:?}");
                }
                DiskFault::Hang | DiskFault::FsyncEio => {
                    assert!(*millis > 2000, "must outlast the lease: {f:?}")
                }
            }
        }
        Fault::PowerLossAll => {}
        Fault::Scale { nodes } => assert!((3..=4).contains(nodes)),
        Fault::KillOperator { millis } => assert!(*millis <= 2000),
        Fault::Overlap(a, b) => {
            assert!(!matches!(**a, Fault::Overlap(..)) && !matches!(**b, Fault::Overlap(..)));
            check_bounds(a, c);
            check_bounds(b, c);
        }
    }
}

#[test]
fn schedules_fit_their_time_and_bounds() {
    for seed in 0..200 {
        let c = cfg(true);
        let steps = schedule(seed, &c);
        assert!(!steps.is_empty(), "seed {seed}");
        let total: Duration = steps.iter().map(|s| s.after + fault_time(&s.fault)).sum();
        assert!(total <= c.duration, "seed {seed}: {total:?}");
        for s in &steps {
            check_bounds(&s.fault, &c);
        }
    }
}

#[test]
fn over_many_seeds_every_kind_of_fault_occurs() {
    let kinds: std::collections::BTreeSet<Kind> =
        all_faults(true, 50).iter().flat_map(Fault::kinds).collect();
    for k in Kind::ALL {
        assert!(kinds.contains(&k), "{k:?} never drawn");
    }
    let all = all_faults(true, 50);
    for role in [Role::Primary, Role::Follower(0)] {
        let same = |r: &Role| {
            matches!(
                (r, role),
                (Role::Primary, Role::Primary) | (Role::Follower(_), Role::Follower(_))
            )
        };
        assert!(
            all.iter()
                .any(|f| matches!(f, Fault::KillNode { role: r, .. } if same(r)))
        );
        assert!(
            all.iter()
                .any(|f| matches!(f, Fault::PauseNode { role: r, .. } if same(r)))
        );
    }
    assert!(all.iter().any(|f| matches!(f, Fault::Scale { nodes: 4 })));
    assert!(all.iter().any(|f| matches!(f, Fault::Scale { nodes: 3 })));
    // A partition during a move.
    assert!(all.iter().any(|f| matches!(f, Fault::Overlap(a, b)
        if matches!(**a, Fault::Scale { .. }) && matches!(**b, Fault::Partition { .. }))));
}

#[test]
fn without_the_partition_harness_no_partition_is_drawn() {
    for f in all_faults(false, 100) {
        assert!(
            f.kinds().iter().all(|k| !k.needs_network()),
            "{f:?} needs nftables"
        );
    }
}

#[test]
fn without_faultfs_no_disk_fault_is_drawn_and_with_it_both_power_losses_are() {
    let c = with_tools(true, false);
    for f in (0..100).flat_map(|s| schedule(s, &c)).map(|s| s.fault) {
        assert!(
            f.kinds().iter().all(|k| !k.needs_disk()),
            "{f:?} needs faultfs"
        );
    }
    let all = all_faults(false, 50);
    assert!(all.iter().any(|f| matches!(f, Fault::PowerLoss { .. })));
    assert!(all.iter().any(|f| matches!(f, Fault::PowerLossAll)));
    // A disk fault during a move, and a disk fault together with a partition.
    let all = all_faults(true, 100);
    assert!(all.iter().any(|f| matches!(f, Fault::Overlap(a, b)
        if matches!(**a, Fault::Scale { .. }) && matches!(**b, Fault::Disk { .. }))));
    assert!(all.iter().any(|f| matches!(f, Fault::Overlap(a, b)
        if matches!(**a, Fault::Disk { .. }) && matches!(**b, Fault::Partition { .. }))));
}

#[test]
fn covering_seeds_together_draw_every_kind() {
    let c = cfg(true);
    let seeds = covering_seeds(&c, &Kind::ALL, 200);
    let kinds: std::collections::BTreeSet<Kind> = seeds
        .iter()
        .flat_map(|s| schedule(*s, &c))
        .flat_map(|s| s.fault.kinds())
        .collect();
    assert_eq!(
        kinds.len(),
        Kind::ALL.len(),
        "seeds {seeds:?} cover {kinds:?}"
    );
    assert!(seeds.len() <= 6, "{seeds:?}");
}
