//! The nemesis: a randomized fault schedule derived from a seed (pure, so a seed always
//! names the same faults in the same order and spacing), and its execution against a
//! local-mode store. Every fault heals itself before the next one starts (a killed node
//! is restarted by the supervisor, a paused node is continued, a killed operator is
//! restarted with the same data directory); scaling is undone when the run heals.

use crate::local_harness::LocalStore;
use crate::node_harness::wait_until;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardedstore_node::client::KvClient;
use std::process::Command;
use std::time::Duration;

/// Which replica of a key's partition a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// The `n`-th in-sync follower (modulo their number).
    Follower(u32),
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the node holding `role` for key number `key`.
    KillNode { key: usize, role: Role },
    /// SIGSTOP that node for `millis`, then SIGCONT: longer than the lease, so a frozen
    /// primary is failed over while it is still alive.
    PauseNode { key: usize, role: Role, millis: u64 },
    /// `kill -9` the operator, keep it down for `millis`, restart it on the same data dir.
    KillOperator { millis: u64 },
    /// Ask the control endpoint for `nodes` nodes (moves partitions under load).
    Scale { nodes: u32 },
}

/// One step of a schedule: wait `after`, then inject `fault`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub fault: Fault,
}

/// Bounds of a schedule.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub keys: usize,
    pub base_nodes: u32,
    pub max_nodes: u32,
    pub lease: Duration,
    /// The schedule's steps (waits and fault durations) fit in this time.
    pub duration: Duration,
    pub min_gap: Duration,
    pub max_gap: Duration,
}

/// How long a fault keeps the store disturbed before the nemesis moves on (scale steps
/// return at once; the moves run under the following faults).
pub fn fault_time(fault: &Fault) -> Duration {
    match fault {
        Fault::PauseNode { millis, .. } | Fault::KillOperator { millis } => {
            Duration::from_millis(*millis)
        }
        Fault::KillNode { .. } | Fault::Scale { .. } => Duration::ZERO,
    }
}

/// The schedule of `seed`: bounded in count by `duration / min_gap` and in time by
/// `duration`.
pub fn schedule(seed: u64, cfg: &NemesisConfig) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut nodes = cfg.base_nodes;
    let gap_ms = cfg.min_gap.as_millis() as u64
        ..=cfg.max_gap.as_millis().max(cfg.min_gap.as_millis()) as u64;
    let lease_ms = cfg.lease.as_millis() as u64;
    let max_steps = (cfg.duration.as_millis() / cfg.min_gap.as_millis().max(1)) as usize + 1;
    while steps.len() < max_steps {
        let after = Duration::from_millis(rng.random_range(gap_ms.clone()));
        let key = rng.random_range(0..cfg.keys.max(1));
        let role = if rng.random_bool(0.5) {
            Role::Primary
        } else {
            Role::Follower(rng.random_range(0..4))
        };
        let fault = match rng.random_range(0..100u32) {
            0..35 => Fault::KillNode { key, role },
            35..60 => Fault::PauseNode {
                key,
                role,
                millis: lease_ms + rng.random_range(500..=2 * lease_ms.max(500)),
            },
            60..80 => Fault::KillOperator {
                millis: rng.random_range(200..=2000),
            },
            _ => {
                nodes = if nodes > cfg.base_nodes || nodes >= cfg.max_nodes {
                    cfg.base_nodes
                } else {
                    nodes + 1
                };
                Fault::Scale { nodes }
            }
        };
        let end = elapsed + after + fault_time(&fault);
        if end > cfg.duration {
            break;
        }
        elapsed = end;
        steps.push(Step { after, fault });
    }
    steps
}

/// Resolves the node holding `role` for `key` in the current map.
async fn victim(client: &KvClient, key: &str, role: Role) -> anyhow::Result<String> {
    let map = tokio::time::timeout(Duration::from_secs(3), client.map()).await??;
    let entry = map
        .entry(map.partition_of(key.as_bytes()))
        .ok_or_else(|| anyhow::anyhow!("no map entry for {key}"))?;
    let primary = entry
        .primary
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no primary for {key}"))?;
    Ok(match role {
        Role::Primary => primary,
        Role::Follower(n) => {
            let followers: Vec<&String> = entry.in_sync.iter().filter(|r| **r != primary).collect();
            if followers.is_empty() {
                anyhow::bail!("no in-sync follower for {key}");
            }
            followers[n as usize % followers.len()].clone()
        }
    })
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -s {signal} {pid} failed");
    Ok(())
}

