//! End to end on a real multi-node, multi-zone Kubernetes cluster: the disruptions only such
//! a cluster can show. Zone spread of replicas and primaries, zone-local reads and session
//! guarantees for a client in zone b, `kubectl drain` of a worker under write load, the loss
//! of a whole worker (power cut) and its return, and cordon + scale out — every acknowledged
//! write read back. Run with `make e2e-multinode` on the cluster of
//! `make multinode-up` (docs/e2e.md); the cluster is named by `SHARDEDSTORE_E2E_KUBECONFIG`.
//!
//! Each test makes its own namespace and store (deleted when it ends, also on failure) and
//! installs the operator if it is missing, so each can run alone:
//! `cargo test -p shardedstore-tests --test e2e_multinode -- --ignored --test-threads=1 NAME`.

use anyhow::{Context as _, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use shardedstore_node::client::KvClient;
use shardedstore_node::client::kv::Condition;
use shardedstore_node::map::{NodeState, PartitionMap};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_tests::e2e_harness::{
    Cluster, E2eError, OPERATOR_NAMESPACE, StoreManifest, TestNamespace, install_operator,
    map_version, node_pods, partition_map, pause_node_process, pod_ready, replica_spread,
    store_problems, wait_for,
};
use shardedstore_tests::local_harness::{WriteLoad, assert_nothing_lost, write_ledger};
use shardedstore_tests::multinode_harness::{
    ClusterNode, LocalAnswer, Worker, WorkerCli, choose_victim, pod_node, pod_zones, primaries_per,
    zone_spread_problems, zoned_nodes,
};
use shardedstore_tests::node_harness::binary_path;
use shardedstore_tests::partition_probes::PartitionProbes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STORE: &str = "mn";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);
/// The worker the host reaches Services through (`hack/multinode-lib.sh`): never powered off.
const SPARE_WORKER: &str = "mn-worker-1";
/// The worker the zone-local clients run in (zone-b on the local cluster).
const CLIENT_WORKER: Worker = Worker(2);
/// The operator's default lease; docs/protocol.md bounds taking writes again after a node stops
/// answering by lease + 5 s.
const LEASE: Duration = Duration::from_secs(4);
/// The power-cut test's client gives up on an attempt after this long (a connection to the
/// lost worker gets no answer at all, not a refusal) and retries with a fresh map.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failover as a client sees it: the store's bound (lease + 5 s) plus the one attempt the
/// client loses against the lost primary before it learns the new one.
const FAILOVER_BOUND: Duration =
    Duration::from_secs(LEASE.as_secs() + 5 + PROBE_ATTEMPT_TIMEOUT.as_secs());

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

/// The client Service's ClusterIP.
fn service_ip(cluster: &Cluster, ns: &str) -> anyhow::Result<String> {
    let svc: Service = cluster.get(&["service", STORE, "-n", ns])?;
    svc.spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the client Service has no ClusterIP")
}

/// A partition-aware client seeded with the client Service's ClusterIP and every pod IP, so
/// it finds the map while any one worker is down.
fn store_client(cluster: &Cluster, ns: &str) -> anyhow::Result<KvClient> {
    Ok(KvClient::builder(&store_seeds(cluster, ns)?)
        .direct_routing(true)
        .build()?)
}

fn store_seeds(cluster: &Cluster, ns: &str) -> anyhow::Result<Vec<String>> {
    let mut seeds = vec![format!("{}:7000", service_ip(cluster, ns)?)];
    for pod in node_pods(cluster, ns, STORE)? {
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            seeds.push(format!("{ip}:7000"));
        }
    }
    Ok(seeds)
}

/// A client of the store that says it is in `zone`: its local reads go to a replica there.
fn zoned_client(cluster: &Cluster, ns: &str, zone: &str) -> anyhow::Result<KvClient> {
    Ok(KvClient::builder(&store_seeds(cluster, ns)?)
        .direct_routing(true)
        .zone(zone)
        .build()?)
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

/// The zone of [`CLIENT_WORKER`] and the one storage pod there (a 3-pod store in 3 zones).
fn client_zone_and_pod(f: &Fixture) -> anyhow::Result<(String, String)> {
    let node = CLIENT_WORKER.node_name();
    let zone = f
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.zone.clone())
        .with_context(|| format!("{node} has no zone"))?;
    let zone_of = pod_zones(&f.pods()?, &f.nodes);
    let local: Vec<&String> = zone_of
        .iter()
        .filter(|(_, z)| **z == zone)
        .map(|(p, _)| p)
        .collect();
    match local.as_slice() {
        [pod] => Ok((zone, (*pod).clone())),
        other => bail!("want one storage pod in {zone}, found {other:?} ({zone_of:?})"),
    }
}

