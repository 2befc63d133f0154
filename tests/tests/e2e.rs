//! End to end on a real Kubernetes cluster: the operator installed with Helm,
//! stores applied server-side into namespaces that enforce Pod Security "restricted", `helm
//! test` writing and reading through the client Service, data written and read through the client Service and the
//! pod IPs from the partition map, pods killed, the store scaled out and in and rolled —
//! and nothing acknowledged lost; a store serving TLS from a Secret. Run with `make e2e`; see docs/e2e.md.
//!
//! Every test makes its own namespace and store (deleted when it ends, also on failure) and
//! installs the operator if it is missing, so each can run alone:
//! `cargo test -p shardedstore-tests --test e2e -- --ignored --test-threads=1 NAME`.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use shardedstore_node::backup::Destination;
use shardedstore_node::client::KvClient;
use shardedstore_node::tls::ClientTls;
use shardedstore_operator::crd::ShardedStore;
use shardedstore_operator::crd::backup::{
    BackupPhase, ShardedStoreBackup, ShardedStoreBackupStatus,
};
use shardedstore_tests::backup_support::{
    TimedLoad, copy_damaged, plain_read, probe_client, refused_by_gate, served,
};
use shardedstore_tests::e2e_harness::{
    self, Cluster, ContainerRuntime, E2eError, StoreManifest, TestNamespace, install_operator,
    kill9_node_process, map_version, node_pods, partition_map, placement_on_removed_nodes,
    pod_ready, store_problems, wait_for,
};
use shardedstore_tests::local_harness::{WriteLoad, assert_nothing_lost, write_ledger};
use shardedstore_tests::s3_server::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use std::time::{Duration, Instant};

const STORE: &str = "e2e";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_secs(1);

/// A settled store of `nodes` pods in a fresh namespace, and a client of it.
struct Fixture {
    cluster: Cluster,
    ns: TestNamespace,
    client: KvClient,
}

