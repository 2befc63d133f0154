//! Child-process supervision in local mode: one `shardedstore-node` per ordinal, like a
//! StatefulSet with a kubelet — exits are confirmed deaths, restarts follow after a delay,
//! nodes still running from a previous operator run are adopted.

use crate::coordinator::{MemberNode, Membership};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Base ports; node i uses base + i. Node i listens on `host_base + i` when a host base is
/// set (each node its own loopback address), else on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
    pub host_base: Option<Ipv4Addr>,
}

impl Ports {
    /// The address node `ordinal` listens on.
    pub fn host(&self, ordinal: u32) -> Ipv4Addr {
        self.host_base.map_or(Ipv4Addr::LOCALHOST, |base| {
            Ipv4Addr::from(u32::from(base).saturating_add(ordinal))
        })
    }

    fn addr(&self, base: u16, ordinal: u32) -> String {
        format!("{}:{}", self.host(ordinal), u32::from(base) + ordinal)
    }

    fn client_addr(&self, ordinal: u32) -> String {
        self.addr(self.client, ordinal)
    }

    fn peer_addr(&self, ordinal: u32) -> String {
        self.addr(self.peer, ordinal)
    }

    fn metrics_addr(&self, ordinal: u32) -> String {
        self.addr(self.metrics, ordinal)
    }
}

/// Where a node listens, as shown by the control endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeEndpoint {
    pub id: String,
    pub ordinal: u32,
    pub client_addr: String,
    pub peer_addr: String,
    pub metrics_addr: String,
    /// The process is running (or was adopted running).
    pub running: bool,
    /// Operating-system process id, when this operator started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

struct Slot {
    child: Option<Child>,
    /// Running, but started by an earlier operator process: its pid (from the pid file)
    /// when known.
    adopted: Option<Option<u32>>,
    /// When the child was seen exited; it is restarted after the delay.
    exited_at: Option<Instant>,
}

/// The set of node processes.
pub struct Supervisor {
    binary: PathBuf,
    data_dir: PathBuf,
    ports: Ports,
    token: String,
    restart_delay: Duration,
    desired: u32,
    slots: BTreeMap<u32, Slot>,
    endpoints: watch::Sender<Vec<NodeEndpoint>>,
    /// Extra flags of every node (TLS, client authentication).
    node_args: Vec<std::ffi::OsString>,
}

impl Supervisor {
    pub fn new(
        binary: PathBuf,
        data_dir: PathBuf,
        ports: Ports,
        token: String,
        restart_delay: Duration,
    ) -> Self {
        Self {
            binary,
            data_dir,
            ports,
            token,
            restart_delay,
            desired: 0,
            slots: BTreeMap::new(),
            endpoints: watch::channel(Vec::new()).0,
            node_args: Vec::new(),
        }
    }

    /// Extra flags passed to every node started from now on.
    pub fn set_node_args(&mut self, args: Vec<std::ffi::OsString>) {
        self.node_args = args;
    }

    pub fn node_id(ordinal: u32) -> String {
        format!("node-{ordinal}")
    }

    /// Sets the desired node count: new ordinals start, ordinals at or above it drain.
    pub fn scale(&mut self, nodes: u32) {
        self.desired = nodes;
    }

    /// Runs (or adopts) node `ordinal` although it is beyond the desired count, because the
    /// stored map still gives it replicas: it must be drained, not taken for dead.
    pub fn keep_for_drain(&mut self, ordinal: u32) {
        if !self.slots.contains_key(&ordinal) {
            let slot = self.start(ordinal);
            self.slots.insert(ordinal, slot);
        }
    }

    /// Ordinals of nodes at or beyond `desired` that the stored `map` still gives a replica
    /// or learner of some partition (an operator restarted during a drain finds these).
    pub fn holding_beyond(map: &shardedstore_node::map::PartitionMap, desired: u32) -> Vec<u32> {
        let ordinals: BTreeSet<u32> = map
            .partitions
            .iter()
            .flat_map(|p| p.members())
            .filter_map(|id| id.strip_prefix("node-")?.parse::<u32>().ok())
            .filter(|&o| o >= desired)
            .collect();
        ordinals.into_iter().collect()
    }

