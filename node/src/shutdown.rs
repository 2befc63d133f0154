//! Graceful stop: on SIGTERM a node keeps serving until its primaries have been handed off
//! (in Kubernetes the operator cordons a terminating pod, so the coordinator moves them), so
//! a drain or eviction causes no failover and no refused write. Bounded by a timeout that
//! fits in the pod's termination grace period.

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

/// Waits until the node leads nothing that could be handed off, or `timeout` passes.
/// Returns how many partitions it still led.
pub async fn await_handoff(ctx: &Ctx, timeout: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pending = ctx.map().map_or(0, |m| handoffs_pending(&m, &ctx.node_id));
        if pending == 0 || tokio::time::Instant::now() >= deadline {
            return pending;
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
}
