//! Harness for local-mode tests: runs `shardedstore-operator local` (the real coordinator
//! driving real `shardedstore-node` processes) on free loopback ports, talks to its control
//! endpoint, and kills every process it started when dropped.
//!
//! Every operator of a store runs in one process group, which its node children inherit and
//! which an idle anchor process (`sleep infinity`, a child of the test) leads. Dropping the
//! [`LocalStore`] SIGKILLs the group, so nodes orphaned by a killed operator are cleaned up
//! too. The anchor keeps the group from becoming *orphaned* when a test kills the operator:
//! the kernel sends SIGHUP (which ends a node) and SIGCONT to every process of an orphaned
//! group that has a stopped member, so without it a node exiting while others are frozen
//! (SIGSTOP) would kill and thaw the frozen ones whenever the orphaned nodes' new parent
//! (init) shares the test's session, as it does under a CI runner that starts jobs without
//! `setsid`.

use crate::node_harness::{binary_path, wait_until};
use shardedstore_node::client::KvClient;
use shardedstore_operator::local::control::{LocalStatus, ScaleRequest};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Store shape and timings of a local-mode test.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub nodes: u32,
    pub partitions: u32,
    pub replication_factor: u32,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub replace_after_secs: u64,
    pub restart_delay_ms: u64,
    pub max_concurrent_moves_per_node: u32,
    /// Extra arguments and environment of `shardedstore-operator local` (e.g. `--restore-from`,
    /// `--tls-dir DIR`).
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// Node i binds `node_host_base + i` (else every node binds 127.0.0.1).
    pub node_host_base: Option<Ipv4Addr>,
    /// Source address of the operator's connections to the nodes.
    pub operator_bind: Option<Ipv4Addr>,
}

impl LocalOptions {
    /// Gives every node and the operator its own address in a random harness subnet
    /// (nodes at .10 + i, the operator at .2), so `netfault` can cut links between them.
    pub fn with_own_addresses(mut self) -> Self {
        let subnet = u32::from(crate::netfault::random_subnet());
        self.node_host_base = Some(Ipv4Addr::from(subnet + 10));
        self.operator_bind = Some(Ipv4Addr::from(subnet + 2));
        self
    }

    /// The address node `ordinal` binds.
    pub fn node_host(&self, ordinal: u32) -> Ipv4Addr {
        self.node_host_base.map_or(Ipv4Addr::LOCALHOST, |b| {
            Ipv4Addr::from(u32::from(b) + ordinal)
        })
    }
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            partitions: 16,
            replication_factor: 3,
            lease_ms: 2000,
            heartbeat_ms: 250,
            replace_after_secs: 300,
            restart_delay_ms: 1000,
            max_concurrent_moves_per_node: 2,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            node_host_base: None,
            operator_bind: None,
        }
    }
}

/// Largest number of nodes a test may scale to (ports are reserved for this many).
pub const MAX_NODES: u16 = 8;

/// A local-mode store: the operator process and its nodes.
pub struct LocalStore {
    pub options: LocalOptions,
    data_dir: tempfile::TempDir,
    base: u16,
    operator: Option<Child>,
    /// Leader of the process group of every operator and node of this store (see the
    /// module documentation); the group is killed on drop.
    anchor: Option<Child>,
    http: reqwest::Client,
}

/// A base port with `3 * MAX_NODES + 1` free ports after it (client, peer, metrics on each
/// node's address, control on 127.0.0.1), below the kernel's ephemeral range.
fn free_base(options: &LocalOptions) -> anyhow::Result<u16> {
    let host = |i: u16| {
        if i < 3 * MAX_NODES {
            options.node_host(u32::from(i % MAX_NODES))
        } else {
            Ipv4Addr::LOCALHOST
        }
    };
    Ok(crate::node_harness::free_port_range(
        3 * MAX_NODES + 1,
        host,
    )?)
}

impl LocalStore {
    /// Starts the operator in local mode and waits until the first map is in place and every
    /// partition is in sync.
    pub async fn start(options: LocalOptions) -> anyhow::Result<Self> {
        let mut store = Self::create(options)?;
        store.launch().await?;
        Ok(store)
    }

