//! `shardedstore status`: a per-node and per-partition health summary computed from the
//! partition map (pure), plus the reachability of each node, rendered as a table.

use shardedstore_node::map::{NodeId, NodeState, PartitionId, PartitionMap};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// One node's share of the map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub replicas: usize,
    pub primaries: usize,
    pub in_sync: usize,
    pub learners: usize,
}

/// Partition health as the map tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub nodes: BTreeMap<NodeId, NodeLoad>,
    /// Every in-sync replica present and a primary.
    pub healthy: usize,
    /// Serving, with fewer in-sync replicas than the replication factor.
    pub under_replicated: Vec<PartitionId>,
    /// No primary, a primary on a node that is down, or fewer than `minInSync` in sync
    /// (writes are refused).
    pub unavailable: Vec<PartitionId>,
    /// Partitions with a learner catching up (a move in progress).
    pub moving: usize,
}

/// What probing a node found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Up { map_version: u64, latency: Duration },
    Down { error: String },
}

pub fn summarize(map: &PartitionMap) -> Summary {
    let mut s = Summary {
        nodes: map
            .nodes
            .keys()
            .map(|n| (n.clone(), NodeLoad::default()))
            .collect(),
        ..Summary::default()
    };
    for (p, e) in map.partitions.iter().enumerate() {
        let p = p as PartitionId;
        for n in &e.replicas {
            let load = s.nodes.entry(n.clone()).or_default();
            load.replicas += 1;
            if e.is_in_sync(n) {
                load.in_sync += 1;
            }
        }
        for n in &e.learners {
            s.nodes.entry(n.clone()).or_default().learners += 1;
        }
        if let Some(primary) = &e.primary {
            s.nodes.entry(primary.clone()).or_default().primaries += 1;
        }
        let primary_up = e.primary.as_ref().is_some_and(|n| {
            map.nodes
                .get(n)
                .is_some_and(|i| !matches!(i.state, NodeState::Down | NodeState::Replaced))
        });
        if !primary_up || e.in_sync.len() < map.min_in_sync as usize {
            s.unavailable.push(p);
        } else if e.in_sync.len() < map.replication_factor as usize {
            s.under_replicated.push(p);
        } else {
            s.healthy += 1;
        }
        if !e.learners.is_empty() {
            s.moving += 1;
        }
    }
    s
}

/// Partition numbers as a short list: `3, 17, 40 … (12 in all)`.
fn list(ps: &[PartitionId]) -> String {
    const SHOWN: usize = 16;
    let mut out: Vec<String> = ps.iter().take(SHOWN).map(ToString::to_string).collect();
    if ps.len() > SHOWN {
        out.push(format!("… ({} in all)", ps.len()));
    }
    out.join(", ")
}

