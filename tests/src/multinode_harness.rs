//! Multi-node end-to-end helpers, on top of [`crate::e2e_harness`]: the workers of a
//! multi-zone cluster and their zones, the pure checks of zone spread, and the faults only a
//! multi-node cluster has (a worker powered off; a request sent from inside a worker).
//!
//! - this file: workers, zones, pure checks.
//! - `worker`: driving the local multi-node cluster's workers (`hack/multinode-worker.sh`).
//! - `http`: one HTTP exchange from inside a worker's network namespace, parsed.
//! - `cli`: the `shardedstore` CLI run inside a worker (a client in that worker's zone).
//!
//! Works on any cluster whose nodes carry `topology.kubernetes.io/zone`; powering workers off
//! and sending requests from inside them needs the local cluster of `hack/multinode-up.sh`.

mod cli;
mod http;
mod worker;

pub use cli::{LocalAnswer, WorkerCli, parse_local_read, parse_put_version};
pub use http::{HttpAnswer, parse_answer};
pub use worker::{PoweredOff, Worker, worker_curl};

use crate::e2e_harness::{Cluster, E2eError};
use k8s_openapi::api::core::v1::{Node, Pod};
use shardedstore_node::map::PartitionMap;
use std::collections::{BTreeMap, BTreeSet};

/// The label the operator reads zones from by default.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Why a multi-node step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum MultinodeError {
    #[error(transparent)]
    Cluster(#[from] E2eError),
    #[error("not a multi-zone cluster: {0}")]
    NotMultiZone(String),
    #[error("malformed HTTP answer from inside a worker: {0:?}")]
    MalformedAnswer(String),
    #[error("the CLI inside a worker: {0}")]
    Cli(String),
}

/// A schedulable machine of the cluster and its zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub zone: String,
}

/// The cluster's nodes that carry a zone label, by name; at least `zones` distinct zones.
pub fn zoned_nodes(cluster: &Cluster, zones: usize) -> Result<Vec<ClusterNode>, MultinodeError> {
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Node>,
    }
    let list: Items = cluster.get(&["nodes"])?;
    let mut nodes: Vec<ClusterNode> = list
        .items
        .iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(ZONE_LABEL)?.clone();
            Some(ClusterNode {
                name: n.metadata.name.clone()?,
                zone,
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let distinct: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    if distinct.len() < zones {
        return Err(MultinodeError::NotMultiZone(format!(
            "{} zones ({distinct:?}) on {} labelled nodes, need {zones} \
             (run `make multinode-up` and set SHARDEDSTORE_E2E_KUBECONFIG)",
            distinct.len(),
            nodes.len()
        )));
    }
    Ok(nodes)
}

/// The Kubernetes node a pod is bound to.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Zone of every storage pod (map node id = pod name), from the node it runs on.
pub fn pod_zones(pods: &[Pod], nodes: &[ClusterNode]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|p| {
            let node = pod_node(p)?;
            let zone = nodes.iter().find(|n| n.name == node)?.zone.clone();
            Some((p.metadata.name.clone()?, zone))
        })
        .collect()
}

/// Everything that breaks zone spread in `map`, given each node's zone: a partition whose
/// replicas do not sit in `min(replicas, zones)` distinct zones, a map node whose recorded zone
/// differs from the one Kubernetes says, or primaries per node unbalanced by more than one.
pub fn zone_spread_problems(
    map: &PartitionMap,
    zone_of: &BTreeMap<String, String>,
    zones: usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, info) in &map.nodes {
        if info.zone.as_ref() != zone_of.get(id) {
            problems.push(format!(
                "map says {id} is in zone {:?}, its node is in {:?}",
                info.zone,
                zone_of.get(id)
            ));
        }
    }
    for (p, entry) in map.partitions.iter().enumerate() {
        let distinct: BTreeSet<Option<&String>> =
            entry.replicas.iter().map(|r| zone_of.get(r)).collect();
        let want = entry.replicas.len().min(zones);
        if distinct.len() < want || distinct.contains(&None) {
            problems.push(format!(
                "partition {p}: replicas {:?} in zones {distinct:?}, want {want} distinct",
                entry.replicas
            ));
        }
    }
    let per_node = primaries_per(map, |id| Some(id.to_owned()));
    let active = map.nodes.len();
    let min = if per_node.len() < active {
        0
    } else {
        per_node.values().copied().min().unwrap_or(0)
    };
    let max = per_node.values().copied().max().unwrap_or(0);
    if max > min + 1 {
        problems.push(format!("primaries per node unbalanced: {per_node:?}"));
    }
    problems
}

