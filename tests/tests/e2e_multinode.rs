//! End to end on a real multi-node, multi-zone Kubernetes cluster: the disruptions only such
//! a cluster can show. Zone spread of replicas and primaries, `kubectl drain` of a worker under
//! write load, the loss of a whole worker (power cut) and its return, and cordon + scale out —
//! every acknowledged write read back. Run with `make e2e-multinode` on the cluster of
//! `make multinode-up` (docs/e2e.md); the cluster is named by `SHARDEDSTORE_E2E_KUBECONFIG`.
//!
//! Each test makes its own namespace and store (deleted when it ends, also on failure) and
//! installs the operator if it is missing, so each can run alone:
//! `cargo test -p shardedstore-tests --test e2e_multinode -- --ignored --test-threads=1 NAME`.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use shardedstore_node::client::KvClient;
use shardedstore_node::map::{NodeState, PartitionMap};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_tests::e2e_harness::{
    Cluster, E2eError, OPERATOR_NAMESPACE, StoreManifest, TestNamespace, install_operator,
    map_version, node_pods, partition_map, pod_ready, replica_spread, store_problems, wait_for,
};
use shardedstore_tests::local_harness::{WriteLoad, assert_nothing_lost, write_ledger};
use shardedstore_tests::multinode_harness::{
    ClusterNode, Worker, choose_victim, pod_node, pod_zones, primaries_per, zone_spread_problems,
    zoned_nodes,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const STORE: &str = "mn";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);
/// The worker the host reaches Services through (`hack/multinode-lib.sh`): never powered off.
const SPARE_WORKER: &str = "mn-worker-1";
/// The operator's default lease and the bound docs/protocol.md gives for taking writes again after
/// a node stops answering: lease + 5 s.
const LEASE: Duration = Duration::from_secs(4);
const FAILOVER_BOUND: Duration = Duration::from_secs(4 + 5);

/// A settled store in a fresh namespace on a cluster with three zones, and a client of it.
struct Fixture {
    cluster: Cluster,
    ns: TestNamespace,
    client: KvClient,
    nodes: Vec<ClusterNode>,
}

impl Fixture {
    /// A store of `nodes` pods; `extra_spec` is appended to its spec (two-space indented).
    async fn start(prefix: &str, nodes: u32, extra_spec: &str) -> anyhow::Result<Self> {
        let cluster = Cluster::from_env()?;
        let zoned = zoned_nodes(&cluster, 3)?;
        install_operator(&cluster, false).await?;
        let ns = cluster.namespace(prefix)?;
        let started = Instant::now();
        let manifest = StoreManifest::small(STORE, nodes).to_yaml() + extra_spec;
        cluster.kubectl_with_input(&["apply", "-n", ns.name(), "-f", "-"], Some(&manifest))?;
        wait_settled(&cluster, ns.name(), nodes, 0).await?;
        eprintln!(
            "store {}/{STORE} with {nodes} nodes settled in {:.1?}",
            ns.name(),
            started.elapsed()
        );
        let client = store_client(&cluster, ns.name())?;
        Ok(Self {
            cluster,
            ns,
            client,
            nodes: zoned,
        })
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    fn store(&self) -> Result<ShardedStore, E2eError> {
        self.cluster.get(&["sst", STORE, "-n", self.ns()])
    }

    fn pods(&self) -> Result<Vec<Pod>, E2eError> {
        node_pods(&self.cluster, self.ns(), STORE)
    }

    fn map(&self) -> Result<PartitionMap, E2eError> {
        partition_map(&self.cluster, self.ns(), STORE)
    }

    fn pod(&self, name: &str) -> Result<Pod, E2eError> {
        self.cluster.get(&["pod", name, "-n", self.ns()])
    }
}

/// Waits until the store is settled at `nodes` (see `store_problems`) at a map version past
/// `after`; returns the store.
async fn wait_settled(
    cluster: &Cluster,
    ns: &str,
    nodes: u32,
    after: i64,
) -> Result<ShardedStore, E2eError> {
    let n = usize::try_from(nodes).unwrap_or(usize::MAX);
    wait_for(
        &format!("store {ns}/{STORE} to settle at {nodes} nodes"),
        SETTLE_TIMEOUT,
        POLL,
        || {
            let store: ShardedStore = cluster
                .get(&["sst", STORE, "-n", ns])
                .map_err(|e| e.to_string())?;
            let mut problems = store_problems(&store, n);
            // With more pods than zones, zone spread outranks replica balance (4 pods in 3
            // zones: the two pods sharing a zone split that zone's replicas); primaries must
            // still balance within ±1.
            if !nodes.is_multiple_of(3) {
                problems.retain(|p| !p.starts_with("unbalanced:"));
                let (_, primaries) = replica_spread(&store);
                if primaries.1 - primaries.0 > 1 {
                    problems.push(format!("primaries per node {primaries:?}"));
                }
            }
            let version = map_version(&store);
            if version <= after {
                problems.push(format!("map version {version}, not yet past {after}"));
            }
            if problems.is_empty() {
                Ok(store)
            } else {
                Err(problems.join("; "))
            }
        },
    )
    .await
}

/// A partition-aware client seeded with the client Service's ClusterIP and every pod IP, so
/// it finds the map while any one worker is down.
fn store_client(cluster: &Cluster, ns: &str) -> anyhow::Result<KvClient> {
    let svc: Service = cluster.get(&["service", STORE, "-n", ns])?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the client Service has no ClusterIP")?;
    let mut seeds = vec![format!("{ip}:7000")];
    for pod in node_pods(cluster, ns, STORE)? {
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            seeds.push(format!("{ip}:7000"));
        }
    }
    Ok(KvClient::builder(&seeds).direct_routing(true).build()?)
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The storage container of `pod` is running.
fn node_container_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "node"))
        .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// Storage pods per Kubernetes node.