    /// Chooses ports and a data directory without starting anything (so a test can prepare
    /// the data directory, e.g. mount a file system per node, before [`LocalStore::launch`]).
    pub fn create(options: LocalOptions) -> anyhow::Result<Self> {
        let base = free_base(&options)?;
        Ok(Self {
            options,
            data_dir: tempfile::tempdir()?,
            base,
            operator: None,
            anchor: None,
            http: shardedstore_node::tls::http_client_builder(&Default::default())?
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Starts the operator and waits until the first map is in place and every partition
    /// is in sync.
    pub async fn launch(&mut self) -> anyhow::Result<()> {
        self.start_operator()?;
        self.wait_settled(Duration::from_secs(60)).await?;
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The address node `id` (`node-<i>`) binds.
    pub fn node_host(&self, id: &str) -> anyhow::Result<Ipv4Addr> {
        let ordinal: u32 = id
            .strip_prefix("node-")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("not a local node id: {id}"))?;
        Ok(self.options.node_host(ordinal))
    }

    /// The map as the operator last wrote it (`<data-dir>/map.json`), if readable.
    pub fn stored_map(&self) -> Option<shardedstore_node::map::PartitionMap> {
        let bytes = std::fs::read(self.data_dir.path().join("map.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Peer port of node `ordinal`.
    pub fn peer_port(&self, ordinal: u32) -> u16 {
        self.base + MAX_NODES + ordinal as u16
    }

    fn control_port(&self) -> u16 {
        self.base + 3 * MAX_NODES
    }

    /// Client API addresses (`host:port`) of nodes `0..n`.
    pub fn client_addrs(&self, n: u32) -> Vec<String> {
        (0..n as u16)
            .map(|i| format!("{}:{}", self.options.node_host(u32::from(i)), self.base + i))
            .collect()
    }

    /// A partition-aware client seeded with every possible node address.
    pub fn client(&self) -> anyhow::Result<KvClient> {
        Ok(KvClient::builder(&self.client_addrs(u32::from(MAX_NODES)))
            .request_timeout(Duration::from_secs(3))
            .build()?)
    }

    /// (Re)starts the operator process with the same data directory.
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        let group = self.group()?;
        let o = &self.options;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(binary_path("shardedstore-operator")?)
            .arg("local")
            .args(["--nodes", &o.nodes.to_string()])
            .args(["--partitions", &o.partitions.to_string()])
            .args(["--replication-factor", &o.replication_factor.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(["--port", &self.base.to_string()])
            .args(["--peer-port", &(self.base + MAX_NODES).to_string()])
            .args(["--metrics-port", &(self.base + 2 * MAX_NODES).to_string()])
            .args(["--control-port", &self.control_port().to_string()])
            .arg("--node-binary")
            .arg(binary_path("shardedstore-node")?)
            .args(["--lease-ms", &o.lease_ms.to_string()])
            .args(["--heartbeat-ms", &o.heartbeat_ms.to_string()])
            .args(["--replace-after-secs", &o.replace_after_secs.to_string()])
            .args(["--restart-delay-ms", &o.restart_delay_ms.to_string()])
            .args([
                "--max-concurrent-moves-per-node",
                &o.max_concurrent_moves_per_node.to_string(),
            ])
            .args(&o.extra_args)
            .envs(o.extra_env.iter().map(|(k, v)| (k, v)))
            .args(o.node_host_base.map(|b| format!("--node-host-base={b}")))
            .args(o.operator_bind.map(|b| format!("--bind={b}")))
            // SHARDEDSTORE_LOCAL_LOG (a RUST_LOG filter) raises the processes' log level.
            .env(
                "RUST_LOG",
                std::env::var("SHARDEDSTORE_LOCAL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(group)
            .spawn()?;
        self.operator = Some(child);
        Ok(())
    }

    /// The store's process group: the anchor's pid, the anchor started on first use.
    fn group(&mut self) -> anyhow::Result<i32> {
        let anchor = match &mut self.anchor {
            Some(a) => a,
            None => self.anchor.insert(
                Command::new("sleep")
                    .arg("infinity")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .map_err(|e| anyhow::anyhow!("starting the process-group anchor: {e}"))?,
            ),
        };
        Ok(i32::try_from(anchor.id())?)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("operator.log")
    }

    /// The end of the operator's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// The end of node `id`'s log (`node-<i>.log` in the data directory), for failure
    /// messages.
    pub fn node_log_tail(&self, id: &str, lines: usize) -> String {
        tail(&self.data_dir.path().join(format!("{id}.log")), lines)
    }

    /// SIGKILLs the operator only (its nodes keep running, as after an operator crash).
    pub fn kill9_operator(&mut self) {
        if let Some(mut c) = self.operator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The control endpoint's status, or `None` while it does not answer.
    pub async fn status(&self) -> Option<LocalStatus> {
        let url = format!("http://127.0.0.1:{}/status", self.control_port());
        let resp = self.http.get(url).send().await.ok()?;
        resp.json::<LocalStatus>().await.ok()
    }

    /// Asks for `nodes` nodes.
    pub async fn scale(&self, nodes: u32) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/scale", self.control_port());
        let resp = self
            .http
            .post(url)
            .json(&ScaleRequest { nodes })
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "scale answered {}",
            resp.status()
        );
        Ok(())
    }

    /// Waits until the map exists, every partition is in sync and placement is at its target.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<LocalStatus> {
        self.wait_settled_at(None, timeout).await
    }

    /// Like [`LocalStore::wait_settled`], and also exactly `nodes` nodes, all Active, in the
    /// map and running.
    pub async fn wait_settled_at(
        &self,
        nodes: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<LocalStatus> {
        let r = wait_until(timeout, "the store to settle", || async {
            self.status().await.filter(|s| {
                let c = &s.coordinator;
                let sized = nodes.is_none_or(|n| {
                    c.nodes.len() == n
                        && s.endpoints.len() == n
                        && c.nodes
                            .iter()
                            .all(|x| x.state == shardedstore_node::map::NodeState::Active)
                });
                c.map_version > 0 && c.all_in_sync && c.balanced && c.moves.is_empty() && sized
            })
        })
        .await;
        r.map_err(|e| {
            anyhow::anyhow!(
                "{e}\noperator log:\n{}{}",
                self.log_tail(40),
                self.node_logs_tail(15)
            )
        })
    }

    /// The end of every node's log in the data directory, each under its node id, for
    /// failure messages (a node that keeps exiting says why only there).
    pub fn node_logs_tail(&self, lines: usize) -> String {
        let mut ids: Vec<String> = std::fs::read_dir(self.data_dir.path())
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let id = name.strip_suffix(".log")?;
                id.starts_with("node-").then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        ids.iter()
            .map(|id| format!("\n{id} log:\n{}", self.node_log_tail(id, lines)))
            .collect()
    }

    /// SIGKILLs node `id` (by the pid the operator reports).
    pub async fn kill9_node(&self, id: &str) -> anyhow::Result<()> {
        self.signal_node(id, "KILL").await
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to node `id`.
    pub async fn signal_node(&self, id: &str, signal: &str) -> anyhow::Result<()> {
        let status = self
            .status()
            .await
            .ok_or_else(|| anyhow::anyhow!("control endpoint not answering"))?;
        let pid = status
            .endpoints
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.pid)
            .ok_or_else(|| anyhow::anyhow!("no pid for {id}"))?;
        let ok = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -s {signal} {pid} failed");
        Ok(())
    }
}

impl LocalStore {
    /// SIGKILLs the operator and every node (the store's process group) and reaps the
    /// operator and the group's anchor; idempotent. Dropping the store does this too.
    pub fn kill_all(&mut self) {
        let Some(mut anchor) = self.anchor.take() else {
            return;
        };
        let group = anchor.id();
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.operator.take() {
            let _ = c.wait();
        }
        let _ = anchor.wait();
        // SIGKILL is delivered asynchronously: give the group a moment to go away, so a
        // caller can unmount their file systems next (bounded; zombies hold no files).
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline && group_alive(group) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `lines` lines of the file at `path` (empty when it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether any process of group `g` is alive (and not a zombie).
fn group_alive(g: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the command (which ends with ')'): state, ppid, pgrp, ...
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(g) && state != Some("Z")
    })
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.kill_all();
        // SHARDEDSTORE_LOCAL_KEEP=1 keeps the data directory (operator and node logs, data)
        // of every local-mode test for a post-mortem.
        if std::env::var_os("SHARDEDSTORE_LOCAL_KEEP").is_some() {
            self.data_dir.disable_cleanup(true);
            eprintln!("kept {}", self.data_dir.path().display());
        }
    }
}

/// Acknowledged (key, value) pairs and the count of failed writes of one writer.
type WriterResult = (Vec<(String, String)>, u64);

/// Background writers of unique keys that remember every acknowledged write.
pub struct WriteLoad {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<WriterResult>>,
    /// Acknowledged writes so far, over all writers (watched by [`WriteLoad::wait_for_acks`]).
    acked: tokio::sync::watch::Sender<u64>,
}

/// What a load run achieved.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Acknowledged writes: (key, value).
    pub acked: Vec<(String, String)>,
    /// Writes that failed (not acknowledged; they may or may not have been applied).
    pub failed: u64,
}

impl WriteLoad {
    /// Starts `writers` tasks writing `prefix-<writer>-<n>` keys as fast as acknowledged.
    pub fn start(client: &KvClient, prefix: &str, writers: usize) -> Self {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (acked_count, _) = tokio::sync::watch::channel(0u64);
        let tasks = (0..writers)
            .map(|w| {
                let client = client.clone();
                let rx = rx.clone();
                let acked_count = acked_count.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut failed = 0;
                    let mut n = 0u64;
                    while !*rx.borrow() {
                        let key = format!("{prefix}-{w}-{n}");
                        let value = crate::test_value(&format!("value-{w}-{n}"), n);
                        n += 1;
                        match client
                            .put(&key, value.clone().into_bytes(), Default::default())
                            .await
                        {
                            Ok(_) => {
                                acked.push((key, value));
                                acked_count.send_modify(|n| *n += 1);
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            acked: acked_count,
        }
    }

    /// Waits until `more` writes beyond those acknowledged now have been acknowledged
    /// (the load is making progress), or fails after `timeout`.
    pub async fn wait_for_acks(&self, more: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.acked.subscribe();
        let target = *rx.borrow() + more;
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= target))
            .await
            .map_err(|_| {
                anyhow::anyhow!("fewer than {more} writes acknowledged within {timeout:?}")
            })?
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("the writers stopped"))
    }

    /// Acknowledged writes so far are not visible until [`WriteLoad::stop`].
    pub async fn stop(self) -> LoadReport {
        self.stop.send_replace(true);
        let mut report = LoadReport::default();
        for t in self.tasks {
            if let Ok((acked, failed)) = t.await {
                report.acked.extend(acked);
                report.failed += failed;
            }
        }
        report
    }
}

/// Fails unless the load acknowledged at least `min_acked` writes and every one of them
/// reads back with its value. A test makes the count certain by waiting for acknowledgements
/// ([`WriteLoad::wait_for_acks`]) in the phases it checks, never by the time a phase takes:
/// on a faster machine, or with less to move, a phase may end after a handful of writes.
pub async fn ensure_none_lost(
    client: &KvClient,
    report: &LoadReport,
    min_acked: usize,
) -> anyhow::Result<()> {
    println!(
        "{} writes acknowledged, {} failed (unacknowledged)",
        report.acked.len(),
        report.failed
    );
    anyhow::ensure!(
        report.acked.len() >= min_acked,
        "too little load: {} writes acknowledged ({} failed), fewer than {min_acked}",
        report.acked.len(),
        report.failed
    );
    let lost = lost_writes(client, &report.acked).await;
    anyhow::ensure!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        report.acked.len(),
        &lost[..lost.len().min(5)]
    );
    Ok(())
}

/// Writes `n` keys `prefix-<i>` one by one; every write must be acknowledged.
pub async fn write_ledger(
    client: &KvClient,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context as _;
    let mut ledger = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let value = format!("{prefix}-value-{i}-{}", rand::random::<u32>());
        client
            .put(&key, value.clone().into_bytes(), Default::default())
            .await
            .with_context(|| format!("put {key}"))?;
        ledger.push((key, value));
    }
    Ok(ledger)
}

/// Every acknowledged write reads back with its value.
pub async fn assert_nothing_lost(client: &KvClient, acked: &[(String, String)]) {
    let lost = lost_writes(client, acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Reads back every acknowledged write; returns the keys that are missing or wrong.
pub async fn lost_writes(client: &KvClient, acked: &[(String, String)]) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, value) in acked {
        let mut found = None;
        // A read may need a retry while a partition settles after a failover.
        for _ in 0..20 {
            match client.get(key).await {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let ok = matches!(&found, Some(Some(v)) if v.value.as_ref() == value.as_bytes());
        if !ok {
            lost.push(key.clone());
        }
    }
    lost
}

/// Placement invariants of a map as installed (its replicas and primaries taken as the target).
pub fn placement_violations(
    map: &shardedstore_node::map::PartitionMap,
) -> Vec<shardedstore_operator::placement::Violation> {
    use shardedstore_operator::placement::{PlacementNode, Target, TargetPartition, check};
    let nodes: Vec<PlacementNode> = map
        .nodes
        .iter()
        .map(|(id, n)| PlacementNode {
            id: id.clone(),
            state: n.state,
            zone: n.zone.clone(),
        })
        .collect();
    let target = Target {
        partitions: map
            .partitions
            .iter()
            .map(|e| TargetPartition {
                replicas: e.replicas.clone(),
                primary: e.primary.clone(),
            })
            .collect(),
    };
    check(&target, &nodes, map.replication_factor)
}