impl Fixture {
    async fn start(prefix: &str, nodes: u32) -> anyhow::Result<Self> {
        let cluster = Cluster::from_env()?;
        install_operator(&cluster, false).await?;
        let ns = cluster.namespace(prefix)?;
        let started = Instant::now();
        let manifest = StoreManifest::small(STORE, nodes);
        cluster.kubectl_with_input(
            &["apply", "--server-side", "-n", ns.name(), "-f", "-"],
            Some(&manifest.to_yaml()),
        )?;
        wait_settled(&cluster, ns.name(), nodes).await?;
        eprintln!(
            "store {}/{STORE} with {nodes} nodes settled in {:.1?}",
            ns.name(),
            started.elapsed()
        );
        let client = store_client(&cluster, ns.name(), true)?;
        Ok(Self {
            cluster,
            ns,
            client,
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
}

/// Waits until the store is settled at `nodes` (see `store_problems`); returns the store.
async fn wait_settled(cluster: &Cluster, ns: &str, nodes: u32) -> Result<ShardedStore, E2eError> {
    wait_settled_after(cluster, ns, nodes, 0).await
}

/// [`wait_settled`] at a partition map newer than `map_version`: the operator has reacted to
/// what the test did (a settled status from before the fault does not count).
async fn wait_settled_after(
    cluster: &Cluster,
    ns: &str,
    nodes: u32,
    map_version: i64,
) -> Result<ShardedStore, E2eError> {
    let nodes = usize::try_from(nodes).unwrap_or(usize::MAX);
    wait_for(
        &format!("store {ns}/{STORE} to settle at {nodes} nodes"),
        SETTLE_TIMEOUT,
        POLL,
        || {
            let store: ShardedStore = cluster
                .get(&["sst", STORE, "-n", ns])
                .map_err(|e| e.to_string())?;
            let mut problems = store_problems(&store, nodes);
            let version = store.status.as_ref().map_or(0, |s| s.map_version);
            if version <= map_version {
                problems.push(format!("map version {version}, not yet past {map_version}"));
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

/// A client seeded with the client Service's ClusterIP. With `direct`, it routes each key to
/// its primary's pod IP from the partition map; without, every request goes through the
/// Service (and the receiving node forwards to the primary).
fn store_client(cluster: &Cluster, ns: &str, direct: bool) -> anyhow::Result<KvClient> {
    store_client_of(cluster, ns, STORE, direct)
}

/// [`store_client`] of store `name`.
fn store_client_of(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    direct: bool,
) -> anyhow::Result<KvClient> {
    let svc: Service = cluster.get(&["service", name, "-n", ns])?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the client Service has no ClusterIP")?;
    Ok(KvClient::builder(&[format!("{ip}:7000")])
        .direct_routing(direct)
        .build()?)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "node"))
        .map_or(0, |c| c.restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_1_operator_installs_with_helm() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    let started = Instant::now();
    let deployment = install_operator(&cluster, true).await?;
    eprintln!(
        "operator installed and available in {:.1?}",
        started.elapsed()
    );
    let want = deployment.spec.and_then(|s| s.replicas).unwrap_or(0);
    let available = deployment
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert!(
        want >= 1 && available == want,
        "{available}/{want} available"
    );
    let crd = cluster.kubectl(&[
        "get",
        "crd",
        "shardedstores.shardedstore.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ])?;
    assert_eq!(crd.trim(), "True", "the ShardedStore CRD is established");
    // `kubectl explain` reads the CRD's published schema: the short name and docs work.
    let explain = cluster.kubectl(&["explain", "sst.spec.nodes"])?;
    assert!(explain.contains("Number of storage pods"), "{explain}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_2_store_becomes_ready_and_serves_writes() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-ready", 3).await?;
    let store = f.store()?;
    let summary = store.status.clone().unwrap_or_default().partition_summary;
    assert_eq!((summary.total, summary.healthy), (32, 32));

    // The map names the three pods by their pod IPs, and every partition has 3 replicas.
    let pods = f.pods()?;
    assert_eq!(pods.len(), 3, "three storage pods");
    let map = partition_map(&f.cluster, f.ns(), STORE)?;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let info = map.nodes.get(&name).context("pod missing from the map")?;
        assert_eq!(
            Some(info.client_addr.clone()),
            ip.map(|ip| format!("{ip}:7000"))
        );
    }
    assert!(
        map.partitions
            .iter()
            .all(|p| p.replicas.len() == 3 && p.primary.is_some())
    );

    // Writes routed by the client to each primary's pod IP.
    let started = Instant::now();
    let mut ledger = write_ledger(&f.client, "direct", 300).await?;
    eprintln!("300 writes through pod IPs in {:.1?}", started.elapsed());
    // Writes through the client Service only (nodes forward to the primary).
    let via_service = store_client(&f.cluster, f.ns(), false)?;
    let started = Instant::now();
    ledger.extend(write_ledger(&via_service, "service", 100).await?);
    eprintln!(
        "100 writes through the Service in {:.1?}",
        started.elapsed()
    );
    assert_nothing_lost(&f.client, &ledger).await;
    assert_nothing_lost(&via_service, &ledger[..50]).await;
    assert!(f.client.get("never-written").await?.is_none());

    // `helm test`: the chart's hook Pod (restricted, in this namespace) writes and reads a
    // key through the client Service.
    let started = Instant::now();
    helm_test(&f.cluster, f.ns())?;
    eprintln!("helm test passed in {:.1?}", started.elapsed());
    f.ns.passed();
    Ok(())
}

/// Points the release's `helm test` at this namespace's store and runs it.
fn helm_test(cluster: &Cluster, ns: &str) -> anyhow::Result<()> {
    let (release, operator_ns) = (
        e2e_harness::OPERATOR_RELEASE,
        e2e_harness::OPERATOR_NAMESPACE,
    );
    let chart = shardedstore_tests::apiserver_harness::repo_root()
        .join("charts/shardedstore-operator")
        .to_string_lossy()
        .into_owned();
    let store = format!("tests.storeName={STORE}");
    let namespace = format!("tests.storeNamespace={ns}");
    cluster.helm(&[
        "upgrade",
        release,
        &chart,
        "-n",
        operator_ns,
        "--reuse-values",
        "--set",
        &store,
        "--set",
        &namespace,
        "--wait",
        "--timeout",
        "180s",
    ])?;
    let out = cluster.helm(&["test", release, "-n", operator_ns, "--timeout", "180s"])?;
    anyhow::ensure!(out.contains("Succeeded"), "helm test: {out}");
    Ok(())
}

/// Events of the store with `reason` whose message mentions `text`.
fn events_mentioning(
    cluster: &Cluster,
    ns: &str,
    reason: &str,
    text: &str,
) -> Result<usize, E2eError> {
    // `kubectl get` answers `kind: List, apiVersion: v1`, which `k8s_openapi::List<Event>`
    // refuses (it wants `EventList` of `events.k8s.io/v1`): decode the items only.
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<k8s_openapi::api::events::v1::Event>,
    }
    let list: Items = cluster.get(&["events.v1.events.k8s.io", "-n", ns])?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(text)))
        .count())
}

/// Evicts `pod` through the Eviction API (what `kubectl drain` does); `Ok(false)` when the
/// PodDisruptionBudget refuses.
fn evict(cluster: &Cluster, ns: &str, pod: &str) -> Result<bool, E2eError> {
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{ns}"}}}}"#
    );
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
    match cluster.kubectl_with_input(&["create", "--raw", &path, "-f", "-"], Some(&body)) {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("disruption budget") => Ok(false),
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_6_eviction_hands_primaries_off_and_the_budget_follows_health() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-evict", 3).await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let load = WriteLoad::start(&f.client, "load", 4);

    // A settled store allows one eviction.
    let budget = |f: &Fixture| -> Result<i32, E2eError> {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            f.cluster.get(&["pdb", STORE, "-n", f.ns()])?;
        Ok(pdb.status.map_or(0, |s| s.disruptions_allowed))
    };
    wait_for(
        "the budget to allow one eviction",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let allowed = budget(&f).map_err(|e| e.to_string())?;
            (allowed == 1)
                .then_some(())
                .ok_or(format!("{allowed} allowed"))
        },
    )
    .await?;
    let victim = format!("{STORE}-1");
    let old = f.cluster.get::<Pod>(&["pod", &victim, "-n", f.ns()])?;
    let leads = |map: &shardedstore_node::map::PartitionMap| {
        map.partitions
            .iter()
            .filter(|p| p.primary.as_deref() == Some(victim.as_str()))
            .count()
    };
    let led = leads(&partition_map(&f.cluster, f.ns(), STORE)?);
    let version = map_version(&f.store()?);
    let started = Instant::now();
    anyhow::ensure!(
        evict(&f.cluster, f.ns(), &victim)?,
        "the first eviction was refused"
    );

    // While it is away the budget allows nothing: a second eviction is refused.
    let other = format!("{STORE}-2");
    wait_for("the budget to drop to 0", SETTLE_TIMEOUT, POLL, || {
        let allowed = budget(&f).map_err(|e| e.to_string())?;
        (allowed == 0)
            .then_some(())
            .ok_or(format!("{allowed} allowed"))
    })
    .await?;
    anyhow::ensure!(
        !evict(&f.cluster, f.ns(), &other)?,
        "a second eviction was allowed while partitions were under-replicated"
    );

    wait_for(
        "the evicted pod to come back Ready",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let pod: Pod = f
                .cluster
                .get(&["pod", &victim, "-n", f.ns()])
                .map_err(|e| e.to_string())?;
            (uid(&pod) != uid(&old) && pod_ready(&pod))
                .then_some(())
                .ok_or_else(|| format!("uid {} ready {}", uid(&pod), pod_ready(&pod)))
        },
    )
    .await?;
    wait_settled_after(&f.cluster, f.ns(), 3, version).await?;
    eprintln!(
        "evicted {victim} (primary of {led} partitions): store settled after {:.1?}",
        started.elapsed()
    );

    // Its primaries were handed off, not failed over (events are summarised every 10 s).
    if led > 0 {
        let handed_off = format!("primary {victim} ->");
        wait_for(
            "a PrimaryHandedOff Event",
            Duration::from_secs(60),
            POLL,
            || {
                let n = events_mentioning(&f.cluster, f.ns(), "PrimaryHandedOff", &handed_off)
                    .map_err(|e| e.to_string())?;
                (n > 0).then_some(()).ok_or("none yet".to_owned())
            },
        )
        .await?;
        let failed_over = events_mentioning(&f.cluster, f.ns(), "Failover", &handed_off)?;
        anyhow::ensure!(
            failed_over == 0,
            "{victim}'s primaries were failed over, not handed off"
        );
    }

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_3_acknowledged_writes_survive_pod_kills() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-kill", 3).await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let load = WriteLoad::start(&f.client, "load", 4);

    // 1. Force-delete a pod: the operator sees it gone and fails its primaries over.
    let victim = format!("{STORE}-0");
    let old = f.cluster.get::<Pod>(&["pod", &victim, "-n", f.ns()])?;
    let version = map_version(&f.store()?);
    let started = Instant::now();
    f.cluster.kubectl(&[
        "delete",
        "pod",
        &victim,
        "-n",
        f.ns(),
        "--grace-period=0",
        "--force",
    ])?;
    wait_for(
        "the deleted pod to come back Ready",
        SETTLE_TIMEOUT,
        POLL,
        || {
            let pod: Pod = f
                .cluster
                .get(&["pod", &victim, "-n", f.ns()])
                .map_err(|e| e.to_string())?;
            (uid(&pod) != uid(&old) && pod_ready(&pod))
                .then_some(())
                .ok_or_else(|| format!("uid {} ready {}", uid(&pod), pod_ready(&pod)))
        },
    )
    .await?;
    let pod_back = started.elapsed();
    wait_settled_after(&f.cluster, f.ns(), 3, version).await?;
    eprintln!(
        "force-deleted {victim}: new pod Ready after {pod_back:.1?}, store settled after {:.1?}",
        started.elapsed()
    );

    // 2. kill -9 of the storage process inside its container (local cluster only).
    if let Some(runtime) = ContainerRuntime::local() {
        let victim = format!("{STORE}-1");
        let pod: Pod = f.cluster.get(&["pod", &victim, "-n", f.ns()])?;
        let restarts = restart_count(&pod);
        let version = map_version(&f.store()?);
        let started = Instant::now();
        let pid = kill9_node_process(&runtime, &pod)?;
        wait_for(
            "the killed container to restart",
            SETTLE_TIMEOUT,
            POLL,
            || {
                let pod: Pod = f
                    .cluster
                    .get(&["pod", &victim, "-n", f.ns()])
                    .map_err(|e| e.to_string())?;
                (restart_count(&pod) > restarts && pod_ready(&pod))
                    .then_some(())
                    .ok_or_else(|| format!("restarts {}", restart_count(&pod)))
            },
        )
        .await?;
        wait_settled_after(&f.cluster, f.ns(), 3, version).await?;
        eprintln!(
            "kill -9 of pid {pid} in {victim}: settled again in {:.1?}",
            started.elapsed()
        );
    } else {
        eprintln!("SKIPPED kill -9: no local containerd (only force-deleted a pod)");
    }

    let report = load.stop().await;
    eprintln!(
        "load: {} writes acknowledged, {} failed",
        report.acked.len(),
        report.failed
    );
    assert!(!report.acked.is_empty(), "the load made progress");
    acked.extend(report.acked);
    acked.extend(write_ledger(&f.client, "after", 100).await?);
    assert_nothing_lost(&f.client, &acked).await;
    f.ns.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_4_scale_out_and_in() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-scale", 3).await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let load = WriteLoad::start(&f.client, "load", 2);

    let started = Instant::now();
    f.cluster.kubectl(&[
        "scale",
        &format!("sst/{STORE}"),
        "--replicas=5",
        "-n",
        f.ns(),
    ])?;
    let store = wait_settled(&f.cluster, f.ns(), 5).await?;
    let (replicas, primaries) = e2e_harness::replica_spread(&store);
    eprintln!(
        "scaled out 3 -> 5 and balanced in {:.1?}: replicas per node {replicas:?}, primaries {primaries:?}",
        started.elapsed()
    );
    assert!(replicas.0 > 0, "every new node holds replicas");

    // Scale in: the StatefulSet may only shrink below a pod once that pod holds no replica.
    let started = Instant::now();
    f.cluster.kubectl(&[
        "scale",
        &format!("sst/{STORE}"),
        "--replicas=3",
        "-n",
        f.ns(),
    ])?;
    let mut violations = Vec::new();
    wait_for("the scale-in to finish", SETTLE_TIMEOUT, POLL, || {
        let sts: StatefulSet = f
            .cluster
            .get(&["statefulset", STORE, "-n", f.ns()])
            .map_err(|e| e.to_string())?;
        let sts_replicas = sts.spec.and_then(|s| s.replicas).unwrap_or(0);
        // Read after the StatefulSet: the map only ever removes replicas from drained nodes,
        // so any left on a removed ordinal now were there when the StatefulSet shrank.
        let map = partition_map(&f.cluster, f.ns(), STORE).map_err(|e| e.to_string())?;
        let stranded =
            placement_on_removed_nodes(&map, STORE, u32::try_from(sts_replicas).unwrap_or(0));
        if !stranded.is_empty() {
            violations.push(format!(
                "StatefulSet at {sts_replicas} while {stranded:?} hold replicas"
            ));
        }
        let pods = f.pods().map_err(|e| e.to_string())?;
        (sts_replicas == 3 && pods.len() == 3)
            .then_some(())
            .ok_or_else(|| format!("StatefulSet replicas {sts_replicas}, {} pods", pods.len()))
    })
    .await?;
    wait_settled(&f.cluster, f.ns(), 3).await?;
    eprintln!("scaled in 5 -> 3 in {:.1?}", started.elapsed());
    assert!(violations.is_empty(), "{violations:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_5_rolling_restart_loses_nothing() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-roll", 3).await?;
    let mut acked = write_ledger(&f.client, "before", 100).await?;
    let before: Vec<String> = f.pods()?.iter().map(uid).collect();
    let load = WriteLoad::start(&f.client, "load", 2);

    // A changed CPU request and a tuning setting change the pod template: the operator
    // restarts the pods itself, one at a time (the StatefulSet is OnDelete), and the nodes
    // start with the new setting (a value the node refused would keep them from turning
    // ready).
    let started = Instant::now();
    f.cluster.kubectl(&[
        "patch",
        "sst",
        STORE,
        "-n",
        f.ns(),
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"cpu":"30m"}},"tuning":{"checkpointInterval":"250ms"}}}"#,
    ])?;
    let mut most_unready = 0;
    wait_for(
        "every pod to be replaced with the new template",
        Duration::from_secs(420),
        POLL,
        || {
            let pods = f.pods().map_err(|e| e.to_string())?;
            let unready = 3usize.saturating_sub(pods.iter().filter(|p| pod_ready(p)).count());
            most_unready = most_unready.max(unready);
            let new_cpu = |p: &Pod| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|c| c.name == "node"))
                    .and_then(|c| c.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("cpu"))
                    .is_some_and(|q| q.0 == "30m")
                    && p.spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|c| c.name == "node"))
                        .and_then(|c| c.env.as_ref())
                        .is_some_and(|env| {
                            env.iter().any(|v| {
                                v.name == "SHARDEDSTORE_CHECKPOINT_INTERVAL_MS"
                                    && v.value.as_deref() == Some("250")
                            })
                        })
            };
            let replaced = pods
                .iter()
                .filter(|p| !before.contains(&uid(p)) && new_cpu(p) && pod_ready(p))
                .count();
            (replaced == 3 && pods.len() == 3)
                .then_some(())
                .ok_or_else(|| format!("{replaced}/3 pods replaced, {unready} unready"))
        },
    )
    .await?;
    wait_settled(&f.cluster, f.ns(), 3).await?;
    eprintln!("rolled 3 pods in {:.1?}", started.elapsed());
    assert!(most_unready <= 1, "{most_unready} pods were down at once");

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

