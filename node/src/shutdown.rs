//! Graceful stop: on SIGTERM a node keeps serving until its primaries have been handed off
//! (in Kubernetes the operator cordons a terminating pod, so the coordinator moves them), so
//! a drain or eviction causes no failover and no refused write. Bounded by a timeout that
//! fits in the pod's termination grace period.
//!
//! The wait also ends when the node holds no lease: no coordinator confirms it any more (the
//! store was deleted, or the operator is gone or cut off), so nobody will hand its partitions
//! off, and without a lease it serves none of them as primary anyway. Waiting on would only
//! delay the stop — by the whole timeout for every pod when a store is deleted.

use crate::context::Ctx;
use crate::map::PartitionMap;
use std::time::Duration;

/// How often the installed map is checked while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Partitions `node` leads that another in-sync replica could take over. Partitions with no
/// such replica cannot be handed off, so they are not waited for.
pub fn handoffs_pending(map: &PartitionMap, node: &str) -> usize {
    map.partitions
        .iter()
        .filter(|p| p.primary.as_deref() == Some(node))
        .filter(|p| p.in_sync.iter().any(|n| n != node))
        .count()
}

/// Why the hand-off wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Nothing left that another in-sync replica could take over.
    HandedOff,
    /// The node holds no lease: no coordinator will hand its partitions off.
    NoLease,
    /// The timeout passed.
    TimedOut,
}

/// Whether the hand-off wait is over, given what is still `pending`, whether the node holds a
/// lease and whether the timeout passed.
pub fn wait_end(pending: usize, lease_valid: bool, timed_out: bool) -> Option<WaitEnd> {
    if pending == 0 {
        Some(WaitEnd::HandedOff)
    } else if !lease_valid {
        Some(WaitEnd::NoLease)
    } else if timed_out {
        Some(WaitEnd::TimedOut)
    } else {
        None
    }
}

/// Waits until the node leads nothing that could be handed off, holds no lease, or `timeout`
/// passes. Returns how many partitions it still led and why the wait ended.
pub async fn await_handoff(ctx: &Ctx, timeout: Duration) -> (usize, WaitEnd) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pending = ctx.map().map_or(0, |m| handoffs_pending(&m, &ctx.node_id));
        let timed_out = tokio::time::Instant::now() >= deadline;
        if let Some(end) = wait_end(pending, ctx.lease.valid(), timed_out) {
            return (pending, end);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::PartitionEntry;

    #[test]
    fn only_partitions_with_another_in_sync_replica_are_waited_for() {
        let mut map = PartitionMap::empty("kv", 3, 2, 1);
        let entry = |primary: &str, in_sync: &[&str]| PartitionEntry {
            epoch: 1,
            primary: Some(primary.to_owned()),
            replicas: in_sync.iter().map(|s| (*s).to_owned()).collect(),
            in_sync: in_sync.iter().map(|s| (*s).to_owned()).collect(),
            learners: Vec::new(),
        };
        map.partitions = vec![
            entry("a", &["a", "b"]),
            entry("a", &["a"]),
            entry("b", &["a", "b"]),
        ];
        assert_eq!(handoffs_pending(&map, "a"), 1);
        assert_eq!(handoffs_pending(&map, "b"), 1);
        assert_eq!(handoffs_pending(&map, "c"), 0);
    }

    /// A node with nothing to hand off stops at once; one without a lease stops too (no
    /// coordinator will hand off, and it serves nothing as primary); otherwise it waits until
    /// the timeout.
    #[test]
    fn the_wait_ends_when_handed_off_without_a_lease_or_at_the_timeout() {
        assert_eq!(wait_end(0, true, false), Some(WaitEnd::HandedOff));
        assert_eq!(wait_end(0, false, true), Some(WaitEnd::HandedOff));
        assert_eq!(wait_end(2, false, false), Some(WaitEnd::NoLease));
        assert_eq!(wait_end(2, true, true), Some(WaitEnd::TimedOut));
        assert_eq!(wait_end(2, true, false), None);
    }
}