    /// Stops and forgets drained nodes that hold nothing any more (StatefulSet shrink).
    pub fn retire(&mut self, empty: &[String]) {
        let empty: BTreeSet<&String> = empty.iter().collect();
        let gone: Vec<u32> = self
            .slots
            .keys()
            .copied()
            .filter(|&o| o >= self.desired && empty.contains(&Self::node_id(o)))
            .collect();
        for o in gone {
            if let Some(mut slot) = self.slots.remove(&o) {
                tracing::info!(node = %Self::node_id(o), "removing drained node");
                if let Some(child) = slot.child.as_mut() {
                    let _ = child.start_kill();
                }
            }
        }
    }

    fn spawn(&self, ordinal: u32) -> std::io::Result<Child> {
        let id = Self::node_id(ordinal);
        let dir = self.data_dir.join(&id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join(format!("{id}.log")))?;
        let log2 = log.try_clone()?;
        let mut command = Command::new(&self.binary);
        if self.ports.host_base.is_some() {
            command
                .arg("--host")
                .arg(self.ports.host(ordinal).to_string());
        }
        command
            .arg("--node-id")
            .arg(&id)
            .arg("--store")
            .arg(super::LOCAL_STORE)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--client-addr")
            .arg(self.ports.client_addr(ordinal))
            .arg("--peer-addr")
            .arg(self.ports.peer_addr(ordinal))
            .arg("--metrics-addr")
            .arg(self.ports.metrics_addr(ordinal))
            .args(&self.node_args)
            .env("SHARDEDSTORE_PEER_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
    }

    /// Is something already answering on the node's peer port (a node left running)?
    fn already_running(&self, ordinal: u32) -> bool {
        port_open(&self.ports.peer_addr(ordinal))
    }

    fn pid_file(&self, ordinal: u32) -> PathBuf {
        self.data_dir
            .join(format!("{}.pid", Self::node_id(ordinal)))
    }

    fn start(&self, ordinal: u32) -> Slot {
        if self.already_running(ordinal) {
            tracing::info!(node = %Self::node_id(ordinal), "adopting a running node");
            let pid = std::fs::read_to_string(self.pid_file(ordinal))
                .ok()
                .and_then(|t| t.trim().parse().ok());
            return Slot {
                child: None,
                adopted: Some(pid),
                exited_at: None,
            };
        }
        match self.spawn(ordinal) {
            Ok(child) => {
                if let Some(pid) = child.id()
                    && let Err(e) = std::fs::write(self.pid_file(ordinal), pid.to_string())
                {
                    tracing::warn!(error = %e, "writing the pid file");
                }
                Slot {
                    child: Some(child),
                    adopted: None,
                    exited_at: None,
                }
            }
            Err(e) => {
                tracing::warn!(node = %Self::node_id(ordinal), error = %e, "starting node");
                Slot {
                    child: None,
                    adopted: None,
                    exited_at: Some(Instant::now()),
                }
            }
        }
    }

    /// Starts missing nodes, notices exits, restarts after the delay.
    pub fn reconcile(&mut self) {
        let now = Instant::now();
        for o in 0..self.desired {
            if !self.slots.contains_key(&o) {
                let slot = self.start(o);
                self.slots.insert(o, slot);
            }
        }
        let ordinals: Vec<u32> = self.slots.keys().copied().collect();
        for o in ordinals {
            let restart = match self.slots.get_mut(&o) {
                Some(slot) => {
                    if let Some(child) = slot.child.as_mut()
                        && let Ok(Some(status)) = child.try_wait()
                    {
                        tracing::warn!(node = %Self::node_id(o), %status, "node exited");
                        slot.child = None;
                        slot.exited_at = Some(now);
                    }
                    // An adopted node is not our child: watch its pid (or its port).
                    let adopted_gone = match slot.adopted {
                        Some(Some(pid)) => !process_alive(pid),
                        Some(None) => !port_open(&self.ports.peer_addr(o)),
                        None => false,
                    };
                    if adopted_gone {
                        tracing::warn!(node = %Self::node_id(o), "adopted node exited");
                        slot.adopted = None;
                        slot.exited_at = Some(now);
                    }
                    slot.exited_at
                        .is_some_and(|t| now >= t + self.restart_delay)
                }
                None => false,
            };
            if restart {
                let slot = self.start(o);
                self.slots.insert(o, slot);
            }
        }
        self.endpoints.send_replace(self.endpoints());
    }

    fn endpoints(&self) -> Vec<NodeEndpoint> {
        self.slots
            .iter()
            .map(|(&o, slot)| NodeEndpoint {
                id: Self::node_id(o),
                ordinal: o,
                client_addr: self.ports.client_addr(o),
                peer_addr: self.ports.peer_addr(o),
                metrics_addr: self.ports.metrics_addr(o),
                running: slot.child.is_some() || slot.adopted.is_some(),
                pid: slot
                    .child
                    .as_ref()
                    .and_then(Child::id)
                    .or(slot.adopted.flatten()),
            })
            .collect()
    }

    /// Node endpoints, updated on every reconcile.
    pub fn endpoints_handle(&self) -> watch::Receiver<Vec<NodeEndpoint>> {
        self.endpoints.subscribe()
    }

    /// The membership the coordinator works from.
    pub fn membership(&self) -> Membership {
        Membership {
            nodes: self
                .slots
                .iter()
                .map(|(&o, slot)| {
                    let dead = slot.exited_at.is_some();
                    MemberNode {
                        id: Self::node_id(o),
                        ordinal: o,
                        client_addr: self.ports.client_addr(o),
                        peer_addr: self.ports.peer_addr(o),
                        zone: None,
                        ready: !dead,
                        confirmed_dead: dead,
                    }
                })
                .collect(),
            desired_nodes: self.desired,
            cordoned: BTreeSet::new(),
        }
    }

    /// One line per node for the start-up banner.
    pub fn describe(&self) -> Vec<String> {
        self.endpoints()
            .into_iter()
            .map(|e| {
                format!(
                    "{}: client http://{}  peer {}  metrics http://{}/metrics",
                    e.id, e.client_addr, e.peer_addr, e.metrics_addr
                )
            })
            .collect()
    }

    /// Stops every node, adopted ones included: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop_all(&mut self) {
        for slot in self.slots.values_mut() {
            let pid = slot
                .child
                .as_ref()
                .and_then(Child::id)
                .or(slot.adopted.flatten());
            if let Some(pid) = pid {
                // Polite stop first; the node flushes and exits.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for slot in self.slots.values_mut() {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        // Adopted nodes are not our children: wait for their pid to vanish.
        for pid in self.slots.values().filter_map(|s| s.adopted.flatten()) {
            while process_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if process_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        self.slots.clear();
    }
}

/// Is process `pid` running? An adopted node is not our child, so when it exits it stays a
/// zombie until its new parent reaps it, and an init that never reaps (a minimal container or
/// VM init) keeps it a zombie for good: a zombie (or a vanished pid) has exited.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command, which ends with the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Does something accept connections on loopback address `addr`? (Refused at once when not.)
fn port_open(addr: &str) -> bool {
    addr.parse()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).ok())
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::{Supervisor, process_alive};

    #[test]
    fn a_zombie_counts_as_exited() -> std::io::Result<()> {
        let mut child = std::process::Command::new("sleep").arg("60").spawn()?;
        let pid = child.id();
        assert!(process_alive(pid));
        // SIGKILL and wait for the exit without reaping: the pid stays, as a zombie.
        child.kill()?;
        let zombie = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !process_alive(pid)
        });
        assert!(zombie, "pid {pid} still counted alive after SIGKILL");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.wait()?;
        assert!(!process_alive(pid));
        Ok(())
    }
    use shardedstore_node::map::{PartitionEntry, PartitionMap};

    #[test]
    fn nodes_beyond_the_count_that_still_hold_replicas_are_kept_for_draining() {
        let mut map = PartitionMap::empty("local", 2, 2, 1);
        map.partitions[0] = PartitionEntry {
            epoch: 1,
            primary: Some("node-0".into()),
            replicas: vec!["node-0".into(), "node-3".into()],
            in_sync: vec!["node-0".into(), "node-3".into()],
            learners: vec!["node-1".into()],
        };
        map.partitions[1] = PartitionEntry {
            epoch: 1,
            primary: Some("node-1".into()),
            replicas: vec!["node-1".into(), "node-2".into()],
            in_sync: vec!["node-1".into()],
            learners: vec!["node-4".into()],
        };
        assert_eq!(Supervisor::holding_beyond(&map, 3), vec![3, 4]);
        assert_eq!(Supervisor::holding_beyond(&map, 5), Vec::<u32>::new());
        assert_eq!(Supervisor::holding_beyond(&map, 2), vec![2, 3, 4]);
    }
}
