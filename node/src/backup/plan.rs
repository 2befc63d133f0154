//! Pure choices of a backup run: which replica exports a partition.

use crate::map::{NodeId, PartitionEntry, PartitionId};

/// In-sync replicas of a partition in the order to ask them for its snapshot: followers
/// first (rotated by partition so the load spreads over nodes), the primary last, and nodes
/// that already failed this partition after every other one.
pub fn export_candidates(entry: &PartitionEntry, p: PartitionId, failed: &[NodeId]) -> Vec<NodeId> {
    let mut followers: Vec<NodeId> = entry
        .in_sync
        .iter()
        .filter(|n| entry.primary.as_ref() != Some(*n))
        .cloned()
        .collect();
    if !followers.is_empty() {
        let k = p as usize % followers.len();
        followers.rotate_left(k);
    }
    let mut order = followers;
    if let Some(primary) = &entry.primary
        && entry.in_sync.contains(primary)
    {
        order.push(primary.clone());
    }
    let (fresh, tried): (Vec<_>, Vec<_>) = order.into_iter().partition(|n| !failed.contains(n));
    fresh.into_iter().chain(tried).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(primary: &str, in_sync: &[&str]) -> PartitionEntry {
        PartitionEntry {
            epoch: 1,
            primary: Some(primary.into()),
            replicas: in_sync.iter().map(|s| s.to_string()).collect(),
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
            learners: Vec::new(),
        }
    }

    #[test]
    fn followers_first_spread_over_partitions_primary_last() {
        let e = entry("a", &["a", "b", "c"]);
        assert_eq!(export_candidates(&e, 0, &[]), ["b", "c", "a"]);
        assert_eq!(export_candidates(&e, 1, &[]), ["c", "b", "a"]);
    }

    #[test]
    fn failed_nodes_go_last_and_lone_primaries_are_used() {
        let e = entry("a", &["a", "b", "c"]);
        assert_eq!(export_candidates(&e, 0, &["b".into()]), ["c", "a", "b"]);
        let solo = entry("a", &["a"]);
        assert_eq!(export_candidates(&solo, 3, &[]), ["a"]);
    }

    #[test]
    fn out_of_sync_replicas_are_never_asked() {
        let mut e = entry("a", &["a", "b"]);
        e.replicas.push("c".into());
        e.learners.push("d".into());
        assert_eq!(export_candidates(&e, 0, &[]), ["b", "a"]);
    }
}