/// The CLI run inside [`CLIENT_WORKER`] against the client Service: `via_service` sends every
/// request to the Service (kube-proxy on that worker picks the node); otherwise the CLI is
/// told its zone and goes straight to a replica there.
fn zone_cli(f: &Fixture, zone: Option<&str>) -> anyhow::Result<WorkerCli> {
    Ok(WorkerCli {
        worker: CLIENT_WORKER,
        binary: binary_path("shardedstore")?,
        endpoint: format!("{}:7000", service_ip(&f.cluster, f.ns())?),
        zone: zone.map(str::to_owned),
        via_endpoint: zone.is_none(),
        session: None,
    })
}

/// Runs blocking work (a process in a worker) without stalling the runtime's other tasks.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_2_local_reads_in_zone_b_are_served_in_zone_b() -> anyhow::Result<()> {
    let f = Fixture::start("mn-local", 3, "").await?;
    let ledger = write_ledger(&f.client, "local", 30).await?;
    let (zone, local_pod) = client_zone_and_pod(&f)?;
    let via_service = zone_cli(&f, None)?;
    let direct = zone_cli(&f, Some(&zone))?;

    // Through the Service, the client names no zone: the Service's PreferClose traffic
    // distribution has kube-proxy on the client's worker pick a zone-b endpoint, and that
    // node holds a replica of every partition. The endpoint hints are published
    // asynchronously; wait until the first read is routed in zone.
    let (first_key, _) = ledger.first().context("empty ledger")?;
    wait_for(
        "kube-proxy in zone b to route the client Service to zone b",
        Duration::from_secs(60),
        POLL,
        || {
            let a =
                blocking(|| via_service.get_local(first_key, None)).map_err(|e| e.to_string())?;
            (a.served_by.as_deref() == Some(local_pod.as_str()))
                .then_some(())
                .ok_or_else(|| format!("served by {:?}", a.served_by))
        },
    )
    .await?;
    for (cli, how) in [(&via_service, "via the Service"), (&direct, "with --zone")] {
        for (key, value) in &ledger {
            let a = blocking(|| cli.get_local(key, None))?;
            assert_eq!(&a.value, value, "{key} read {how}");
            assert_eq!(
                a.served_by.as_deref(),
                Some(local_pod.as_str()),
                "{key} read {how} from {zone} is served in {zone}"
            );
            assert!(a.staleness.is_some(), "{key}: no staleness reported");
        }
        eprintln!(
            "{} local reads {how} from {zone} all served by {local_pod}",
            ledger.len()
        );
    }

    // The staleness bound under write load: a read asking for at most `bound` returns a
    // version no older than every write acknowledged `bound` before the read began.
    let hot = HotKey::start(&f.client, "local-hot");
    hot.wait_for_acks(20).await?;
    let bound = Duration::from_millis(500);
    let mut in_zone = 0;
    let reads = 20;
    let mut answers: Vec<LocalAnswer> = Vec::new();
    for _ in 0..reads {
        let began = Instant::now();
        let a = blocking(|| via_service.get_local(hot.key(), Some(bound)))?;
        let floor = hot.acked_before(began.checked_sub(bound).unwrap_or(began));
        assert!(
            a.version >= floor,
            "read {a:?} is older than version {floor}, acknowledged more than {bound:?} before it"
        );
        assert!(
            a.staleness.is_some_and(|s| s <= bound),
            "staleness {:?} above the requested {bound:?}",
            a.staleness
        );
        in_zone += usize::from(a.served_by.as_deref() == Some(local_pod.as_str()));
        answers.push(a);
    }
    // A read may see a write whose acknowledgement the writer has not received yet; the
    // values are checked once the writer has stopped.
    let hot_key = hot.key().to_owned();
    let hot_acked = hot.stop().await;
    let mut unverified = 0;
    for a in &answers {
        match hot_acked.value_of(a.version) {
            Some(value) => assert_eq!(&a.value, value, "{hot_key} at version {}", a.version),
            None => unverified += 1,
        }
    }
    anyhow::ensure!(
        unverified < reads,
        "no read of {hot_key} could be matched to a write"
    );
    eprintln!(
        "{reads} reads with max-staleness {bound:?} under load ({} writes): all within the bound, {in_zone} served in {zone}, {unverified} values not matched (write unacknowledged)",
        hot_acked.writes.len()
    );
    let mut acked = ledger;
    acked.extend(hot_acked.last);
    assert_nothing_lost(&f.client, &acked).await;
    f.ns.passed();
    Ok(())
}

