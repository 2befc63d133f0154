//! The ShardedStore under test: its manifest, the pure checks of its status and partition
//! map, and reading its pods and map from the cluster.

use super::{Cluster, E2eError};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use shardedstore_node::map::{NodeId, PartitionMap};
use shardedstore_operator::crd::{NodeLifecycle, ShardedStore};

/// The fields of a ShardedStore manifest the suite varies; resources are kept small (the
/// CI machine has two cores).
#[derive(Clone, Debug)]
pub struct StoreManifest {
    pub name: String,
    pub nodes: u32,
    pub partitions: u32,
    pub replication_factor: u32,
    /// `resources.requests.cpu` of each storage pod; changing it rolls the pods.
    pub cpu_request: String,
    pub memory_limit: String,
    pub storage_size: String,
}

impl StoreManifest {
    /// A store of `nodes` pods, 32 partitions, RF 3, 25m CPU, 256Mi memory, 64Mi volumes.
    pub fn small(name: &str, nodes: u32) -> Self {
        Self {
            name: name.to_owned(),
            nodes,
            partitions: 32,
            replication_factor: 3,
            cpu_request: "25m".to_owned(),
            memory_limit: "256Mi".to_owned(),
            storage_size: "64Mi".to_owned(),
        }
    }

    /// The YAML a user would `kubectl apply`.
    pub fn to_yaml(&self) -> String {
        let pull = std::env::var("SHARDEDSTORE_E2E_PULL_POLICY")
            .unwrap_or_else(|_| "IfNotPresent".to_owned());
        format!(
            "apiVersion: shardedstore.io/v1alpha1
kind: ShardedStore
metadata:
  name: {name}
spec:
  nodes: {nodes}
  partitions: {partitions}
  replicationFactor: {rf}
  imagePullPolicy: {pull}
  resources:
    requests:
      cpu: {cpu}
      memory: 64Mi
    limits:
      memory: {mem}
  storage:
    size: {storage}
",
            name = self.name,
            nodes = self.nodes,
            partitions = self.partitions,
            rf = self.replication_factor,
            cpu = self.cpu_request,
            mem = self.memory_limit,
            storage = self.storage_size,
        )
    }
}

/// Everything that keeps `store` from being settled at `nodes` Active, Ready pods: Ready
/// condition True for the current generation, every partition healthy, no move in flight,
/// replicas and primaries balanced within ±1. Empty when settled.
pub fn store_problems(store: &ShardedStore, nodes: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(status) = &store.status else {
        return vec!["no status yet".to_owned()];
    };
    let generation = store.metadata.generation;
    if status.observed_generation != generation {
        problems.push(format!(
            "observedGeneration {:?} != generation {generation:?}",
            status.observed_generation
        ));
    }
    match status.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => {}
        Some(c) => problems.push(format!("Ready={} ({}: {})", c.status, c.reason, c.message)),
        None => problems.push("no Ready condition".to_owned()),
    }
    if usize::try_from(status.ready_nodes).ok() != Some(nodes) {
        problems.push(format!("readyNodes {} != {nodes}", status.ready_nodes));
    }
    let s = &status.partition_summary;
    if s.total == 0 || s.healthy != s.total || s.moving != 0 || s.under_replicated != 0 {
        problems.push(format!(
            "partitions: {} healthy of {}, {} under-replicated, {} unavailable, {} moving",
            s.healthy, s.total, s.under_replicated, s.unavailable, s.moving
        ));
    }
    if !status.moves.is_empty() {
        problems.push(format!("{} moves in flight", status.moves.len()));
    }
    let active = status
        .nodes
        .iter()
        .filter(|n| n.state == NodeLifecycle::Active)
        .count();
    if active != nodes || status.nodes.len() != nodes {
        let states: Vec<String> = status
            .nodes
            .iter()
            .map(|n| format!("{}={:?}", n.name, n.state))
            .collect();
        problems.push(format!("nodes in map: {}", states.join(",")));
    }
    let (replicas, primaries) = replica_spread(store);
    if replicas.1 - replicas.0 > 1 || primaries.1 - primaries.0 > 1 {
        problems.push(format!(
            "unbalanced: replicas per node {}..={}, primaries per node {}..={}",
            replicas.0, replicas.1, primaries.0, primaries.1
        ));
    }
    problems
}

/// (min, max) of replicas per node and of primaries per node over the status' nodes.
pub fn replica_spread(store: &ShardedStore) -> ((i32, i32), (i32, i32)) {
    let nodes = store
        .status
        .as_ref()
        .map(|s| s.nodes.as_slice())
        .unwrap_or_default();
    let spread = |f: fn(&shardedstore_operator::crd::NodeStatus) -> i32| {
        let min = nodes.iter().map(f).min().unwrap_or(0);
        let max = nodes.iter().map(f).max().unwrap_or(0);
        (min, max)
    };
    (spread(|n| n.replicas), spread(|n| n.primaries))
}