fn pods_per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in pods.iter().filter_map(pod_node) {
        *counts.entry(node.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// A cordoned node, uncordoned when the guard drops (also when the test fails).
struct Cordoned<'a> {
    cluster: &'a Cluster,
    node: String,
}

impl<'a> Cordoned<'a> {
    fn cordon(cluster: &'a Cluster, node: &str) -> Result<Self, E2eError> {
        cluster.kubectl(&["cordon", node])?;
        Ok(Self::after_drain(cluster, node))
    }

    /// The guard for a node that `kubectl drain` cordons.
    fn after_drain(cluster: &'a Cluster, node: &str) -> Self {
        Self {
            cluster,
            node: node.to_owned(),
        }
    }
}

impl Drop for Cordoned<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.kubectl(&["uncordon", &self.node]) {
            eprintln!("uncordon {}: {e}", self.node);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_1_replicas_spread_over_zones_and_primaries_balance() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    zoned_nodes(&cluster, 3)?;
    // The first test runs the images loaded most recently.
    install_operator(&cluster, true).await?;
    let f = Fixture::start("mn-spread", 3, "").await?;
    let pods = f.pods()?;
    let zone_of = pod_zones(&pods, &f.nodes);
    let zones: BTreeSet<&String> = zone_of.values().collect();
    eprintln!("pods by zone: {zone_of:?}");
    assert_eq!(zones.len(), 3, "the three pods sit in three zones");

    let map = f.map()?;
    let problems = zone_spread_problems(&map, &zone_of, 3);
    assert!(problems.is_empty(), "{problems:?}");
    let per_zone = primaries_per(&map, |id| zone_of.get(id).cloned());
    eprintln!("primaries per zone: {per_zone:?}");
    let (min, max) = (
        per_zone.values().min().copied().unwrap_or(0),
        per_zone.values().max().copied().unwrap_or(0),
    );
    assert!(
        per_zone.len() == 3 && max - min <= 1,
        "primaries per zone {per_zone:?}"
    );

    let ledger = write_ledger(&f.client, "spread", 200).await?;
    assert_nothing_lost(&f.client, &ledger).await;
    f.ns.passed();
    Ok(())
}

/// What the drain test saw while `kubectl drain` ran.
#[derive(Debug, Default)]
struct DrainWatch {
    most_unavailable: usize,
    /// Partitions the drained pod still led when its storage container was first seen stopped.
    primaries_when_stopped: Option<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_4_drain_of_a_worker_under_write_load() -> anyhow::Result<()> {
    let f = Fixture::start("mn-drain", 3, "").await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let pods = f.pods()?;
    let on = |node: &str| {
        pods.iter()
            .find(|p| pod_node(p) == Some(node))
            .map(pod_name)
            .with_context(|| format!("no storage pod on {node}: {:?}", pods_per_node(&pods)))
    };
    let (drained_node, other_node) = ("mn-worker-2", "mn-worker-3");
    let victim = on(drained_node)?;
    on(other_node)?;
    let version = map_version(&f.store()?);
    let load = WriteLoad::start(&f.client, "load", 2);
    load.wait_for_acks(20, Duration::from_secs(60)).await?;

    let started = Instant::now();
    let _drained = Cordoned::after_drain(&f.cluster, drained_node);
    let drain = {
        let cluster = f.cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.kubectl(&[
                "drain",
                drained_node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=240s",
            ])
        })
    };
    let mut watch = DrainWatch::default();
    while !drain.is_finished() {
        let pods = f.pods()?;
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        watch.most_unavailable = watch.most_unavailable.max(3usize.saturating_sub(ready));
        let victim_pod = pods.iter().find(|p| pod_name(p) == victim);
        if watch.primaries_when_stopped.is_none()
            && !victim_pod.is_some_and(|p| node_container_running(p) && pod_node(p).is_some())
        {
            let map = f.map()?;
            watch.primaries_when_stopped = Some(
                map.partitions
                    .iter()
                    .filter(|e| e.primary.as_deref() == Some(victim.as_str()))
                    .count(),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = drain.await??;
    eprintln!(
        "drained {drained_node} in {:.1?}: {watch:?}\n{out}",
        started.elapsed()
    );

    // The StatefulSet re-creates the pod, but it can only run where its volume is: it waits,
    // and the PodDisruptionBudget (maxUnavailable 1) refuses to evict a second pod meanwhile.
    let _other = Cordoned::after_drain(&f.cluster, other_node);
    let second = f.cluster.kubectl(&[
        "drain",
        other_node,
        "--pod-selector",
        &format!("shardedstore.io/store={STORE}"),
        "--timeout=20s",
    ]);
    match second {
        Err(E2eError::CommandFailed { stderr, .. }) if stderr.contains("disruption budget") => {
            eprintln!("a second drain was refused by the PodDisruptionBudget");
        }
        other => {
            bail!("a second drain while one pod is down must be refused by the PDB: {other:?}")
        }
    }
    f.cluster.kubectl(&["uncordon", other_node])?;
    let pods = f.pods()?;
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    assert_eq!(ready, 2, "exactly one storage pod is down during the drain");

    // Writes go on with two of three replicas in sync.
    load.wait_for_acks(50, Duration::from_secs(60)).await?;
    f.cluster.kubectl(&["uncordon", drained_node])?;
    wait_for(
        "the drained pod to run again on its worker",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let pod = f.pod(&victim).map_err(|e| e.to_string())?;
            (pod_ready(&pod) && pod_node(&pod) == Some(drained_node))
                .then_some(())
                .ok_or_else(|| format!("on {:?}, ready {}", pod_node(&pod), pod_ready(&pod)))
        },
    )
    .await?;
    wait_settled(&f.cluster, f.ns(), 3, version).await?;
    eprintln!("drain, uncordon and re-join in {:.1?}", started.elapsed());

    let report = load.stop().await;
    eprintln!(
        "load: {} writes acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    assert!(
        watch.most_unavailable <= 1,
        "{} pods unavailable at once",
        watch.most_unavailable
    );
    assert_eq!(
        report.failed, 0,
        "no write fails beyond the client's retries"
    );
    acked.extend(report.acked);
    acked.extend(write_ledger(&f.client, "after", 100).await?);
    assert_nothing_lost(&f.client, &acked).await;
    f.ns.passed();
    Ok(())
}

/// Partitions of `map` whose primary is `node`.
fn led_by(map: &PartitionMap, node: &str) -> Vec<usize> {
    map.partitions
        .iter()
        .enumerate()
        .filter(|(_, e)| e.primary.as_deref() == Some(node))
        .map(|(p, _)| p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_5_loss_of_a_whole_worker() -> anyhow::Result<()> {
    let replace_after = Duration::from_secs(30);
    let f = Fixture::start(
        "mn-power",
        4,
        &format!(
            "  failover:\n    replaceAfter: {}s\n",
            replace_after.as_secs()
        ),
    )
    .await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;

    let pods = f.pods()?;
    let per_node = pods_per_node(&pods);
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Pod>,
    }
    let operator: Items = f.cluster.get(&[
        "pods",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=shardedstore-operator",
    ])?;
    let operator_nodes: BTreeSet<String> = operator
        .items
        .iter()
        .filter_map(|p| pod_node(p).map(str::to_owned))
        .collect();
    let names: Vec<String> = f.nodes.iter().map(|n| n.name.clone()).collect();
    let victim_node = choose_victim(&per_node, &operator_nodes, &names, SPARE_WORKER)
        .with_context(|| format!("no worker with exactly one storage pod: {per_node:?}"))?;
    let worker = Worker::of_node(&victim_node)
        .with_context(|| format!("{victim_node} is not a worker of the local cluster"))?;
    let victim = pods
        .iter()
        .find(|p| pod_node(p) == Some(victim_node.as_str()))
        .map(pod_name)
        .context("the victim pod")?;
    let operator_too = operator_nodes.contains(&victim_node);
    let led = led_by(&f.map()?, &victim);
    eprintln!(
        "powering off {victim_node} (pod {victim}, primary of {} partitions; operator pod there: {operator_too})",
        led.len()
    );

    let load = WriteLoad::start(&f.client, "load", 2);
    load.wait_for_acks(20, Duration::from_secs(60)).await?;
    let started = Instant::now();
    let off = worker.power_off()?;

    // Failover: every partition the victim led gets a new primary.
    wait_for(
        "new primaries for the partitions the lost worker led",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let map = f.map().map_err(|e| e.to_string())?;
            let still = led_by(&map, &victim);
            let orphaned: Vec<usize> = led
                .iter()
                .copied()
                .filter(|p| map.partitions.get(*p).is_none_or(|e| e.primary.is_none()))
                .collect();
            (still.is_empty() && orphaned.is_empty())
                .then_some(())
                .ok_or_else(|| {
                    format!("still led by {victim}: {still:?}; no primary: {orphaned:?}")
                })
        },
    )
    .await?;
    let failover = started.elapsed();
    eprintln!("failover of {} partitions after {failover:.1?}", led.len());
    // Writes continue, to every partition.
    acked.extend(write_ledger(&f.client, "during", 100).await?);
    load.wait_for_acks(50, Duration::from_secs(60)).await?;

    // Re-replication once replaceAfter has passed: the victim holds nothing, every partition
    // has its three replicas again on the three remaining pods.
    wait_for(
        "re-replication away from the lost worker",
        replace_after + SETTLE_TIMEOUT,
        POLL,
        || {
            let store = f.store().map_err(|e| e.to_string())?;
            let map = f.map().map_err(|e| e.to_string())?;
            let status = store.status.unwrap_or_default();
            let s = &status.partition_summary;
            let holding = map
                .partitions
                .iter()
                .filter(|e| e.is_member(&victim))
                .count();
            let state = map.nodes.get(&victim).map(|n| n.state);
            let full = map.partitions.iter().all(|e| e.in_sync.len() == 3);
            (holding == 0 && full && s.healthy == s.total && s.under_replicated == 0)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "{victim} {state:?} holds {holding}; healthy {}/{}, under-replicated {}",
                        s.healthy, s.total, s.under_replicated
                    )
                })
        },
    )
    .await?;
    let rereplicated = started.elapsed();
    let map = f.map()?;
    assert_eq!(
        map.nodes.get(&victim).map(|n| n.state),
        Some(NodeState::Replaced),
        "the lost node is marked Replaced"
    );
    assert!(
        rereplicated >= replace_after,
        "re-replication started only after replaceAfter"
    );
    eprintln!("re-replicated after {rereplicated:.1?}");

    // The worker comes back: its pod runs again and the node rejoins the store.
    let version = map_version(&f.store()?);
    off.power_on()?;
    wait_for(
        "the lost worker's pod to run again",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let pod = f.pod(&victim).map_err(|e| e.to_string())?;
            pod_ready(&pod)
                .then_some(())
                .ok_or_else(|| format!("on {:?}, not ready", pod_node(&pod)))
        },
    )
    .await?;
    wait_settled(&f.cluster, f.ns(), 4, version).await?;
    eprintln!("re-joined and settled after {:.1?}", started.elapsed());

    let report = load.stop().await;
    eprintln!(
        "load: {} writes acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    acked.extend(report.acked);
    acked.extend(write_ledger(&f.client, "after", 100).await?);
    assert_nothing_lost(&f.client, &acked).await;
    let map = f.map()?;
    let zone_of = pod_zones(&f.pods()?, &f.nodes);
    let problems = zone_spread_problems(&map, &zone_of, 3);
    assert!(problems.is_empty(), "after the re-join: {problems:?}");
    if operator_too {
        eprintln!(
            "failover {failover:.1?} not held to {FAILOVER_BOUND:?}: the operator's pod was on the lost worker too"
        );
    } else {
        assert!(
            failover <= FAILOVER_BOUND + POLL,
            "failover took {failover:.1?}, the bound is lease {LEASE:?} + 5 s"
        );
    }
    f.ns.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_6_cordon_and_scale_out() -> anyhow::Result<()> {
    let f = Fixture::start("mn-scale", 3, "").await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let before: BTreeSet<String> = f.pods()?.iter().map(pod_name).collect();
    let cordoned_node = "mn-worker-3";
    let cordoned = Cordoned::cordon(&f.cluster, cordoned_node)?;
    let version = map_version(&f.store()?);
    let load = WriteLoad::start(&f.client, "load", 2);

    let started = Instant::now();
    f.cluster.kubectl(&[
        "scale",
        &format!("sst/{STORE}"),
        "--replicas=5",
        "-n",
        f.ns(),
    ])?;
    let store = wait_settled(&f.cluster, f.ns(), 5, version).await?;
    eprintln!(
        "scaled out 3 -> 5 with {cordoned_node} cordoned in {:.1?}",
        started.elapsed()
    );
    let pods = f.pods()?;
    let new: Vec<&Pod> = pods
        .iter()
        .filter(|p| !before.contains(&pod_name(p)))
        .collect();
    assert_eq!(new.len(), 2, "two new pods");
    let status = store.status.unwrap_or_default();
    for pod in &new {
        let name = pod_name(pod);
        let node = pod_node(pod).unwrap_or_default();
        assert_ne!(node, cordoned_node, "{name} landed on the cordoned worker");
        let replicas = status
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map_or(0, |n| n.replicas);
        eprintln!("{name} on {node} holds {replicas} replicas");
        assert!(replicas > 0, "{name} received partitions");
    }
    let zone_of = pod_zones(&pods, &f.nodes);
    let problems = zone_spread_problems(&f.map()?, &zone_of, 3);
    assert!(problems.is_empty(), "{problems:?}");
    drop(cordoned);

    let report = load.stop().await;
    eprintln!(
        "load: {} writes acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    assert!(!report.acked.is_empty(), "the load made progress");
    acked.extend(report.acked);
    assert_nothing_lost(&f.client, &acked).await;
    f.ns.passed();
    Ok(())
}
