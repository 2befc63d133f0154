//! Gray failures (issue item 4): members that answer heartbeats but do not acknowledge
//! replication. Pure rules over the primary's heartbeat report.
//!
//! The primary reports per follower `pendingSinceMs`: how long the follower has had entries
//! outstanding without acknowledging progress (heartbeat answers never reset it). A commit
//! waits for every in-sync member, so the commit point cannot pass a follower that stopped
//! acknowledging: comparing its acknowledged position with the commit point never shows the
//! lag. The pending clock does. A follower whose clock passed the bound leaves `inSync`, but
//! never below `minInSync`: with fewer members the primary refuses writes anyway, so removing
//! it would not bring writes back, and it would stop being a failover candidate although it
//! holds every entry committed so far.

use shardedstore_node::admin_api::{FollowerProgress, PartitionState};
use shardedstore_node::map::NodeId;

/// Whether the primary's report shows `f` stuck: entries outstanding without acknowledged
/// progress for longer than `bound_ms`, or behind the commit point and not heard from for
/// that long (a member never contacted since the primary took the role is judged by its
/// pending clock only, so it is not removed the instant a new primary starts).
pub(super) fn stuck(f: &FollowerProgress, commit_seq: u64, bound_ms: u64) -> bool {
    f.pending_since_ms.is_some_and(|ms| ms > bound_ms)
        || (f.acked_seq < commit_seq && f.last_contact_ms.is_some_and(|ms| ms > bound_ms))
}

/// The in-sync followers to remove because they are stuck, most stuck first, so that at least
/// `min_in_sync` members stay (the primary counts as one).
pub(super) fn stuck_members(
    report: &PartitionState,
    in_sync: &[NodeId],
    primary: &str,
    bound_ms: u64,
    min_in_sync: usize,
) -> Vec<NodeId> {
    let mut stuck: Vec<&FollowerProgress> = report
        .followers
        .iter()
        .filter(|f| f.node != primary && in_sync.contains(&f.node))
        .filter(|f| self::stuck(f, report.commit_seq, bound_ms))
        .collect();
    stuck.sort_by_key(|f| {
        (
            std::cmp::Reverse(f.pending_since_ms.unwrap_or(0)),
            f.node.clone(),
        )
    });
    let spare = in_sync.len().saturating_sub(min_in_sync.max(1));
    stuck
        .into_iter()
        .take(spare)
        .map(|f| f.node.clone())
        .collect()
}

/// Entries a member may be behind the commit point (in the primary's report) and still be
/// admitted: it streams the rest in moments. An admission counts the member for commits at
/// once, so every write of the partition waits until it holds the commit point.
pub(super) const ADMIT_WITHIN_ENTRIES: u64 = 4096;

/// Whether admitting `f` now is useful: it holds a copy (it acknowledged a position, or the
/// partition has nothing committed) within [`ADMIT_WITHIN_ENTRIES`] of the commit point and
/// is not stuck, or writes are refused anyway (`writes_stalled`: fewer than `minInSync`
/// members) and it holds every committed entry, so the primary answers ready at once and the
/// partition regains its quorum.
///
/// A learner still taking in its snapshot has acknowledged nothing: admitting it then made
/// the primary wait for it — every write of the partition held back for the rest of the
/// snapshot and the log after it, seconds on a node taking in several copies at once.
///
/// A stuck member that held the commit point back is *not* worth admitting just because its
/// acknowledged position equals the commit point in the report: that report was made while
/// the member was in sync and held the commit point there. Once the map drops it, the commit
/// point moves on without it, the admission is no longer ready, and the primary waits for the
/// member until the admit call ends — a whole hand-off timeout of refused writes, repeated
/// every call while the member stays stuck (finding L1 in docs/reliability.md).
/// Whether to ask `f`'s primary now to admit it once its copy is done
/// ([`Call::Admit`]'s `wait_for_copy_within`): the primary reports it copying (only
/// primaries that know how to wait report it) and it is not stuck. The call's answer then
/// comes as soon as the copy is in, instead of at the report after it.
///
/// [`Call::Admit`]: super::Call::Admit
pub(super) fn worth_asking_early(f: &FollowerProgress, commit_seq: u64, bound_ms: u64) -> bool {
    f.copying && !stuck(f, commit_seq, bound_ms)
}