/// One key written over and over; remembers when each version was acknowledged.
struct HotKey {
    key: String,
    writes: Arc<Mutex<Vec<(Instant, u64, String)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Ends with whether the last write was acknowledged.
    task: tokio::task::JoinHandle<bool>,
}

/// What a [`HotKey`] wrote: every acknowledged (version, value), and the key's final value
/// when it is known.
struct HotAcked {
    writes: Vec<(u64, String)>,
    last: Option<(String, String)>,
}

impl HotAcked {
    fn value_of(&self, version: u64) -> Option<&String> {
        self.writes
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, value)| value)
    }
}

impl HotKey {
    fn start(client: &KvClient, key: &str) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (client, key, writes) = (client.clone(), key.to_owned(), writes.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut last_ok = true;
                while !*stopped.borrow_and_update() {
                    n += 1;
                    let value = format!("{key}-{n}");
                    let put = client.put(&key, value.clone().into_bytes(), Condition::Always);
                    last_ok = false;
                    if let Ok(r) = put.await
                        && let Ok(mut w) = writes.lock()
                    {
                        w.push((Instant::now(), r.version, value));
                        last_ok = true;
                    }
                }
                last_ok
            })
        };
        Self {
            key: key.to_owned(),
            writes,
            stop,
            task,
        }
    }

    fn key(&self) -> &str {
        &self.key
    }

    async fn wait_for_acks(&self, n: usize) -> Result<(), E2eError> {
        wait_for(
            "writes of the hot key",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let have = self.writes.lock().map_or(0, |w| w.len());
                (have >= n).then_some(()).ok_or(format!("{have} of {n}"))
            },
        )
        .await
    }

    /// The highest version acknowledged at or before `t` (0: none).
    fn acked_before(&self, t: Instant) -> u64 {
        self.writes.lock().map_or(0, |w| {
            w.iter()
                .filter(|(at, _, _)| *at <= t)
                .map(|(_, v, _)| *v)
                .max()
                .unwrap_or(0)
        })
    }

    /// Stops writing (the write in flight finishes). The last value is known only when the
    /// last write was acknowledged: a failed one may or may not have been applied.
    async fn stop(self) -> HotAcked {
        self.stop.send_replace(true);
        let last_ok = self.task.await.unwrap_or(false);
        let w = self.writes.lock().map(|w| w.clone()).unwrap_or_default();
        HotAcked {
            last: w
                .last()
                .filter(|_| last_ok)
                .map(|(_, _, value)| (self.key.clone(), value.clone())),
            writes: w.into_iter().map(|(_, v, value)| (v, value)).collect(),
        }
    }
}

/// The first `n` keys `<prefix>-<i>` whose partition is not led by `node`: writes to them go
/// to a primary elsewhere, so `node` holds them as a follower.
fn keys_followed_by(map: &PartitionMap, node: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| {
            map.entry(map.partition_of(k.as_bytes()))
                .is_some_and(|e| e.primary.as_deref() != Some(node) && e.is_member(node))
        })
        .take(n)
        .collect()
}

/// What the session rounds saw.
#[derive(Debug, Default)]
struct SessionReport {
    rounds: u64,
    /// Reads that went back in time: read-your-writes or monotonic reads broken.
    violations: Vec<String>,
    /// Local reads per serving node.
    served_by: BTreeMap<String, u64>,
    /// Operations that failed (after the client's retries).
    errors: u64,
    /// The last acknowledged value of every key whose last write was acknowledged.
    acked: BTreeMap<String, String>,
}

