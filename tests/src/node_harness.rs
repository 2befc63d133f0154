//! Process harness for multi-process tests: free loopback ports, `shardedstore-node` child
//! processes that are killed when dropped, waiting on conditions with deadlines, and a small
//! [`Cluster`] helper that plays the operator (builds maps, installs them, heartbeats).
//!
//! Binaries are found next to the test executable's target directory
//! (`<target-dir>/<profile>/shardedstore-node`), so run `cargo build --workspace --bins`
//! before `cargo test` (as `make test` does). Each node writes its log to
//! `<data dir>/<node id>.log`; [`NodeProcess::log_tail`] returns the end of it for
//! failure messages.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use shardedstore_tests::node_harness::{Cluster, NodeOptions};
//! let mut cluster = Cluster::start(3, NodeOptions::default())?;
//! cluster.wait_healthy().await?;
//! let map = cluster.map_round_robin(8, 3, 2);
//! cluster.install(&map).await?;
//! let _beats = cluster
//!     .heartbeat_in_background(std::time::Duration::from_secs(3))
//!     .await?;
//! # Ok(()) }
//! ```

use shardedstore_node::admin_api::{HeartbeatRequest, HeartbeatResponse};
use shardedstore_node::client::AdminClient;
use shardedstore_node::map::{NodeInfo, NodeState, PartitionEntry, PartitionMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lowest port of the kernel's ephemeral range (32768 unless configured otherwise): ports a
/// test hands to a server must stay below it, or an outgoing connection of any process (a
/// pooled keep-alive connection lives for minutes) can take the port between the test's check
/// and the server's bind.
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A free TCP port on 127.0.0.1, chosen at random below the kernel's ephemeral range, so
/// outgoing connections of other processes cannot take it between this call and the node
/// binding it; never the same port twice in one test process.
pub fn free_port() -> std::io::Result<u16> {
    free_port_range(1, |_| std::net::Ipv4Addr::LOCALHOST)
}

/// The first of `width` consecutive free TCP ports, port `base + i` free on `host(i)`; below
/// the kernel's ephemeral range and never overlapping a range this test process was already
/// handed.
pub fn free_port_range(
    width: u16,
    host: impl Fn(u16) -> std::net::Ipv4Addr,
) -> std::io::Result<u16> {
    use rand::Rng;
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let ceiling = ephemeral_floor().saturating_sub(width);
    let floor = 10_000u16.min(ceiling.saturating_sub(1_000));
    let mut rng = rand::rng();
    for _ in 0..500 {
        let base: u16 = rng.random_range(floor..ceiling);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed
            .iter()
            .any(|&(b, w)| base < b + w && b < base + width)
        {
            continue;
        }
        let all_free = (0..width).all(|i| std::net::TcpListener::bind((host(i), base + i)).is_ok());
        if all_free {
            handed.push((base, width));
            return Ok(base);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no {width} consecutive free ports below {ceiling}"),
    ))
}

/// Path of a workspace binary: `<target-dir>/<profile>/<name>`, found from the running test
/// executable (`<target-dir>/<profile>/deps/<test>-<hash>`).
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test executable path {}", exe.display()))?;
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    Ok(path)
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings shared by the nodes of a test.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub store: String,
    pub token: String,
    /// Extra command-line flags (e.g. `--log-window 100`).
    pub extra_args: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            store: "test-store".into(),
            token: "test-peer-token".into(),
            extra_args: Vec::new(),
        }
    }
}

/// One `shardedstore-node` child process; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub id: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub metrics_addr: String,
    pub data_dir: PathBuf,
    /// Extra environment of the process (e.g. the test-only storage fault hooks), applied
    /// at the next (re)start.
    pub env: Vec<(String, String)>,
    options: NodeOptions,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts a node with fresh ports, keeping its data in `data_dir`.
    pub fn spawn(id: &str, data_dir: &Path, options: &NodeOptions) -> anyhow::Result<Self> {
        let mut node = Self {
            id: id.to_owned(),
            client_addr: format!("127.0.0.1:{}", free_port()?),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            metrics_addr: format!("127.0.0.1:{}", free_port()?),
            data_dir: data_dir.to_owned(),
            env: Vec::new(),
            options: options.clone(),
            child: None,
        };
        node.start()?;
        Ok(node)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join(format!("{}.log", self.id))
    }

    /// (Re)starts the process on the same ports and data directory.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.id);
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(binary_path("shardedstore-node")?)
            .arg("--node-id")
            .arg(&self.id)
            .arg("--store")
            .arg(&self.options.store)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--client-addr")
            .arg(&self.client_addr)
            .arg("--peer-addr")
            .arg(&self.peer_addr)
            .arg("--metrics-addr")
            .arg(&self.metrics_addr)
            .args(&self.options.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SHARDEDSTORE_PEER_TOKEN", &self.options.token)
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the process and reaps it (like `kill -9`).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the process exits by itself (reaping it); fails after `timeout`.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("{} is not running", self.id))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node as it appears in a partition map.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            client_addr: self.client_addr.clone(),
            peer_addr: self.peer_addr.clone(),
            zone: None,
            state: NodeState::Active,
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Aborts a background task when dropped.
pub struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends heartbeats as one coordinator does: a random coordinator id, increasing sequence
/// numbers, and per node the highest sequence number whose answer arrived (`confirmedSeq`).
/// A node's lease starts at its receipt of a confirmed heartbeat, so granting a lease to a
/// node takes two heartbeats.
#[derive(Clone)]
pub struct Heartbeater {
    admin: AdminClient,
    store: String,
    coordinator: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
    confirmed: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

impl Heartbeater {
    pub fn new(admin: AdminClient, store: &str) -> Self {
        Self {
            admin,
            store: store.to_owned(),
            coordinator: format!("test-{:016x}", rand::random::<u64>()),
            seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            confirmed: Arc::new(Mutex::new(std::collections::HashMap::new())),
        }
    }

