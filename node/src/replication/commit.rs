//! The commit rule and the catch-up plan, as pure functions of replica positions.

use crate::admin_api::LogPosition;
use crate::replication::epochs::{EpochHistory, divergence_point};

/// What the primary knows when deciding how far entries are committed.
#[derive(Clone, Debug)]
pub struct CommitInput {
    /// Last sequence number durably appended to the primary's own log.
    pub own_durable: u64,
    /// Acknowledged position of every member that must acknowledge (the other in-sync
    /// members and admitted learners); `None` while unknown.
    pub required_acks: Vec<Option<u64>>,
    /// `|inSync|` in the installed map.
    pub in_sync: usize,
    pub min_in_sync: usize,
    pub lease_valid: bool,
    /// Where the primary's log ended when it took the role: every entry up to it was
    /// appended in an earlier epoch.
    pub barrier_seq: u64,
}

/// The highest sequence number that is committed, or `None` when nothing may commit now:
/// every required member must have durably appended it and the primary's lease must hold.
/// With `|inSync| >= minInSync` that is the whole common prefix; below `minInSync` only the
/// entries of earlier epochs (up to the barrier) may commit, never a write of this epoch.
///
/// Why the barrier may commit below `minInSync`: those entries were appended before this
/// epoch, so committing them acknowledges no write (a write of this epoch lies past the
/// barrier, and the write path refuses writes below `minInSync`). Every in-sync member holds
/// them, and only an in-sync member can ever lead again, so no later primary can lack them:
/// the invariant the commit rule keeps (every committed entry is on every in-sync member)
/// holds. Without this, a sole surviving in-sync member whose commit point lagged its log
/// (a follower learns the commit point one append late) could not serve reads of data it
/// holds until another member came back.
pub fn commit_point(i: &CommitInput) -> Option<u64> {
    if !i.lease_valid {
        return None;
    }
    let mut point = i.own_durable;
    for ack in &i.required_acks {
        point = point.min((*ack)?);
    }
    if i.in_sync < i.min_in_sync {
        point = point.min(i.barrier_seq);
    }
    Some(point)
}

/// A replica's log as reported by a probe.
#[derive(Clone, Debug)]
pub struct ReplicaLog<'a> {
    pub base: LogPosition,
    pub last: LogPosition,
    pub applied_seq: u64,
    pub history: &'a EpochHistory,
}

/// How the primary brings a replica up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Truncate the replica to `prev.last_seq` (when `truncate` is set) and stream from there.
    Tail { prev: LogPosition, truncate: bool },
    /// The primary no longer holds the entries the replica needs: send a snapshot.
    Snapshot,
}

/// Decides between streaming the log tail and sending a snapshot, by the leader-epoch rule.
pub fn plan_catch_up(primary: &ReplicaLog<'_>, replica: &ReplicaLog<'_>) -> CatchUp {
    let d = divergence_point(
        primary.history,
        primary.last.last_seq,
        replica.history,
        replica.last.last_seq,
    );
    // Entries after `d` must come from the primary's retained log, and the replica must not
    // lose anything it already applied or compacted.
    if d < primary.base.last_seq || d < replica.base.last_seq || d < replica.applied_seq {
        return CatchUp::Snapshot;
    }
    CatchUp::Tail {
        prev: LogPosition {
            last_epoch: primary.history.epoch_at(d),
            last_seq: d,
        },
        truncate: d < replica.last.last_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(own: u64, acks: Vec<Option<u64>>) -> CommitInput {
        CommitInput {
            own_durable: own,
            required_acks: acks,
            in_sync: 3,
            min_in_sync: 2,
            lease_valid: true,
            barrier_seq: 0,
        }
    }

    #[test]
    fn commit_waits_for_every_required_member() {
        assert_eq!(commit_point(&input(10, vec![Some(7), Some(9)])), Some(7));
        assert_eq!(commit_point(&input(5, vec![Some(7), Some(9)])), Some(5));
        assert_eq!(commit_point(&input(10, vec![Some(7), None])), None);
        assert_eq!(commit_point(&input(10, vec![])), Some(10));
    }

    #[test]
    fn nothing_of_this_epoch_commits_below_min_in_sync_nor_anything_without_lease() {
        let mut i = input(10, vec![]);
        i.in_sync = 1;
        assert_eq!(commit_point(&i), Some(0));
        let mut i = input(10, vec![Some(10)]);
        i.lease_valid = false;
        i.barrier_seq = 10;
        assert_eq!(commit_point(&i), None);
    }

    /// Finding L2: below `minInSync` the entries of earlier epochs (up to the barrier)
    /// commit once every in-sync member holds them; the entries past it do not.
    #[test]
    fn below_min_in_sync_only_the_barrier_commits() {
        let with = |own, acks, in_sync| CommitInput {
            in_sync,
            barrier_seq: 7,
            ..input(own, acks)
        };
        assert_eq!(commit_point(&with(10, vec![], 1)), Some(7));
        assert_eq!(commit_point(&with(10, vec![Some(5)], 1)), Some(5));
        assert_eq!(commit_point(&with(6, vec![], 1)), Some(6));
        assert_eq!(commit_point(&with(10, vec![Some(10)], 3)), Some(10));
    }

    fn pos(e: u64, s: u64) -> LogPosition {
        LogPosition {
            last_epoch: e,
            last_seq: s,
        }
    }

    #[test]
    fn catch_up_streams_the_tail_or_falls_back_to_a_snapshot() {
        let ph = EpochHistory::from_starts(vec![(1, 1), (2, 11)]);
        let fh = EpochHistory::from_starts(vec![(1, 1)]);
        let primary = ReplicaLog {
            base: pos(0, 0),
            last: pos(2, 20),
            applied_seq: 18,
            history: &ph,
        };
        let follower = ReplicaLog {
            base: pos(0, 0),
            last: pos(1, 12),
            applied_seq: 9,
            history: &fh,
        };
        assert_eq!(
            plan_catch_up(&primary, &follower),
            CatchUp::Tail {
                prev: pos(1, 10),
                truncate: true
            }
        );
        let compacted = ReplicaLog {
            base: pos(2, 15),
            ..primary.clone()
        };
        assert_eq!(plan_catch_up(&compacted, &follower), CatchUp::Snapshot);
        let empty = EpochHistory::default();
        let learner = ReplicaLog {
            base: pos(0, 0),
            last: pos(0, 0),
            applied_seq: 0,
            history: &empty,
        };
        assert_eq!(
            plan_catch_up(&primary, &learner),
            CatchUp::Tail {
                prev: pos(0, 0),
                truncate: false
            }
        );
    }
}
