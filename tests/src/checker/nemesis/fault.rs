//! The faults a schedule is made of, their kinds (one column each in the `make chaos` table)
//! and how long each keeps the store disturbed (pure).

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

/// What a node's disk (its data directory's faultfs mount) does during a disk fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Every write, fsync and metadata change blocks (like `fsfreeze`); reads go on.
    Hang,
    /// Every fsync takes this many milliseconds longer.
    SlowFsync { millis: u64 },
    /// Growth beyond the files' size at the start of the fault plus `slack` bytes fails
    /// with ENOSPC.
    Full { slack: u64 },
    /// fsync fails with EIO (the data stays unsynced).
    FsyncEio,
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the node holding `role` for key number `key`.
    KillNode { key: usize, role: Role },
    /// Stop that node cleanly (SIGTERM: it closes its database); the supervisor restarts it.
    /// A clean stop persists what a crash would lose (redb makes its last commit durable
    /// when the database is closed), so it must leave a state as consistent as a crash's.
    StopNode { key: usize, role: Role },
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
    /// The disk of the node holding `role` for key number `key` misbehaves for `millis`.
    Disk {
        key: usize,
        role: Role,
        disk: DiskFault,
        millis: u64,
    },
    /// Power loss of that node: `kill -9`, then every write it did not fsync is dropped;
    /// the supervisor restarts it on what its disk kept.
    PowerLoss { key: usize, role: Role },
    /// Power loss of every node at once (the operator keeps running).
    PowerLossAll,
    /// Two faults at once: `first` starts, then `second`; both are held for the longer of
    /// their times, then `second` heals, then `first`.
    Overlap(Box<Fault>, Box<Fault>),
}

/// The kind of a fault, for counting (the `make chaos` table has one column per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Kill,
    Stop,
    Pause,
    OperatorKill,
    Scale,
    Isolate,
    PrimaryToFollower,
    OperatorCut,
    OneWay,
    DiskHang,
    SlowFsync,
    DiskFull,
    FsyncEio,
    PowerLoss,
    PowerLossAll,
    Overlap,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Kill,
        Kind::Stop,
        Kind::Pause,
        Kind::OperatorKill,
        Kind::Scale,
        Kind::Isolate,
        Kind::PrimaryToFollower,
        Kind::OperatorCut,
        Kind::OneWay,
        Kind::DiskHang,
        Kind::SlowFsync,
        Kind::DiskFull,
        Kind::FsyncEio,
        Kind::PowerLoss,
        Kind::PowerLossAll,
        Kind::Overlap,
    ];

    /// Short name used in tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Pause => "pause",
            Kind::OperatorKill => "op-kill",
            Kind::Scale => "scale",
            Kind::Isolate => "isolate",
            Kind::PrimaryToFollower => "p->f",
            Kind::OperatorCut => "op-cut",
            Kind::OneWay => "one-way",
            Kind::DiskHang => "disk-hang",
            Kind::SlowFsync => "slow-fsync",
            Kind::DiskFull => "enospc",
            Kind::FsyncEio => "fsync-eio",
            Kind::PowerLoss => "power-loss",
            Kind::PowerLossAll => "power-loss-all",
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

    /// Whether the kind needs the nodes' data directories on faultfs mounts (FUSE).
    pub fn needs_disk(self) -> bool {
        matches!(
            self,
            Kind::DiskHang
                | Kind::SlowFsync
                | Kind::DiskFull
                | Kind::FsyncEio
                | Kind::PowerLoss
                | Kind::PowerLossAll
        )
    }
}

impl Fault {
    /// The kinds this fault exercises (an overlap counts as itself and as both parts).
    pub fn kinds(&self) -> Vec<Kind> {
        match self {
            Fault::KillNode { .. } => vec![Kind::Kill],
            Fault::StopNode { .. } => vec![Kind::Stop],
            Fault::PauseNode { .. } => vec![Kind::Pause],
            Fault::KillOperator { .. } => vec![Kind::OperatorKill],
            Fault::Scale { .. } => vec![Kind::Scale],
            Fault::Partition { shape, .. } => vec![match shape {
                Shape::Isolate { .. } => Kind::Isolate,
                Shape::PrimaryToFollower { .. } => Kind::PrimaryToFollower,
                Shape::OperatorFrom { .. } => Kind::OperatorCut,
                Shape::OneWay { .. } => Kind::OneWay,
            }],
            Fault::Disk { disk, .. } => vec![match disk {
                DiskFault::Hang => Kind::DiskHang,
                DiskFault::SlowFsync { .. } => Kind::SlowFsync,
                DiskFault::Full { .. } => Kind::DiskFull,
                DiskFault::FsyncEio => Kind::FsyncEio,
            }],
            Fault::PowerLoss { .. } => vec![Kind::PowerLoss],
            Fault::PowerLossAll => vec![Kind::PowerLossAll],
            Fault::Overlap(a, b) => {
                let mut k = vec![Kind::Overlap];
                k.extend(a.kinds());
                k.extend(b.kinds());
                k
            }
        }
    }
}

/// How long a fault keeps the store disturbed before the nemesis moves on (kills, power
/// losses and scale steps return at once; restarts and moves run under the following
/// faults).
pub fn fault_time(fault: &Fault) -> Duration {
    match fault {
        Fault::PauseNode { millis, .. }
        | Fault::KillOperator { millis }
        | Fault::Partition { millis, .. }
        | Fault::Disk { millis, .. } => Duration::from_millis(*millis),
        Fault::KillNode { .. }
        | Fault::StopNode { .. }
        | Fault::Scale { .. }
        | Fault::PowerLoss { .. }
        | Fault::PowerLossAll => Duration::ZERO,
        Fault::Overlap(a, b) => fault_time(a).max(fault_time(b)),
    }
}