/// Continues a stopped process when dropped, so no path leaves a node frozen.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = signal(self.0, "CONT");
    }
}

/// Injects `fault` and waits until it has healed (see the module comment). Returns a
/// description for the run's log.
pub async fn inject(
    store: &mut LocalStore,
    client: &KvClient,
    keys: &[String],
    fault: &Fault,
) -> anyhow::Result<String> {
    match fault {
        Fault::KillNode { key, role } => {
            let node = victim(client, &keys[*key], *role).await?;
            store.kill9_node(&node).await?;
            Ok(format!("kill -9 {node} ({role:?} of {})", keys[*key]))
        }
        Fault::PauseNode { key, role, millis } => {
            let node = victim(client, &keys[*key], *role).await?;
            let status = store
                .status()
                .await
                .ok_or_else(|| anyhow::anyhow!("control endpoint not answering"))?;
            let pid = status
                .endpoints
                .iter()
                .find(|e| e.id == node)
                .and_then(|e| e.pid)
                .ok_or_else(|| anyhow::anyhow!("no pid for {node}"))?;
            signal(pid, "STOP")?;
            let resume = Continue(pid);
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            drop(resume);
            Ok(format!(
                "SIGSTOP {node} for {millis} ms ({role:?} of {})",
                keys[*key]
            ))
        }
        Fault::KillOperator { millis } => {
            store.kill9_operator();
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            store.start_operator()?;
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
            Ok(format!("kill -9 operator, down {millis} ms"))
        }
        Fault::Scale { nodes } => {
            store.scale(*nodes).await?;
            // A restarted operator is given the largest size scaled to so far: local mode
            // does not persist a scale request, and an operator restarted with fewer
            // `--nodes` while a node is still draining (or not yet drained) takes that node
            // for dead instead of draining it (see docs/fault-injection.md). The run's
            // healing scales back in.
            store.options.nodes = store.options.nodes.max(*nodes);
            Ok(format!("scale to {nodes} nodes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NemesisConfig {
        NemesisConfig {
            keys: 5,
            base_nodes: 3,
            max_nodes: 4,
            lease: Duration::from_millis(2000),
            duration: Duration::from_secs(60),
            min_gap: Duration::from_millis(500),
            max_gap: Duration::from_millis(3000),
        }
    }

    #[test]
    fn a_seed_always_yields_the_same_schedule() {
        assert_eq!(schedule(7, &cfg()), schedule(7, &cfg()));
        assert_ne!(schedule(7, &cfg()), schedule(8, &cfg()));
    }

    #[test]
    fn schedules_fit_their_time_and_bounds() {
        for seed in 0..200 {
            let c = cfg();
            let steps = schedule(seed, &c);
            assert!(!steps.is_empty(), "seed {seed}");
            let total: Duration = steps.iter().map(|s| s.after + fault_time(&s.fault)).sum();
            assert!(total <= c.duration, "seed {seed}: {total:?}");
            for s in &steps {
                match &s.fault {
                    Fault::PauseNode { millis, key, .. } => {
                        assert!(*millis > 2000, "a pause must outlast the lease");
                        assert!(*key < c.keys);
                    }
                    Fault::KillNode { key, .. } => assert!(*key < c.keys),
                    Fault::Scale { nodes } => assert!((3..=4).contains(nodes)),
                    Fault::KillOperator { millis } => assert!(*millis <= 2000),
                }
            }
        }
    }

    #[test]
    fn over_many_seeds_every_kind_of_fault_occurs() {
        let all: Vec<Fault> = (0..50)
            .flat_map(|s| schedule(s, &cfg()))
            .map(|s| s.fault)
            .collect();
        assert!(all.iter().any(|f| matches!(
            f,
            Fault::KillNode {
                role: Role::Primary,
                ..
            }
        )));
        assert!(all.iter().any(|f| matches!(
            f,
            Fault::KillNode {
                role: Role::Follower(_),
                ..
            }
        )));
        assert!(all.iter().any(|f| matches!(
            f,
            Fault::PauseNode {
                role: Role::Primary,
                ..
            }
        )));
        assert!(all.iter().any(|f| matches!(f, Fault::KillOperator { .. })));
        assert!(all.iter().any(|f| matches!(f, Fault::Scale { nodes: 4 })));
        assert!(all.iter().any(|f| matches!(f, Fault::Scale { nodes: 3 })));
    }
}