/// Nodes of `store` with a StatefulSet ordinal `>= replicas` that still hold a replica or a
/// learner in `map`: a StatefulSet of `replicas` pods must never have removed them.
pub fn placement_on_removed_nodes(map: &PartitionMap, store: &str, replicas: u32) -> Vec<NodeId> {
    let mut holders: Vec<NodeId> = map
        .partitions
        .iter()
        .flat_map(|p| p.members())
        .filter(|node| {
            node.strip_prefix(store)
                .and_then(|s| s.strip_prefix('-'))
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|ordinal| ordinal >= replicas)
        })
        .cloned()
        .collect();
    holders.sort();
    holders.dedup();
    holders
}

/// The partition map the operator published (ConfigMap `<store>-partition-map`, key `map.json`).
pub fn partition_map(cluster: &Cluster, ns: &str, store: &str) -> Result<PartitionMap, E2eError> {
    let name = format!("{store}-partition-map");
    let cm: ConfigMap = cluster.get(&["configmap", &name, "-n", ns])?;
    let json = cm
        .data
        .and_then(|mut d| d.remove("map.json"))
        .unwrap_or_default();
    serde_json::from_str(&json).map_err(|source| E2eError::Decode {
        what: format!("map.json of ConfigMap {ns}/{name}"),
        source,
    })
}

/// The storage pods of `store`, by name.
pub fn node_pods(cluster: &Cluster, ns: &str, store: &str) -> Result<Vec<Pod>, E2eError> {
    let selector = format!("shardedstore.io/store={store}");
    // `kubectl get -l` answers a `kind: List`, not a `PodList`.
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Pod>,
    }
    let mut list: Items = cluster.get(&["pods", "-n", ns, "-l", &selector])?;
    list.items
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(list.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardedstore_node::map::PartitionEntry;
    use shardedstore_operator::crd::{NodeStatus, PartitionSummary, ShardedStoreStatus};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn settled(nodes: i32) -> Result<ShardedStore, serde_yaml::Error> {
        let mut store: ShardedStore =
            serde_yaml::from_str(&StoreManifest::small("s", 3).to_yaml())?;
        store.metadata.generation = Some(2);
        let ready = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".to_owned(),
            status: "True".to_owned(),
            reason: "Ready".to_owned(),
            message: String::new(),
            observed_generation: Some(2),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Default::default(),
            ),
        };
        store.status = Some(ShardedStoreStatus {
            observed_generation: Some(2),
            conditions: vec![ready],
            ready_nodes: nodes,
            partition_summary: PartitionSummary {
                total: 32,
                healthy: 32,
                ..Default::default()
            },
            nodes: (0..nodes)
                .map(|i| NodeStatus {
                    name: format!("s-{i}"),
                    state: NodeLifecycle::Active,
                    replicas: if i == 0 { 20 } else { 19 },
                    primaries: 6,
                })
                .collect(),
            ..Default::default()
        });
        Ok(store)
    }

    #[test]
    fn manifest_parses_as_a_store() -> TestResult {
        let m = StoreManifest::small("demo", 3);
        let store: ShardedStore = serde_yaml::from_str(&m.to_yaml())?;
        assert_eq!(store.spec.nodes, 3);
        assert_eq!(store.spec.partitions, 32);
        assert_eq!(store.spec.replication_factor, 3);
        Ok(())
    }

    #[test]
    fn a_settled_store_has_no_problems() -> TestResult {
        assert_eq!(store_problems(&settled(5)?, 5), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn each_unsettled_aspect_is_reported() -> TestResult {
        assert_eq!(
            store_problems(&settled(3)?, 5).len(),
            2,
            "readyNodes and nodes"
        );
        let mut s = settled(3)?;
        let st = s.status.as_mut().ok_or("no status")?;
        st.observed_generation = Some(1);
        st.conditions[0].status = "False".to_owned();
        st.partition_summary.healthy = 31;
        st.nodes[1].replicas = 30;
        st.moves.push(shardedstore_operator::crd::MoveStatus {
            partition: 1,
            from: "s-0".to_owned(),
            to: "s-2".to_owned(),
            state: "CatchingUp".to_owned(),
            bytes_done: 0,
            reason: None,
        });
        assert_eq!(
            store_problems(&s, 3).len(),
            5,
            "{:?}",
            store_problems(&s, 3)
        );
        s.status = None;
        assert_eq!(store_problems(&s, 3), vec!["no status yet".to_owned()]);
        Ok(())
    }

    #[test]
    fn replicas_on_removed_ordinals_are_found() {
        let mut map = PartitionMap::empty("s", 2, 3, 2);
        map.partitions[0] = PartitionEntry {
            epoch: 1,
            primary: Some("s-0".to_owned()),
            replicas: vec!["s-0".to_owned(), "s-1".to_owned(), "s-3".to_owned()],
            in_sync: vec!["s-0".to_owned()],
            learners: vec!["s-4".to_owned()],
        };
        assert_eq!(placement_on_removed_nodes(&map, "s", 3), vec!["s-3", "s-4"]);
        assert_eq!(
            placement_on_removed_nodes(&map, "s", 5),
            Vec::<String>::new()
        );
        assert_eq!(
            placement_on_removed_nodes(&map, "s-1", 0),
            Vec::<String>::new()
        );
    }
}
