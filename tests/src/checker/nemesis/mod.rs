//! The nemesis: a randomized fault schedule derived from a seed (pure, so a seed always
//! names the same faults in the same order and spacing), and its execution against a
//! local-mode store (`inject`). Every step heals before the next one starts: a killed node
//! is restarted by the supervisor, a paused node is continued, a killed operator is
//! restarted, cut links are healed; scaling is undone when the run heals.
//!
//! Victims are named by role ("the primary of key 3's partition", "its second in-sync
//! follower") and resolved against the map when the fault starts.

pub mod inject;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Which replica of a key's partition a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// The `n`-th in-sync follower (modulo their number).
    Follower(u32),
}

/// How a partition cuts the network (see `netfault::Cut`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The node is cut from every other node and from the operator (clients still reach it).
    Isolate { role: Role },
    /// The primary cannot open connections to one in-sync follower; the follower still
    /// reaches the primary.
    PrimaryToFollower { follower: u32 },
    /// The operator and the node cannot reach each other.
    OperatorFrom { role: Role },
    /// Packets from the primary to one follower are lost (or the other way round).
    OneWay { follower: u32, to_follower: bool },
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
    /// Cut links around the replicas of key number `key`'s partition for `millis`.
    Partition {
        key: usize,
        shape: Shape,
        millis: u64,
    },
    /// Two faults at once: `first` starts, then `second`; both are held for the longer of
    /// their times, then `second` heals, then `first`.
    Overlap(Box<Fault>, Box<Fault>),
}

/// The kind of a fault, for counting (the `make chaos` table has one column per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Kill,
    Pause,
    OperatorKill,
    Scale,
    Isolate,
    PrimaryToFollower,
    OperatorCut,
    OneWay,
    Overlap,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Pause,
        Kind::OperatorKill,
        Kind::Scale,
        Kind::Isolate,
        Kind::PrimaryToFollower,
        Kind::OperatorCut,
        Kind::OneWay,
        Kind::Overlap,
    ];

    /// Short name used in tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::OperatorKill => "op-kill",
            Kind::Scale => "scale",
            Kind::Isolate => "isolate",
            Kind::PrimaryToFollower => "p->f",
            Kind::OperatorCut => "op-cut",
            Kind::OneWay => "one-way",
            Kind::Overlap => "overlap",
        }
    }

    /// Whether the kind needs the partition harness (nftables).
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Kind::Isolate | Kind::PrimaryToFollower | Kind::OperatorCut | Kind::OneWay
        )
    }
}

impl Fault {
    /// The kinds this fault exercises (an overlap counts as itself and as both parts).
    pub fn kinds(&self) -> Vec<Kind> {
        match self {
            Fault::KillNode { .. } => vec![Kind::Kill],
            Fault::PauseNode { .. } => vec![Kind::Pause],
            Fault::KillOperator { .. } => vec![Kind::OperatorKill],
            Fault::Scale { .. } => vec![Kind::Scale],
            Fault::Partition { shape, .. } => vec![match shape {
                Shape::Isolate { .. } => Kind::Isolate,
                Shape::PrimaryToFollower { .. } => Kind::PrimaryToFollower,
                Shape::OperatorFrom { .. } => Kind::OperatorCut,
                Shape::OneWay { .. } => Kind::OneWay,
            }],
            Fault::Overlap(a, b) => {
                let mut k = vec![Kind::Overlap];
                k.extend(a.kinds());
                k.extend(b.kinds());
                k
            }
        }
    }
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
    /// Draw partitions (needs nftables and root).
    pub network: bool,
}

/// How long a fault keeps the store disturbed before the nemesis moves on (scale steps
/// return at once; the moves run under the following faults).
pub fn fault_time(fault: &Fault) -> Duration {
    match fault {
        Fault::PauseNode { millis, .. }
        | Fault::KillOperator { millis }
        | Fault::Partition { millis, .. } => Duration::from_millis(*millis),
        Fault::KillNode { .. } | Fault::Scale { .. } => Duration::ZERO,
        Fault::Overlap(a, b) => fault_time(a).max(fault_time(b)),
    }
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

    /// A single fault (no overlap).
    fn single(&mut self) -> Fault {
        let key = self.rng.random_range(0..self.cfg.keys.max(1));
        let role = self.role();
        let network = if self.cfg.network { 35 } else { 0 };
        match self.rng.random_range(0..65 + network) {
            0..20 => Fault::KillNode { key, role },
            20..35 => Fault::PauseNode {
                key,
                role,
                millis: self.past_lease(),
            },
            35..50 => Fault::KillOperator {
                millis: self.rng.random_range(200..=2000),
            },
            50..65 => self.scale(),
            _ => self.partition(),
        }
    }

    /// Two faults at once: a move, a kill or a pause, with a partition (or, without the
    /// partition harness, a pause) on top.
    fn overlap(&mut self) -> Fault {
        let first = match self.rng.random_range(0..3u32) {
            0 => self.scale(),
            1 => Fault::KillNode {
                key: self.rng.random_range(0..self.cfg.keys.max(1)),
                role: self.role(),
            },
            _ => Fault::PauseNode {
                key: self.rng.random_range(0..self.cfg.keys.max(1)),
                role: self.role(),
                millis: self.past_lease(),
            },
        };
        let second = if self.cfg.network {
            self.partition()
        } else {
            Fault::PauseNode {
                key: self.rng.random_range(0..self.cfg.keys.max(1)),
                role: self.role(),
                millis: self.past_lease(),
            }
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