/// Number of partitions led by each key `key_of(primary)` returns (a node, a zone, ...).
pub fn primaries_per(
    map: &PartitionMap,
    key_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for primary in map.partitions.iter().filter_map(|e| e.primary.as_deref()) {
        if let Some(key) = key_of(primary) {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// The worker to power off: not `spare` (the host reaches Services through it), holding
/// exactly one storage pod, preferably no operator pod. `None` when no worker qualifies.
pub fn choose_victim(
    store_pods_per_node: &BTreeMap<String, usize>,
    operator_nodes: &BTreeSet<String>,
    candidates: &[String],
    spare: &str,
) -> Option<String> {
    let eligible = candidates
        .iter()
        .filter(|n| n.as_str() != spare && store_pods_per_node.get(*n) == Some(&1));
    let mut eligible: Vec<&String> = eligible.collect();
    eligible.sort_by_key(|n| (operator_nodes.contains(*n), (*n).clone()));
    eligible.first().map(|n| (*n).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardedstore_node::map::{NodeInfo, PartitionEntry};

    fn map_of(parts: &[(&str, &[&str])], zones: &[(&str, &str)]) -> PartitionMap {
        let mut map = PartitionMap::empty("s", parts.len() as u32, 3, 2);
        for (i, (primary, replicas)) in parts.iter().enumerate() {
            map.partitions[i] = PartitionEntry {
                epoch: 1,
                primary: Some((*primary).to_owned()),
                replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
                in_sync: replicas.iter().map(|r| (*r).to_owned()).collect(),
                learners: vec![],
            };
        }
        for (id, zone) in zones {
            map.nodes.insert(
                (*id).to_owned(),
                NodeInfo {
                    client_addr: format!("{id}:7000"),
                    peer_addr: format!("{id}:7100"),
                    zone: Some((*zone).to_owned()),
                    state: Default::default(),
                },
            );
        }
        map
    }

    fn zones(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    const ABC: [(&str, &str); 3] = [("s-0", "zone-a"), ("s-1", "zone-b"), ("s-2", "zone-c")];

    #[test]
    fn replicas_in_three_zones_with_balanced_primaries_pass() {
        let all: &[&str] = &["s-0", "s-1", "s-2"];
        let map = map_of(&[("s-0", all), ("s-1", all), ("s-2", all)], &ABC);
        assert_eq!(
            zone_spread_problems(&map, &zones(&ABC), 3),
            Vec::<String>::new()
        );
    }

    #[test]
    fn two_replicas_in_one_zone_are_reported() {
        let nodes = [
            ("s-0", "zone-a"),
            ("s-1", "zone-b"),
            ("s-2", "zone-c"),
            ("s-3", "zone-a"),
        ];
        let map = map_of(
            &[
                ("s-0", &["s-0", "s-3", "s-1"]),
                ("s-1", &["s-1", "s-2", "s-0"]),
                ("s-2", &["s-2", "s-3", "s-1"]),
                ("s-3", &["s-3", "s-1", "s-2"]),
            ],
            &nodes,
        );
        let problems = zone_spread_problems(&map, &zones(&nodes), 3);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("partition 0"), "{problems:?}");
    }

    #[test]
    fn a_wrong_zone_in_the_map_and_unbalanced_primaries_are_reported() {
        let all: &[&str] = &["s-0", "s-1", "s-2"];
        let mut map = map_of(&[("s-0", all), ("s-0", all), ("s-2", all)], &ABC);
        if let Some(n) = map.nodes.get_mut("s-1") {
            n.zone = Some("zone-x".to_owned());
        }
        let problems = zone_spread_problems(&map, &zones(&ABC), 3);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("zone-x"), "{problems:?}");
        assert!(problems[1].contains("unbalanced"), "{problems:?}");
    }

    #[test]
    fn primaries_are_counted_per_zone() {
        let all: &[&str] = &["s-0", "s-1", "s-2"];
        let map = map_of(&[("s-0", all), ("s-0", all), ("s-2", all)], &ABC);
        let z = zones(&ABC);
        let per_zone = primaries_per(&map, |id| z.get(id).cloned());
        assert_eq!(per_zone.get("zone-a"), Some(&2));
        assert_eq!(per_zone.get("zone-b"), None);
        assert_eq!(per_zone.get("zone-c"), Some(&1));
    }

    #[test]
    fn the_victim_holds_one_pod_is_not_the_spare_and_avoids_the_operator() {
        let pods: BTreeMap<String, usize> = [("w1", 1), ("w2", 2), ("w3", 1), ("w4", 1)]
            .iter()
            .map(|(n, c)| ((*n).to_owned(), *c))
            .collect();
        let names: Vec<String> = ["w1", "w2", "w3", "w4"].map(str::to_owned).to_vec();
        let operator: BTreeSet<String> = ["w3".to_owned()].into();
        assert_eq!(
            choose_victim(&pods, &operator, &names, "w1").as_deref(),
            Some("w4")
        );
        let operator: BTreeSet<String> = ["w3".to_owned(), "w4".to_owned()].into();
        assert_eq!(
            choose_victim(&pods, &operator, &names, "w1").as_deref(),
            Some("w3")
        );
        assert_eq!(choose_victim(&pods, &operator, &names[..2], "w1"), None);
    }
}