/// Address of this machine that pods reach (moto listens there for the backup test): the
/// local cluster's node IP unless `SHARDEDSTORE_E2E_S3_HOST` says otherwise.
fn s3_host() -> String {
    std::env::var("SHARDEDSTORE_E2E_S3_HOST").unwrap_or_else(|_| "10.250.0.1".to_owned())
}

/// The ShardedStoreBackup's status once `done` holds, polled every second.
async fn backup_status(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&ShardedStoreBackupStatus) -> bool,
) -> Result<ShardedStoreBackupStatus, E2eError> {
    wait_for(what, SETTLE_TIMEOUT, POLL, || {
        let b: ShardedStoreBackup = cluster
            .get(&["sstb", name, "-n", ns])
            .map_err(|e| e.to_string())?;
        let s = b.status.unwrap_or_default();
        if done(&s) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
}

/// The `Restored` condition of store `name`, if it has one.
fn restored_condition(cluster: &Cluster, ns: &str, name: &str) -> Option<(String, String, String)> {
    let store: ShardedStore = cluster.get(&["sst", name, "-n", ns]).ok()?;
    store
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Restored")
        .map(|c| (c.status, c.reason, c.message))
}

/// Applies store `name` (`nodes` pods, `partitions`, RF `rf`) restoring from `from` (the
/// YAML of `spec.restore.from`, indented by six spaces).
fn apply_restoring_store(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    (nodes, partitions, rf): (u32, u32, u32),
    from: &str,
) -> Result<(), E2eError> {
    let mut manifest = StoreManifest::small(name, nodes);
    manifest.partitions = partitions;
    manifest.replication_factor = rf;
    let yaml = format!("{}  restore:\n    from:\n{from}", manifest.to_yaml());
    cluster.kubectl_with_input(
        &["apply", "--server-side", "-n", ns, "-f", "-"],
        Some(&yaml),
    )?;
    Ok(())
}

/// Probes the pods of store `name` with plain client reads until its `Restored` condition
/// is `True` and a read is served. Fails when a read is served before the condition is
/// `True`, or when no read was ever refused. Returns how many reads were refused.
async fn watch_gate_until_restored(cluster: &Cluster, ns: &str, name: &str) -> anyhow::Result<u32> {
    let http = probe_client()?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut refused = 0;
    while Instant::now() < deadline {
        let addrs: Vec<String> = partition_map(cluster, ns, name)
            .map(|m| m.nodes.values().map(|n| n.client_addr.clone()).collect())
            .unwrap_or_default();
        for addr in &addrs {
            let answer = plain_read(&http, addr).await;
            if refused_by_gate(&answer) {
                refused += 1;
            } else if served(&answer) {
                let condition = restored_condition(cluster, ns, name);
                anyhow::ensure!(
                    condition.as_ref().is_some_and(|c| c.0 == "True"),
                    "{addr} served a plain read while the restore was not complete: {condition:?}"
                );
                anyhow::ensure!(
                    refused > 0,
                    "no read was refused before the restore completed"
                );
                return Ok(refused);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "no plain read was served within {SETTLE_TIMEOUT:?} ({refused} refused; Restored: {:?})",
        restored_condition(cluster, ns, name)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_7_backup_to_s3_under_load_then_restore_into_a_new_store() -> anyhow::Result<()> {
    let f = Fixture::start("sst-e2e-backup", 3).await?;
    let host = s3_host();
    let Some(s3) = S3Server::start_on(&host).await? else {
        anyhow::bail!("moto_server is missing: bash hack/install-tools.sh moto");
    };
    s3.create_bucket("e2e-backups").await?;
    f.cluster.kubectl_with_input(
        &["apply", "-n", f.ns(), "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: backup-s3}}\nstringData: {{AWS_ACCESS_KEY_ID: {ACCESS_KEY_ID}, AWS_SECRET_ACCESS_KEY: {SECRET_ACCESS_KEY}}}\n"
        )),
    )?;
    let s3_yaml = format!(
        "{{endpoint: '{}', region: {REGION}, credentialsSecret: backup-s3}}",
        s3.endpoint
    );
    let url = format!("s3://e2e-backups/{}/once", f.ns());

    // Back up under write load; every write acknowledged before the resource exists must
    // be in the backup.
    let load = TimedLoad::start(&f.client, "bk", 2, 100);
    load.wait_for(1000, SETTLE_TIMEOUT).await?;
    let began = Instant::now();
    f.cluster.kubectl_with_input(
        &["apply", "-n", f.ns(), "-f", "-"],
        Some(&format!(
            "apiVersion: shardedstore.io/v1alpha1\nkind: ShardedStoreBackup\nmetadata: {{name: once}}\nspec:\n  store: {STORE}\n  destination:\n    url: {url}\n    s3: {s3_yaml}\n"
        )),
    )?;
    let status = backup_status(&f.cluster, f.ns(), "once", "the backup to finish", |s| {
        matches!(s.phase, BackupPhase::Completed | BackupPhase::Failed)
    })
    .await?;
    let during = load.wait_for(1, Duration::from_secs(10)).await;
    let acks = load.stop().await;
    during?;
    eprintln!(
        "backup of {} keys, {} bytes in {} partitions: {:?} .. {:?}",
        status.keys,
        status.size_bytes,
        status.partitions_done,
        status.start_time,
        status.completion_time
    );
    assert_eq!(status.phase, BackupPhase::Completed, "{status:?}");
    assert_eq!((status.partitions_total, status.partitions_done), (32, 32));
    assert_eq!(status.partitions.len(), 32, "per-partition progress");
    assert!(
        status
            .partitions
            .iter()
            .all(|p| p.replica.starts_with("e2e-") && p.seq > 0)
    );
    assert_eq!(
        status.partitions.iter().map(|p| p.bytes).sum::<i64>(),
        status.size_bytes
    );
    assert!(status.size_bytes > 0 && status.map_version.is_some_and(|v| v > 0));
    let (start, end) = (
        status.start_time.clone().unwrap_or_default(),
        status.completion_time.clone().unwrap_or_default(),
    );
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    assert!(
        parse(&start).zip(parse(&end)).is_some_and(|(a, b)| a <= b),
        "start {start:?}, completion {end:?}"
    );
    let complete = status.conditions.iter().find(|c| c.type_ == "Complete");
    assert!(complete.is_some_and(|c| c.status == "True"), "{status:?}");
    let before: Vec<(String, String)> = acks
        .iter()
        .filter(|a| a.acked_at < began)
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    assert!(
        status.keys >= before.len() as i64,
        "{} keys < {} acknowledged",
        status.keys,
        before.len()
    );
    let table = f.cluster.kubectl(&["get", "sstb", "-n", f.ns()])?;
    eprintln!("{table}");
    assert!(table.contains("Completed"), "{table}");

    // Delete the store, then restore into a new one with another partition count. It must
    // refuse plain clients until every key is in.
    let started = Instant::now();
    f.cluster.kubectl(&[
        "delete",
        "sst",
        STORE,
        "-n",
        f.ns(),
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait_for("the store's pods to be gone", SETTLE_TIMEOUT, POLL, || {
        let n = node_pods(&f.cluster, f.ns(), STORE)
            .map_err(|e| e.to_string())?
            .len();
        (n == 0).then_some(()).ok_or(format!("{n} pods left"))
    })
    .await?;
    apply_restoring_store(
        &f.cluster,
        f.ns(),
        "restored",
        (3, 16, 3),
        "      backup: once\n",
    )?;
    let refused = watch_gate_until_restored(&f.cluster, f.ns(), "restored").await?;
    let condition = restored_condition(&f.cluster, f.ns(), "restored");
    eprintln!(
        "restored in {:.1?} after the delete; {refused} plain reads refused meanwhile; {condition:?}",
        started.elapsed()
    );
    let restored = store_client_of(&f.cluster, f.ns(), "restored", true)?;
    assert_eq!(restored.map().await?.partitions.len(), 16);
    assert_nothing_lost(&restored, &before).await;
    eprintln!(
        "all {} writes acknowledged before the backup began read back",
        before.len()
    );
    restored
        .put("after-restore", b"x".to_vec(), Default::default())
        .await?;
    f.cluster.kubectl(&[
        "delete",
        "sst",
        "restored",
        "-n",
        f.ns(),
        "--wait=true",
        "--timeout=120s",
    ])?;

    // A damaged copy of the backup is refused with a clear condition, and the store keeps
    // refusing clients (it is empty, not restored).
    let damaged = format!("s3://e2e-backups/{}/damaged", f.ns());
    copy_damaged(
        &Destination::new(url.clone(), s3.options()),
        &Destination::new(damaged.clone(), s3.options()),
        "partition-00003.snap",
    )
    .await?;
    apply_restoring_store(
        &f.cluster,
        f.ns(),
        "refused",
        (1, 4, 1),
        &format!("      url: {damaged}\n      s3: {s3_yaml}\n"),
    )?;
    let condition = wait_for(
        "the damaged backup to be refused",
        SETTLE_TIMEOUT,
        POLL,
        || match restored_condition(&f.cluster, f.ns(), "refused") {
            Some(c) if c.1 == "BackupRefused" => Ok(c),
            other => Err(format!("{other:?}")),
        },
    )
    .await?;
    eprintln!("damaged backup: {condition:?}");
    assert!(
        condition.2.contains("partition-00003.snap") && condition.2.contains("corrupt"),
        "{condition:?}"
    );
    let map = partition_map(&f.cluster, f.ns(), "refused")?;
    assert!(map.restoring, "the refused store's map still gates clients");
    let http = probe_client()?;
    for node in map.nodes.values() {
        let answer = plain_read(&http, &node.client_addr).await;
        assert!(refused_by_gate(&answer), "{}: {answer:?}", node.client_addr);
    }
    f.ns.passed();
    Ok(())
}

/// The store's Ready condition as `(status, reason, message)`.
fn ready_condition(store: &ShardedStore) -> Option<(String, String, String)> {
    store
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a cluster: make e2e"]
async fn e2e_8_tls_from_a_secret_with_client_tokens() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    install_operator(&cluster, false).await?;
    let ns = cluster.namespace("sst-e2e-tls")?;
    let ns_name = ns.name().to_owned();
    let server_name = format!("{STORE}.{ns_name}.svc");

    // The store names Secrets that do not exist yet: the operator says so in Ready and
    // keeps reconciling (it picks the Secrets up once they exist).
    let mut manifest = StoreManifest::small(STORE, 3).to_yaml();
    manifest.push_str("  tls:\n    secretName: e2e-tls\n    clientTokensSecretName: e2e-tokens\n");
    cluster.kubectl_with_input(
        &["apply", "--server-side", "-n", &ns_name, "-f", "-"],
        Some(&manifest),
    )?;
    let reported = wait_for(
        "Ready=False with reason TLSSecretInvalid",
        Duration::from_secs(60),
        POLL,
        || {
            let store: ShardedStore = cluster
                .get(&["sst", STORE, "-n", &ns_name])
                .map_err(|e| e.to_string())?;
            match ready_condition(&store) {
                Some((status, reason, message))
                    if status == "False" && reason == "TLSSecretInvalid" =>
                {
                    Ok(message)
                }
                other => Err(format!("Ready is {other:?}")),
            }
        },
    )
    .await?;
    anyhow::ensure!(
        reported.contains("Secret e2e-tls (spec.tls) does not exist"),
        "{reported}"
    );
    eprintln!("missing Secret reported: {reported}");

    // Turning TLS off is refused at admission.
    let refused = cluster
        .kubectl(&[
            "patch",
            "sst",
            STORE,
            "-n",
            &ns_name,
            "--type=merge",
            "-p",
            r#"{"spec":{"tls":null}}"#,
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(
        refused.contains("tls cannot be turned on or off"),
        "removing spec.tls was not refused: {refused:?}"
    );

    // With the Secrets, the store settles over TLS.
    let certs = e2e_harness::store_certs(std::slice::from_ref(&server_name))?;
    e2e_harness::apply_tokens_secret(&cluster, &ns_name, "e2e-tokens", &["e2e-token-1"])?;
    e2e_harness::apply_tls_secret(&cluster, &ns_name, "e2e-tls", &certs)?;
    let started = Instant::now();
    wait_settled(&cluster, &ns_name, 3).await?;
    eprintln!(
        "TLS store settled {:.1?} after its Secrets were created",
        started.elapsed()
    );

    // A client with the CA and a token writes and reads, routed to pod IPs and through the
    // client Service.
    let svc: Service = cluster.get(&["service", STORE, "-n", &ns_name])?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the client Service has no ClusterIP")?;
    let seed = format!("{ip}:7000");
    let trust = ClientTls {
        ca_pem: Some(certs.ca.clone()),
        server_name: Some(server_name.clone()),
        ..ClientTls::default()
    };
    let client = |direct: bool, token: &str| {
        KvClient::builder(std::slice::from_ref(&seed))
            .tls(trust.clone())
            .token(token)
            .direct_routing(direct)
            .build()
    };
    let direct = client(true, "e2e-token-1")?;
    let via_service = client(false, "e2e-token-1")?;
    let mut ledger = write_ledger(&direct, "tls-direct", 100).await?;
    ledger.extend(write_ledger(&via_service, "tls-service", 50).await?);
    assert_nothing_lost(&direct, &ledger).await;
    assert_nothing_lost(&via_service, &ledger[..20]).await;

    // Plain HTTP is refused; a wrong or missing token is refused; a client without the CA
    // fails its handshake.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let r = plain.get(format!("http://{seed}/v1/kv/x")).send().await?;
    anyhow::ensure!(
        r.status().as_u16() == 400,
        "plain HTTP answered {}",
        r.status()
    );
    let body: serde_json::Value = r.json().await?;
    anyhow::ensure!(body["error"]["code"] == "tls_required", "{body}");
    let https = shardedstore_node::tls::http_client_builder(&trust)?
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("https://{seed}/v1/kv/x");
    let r = https.get(&url).send().await?;
    anyhow::ensure!(
        r.status().as_u16() == 401,
        "no token answered {}",
        r.status()
    );
    let r = https.get(&url).bearer_auth("wrong").send().await?;
    anyhow::ensure!(
        r.status().as_u16() == 403,
        "a wrong token answered {}",
        r.status()
    );
    let r = https.get(&url).bearer_auth("e2e-token-1").send().await?;
    anyhow::ensure!(
        r.status().as_u16() == 404,
        "an unwritten key answered {}",
        r.status()
    );
    let untrusting = shardedstore_node::tls::http_client_builder(&ClientTls::default())?
        .timeout(Duration::from_secs(5))
        .build()?;
    let e = untrusting
        .get(&url)
        .bearer_auth("e2e-token-1")
        .send()
        .await
        .err()
        .context("a client without the store's CA was served")?;
    anyhow::ensure!(
        shardedstore_node::tls::handshake_error(&e).is_some(),
        "not a handshake failure: {e:?}"
    );
    // The metrics port stays plain HTTP (probes and Prometheus).
    let pods = node_pods(&cluster, &ns_name, STORE)?;
    let pod_ip = pods
        .first()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.pod_ip.clone())
        .context("no pod IP")?;
    let r = plain
        .get(format!("http://{pod_ip}:9100/metrics"))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "/metrics answered {}", r.status());
    eprintln!(
        "TLS: {} writes read back; plain HTTP, no token, a wrong token and an untrusted client refused",
        ledger.len()
    );
    ns.passed();
    Ok(())
}
