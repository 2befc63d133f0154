//! The nemesis: a randomized fault schedule derived from a seed (pure, so a seed always
//! names the same faults in the same order and spacing), and its execution against a
//! local-mode store (`inject`). Every step heals before the next one starts: a killed node
//! is restarted by the supervisor, a paused node is continued, a killed operator is
//! restarted, cut links are healed; scaling is undone when the run heals.
//!
//! Victims are named by role ("the primary of key 3's partition", "its second in-sync
//! follower") and resolved against the map when the fault starts.

pub mod disks;
mod fault;
pub mod inject;

pub use fault::{DiskFault, Fault, Kind, Role, Shape, fault_time};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

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
    /// Draw partitions (needs nftables and root).
    pub network: bool,
    /// Draw disk faults and power losses (needs the nodes' data directories on faultfs
    /// mounts: FUSE and root).
    pub disk: bool,
}

/// Draws the parts of one schedule; `nodes` tracks scaling so scale steps alternate.
struct Draw<'a> {
    rng: StdRng,
    cfg: &'a NemesisConfig,
    nodes: u32,
}

impl Draw<'_> {
    fn role(&mut self) -> Role {
        if self.rng.random_bool(0.5) {
            Role::Primary
        } else {
            Role::Follower(self.rng.random_range(0..4))
        }
    }

    /// Past the lease, so a primary under it is failed over while alive: lease + 0.5 s up
    /// to three leases.
    fn past_lease(&mut self) -> u64 {
        let lease = self.cfg.lease.as_millis() as u64;
        lease + self.rng.random_range(500..=2 * lease.max(500))
    }

    fn scale(&mut self) -> Fault {
        self.nodes = if self.nodes > self.cfg.base_nodes || self.nodes >= self.cfg.max_nodes {
            self.cfg.base_nodes
        } else {
            self.nodes + 1
        };
        Fault::Scale { nodes: self.nodes }
    }

    fn partition(&mut self) -> Fault {
        let key = self.rng.random_range(0..self.cfg.keys.max(1));
        let follower = self.rng.random_range(0..4);
        let shape = match self.rng.random_range(0..4u32) {
            0 => Shape::Isolate { role: self.role() },
            1 => Shape::PrimaryToFollower { follower },
            2 => Shape::OperatorFrom { role: self.role() },
            _ => Shape::OneWay {
                follower,
                to_follower: self.rng.random_bool(0.5),
            },
        };
        Fault::Partition {
            key,
            shape,
            millis: self.past_lease(),
        }
    }

    fn key(&mut self) -> usize {
        self.rng.random_range(0..self.cfg.keys.max(1))
    }

    /// A disk fault on one replica of a key's partition: a hang, a full disk and failing
    /// fsyncs last past the lease; a slow disk (20-400 ms per fsync) from 1 s to three leases.
    fn disk(&mut self) -> Fault {
        let (key, role) = (self.key(), self.role());
        let lease = self.cfg.lease.as_millis() as u64;
        let (disk, millis) = match self.rng.random_range(0..4u32) {
            0 => (DiskFault::Hang, self.past_lease()),
            1 => (
                DiskFault::SlowFsync {
                    millis: self.rng.random_range(20..=400),
                },
                self.rng.random_range(1000..=3 * lease.max(1000)),
            ),
            2 => (
                DiskFault::Full {
                    slack: self.rng.random_range(0..=256 * 1024),
                },
                self.past_lease(),
            ),
            _ => (DiskFault::FsyncEio, self.past_lease()),
        };
        Fault::Disk {
            key,
            role,
            disk,
            millis,
        }
    }

    /// A single fault (no overlap). Weights: kill 13, clean stop 7, pause 15, operator kill 15, scale 15,
    /// with the partition harness partitions 35, with faultfs disk faults 32, power loss of
    /// one node 8 and of all nodes 4.
    fn single(&mut self) -> Fault {
        let (key, role) = (self.key(), self.role());
        let network = if self.cfg.network { 35 } else { 0 };
        let disk = if self.cfg.disk { 44 } else { 0 };
        let n = self.rng.random_range(0..65 + network + disk);
        match n {
            0..13 => Fault::KillNode { key, role },
            13..20 => Fault::StopNode { key, role },
            20..35 => Fault::PauseNode {
                key,
                role,
                millis: self.past_lease(),
            },
            35..50 => Fault::KillOperator {
                millis: self.rng.random_range(200..=2000),
            },
            50..65 => self.scale(),
            _ if n < 65 + network => self.partition(),
            _ => match n - 65 - network {
                0..32 => self.disk(),
                32..40 => Fault::PowerLoss { key, role },
                _ => Fault::PowerLossAll,
            },
        }
    }

    fn pause(&mut self) -> Fault {
        Fault::PauseNode {
            key: self.key(),
            role: self.role(),
            millis: self.past_lease(),
        }
    }

    /// Two faults at once: a move, a kill, a pause or (with faultfs) a disk fault, with a
    /// partition or a disk fault on top (a pause when neither harness is there).
    fn overlap(&mut self) -> Fault {
        let first = match self.rng.random_range(0..4u32) {
            0 => self.scale(),
            1 => Fault::KillNode {
                key: self.key(),
                role: self.role(),
            },
            3 if self.cfg.disk => self.disk(),
            _ => self.pause(),
        };
        let second = match (self.cfg.network, self.cfg.disk) {
            (true, true) if self.rng.random_bool(0.5) => self.partition(),
            (true, true) | (false, true) => self.disk(),
            (true, false) => self.partition(),
            (false, false) => self.pause(),
        };
        Fault::Overlap(Box::new(first), Box::new(second))
    }
}

