//! Executing a schedule step against a local-mode store: resolve the victims from the map,
//! start every part of the fault, hold it, heal it in reverse order. Each step returns a
//! [`Record`] naming the nodes it made unhealthy and when, for the availability report.

use super::disks::Disks;
use super::{DiskFault, Fault, Kind, Role, Shape, fault_time};
use crate::local_harness::LocalStore;
use crate::netfault::{Cut, NetFaults};
use crate::node_harness::wait_until;
use shardedstore_faultfs::FaultControl;
use shardedstore_node::map::{PartitionEntry, PartitionMap};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// What the nemesis works on.
pub struct Env<'a> {
    pub store: &'a mut LocalStore,
    pub keys: &'a [String],
    /// The partition harness (required by partition faults).
    pub net: Option<&'a NetFaults>,
    /// The nodes' faultfs disks (required by disk faults and power losses).
    pub disks: Option<&'a Disks>,
    /// Start of the run: record times are milliseconds since then.
    pub clock: Instant,
}

/// One node made unhealthy (down, frozen or cut off) from `from_ms` to `to_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unhealthy {
    pub node: String,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct Record {
    pub kinds: Vec<Kind>,
    pub what: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub unhealthy: Vec<Unhealthy>,
}

/// Continues a stopped process when dropped, so no path leaves a node frozen.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = signal(self.0, "CONT");
    }
}

/// How a started fault part is healed.
enum Undo {
    Nothing,
    Continue(#[allow(dead_code)] Continue),
    RestartOperator,
    Heal(Vec<Cut>),
    HealDisk(FaultControl),
}

/// A started part of a fault.
struct Active {
    what: String,
    /// Nodes made unhealthy and for how long (from the start of the part).
    nodes: Vec<(String, Duration)>,
    undo: Undo,
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -s {signal} {pid} failed");
    Ok(())
}

fn entry<'m>(map: &'m PartitionMap, key: &str) -> anyhow::Result<&'m PartitionEntry> {
    map.entry(map.partition_of(key.as_bytes()))
        .ok_or_else(|| anyhow::anyhow!("no map entry for {key}"))
}

fn primary(e: &PartitionEntry) -> anyhow::Result<String> {
    e.primary
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no primary in {e:?}"))
}

fn follower(e: &PartitionEntry, n: u32) -> anyhow::Result<String> {
    let p = e.primary.clone().unwrap_or_default();
    let followers: Vec<&String> = e.in_sync.iter().filter(|r| **r != p).collect();
    anyhow::ensure!(!followers.is_empty(), "no in-sync follower in {e:?}");
    Ok(followers[n as usize % followers.len()].clone())
}

/// The node holding `role` in `e`.
fn resolve(e: &PartitionEntry, role: Role) -> anyhow::Result<String> {
    match role {
        Role::Primary => primary(e),
        Role::Follower(n) => follower(e, n),
    }
}