    /// The request the next heartbeat to `node` would carry.
    pub fn request(&self, node: &str, lease: Duration) -> HeartbeatRequest {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let confirmed_seq = self
            .confirmed
            .lock()
            .ok()
            .and_then(|c| c.get(node).copied());
        HeartbeatRequest {
            store: self.store.clone(),
            map_version: 0,
            lease_ms: lease.as_millis() as u64,
            node: node.to_owned(),
            coordinator: self.coordinator.clone(),
            seq,
            confirmed_seq,
        }
    }

    /// Sends one heartbeat to `node` at `addr`; its answer confirms it for the next one.
    pub async fn beat(
        &self,
        node: &str,
        addr: &str,
        lease: Duration,
    ) -> anyhow::Result<HeartbeatResponse> {
        let req = self.request(node, lease);
        let resp = self.admin.heartbeat(addr, &req).await?;
        if let Ok(mut c) = self.confirmed.lock() {
            let e = c.entry(node.to_owned()).or_insert(0);
            *e = (*e).max(req.seq);
        }
        Ok(resp)
    }

    /// Heartbeats until the node holds a lease (two heartbeats when none was confirmed yet).
    pub async fn grant(
        &self,
        node: &str,
        addr: &str,
        lease: Duration,
    ) -> anyhow::Result<HeartbeatResponse> {
        self.beat(node, addr, lease).await?;
        self.beat(node, addr, lease).await
    }
}

/// A set of nodes in one temporary directory, with helpers to drive them as the operator would.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub options: NodeOptions,
    pub admin: AdminClient,
    pub http: reqwest::Client,
    /// Nodes the background heartbeat skips (e.g. a partitioned or killed node).
    pub heartbeat_skip: Arc<Mutex<Vec<String>>>,
    /// The coordinator the helpers heartbeat as.
    pub heartbeater: Heartbeater,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes named `node-0..node-{n-1}`.
    pub fn start(n: usize, options: NodeOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("node-{i}");
            nodes.push(NodeProcess::spawn(&id, &dir.path().join(&id), &options)?);
        }
        let admin = AdminClient::new(options.token.clone(), Duration::from_secs(10))?;
        Ok(Self {
            nodes,
            heartbeater: Heartbeater::new(admin.clone(), &options.store),
            admin,
            http: shardedstore_node::tls::http_client_builder(&Default::default())?
                .timeout(Duration::from_secs(20))
                .build()?,
            options,
            heartbeat_skip: Arc::new(Mutex::new(Vec::new())),
            dir,
        })
    }

    /// Adds and starts one more node (`node-<n>`).
    pub fn add_node(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let id = format!("node-{i}");
        let node = NodeProcess::spawn(&id, &self.dir.path().join(&id), &self.options)?;
        self.nodes.push(node);
        Ok(i)
    }

    pub fn node(&self, id: &str) -> Option<&NodeProcess> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Waits until every running node answers `/healthz`.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let url = format!("http://{}/healthz", n.metrics_addr);
            let http = self.http.clone();
            wait_until(
                Duration::from_secs(20),
                &format!("{} healthy", n.id),
                || {
                    let http = http.clone();
                    let url = url.clone();
                    async move {
                        let r = http.get(&url).send().await.ok()?;
                        r.status().is_success().then_some(())
                    }
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", n.log_tail(20)))?;
        }
        Ok(())
    }

    /// A map of `partitions` partitions over every node, replicas assigned round-robin,
    /// primary = first replica, epoch 1, every replica in sync.
    pub fn map_round_robin(&self, partitions: u32, rf: u32, min_in_sync: u32) -> PartitionMap {
        let mut map = PartitionMap::empty(&self.options.store, partitions, rf, min_in_sync);
        map.version = 1;
        for n in &self.nodes {
            map.nodes.insert(n.id.clone(), n.info());
        }
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for (p, entry) in map.partitions.iter_mut().enumerate() {
            let replicas: Vec<String> = (0..rf as usize)
                .map(|r| ids[(p + r) % ids.len()].clone())
                .collect();
            *entry = PartitionEntry {
                epoch: 1,
                primary: replicas.first().cloned(),
                in_sync: replicas.clone(),
                replicas,
                learners: Vec::new(),
            };
        }
        map
    }

    /// Installs `map` on every running node.
    pub async fn install(&self, map: &PartitionMap) -> anyhow::Result<()> {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            self.admin.install_map(&n.peer_addr, map).await?;
        }
        Ok(())
    }

    /// Installs `map` on the named nodes only.
    pub async fn install_on(&self, map: &PartitionMap, ids: &[&str]) -> anyhow::Result<()> {
        for id in ids {
            let n = self
                .node(id)
                .ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
            self.admin.install_map(&n.peer_addr, map).await?;
        }
        Ok(())
    }

    /// Sends one heartbeat granting `lease` to every running node not skipped.
    pub async fn heartbeat_all(&self, lease: Duration) -> anyhow::Result<()> {
        let skip = self
            .heartbeat_skip
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for n in self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !skip.contains(&n.id))
        {
            self.heartbeater.grant(&n.id, &n.peer_addr, lease).await?;
        }
        Ok(())
    }

    /// Installs one partition led by node-0 and followed by node-1 and node-2 (all in sync),
    /// keeps every node's lease fresh (4 s leases) and waits until node-0 acknowledges a
    /// first write of `key`. Returns the heartbeat task's guard.
    pub async fn lead_one_partition(&self, key: &str, value: &[u8]) -> anyhow::Result<TaskGuard> {
        let map = self.map_round_robin(1, 3, 2);
        self.install(&map).await?;
        let beats = self.heartbeat_in_background(Duration::from_secs(4)).await?;
        wait_until(
            Duration::from_secs(20),
            "the primary accepts writes",
            || async {
                let (status, _) = self.put(0, key, value.to_vec()).await.ok()?;
                matches!(status, 200 | 201).then_some(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.logs(30)))?;
        Ok(beats)
    }

    /// Heartbeats every node (by peer address, as of now) every `lease / 4` until the
    /// guard is dropped. Nodes in [`Cluster::heartbeat_skip`] are left out; unreachable
    /// nodes are ignored. The first round is sent before this returns, so every running
    /// node holds a lease when the caller starts writing.
    pub async fn heartbeat_in_background(&self, lease: Duration) -> anyhow::Result<TaskGuard> {
        self.heartbeat_all(lease).await?;
        let targets: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.peer_addr.clone()))
            .collect();
        let beats = self.heartbeater.clone();
        let skip = self.heartbeat_skip.clone();
        Ok(TaskGuard(tokio::spawn(async move {
            loop {
                let skipped = skip.lock().map(|s| s.clone()).unwrap_or_default();
                for (id, addr) in &targets {
                    if skipped.contains(id) {
                        continue;
                    }
                    let _ = beats.beat(id, addr, lease).await;
                }
                tokio::time::sleep(lease / 4).await;
            }
        })))
    }

    /// `PUT` through node `via`'s client port; returns the status and `x-version`.
    pub async fn put(
        &self,
        via: usize,
        key: &str,
        value: Vec<u8>,
    ) -> anyhow::Result<(u16, Option<u64>)> {
        let url = format!("http://{}/v1/kv/{key}", self.nodes[via].client_addr);
        let r = self.http.put(url).body(value).send().await?;
        Ok((r.status().as_u16(), version_of(&r)))
    }

    /// `GET` through node `via`; returns the status, `x-version` and body.
    pub async fn get(&self, via: usize, key: &str) -> anyhow::Result<(u16, Option<u64>, Vec<u8>)> {
        self.get_url(format!(
            "http://{}/v1/kv/{key}",
            self.nodes[via].client_addr
        ))
        .await
    }

    /// `GET ...?consistency=local` through node `via`.
    pub async fn get_local(
        &self,
        via: usize,
        key: &str,
    ) -> anyhow::Result<(u16, Option<u64>, Vec<u8>)> {
        self.get_url(format!(
            "http://{}/v1/kv/{key}?consistency=local",
            self.nodes[via].client_addr
        ))
        .await
    }

    async fn get_url(&self, url: String) -> anyhow::Result<(u16, Option<u64>, Vec<u8>)> {
        let r = self.http.get(url).send().await?;
        let status = r.status().as_u16();
        let version = version_of(&r);
        Ok((status, version, r.bytes().await?.to_vec()))
    }

    /// Node `i`'s report (its answer to a heartbeat that grants nothing).
    pub async fn report(&self, i: usize) -> anyhow::Result<HeartbeatResponse> {
        let req = HeartbeatRequest {
            store: self.options.store.clone(),
            ..Default::default()
        };
        Ok(self.admin.heartbeat(&self.nodes[i].peer_addr, &req).await?)
    }

    /// The text of node `i`'s `/metrics`.
    pub async fn metrics(&self, i: usize) -> anyhow::Result<String> {
        let url = format!("http://{}/metrics", self.nodes[i].metrics_addr);
        Ok(self.http.get(url).send().await?.text().await?)
    }

    /// Logs of every node (for assertion messages).
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.id, n.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn version_of(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("x-version")?.to_str().ok()?.parse().ok()
}

/// The value of an unlabelled metric (or the sum of a labelled one's series matching `filter`).
pub fn metric_value(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