pub(super) fn worth_admitting(
    f: &FollowerProgress,
    commit_seq: u64,
    bound_ms: u64,
    writes_stalled: bool,
) -> bool {
    let holds_a_copy = f.acked_seq > 0 || commit_seq == 0;
    let close = commit_seq.saturating_sub(f.acked_seq) <= ADMIT_WITHIN_ENTRIES;
    (holds_a_copy && close && !stuck(f, commit_seq, bound_ms))
        || (writes_stalled && f.acked_seq >= commit_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardedstore_node::admin_api::{LogPosition, ReplicaRole};

    fn follower(
        node: &str,
        acked: u64,
        contact: Option<u64>,
        pending: Option<u64>,
    ) -> FollowerProgress {
        FollowerProgress {
            node: node.into(),
            acked_seq: acked,
            last_contact_ms: contact,
            pending_since_ms: pending,
            copying: false,
        }
    }

    fn report(commit_seq: u64, followers: Vec<FollowerProgress>) -> PartitionState {
        PartitionState {
            partition: 0,
            role: ReplicaRole::Primary,
            epoch: 2,
            position: LogPosition {
                last_epoch: 2,
                last_seq: 120,
            },
            commit_seq,
            applied_seq: commit_seq,
            followers,
            keys: 0,
            bytes: 0,
            unproven: false,
        }
    }

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Issue item 4 (gray failures), the case the old rule (`acked < commit`) never caught:
    /// the follower answers everything but acknowledges nothing new, so the commit point waits
    /// at its acknowledgement; its pending clock grows and it leaves `inSync` past the bound.
    #[test]
    fn a_follower_that_stopped_acknowledging_leaves_in_sync_past_the_bound() {
        // commit == acked: the old rule saw no lag.
        let r = report(
            100,
            vec![
                follower("b", 100, Some(5), Some(2500)),
                follower("c", 120, Some(5), None),
            ],
        );
        let in_sync = ids(&["a", "b", "c"]);
        assert_eq!(stuck_members(&r, &in_sync, "a", 2000, 2), ids(&["b"]));
        // Below the bound it stays.
        let r = report(100, vec![follower("b", 100, Some(5), Some(1500))]);
        assert!(stuck_members(&r, &in_sync, "a", 2000, 2).is_empty());
    }

    /// Issue item 4: removal never takes `inSync` below `minInSync`; the most stuck member
    /// goes first.
    #[test]
    fn stuck_members_leave_only_down_to_min_in_sync() {
        let r = report(
            100,
            vec![
                follower("b", 100, Some(5), Some(3000)),
                follower("c", 100, Some(5), Some(9000)),
            ],
        );
        let in_sync = ids(&["a", "b", "c"]);
        assert_eq!(stuck_members(&r, &in_sync, "a", 2000, 2), ids(&["c"]));
        assert_eq!(stuck_members(&r, &in_sync, "a", 2000, 1), ids(&["c", "b"]));
        assert!(stuck_members(&r, &ids(&["a", "b"]), "a", 2000, 2).is_empty());
    }

    /// Issue item 11 (minor review point, `last_contact` of never-contacted followers): a
    /// member the new primary has not heard from yet (no contact, no acknowledgement) is not
    /// removed the instant the primary starts; only its pending clock decides.
    #[test]
    fn a_never_contacted_member_is_judged_by_its_pending_clock() {
        let fresh = follower("b", 0, None, Some(100));
        assert!(!stuck(&fresh, 100, 2000));
        let silent = follower("b", 0, None, Some(2100));
        assert!(stuck(&silent, 100, 2000));
        // Behind the commit point and heard from long ago (a member not required for commits).
        assert!(stuck(&follower("b", 40, Some(10_000), None), 100, 2000));
    }

    /// Issue item 4: a stuck member is not admitted (the primary would wait for it), unless
    /// writes are refused anyway and it holds every committed entry. Finding L1: a member that
    /// held the commit point back (its acknowledged position equals the reported commit point)
    /// is not admitted while writes flow — the commit point passes it once the map drops it.
    #[test]
    fn a_stuck_member_is_not_admitted() {
        let stuck_behind = follower("b", 90, Some(5), Some(5000));
        assert!(!worth_admitting(&stuck_behind, 100, 2000, false));
        assert!(!worth_admitting(&stuck_behind, 100, 2000, true));
        let stuck_at_commit = follower("b", 100, Some(5), Some(5000));
        assert!(!worth_admitting(&stuck_at_commit, 100, 2000, false));
        assert!(worth_admitting(&stuck_at_commit, 100, 2000, true));
        let progressing = follower("b", 90, Some(5), Some(50));
        assert!(worth_admitting(&progressing, 100, 2000, false));
    }

    /// A learner is admitted once it holds a copy close to the commit point, not while its
    /// snapshot is on the way (the primary would hold every write back until it ends).
    #[test]
    fn a_learner_is_admitted_once_it_holds_a_copy_near_the_commit_point() {
        // Taking in its snapshot: nothing acknowledged, chunks keep its pending clock fresh.
        let copying = follower("b", 0, Some(5), Some(50));
        assert!(!worth_admitting(&copying, 348, 2000, false));
        // Nothing committed yet: nothing to copy.
        assert!(worth_admitting(&copying, 0, 2000, false));
        // Snapshot installed far behind the commit point: streaming the log first.
        let far = follower("b", 1_000, Some(5), Some(50));
        assert!(!worth_admitting(
            &far,
            1_000 + ADMIT_WITHIN_ENTRIES + 1,
            2000,
            false
        ));
        assert!(worth_admitting(
            &far,
            1_000 + ADMIT_WITHIN_ENTRIES,
            2000,
            false
        ));
        // Writes are refused anyway: one that holds everything committed regains the quorum.
        let caught_up = follower("b", 348, Some(5), None);
        assert!(worth_admitting(&caught_up, 348, 2000, true));
        assert!(!worth_admitting(&copying, 348, 2000, true));
    }
}