pub fn render(map: &PartitionMap, s: &Summary, reach: &BTreeMap<NodeId, Reach>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "store {}  map version {}  partitions {}  replication factor {}  min in-sync {}",
        map.store,
        map.version,
        map.partition_count(),
        map.replication_factor,
        map.min_in_sync
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<10} {:<9} {:>8} {:>9} {:>7} {:>8}  REACHABLE",
        "NODE", "CLIENT ADDRESS", "ZONE", "STATE", "REPLICAS", "PRIMARIES", "IN-SYNC", "LEARNERS"
    );
    for (id, load) in &s.nodes {
        let info = map.nodes.get(id);
        let reach = match reach.get(id) {
            Some(Reach::Up {
                map_version,
                latency,
            }) => format!(
                "yes ({:.1} ms, map version {map_version})",
                latency.as_secs_f64() * 1000.0
            ),
            Some(Reach::Down { error }) => format!("NO: {error}"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<10} {:<9} {:>8} {:>9} {:>7} {:>8}  {reach}",
            id,
            info.map_or("?", |i| i.client_addr.as_str()),
            info.and_then(|i| i.zone.as_deref()).unwrap_or("-"),
            info.map_or_else(|| "?".to_owned(), |i| format!("{:?}", i.state)),
            load.replicas,
            load.primaries,
            load.in_sync,
            load.learners
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "partitions: {} healthy, {} under-replicated, {} unavailable, {} moving",
        s.healthy,
        s.under_replicated.len(),
        s.unavailable.len(),
        s.moving
    );
    if !s.unavailable.is_empty() {
        let _ = writeln!(out, "unavailable: {}", list(&s.unavailable));
    }
    if !s.under_replicated.is_empty() {
        let _ = writeln!(out, "under-replicated: {}", list(&s.under_replicated));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardedstore_node::map::{NodeInfo, PartitionEntry};

    fn map() -> PartitionMap {
        let mut m = PartitionMap::empty("demo", 4, 3, 2);
        m.version = 9;
        for i in 0..3 {
            m.nodes.insert(
                format!("node-{i}"),
                NodeInfo {
                    client_addr: format!("127.0.0.1:700{i}"),
                    peer_addr: format!("127.0.0.1:710{i}"),
                    zone: None,
                    state: NodeState::Active,
                },
            );
        }
        let all: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
        for (p, e) in m.partitions.iter_mut().enumerate() {
            *e = PartitionEntry {
                epoch: 1,
                primary: Some(format!("node-{}", p % 3)),
                replicas: all.clone(),
                in_sync: all.clone(),
                learners: vec![],
            };
        }
        // Partition 1: one follower out of sync. Partition 2: no primary.
        // Partition 3: only the primary in sync, below minInSync.
        m.partitions[1].in_sync = vec!["node-1".into(), "node-2".into()];
        m.partitions[2].primary = None;
        m.partitions[3].in_sync = vec!["node-0".into()];
        m
    }

    #[test]
    fn partitions_are_classified_from_the_map() {
        let s = summarize(&map());
        assert_eq!(s.healthy, 1);
        assert_eq!(s.under_replicated, vec![1]);
        assert_eq!(s.unavailable, vec![2, 3]);
        let n0 = &s.nodes["node-0"];
        assert_eq!((n0.replicas, n0.primaries, n0.in_sync), (4, 2, 3));
        let n2 = &s.nodes["node-2"];
        assert_eq!((n2.replicas, n2.primaries, n2.in_sync), (4, 0, 3));
    }

    #[test]
    fn a_primary_on_a_down_node_is_unavailable() {
        let mut m = map();
        if let Some(n) = m.nodes.get_mut("node-0") {
            n.state = NodeState::Down;
        }
        let s = summarize(&m);
        assert!(s.unavailable.contains(&0), "{:?}", s.unavailable);
        assert_eq!(s.healthy, 0);
    }

    #[test]
    fn the_table_shows_every_node_and_its_reachability() {
        let m = map();
        let reach = BTreeMap::from([
            (
                "node-0".to_owned(),
                Reach::Up {
                    map_version: 9,
                    latency: Duration::from_micros(1500),
                },
            ),
            (
                "node-1".to_owned(),
                Reach::Down {
                    error: "connection refused".into(),
                },
            ),
        ]);
        let text = render(&m, &summarize(&m), &reach);
        assert!(text.contains("map version 9"), "{text}");
        assert!(text.contains("yes (1.5 ms, map version 9)"), "{text}");
        assert!(text.contains("NO: connection refused"), "{text}");
        assert!(
            text.contains("1 healthy, 1 under-replicated, 2 unavailable"),
            "{text}"
        );
        assert!(text.contains("unavailable: 2, 3"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("node-")).count(), 3);
    }

    #[test]
    fn long_partition_lists_are_shortened() {
        let ps: Vec<u32> = (0..40).collect();
        let l = list(&ps);
        assert!(l.ends_with("… (40 in all)"), "{l}");
        assert_eq!(l.matches(", ").count(), 16);
    }
}