impl Env<'_> {
    fn map(&self) -> anyhow::Result<PartitionMap> {
        self.store
            .stored_map()
            .ok_or_else(|| anyhow::anyhow!("no stored map"))
    }

    fn key(&self, key: usize) -> &str {
        &self.keys[key % self.keys.len()]
    }

    fn net(&self) -> anyhow::Result<&NetFaults> {
        self.net
            .ok_or_else(|| anyhow::anyhow!("partition faults need the netfault harness"))
    }

    fn disks(&self) -> anyhow::Result<&Disks> {
        self.disks
            .ok_or_else(|| anyhow::anyhow!("disk faults need the nodes' data on faultfs"))
    }

    fn operator_host(&self) -> anyhow::Result<Ipv4Addr> {
        self.store
            .options
            .operator_bind
            .ok_or_else(|| anyhow::anyhow!("the store has no operator address"))
    }

    async fn pid(&self, node: &str) -> anyhow::Result<u32> {
        let status = self
            .store
            .status()
            .await
            .ok_or_else(|| anyhow::anyhow!("control endpoint not answering"))?;
        status
            .endpoints
            .iter()
            .find(|e| e.id == node)
            .and_then(|e| e.pid)
            .ok_or_else(|| anyhow::anyhow!("no pid for {node}"))
    }

    /// The cuts of `shape` around key `key`'s partition, and the node they make unhealthy.
    fn cuts(&self, key: usize, shape: Shape) -> anyhow::Result<(Vec<Cut>, String, String)> {
        let map = self.map()?;
        let e = entry(&map, self.key(key))?;
        let host = |n: &str| self.store.node_host(n);
        Ok(match shape {
            Shape::Isolate { role } => {
                let v = resolve(e, role)?;
                let me = host(&v)?;
                let mut cuts = vec![Cut::Both {
                    a: me,
                    b: self.operator_host()?,
                }];
                for other in map.nodes.keys().filter(|n| **n != v) {
                    cuts.push(Cut::Both {
                        a: me,
                        b: host(other)?,
                    });
                }
                let what = format!("isolate {v} ({role:?})");
                (cuts, v, what)
            }
            Shape::PrimaryToFollower { follower: n } => {
                let (p, f) = (primary(e)?, follower(e, n)?);
                let cut = Cut::Initiated {
                    from: host(&p)?,
                    to: host(&f)?,
                };
                (vec![cut], f.clone(), format!("cut connections {p} -> {f}"))
            }
            Shape::OperatorFrom { role } => {
                let v = resolve(e, role)?;
                let cut = Cut::Both {
                    a: host(&v)?,
                    b: self.operator_host()?,
                };
                (
                    vec![cut],
                    v.clone(),
                    format!("cut operator <-> {v} ({role:?})"),
                )
            }
            Shape::OneWay {
                follower: n,
                to_follower,
            } => {
                let (p, f) = (primary(e)?, follower(e, n)?);
                let (from, to) = if to_follower { (&p, &f) } else { (&f, &p) };
                let cut = Cut::OneWay {
                    from: host(from)?,
                    to: host(to)?,
                };
                (vec![cut], f.clone(), format!("drop packets {from} -> {to}"))
            }
        })
    }

    /// Starts one part of a fault (not an overlap).
    async fn begin(&mut self, fault: &Fault) -> anyhow::Result<Active> {
        let hold = fault_time(fault);
        match fault {
            Fault::KillNode { key, role } => {
                let node = resolve(entry(&self.map()?, self.key(*key))?, *role)?;
                self.store.kill9_node(&node).await?;
                let down = Duration::from_millis(self.store.options.restart_delay_ms);
                Ok(Active {
                    what: format!("kill -9 {node} ({role:?} of {})", self.key(*key)),
                    nodes: vec![(node, down)],
                    undo: Undo::Nothing,
                })
            }
            Fault::StopNode { key, role } => {
                let node = resolve(entry(&self.map()?, self.key(*key))?, *role)?;
                self.store.signal_node(&node, "TERM").await?;
                let down = Duration::from_millis(self.store.options.restart_delay_ms);
                Ok(Active {
                    what: format!("SIGTERM {node} ({role:?} of {})", self.key(*key)),
                    nodes: vec![(node, down)],
                    undo: Undo::Nothing,
                })
            }
            Fault::PauseNode { key, role, millis } => {
                let node = resolve(entry(&self.map()?, self.key(*key))?, *role)?;
                let pid = self.pid(&node).await?;
                signal(pid, "STOP")?;
                Ok(Active {
                    what: format!(
                        "SIGSTOP {node} for {millis} ms ({role:?} of {})",
                        self.key(*key)
                    ),
                    nodes: vec![(node, hold)],
                    undo: Undo::Continue(Continue(pid)),
                })
            }
            Fault::KillOperator { millis } => {
                self.store.kill9_operator();
                Ok(Active {
                    what: format!("kill -9 operator, down {millis} ms"),
                    nodes: Vec::new(),
                    undo: Undo::RestartOperator,
                })
            }
            Fault::Scale { nodes } => {
                self.store.scale(*nodes).await?;
                // A restarted operator is given the largest size scaled to so far: local
                // mode does not persist a scale request (see docs/fault-injection.md). The
                // run's healing scales back in.
                self.store.options.nodes = self.store.options.nodes.max(*nodes);
                Ok(Active {
                    what: format!("scale to {nodes} nodes"),
                    nodes: Vec::new(),
                    undo: Undo::Nothing,
                })
            }
            Fault::Partition { key, shape, millis } => {
                let (cuts, node, what) = self.cuts(*key, *shape)?;
                let net = self.net()?;
                if let Err(e) = net.cut_all(&cuts) {
                    for c in &cuts {
                        let _ = net.heal(*c);
                    }
                    return Err(e.into());
                }
                Ok(Active {
                    what: format!("{what} for {millis} ms (key {})", self.key(*key)),
                    nodes: vec![(node, hold)],
                    undo: Undo::Heal(cuts),
                })
            }
            Fault::Disk {
                key,
                role,
                disk,
                millis,
            } => {
                let node = resolve(entry(&self.map()?, self.key(*key))?, *role)?;
                let disks = self.disks()?;
                let control = disks.control(&node)?;
                let what = match *disk {
                    DiskFault::Hang => {
                        control.freeze();
                        "hang the disk of".to_owned()
                    }
                    DiskFault::SlowFsync { millis } => {
                        control.set_fsync_delay(Duration::from_millis(millis));
                        format!("fsync +{millis} ms on the disk of")
                    }
                    DiskFault::Full { slack } => {
                        let capacity = disks.used_bytes(&node)? + slack;
                        control.set_capacity(Some(capacity));
                        format!("ENOSPC beyond {capacity} bytes on the disk of")
                    }
                    DiskFault::FsyncEio => {
                        control.fail_fsync(true);
                        "EIO on every fsync on the disk of".to_owned()
                    }
                };
                // A slow disk leaves the node healthy: the store should keep serving.
                let slow = matches!(disk, DiskFault::SlowFsync { .. });
                Ok(Active {
                    what: format!(
                        "{what} {node} for {millis} ms ({role:?} of {})",
                        self.key(*key)
                    ),
                    nodes: if slow { Vec::new() } else { vec![(node, hold)] },
                    undo: Undo::HealDisk(control),
                })
            }
            Fault::PowerLoss { key, role } => {
                let node = resolve(entry(&self.map()?, self.key(*key))?, *role)?;
                let control = self.disks()?.control(&node)?;
                let pid = self.pid(&node).await?;
                // SIGKILL, then drop the unsynced data at once: the supervisor reaps and
                // restarts the node later (restart delay), on what its disk kept.
                signal(pid, "KILL")?;
                let lost = control.power_loss();
                let down = Duration::from_millis(self.store.options.restart_delay_ms);
                Ok(Active {
                    what: format!(
                        "power loss of {node} ({role:?} of {}): {} unsynced bytes in {} files dropped",
                        self.key(*key),
                        lost.bytes,
                        lost.files
                    ),
                    nodes: vec![(node, down)],
                    undo: Undo::Nothing,
                })
            }
            Fault::PowerLossAll => {
                let disks = self.disks()?;
                let status = self
                    .store
                    .status()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("control endpoint not answering"))?;
                let nodes: Vec<(String, u32)> = status
                    .endpoints
                    .iter()
                    .filter_map(|e| Some((e.id.clone(), e.pid?)))
                    .collect();
                // Every node dies before any disk loses its data, as in one power cut (a
                // node that already died is down anyway).
                let nodes: Vec<(String, u32)> = nodes
                    .into_iter()
                    .filter(|(_, pid)| signal(*pid, "KILL").is_ok())
                    .collect();
                anyhow::ensure!(!nodes.is_empty(), "no running node to cut the power of");
                let (mut files, mut bytes) = (0, 0);
                for (_, control) in disks.all() {
                    let lost = control.power_loss();
                    files += lost.files;
                    bytes += lost.bytes;
                }
                let down = Duration::from_millis(self.store.options.restart_delay_ms);
                let ids: Vec<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
                Ok(Active {
                    what: format!(
                        "power loss of every node ({}): {bytes} unsynced bytes in {files} files dropped",
                        ids.join(", ")
                    ),
                    nodes: nodes.iter().map(|(id, _)| (id.clone(), down)).collect(),
                    undo: Undo::Nothing,
                })
            }
            Fault::Overlap(..) => anyhow::bail!("an overlap is not a single part"),
        }
    }

    /// Heals a started part.
    async fn end(&mut self, active: Active) -> anyhow::Result<()> {
        match active.undo {
            Undo::Nothing | Undo::Continue(_) => Ok(()),
            Undo::RestartOperator => {
                self.store.start_operator()?;
                let store = &*self.store;
                wait_until(
                    Duration::from_secs(30),
                    "the restarted operator's control endpoint",
                    || async {
                        store
                            .status()
                            .await
                            .filter(|s| s.coordinator.map_version > 0)
                    },
                )
                .await?;
                Ok(())
            }
            Undo::HealDisk(control) => {
                control.heal();
                Ok(())
            }
            Undo::Heal(cuts) => {
                let net = self.net()?;
                for c in cuts {
                    net.heal(c)?;
                }
                Ok(())
            }
        }
    }

    fn since(&self, t: Instant) -> u64 {
        t.duration_since(self.clock).as_millis() as u64
    }

    /// Runs one step: starts its parts, holds them, heals them in reverse order.
    pub async fn step(&mut self, fault: &Fault) -> anyhow::Result<Record> {
        let parts: Vec<&Fault> = match fault {
            Fault::Overlap(a, b) => vec![a, b],
            f => vec![f],
        };
        let start = Instant::now();
        let mut actives: Vec<(Instant, Active)> = Vec::new();
        for part in parts {
            match self.begin(part).await {
                Ok(a) => actives.push((Instant::now(), a)),
                Err(e) => {
                    while let Some((_, a)) = actives.pop() {
                        let _ = self.end(a).await;
                    }
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(fault_time(fault)).await;
        let mut unhealthy = Vec::new();
        let mut whats = Vec::new();
        while let Some((began, a)) = actives.pop() {
            for (node, d) in &a.nodes {
                unhealthy.push(Unhealthy {
                    node: node.clone(),
                    from_ms: self.since(began),
                    to_ms: self.since(began + *d),
                });
            }
            whats.push(a.what.clone());
            self.end(a).await?;
        }
        whats.reverse();
        Ok(Record {
            kinds: fault.kinds(),
            what: whats.join(" + "),
            start_ms: self.since(start),
            end_ms: self.since(Instant::now()),
            unhealthy,
        })
    }
}