/// Rounds of: write a key and read it back locally (read-your-writes), then read the next key
/// locally and compare with the newest version seen of it (monotonic reads), through one
/// client — its session — until `stop`. `progress` counts rounds and local reads served by
/// `local`.
async fn session_rounds(
    client: KvClient,
    keys: Vec<String>,
    local: String,
    progress: tokio::sync::watch::Sender<(u64, u64)>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> SessionReport {
    let mut r = SessionReport::default();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut served_here = 0;
    let check = |r: &mut SessionReport,
                 seen: &mut BTreeMap<String, u64>,
                 key: &str,
                 got: Option<(u64, String)>,
                 by: Option<String>,
                 what: &str| {
        let floor = seen.get(key).copied().unwrap_or(0);
        match got {
            Some((version, _)) if version < floor => r.violations.push(format!(
                "{what}: {key} at version {version} after {floor} (by {by:?})"
            )),
            Some((version, _)) => {
                seen.insert(key.to_owned(), version);
            }
            None if floor > 0 => r.violations.push(format!(
                "{what}: {key} absent after version {floor} (by {by:?})"
            )),
            None => {}
        }
        *r.served_by
            .entry(by.unwrap_or_else(|| "?".into()))
            .or_insert(0) += 1;
    };
    while !*stop.borrow() {
        let i = usize::try_from(r.rounds).unwrap_or(0);
        let key = &keys[i % keys.len()];
        let value = format!("{key}-{}", r.rounds);
        match client
            .put(key, value.clone().into_bytes(), Condition::Always)
            .await
        {
            Ok(w) => {
                let floor = seen.get(key.as_str()).copied().unwrap_or(0).max(w.version);
                seen.insert(key.clone(), floor);
                r.acked.insert(key.clone(), value.clone());
                match client.get_local(key).await {
                    Ok(Some(a))
                        if a.value.as_ref() != value.as_bytes() && a.version == w.version =>
                    {
                        r.violations
                            .push(format!("{key} at {} has another value", a.version));
                    }
                    Ok(got) => {
                        let by = got.as_ref().and_then(|a| a.served_by.clone());
                        served_here += u64::from(by.as_deref() == Some(local.as_str()));
                        let got = got.map(|a| (a.version, String::new()));
                        check(&mut r, &mut seen, key, got, by, "read-your-writes");
                    }
                    Err(_) => r.errors += 1,
                }
            }
            Err(_) => {
                // The write may or may not have been applied: the key's value is unknown.
                r.acked.remove(key);
                r.errors += 1;
            }
        }
        let other = &keys[(i + 1) % keys.len()];
        match client.get_local(other).await {
            Ok(got) => {
                let by = got.as_ref().and_then(|a| a.served_by.clone());
                served_here += u64::from(by.as_deref() == Some(local.as_str()));
                let got = got.map(|a| (a.version, String::new()));
                check(&mut r, &mut seen, other, got, by, "monotonic reads");
            }
            Err(_) => r.errors += 1,
        }
        r.rounds += 1;
        progress.send_replace((r.rounds, served_here));
    }
    r
}

/// Waits until `progress` moved on by `rounds` rounds and `local` local reads served in zone.
async fn wait_progress(
    progress: &tokio::sync::watch::Receiver<(u64, u64)>,
    rounds: u64,
    local: u64,
    what: &str,
) -> Result<(), E2eError> {
    let (r0, l0) = *progress.borrow();
    wait_for(
        what,
        Duration::from_secs(90),
        Duration::from_millis(100),
        || {
            let (r, l) = *progress.borrow();
            (r >= r0 + rounds && l >= l0 + local)
                .then_some(())
                .ok_or(format!("{} rounds, {} served in zone", r - r0, l - l0))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a multi-node cluster: make e2e-multinode"]
async fn mn_3_session_guarantees_while_the_zone_b_replica_lags() -> anyhow::Result<()> {
    let f = Fixture::start("mn-session", 3, "").await?;
    let (zone, local_pod) = client_zone_and_pod(&f)?;
    let keys = keys_followed_by(&f.map()?, &local_pod, "session", 6);
    anyhow::ensure!(keys.len() == 6, "no keys followed by {local_pod}");
    let runtime = CLIENT_WORKER
        .containerd()
        .context("the containerd of the client's worker")?;

    // The library: a client in zone b is a session; its local reads are served in zone b and
    // never go back in time, also while the zone-b replica is paused (it falls behind; for
    // longer than the lag timeout it leaves the in-sync set) and while it catches up.
    let client = zoned_client(&f.cluster, f.ns(), &zone)?;
    let (progress_tx, progress) = tokio::sync::watch::channel((0u64, 0u64));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rounds = tokio::spawn(session_rounds(
        client.clone(),
        keys.clone(),
        local_pod.clone(),
        progress_tx,
        stopped,
    ));
    wait_progress(&progress, 20, 20, "session rounds served in zone b").await?;
    for pause in [Duration::from_millis(1500), Duration::from_secs(3)] {
        let paused = pause_node_process(&runtime, &f.pod(&local_pod)?)?;
        // The fault's duration, not a wait for a state: the first pause is shorter than the
        // lag timeout (2 s; the replica stays in sync and writes wait for it), the second
        // longer (it leaves the in-sync set). The rounds run throughout.
        tokio::time::sleep(pause).await;
        paused.resume()?;
        eprintln!("{local_pod} was paused for {pause:?}");
        wait_progress(&progress, 10, 0, "session rounds after the pause").await?;
    }
    // Caught up and in sync again: local reads are served in zone b again.
    wait_settled(&f.cluster, f.ns(), 3, 0).await?;
    wait_progress(&progress, 10, 20, "session rounds served in zone b again").await?;
    stop.send_replace(true);
    let report = rounds.await?;
    eprintln!(
        "library session: {} rounds, {} errors, reads served by {:?}",
        report.rounds, report.errors, report.served_by
    );
    assert!(
        report.violations.is_empty(),
        "session guarantees broken: {:?}",
        report.violations
    );
    let mut acked = report.acked;

    // The CLI: one process per command, the session kept in a file. Each write is made
    // while the zone-b replica is paused (so it is acknowledged just as the replica comes
    // back, before it has applied it); the next process reads it back locally in zone b.
    let dir = tempfile::tempdir()?;
    let cli = WorkerCli {
        session: Some(dir.path().join("session.json")),
        ..zone_cli(&f, Some(&zone))?
    };
    for (n, key) in keys.iter().enumerate() {
        let value = format!("cli-{n}");
        let paused = pause_node_process(&runtime, &f.pod(&local_pod)?)?;
        let put = {
            let (cli, key, value) = (cli.clone(), key.clone(), value.clone());
            tokio::task::spawn_blocking(move || cli.put(&key, &value))
        };
        // A fault's duration, not a wait for a state: the replica stays paused for 1 s while
        // the CLI process starts and sends its write — shorter than the lag timeout (2 s),
        // so the replica stays in sync and the write waits for it. (Holding the pause until
        // the write is pending at the primary was tried: in one run the write did not reach
        // the primary while the replica was paused — the CLI's map fetch may go to the
        // paused pod — so the replica left the in-sync set and was failed over.)
        tokio::time::sleep(Duration::from_secs(1)).await;
        paused.resume()?;
        let version = put.await??;
        let read = blocking(|| cli.get_local(key, None))?;
        eprintln!("cli: put {key} -> version {version}; local read {read:?}");
        assert!(
            read.version >= version && read.value == value,
            "read-your-writes across CLI processes: wrote {key}={value} at {version}, read {read:?}"
        );
        acked.insert(key.clone(), value);
    }
    let acked: Vec<(String, String)> = acked.into_iter().collect();
    assert_nothing_lost(&f.client, &acked).await;
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
    // The hand-off needs a coordinator: an operator leader evicted by the same drain leaves
    // the node without a lease, its wait ends, and its partitions fail over instead.
    let leader = keep_operator_leader_off(&f.cluster, drained_node).await?;
    eprintln!("operator leader {leader}");
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
        // A sample of the pods while the drain runs (bounded by its --timeout).
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = drain.await??;
    // The pod went before a sample saw its container stopped: the map right after the drain
    // is what it left (a failover instead of a hand-off would take the lease, 4 s, longer).
    if watch.primaries_when_stopped.is_none() {
        watch.primaries_when_stopped = Some(led_by(&f.map()?, &victim).len());
    }
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
        // The pods' emptyDir scratch volume must not be what refuses the drain.
        "--delete-emptydir-data",
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
        watch.primaries_when_stopped,
        Some(0),
        "{victim} handed every partition it led off before its container stopped"
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

/// The operator's pods.
fn operator_pods(cluster: &Cluster) -> Result<Vec<Pod>, E2eError> {
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Pod>,
    }
    let list: Items = cluster.get(&[
        "pods",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=shardedstore-operator",
    ])?;
    Ok(list.items)
}

/// The operator pod holding the leader Lease, if any.
fn operator_leader(cluster: &Cluster) -> Result<Option<Pod>, E2eError> {
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Lease>,
    }
    let leases: Items = cluster.get(&["leases", "-n", OPERATOR_NAMESPACE])?;
    let pods = operator_pods(cluster)?;
    Ok(leases.items.iter().find_map(|l| {
        let holder = l.spec.as_ref()?.holder_identity.as_deref()?;
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(holder))
            .cloned()
    }))
}

/// Makes sure the operator's leader runs on another node than `node`: when it runs there,
/// `node` is cordoned and the leader pod deleted (it gives the Lease up on SIGTERM, so the
/// standby takes over at once), and the new leader elsewhere is awaited. Returns the
/// leader's pod and node.
async fn keep_operator_leader_off(cluster: &Cluster, node: &str) -> anyhow::Result<String> {
    let leader = wait_for("an operator leader", SETTLE_TIMEOUT, POLL, || {
        operator_leader(cluster)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no pod holds the Lease".to_owned())
    })
    .await?;
    if pod_node(&leader) == Some(node) {
        let _cordoned = Cordoned::cordon(cluster, node)?;
        cluster.kubectl(&[
            "delete",
            "pod",
            "-n",
            OPERATOR_NAMESPACE,
            &pod_name(&leader),
        ])?;
        wait_for(
            "an operator leader off the victim",
            SETTLE_TIMEOUT,
            POLL,
            || {
                let l = operator_leader(cluster)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no pod holds the Lease".to_owned())?;
                (pod_node(&l) != Some(node) && pod_ready(&l))
                    .then_some(())
                    .ok_or_else(|| format!("leader {} on {:?}", pod_name(&l), pod_node(&l)))
            },
        )
        .await?;
        install_operator(cluster, false).await?;
    }
    let leader = operator_leader(cluster)?.context("no operator leader")?;
    Ok(format!(
        "{} on {}",
        pod_name(&leader),
        pod_node(&leader).unwrap_or("?")
    ))
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
    let operator_nodes: BTreeSet<String> = operator_pods(&f.cluster)?
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
    // The bound below is the store's (lease + 5 s), not the operator's leader election's: a
    // leader lost with the worker would add its own Lease expiry (15 s) first.
    let leader = keep_operator_leader_off(&f.cluster, &victim_node).await?;
    wait_settled(&f.cluster, f.ns(), 4, 0).await?;
    let led = led_by(&f.map()?, &victim);
    eprintln!(
        "powering off {victim_node} (pod {victim}, primary of {} partitions; operator leader {leader})",
        led.len()
    );

    let load = WriteLoad::start(&f.client, "load", 2);
    load.wait_for_acks(20, Duration::from_secs(60)).await?;
    let map_before = f.map()?;
    // A client tuned for failover: an attempt that gets no answer within a second (a
    // connection to the lost worker) is retried at once elsewhere. It has written to every
    // partition before the cut, so it holds the map and connections, as a running client
    // would.
    let prober = KvClient::builder(&store_seeds(&f.cluster, f.ns())?)
        .request_timeout(PROBE_ATTEMPT_TIMEOUT)
        .connect_timeout(Duration::from_millis(500))
        .build()?;
    acked.extend(
        PartitionProbes::start(&prober, &map_before, "warm")
            .within(Duration::from_secs(60))
            .await?,
    );
    let started = Instant::now();
    let off = worker.power_off()?;
    // Failover, measured as clients see it: from the cut to the first acknowledged write of
    // every partition (those the lost worker led included).
    let probes = PartitionProbes::start_since(&prober, &map_before, "power", started);
    let (probed, times) = probes.times(Duration::from_secs(120)).await?;
    acked.extend(probed);
    let affected: Vec<(u32, Duration)> = times
        .iter()
        .copied()
        .filter(|(p, _)| led.contains(&(*p as usize)))
        .collect();
    let failover = affected.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let others = times
        .iter()
        .filter(|(p, _)| !led.contains(&(*p as usize)))
        .map(|(_, t)| *t)
        .max()
        .unwrap_or_default();
    eprintln!(
        "first acknowledged write after the cut: partitions {victim} led {affected:.1?} (slowest {failover:.1?}); the others within {others:.1?}"
    );
    // The published map (a ConfigMap the operator updates after the nodes' maps) names new
    // primaries for every partition the victim led.
    wait_for(
        "the published map to name new primaries for the lost pod's partitions",
        Duration::from_secs(60),
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
    assert!(
        failover <= FAILOVER_BOUND,
        "failover took {failover:.1?} from the cut, the bound is {FAILOVER_BOUND:?} (lease {LEASE:?} + 5 s + one client attempt)"
    );
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
