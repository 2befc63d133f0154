//! What the coordinator is told from outside: the observed membership (pods or child
//! processes) and the store's settings (from the custom resource or local-mode flags).

use shardedstore_node::map::{Limits, NodeId};
use std::collections::BTreeSet;
use std::time::Duration;

/// One storage node as seen by the controller (pod watch) or the local-mode supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberNode {
    /// Pod name in Kubernetes, `node-<i>` in local mode.
    pub id: NodeId,
    /// StatefulSet ordinal (`i` of `node-i`); nodes with `ordinal >= desired_nodes` drain.
    pub ordinal: u32,
    /// `host:port` of the client API.
    pub client_addr: String,
    /// `host:port` of the peer/admin API.
    pub peer_addr: String,
    pub zone: Option<String>,
    /// Pod Ready (local mode: the process is running and answers).
    pub ready: bool,
    /// The storage process certainly runs no more: container terminated (or not started) as
    /// seen in Pod status; local mode: the child process exited. A deletionTimestamp alone is
    /// not enough. The coordinator fails over such a node's primaries at once.
    pub confirmed_dead: bool,
}

/// Everything the coordinator knows about the node population.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Membership {
    pub nodes: Vec<MemberNode>,
    /// Desired node count (`spec.nodes`): nodes with an ordinal at or above it are drained.
    pub desired_nodes: u32,
    /// Nodes about to be restarted (rolling restart): their primaries are handed off first.
    pub cordoned: BTreeSet<NodeId>,
}

impl Membership {
    pub fn node(&self, id: &str) -> Option<&MemberNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Store settings the coordinator obeys; defaults are those of the CRD (operator/src/crd/spec.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub replication_factor: u32,
    /// Writes are refused below this many in-sync replicas.
    pub min_in_sync: u32,
    /// Fixed partition count, used only when the first map is created.
    pub partitions: u32,
    pub limits: Limits,
    /// Moves a node may take part in at once (as source or destination).
    pub max_concurrent_moves_per_node: u32,
    /// Total size (bytes, as their replicas report) of the partitions a node may be moving at
    /// once; a node without a move in flight may always start one.
    pub max_move_bytes_per_node: u64,
    /// Throttle of catch-up streams; `None` is unthrottled.
    pub bandwidth_bytes_per_second: Option<u64>,
    /// No new moves start while paused (failover and in-sync changes continue).
    pub paused: bool,
    /// A Down node's replicas are re-created elsewhere after this long.
    pub replace_after: Duration,
    /// Down nodes whose replicas are re-created at the same time.
    pub max_concurrent_replacements: u32,
    /// Lease granted by each heartbeat.
    pub lease: Duration,
    /// Added to the lease before a node that stopped answering is presumed dead.
    pub drift_margin: Duration,
    pub heartbeat_interval: Duration,
    /// Gray-failure bound: a follower that has had entries outstanding without acknowledging
    /// progress for this long (the primary's `pendingSinceMs`, measured from its last
    /// acknowledged progress, never reset by heartbeat answers) leaves `inSync`, down to
    /// `minInSync`; such a member is not admitted again until it progresses.
    pub lag_timeout: Duration,
    /// How long a primary may wait in a hand-off or an admit call (the node waits at most
    /// this long, the HTTP call allows 5 s more; an admission that is not ready by then
    /// lapses, a hand-off that is not ready is aborted).
    pub handoff_timeout: Duration,
    /// The store is being filled from a backup: the map says `restoring`, so nodes serve
    /// only the restore's own client requests.
    pub restoring: bool,
}

/// Heartbeat timing that cannot keep a node's lease (`check_lease_timing`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("the heartbeat interval must be at least 1 ms")]
    ZeroInterval,
    #[error(
        "the node lease ({lease_ms} ms) must be at least twice the heartbeat interval \
         ({interval_ms} ms): a heartbeat's lease runs from the heartbeat before it, so a \
         shorter one lapses between heartbeats and the primaries refuse writes"
    )]
    LeaseTooShort { lease_ms: u128, interval_ms: u128 },
}

/// Checks that heartbeats every `interval`, each granting `lease`, keep a node's lease held
/// without gaps.
pub fn check_lease_timing(interval: Duration, lease: Duration) -> Result<(), TimingError> {
    if interval.is_zero() {
        return Err(TimingError::ZeroInterval);
    }
    if lease < interval * 2 {
        return Err(TimingError::LeaseTooShort {
            lease_ms: lease.as_millis(),
            interval_ms: interval.as_millis(),
        });
    }
    Ok(())
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            min_in_sync: 2,
            partitions: 256,
            limits: Limits::default(),
            max_concurrent_moves_per_node: 8,
            max_move_bytes_per_node: 512 * 1024 * 1024,
            bandwidth_bytes_per_second: None,
            paused: false,
            replace_after: Duration::from_secs(300),
            max_concurrent_replacements: 1,
            lease: Duration::from_secs(4),
            drift_margin: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(500),
            lag_timeout: Duration::from_secs(2),
            handoff_timeout: Duration::from_secs(5),
            restoring: false,
        }
    }
}

/// Identity of the store the coordinator manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    /// Store name (the map's `store`; nodes refuse maps and heartbeats of another store).
    pub name: String,
}

#[cfg(test)]
mod timing_tests {
    use super::*;

    #[test]
    fn a_lease_must_outlast_two_heartbeat_intervals() {
        let ms = Duration::from_millis;
        assert_eq!(check_lease_timing(ms(500), ms(4000)), Ok(()));
        assert_eq!(check_lease_timing(ms(500), ms(1000)), Ok(()));
        assert_eq!(
            check_lease_timing(ms(500), ms(999)),
            Err(TimingError::LeaseTooShort {
                lease_ms: 999,
                interval_ms: 500
            })
        );
        assert_eq!(
            check_lease_timing(ms(500), ms(0)),
            Err(TimingError::LeaseTooShort {
                lease_ms: 0,
                interval_ms: 500
            })
        );
        assert_eq!(
            check_lease_timing(ms(0), ms(4000)),
            Err(TimingError::ZeroInterval)
        );
    }
}