/// The schedule of `seed`: bounded in count by `duration / min_gap` and in time by
/// `duration`.
pub fn schedule(seed: u64, cfg: &NemesisConfig) -> Vec<Step> {
    let mut draw = Draw {
        rng: StdRng::seed_from_u64(seed),
        cfg,
        nodes: cfg.base_nodes,
    };
    let mut steps = Vec::new();
    let mut elapsed = Duration::ZERO;
    let gap_ms = cfg.min_gap.as_millis() as u64
        ..=cfg.max_gap.as_millis().max(cfg.min_gap.as_millis()) as u64;
    let max_steps = (cfg.duration.as_millis() / cfg.min_gap.as_millis().max(1)) as usize + 1;
    while steps.len() < max_steps {
        let after = Duration::from_millis(draw.rng.random_range(gap_ms.clone()));
        let fault = if draw.rng.random_range(0..100u32) < 12 {
            draw.overlap()
        } else {
            draw.single()
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

/// The smallest prefix-greedy set of seeds from `0..limit` whose schedules together contain
/// every kind in `kinds` (for a short fixed-seed run that covers every fault kind).
pub fn covering_seeds(cfg: &NemesisConfig, kinds: &[Kind], limit: u64) -> Vec<u64> {
    let mut missing: Vec<Kind> = kinds.to_vec();
    let mut seeds = Vec::new();
    while !missing.is_empty() {
        let best = (0..limit)
            .filter(|s| !seeds.contains(s))
            .map(|s| {
                let found: std::collections::BTreeSet<Kind> = schedule(s, cfg)
                    .iter()
                    .flat_map(|st| st.fault.kinds())
                    .filter(|k| missing.contains(k))
                    .collect();
                (found.len(), std::cmp::Reverse(s), found)
            })
            .max_by_key(|(n, s, _)| (*n, *s));
        match best {
            Some((n, std::cmp::Reverse(s), found)) if n > 0 => {
                seeds.push(s);
                missing.retain(|k| !found.contains(k));
            }
            _ => break,
        }
    }
    seeds
}

#[cfg(test)]
mod tests;
