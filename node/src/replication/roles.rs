//! Pure rules deciding when a replica may take the primary role and whom it must wait for:
//! the epoch floor after a restart, unproven copies on an empty or foreign disk, and which
//! admitted learners the primary waits for (`docs/protocol.md`).

use crate::map::{NodeId, PartitionEntry};
use std::collections::BTreeMap;
use std::time::Instant;

/// What decides whether a replica may lead the epoch a map entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadCheck {
    /// The map entry's epoch and whether it names this node primary.
    pub entry_epoch: u64,
    pub named_primary: bool,
    /// Highest epoch this replica has seen.
    pub known_epoch: u64,
    /// Highest epoch this replica may have led before the process started: it never leads
    /// an epoch at or below it again (its unsynced tail may be gone while followers hold it).
    pub lead_floor: u64,
    /// The copy was created empty while listed in sync.
    pub unproven: bool,
    /// A snapshot is being installed.
    pub installing: bool,
}

/// Why a replica named primary does not take the role (`None`: it may lead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoLead {
    NotNamed,
    /// The replica has seen a newer epoch than the map's.
    OlderEpoch,
    /// Restarted since it may have led this epoch: wait for a map with a higher epoch.
    LedBeforeRestart,
    Unproven,
    Installing,
}

/// Issue items 1 and 6: the primary role is taken only for an epoch above the restart floor,
/// never by an unproven copy.
pub fn may_lead(c: &LeadCheck) -> Result<(), NoLead> {
    if !c.named_primary {
        return Err(NoLead::NotNamed);
    }
    if c.entry_epoch != c.known_epoch {
        return Err(NoLead::OlderEpoch);
    }
    if c.entry_epoch <= c.lead_floor {
        return Err(NoLead::LedBeforeRestart);
    }
    if c.unproven {
        return Err(NoLead::Unproven);
    }
    if c.installing {
        return Err(NoLead::Installing);
    }
    Ok(())
}

/// Whether a copy created empty now (nothing on this disk) must be marked unproven: the map
/// already lists this node in sync, and either the partition is past its first epoch (by
/// then entries may have committed that this copy never received), or the map records
/// another disk for this node than its own (`recorded_disk`, see [`PartitionMap::disks`]):
/// the `inSync` lists then mean copies on that other disk, which may have acknowledged
/// entries at any epoch, the first one included. A copy created for a learner, or at the
/// first epoch of a new partition on the disk the map records (or with no disk recorded,
/// maps older than this rule), holds everything committed so far: no entry commits without
/// the acknowledgement of every in-sync member, and this disk acknowledged none.
///
/// [`PartitionMap::disks`]: crate::map::PartitionMap::disks
pub fn unproven_when_created(
    entry: &PartitionEntry,
    me: &str,
    recorded_disk: Option<&str>,
    own_disk: &str,
) -> bool {
    entry.is_in_sync(me) && (entry.epoch > 1 || recorded_disk.is_some_and(|d| d != own_disk))
}

/// An unproven mark stays until a map no longer lists this node in sync (from then on it is a
/// learner that the primary admits like any other).
pub fn still_unproven(unproven: bool, entry: &PartitionEntry, me: &str) -> bool {
    unproven && entry.is_in_sync(me)
}

/// Finding C1 (stale admission after a restart): whether a member holds every entry of the
/// partition that may be committed, so that the primary may answer an admission `ready`.
///
/// `proven` is the member's position proven to this primary in this epoch by the live
/// replication session (a probe answer or an append acknowledgement; `None` until the session
/// to it re-probed, see [`super::primary::Progress`]). `commit_seq` is the primary's commit
/// point, `barrier_seq` where its log ended when it took the role.
///
/// The commit point alone is not enough: a primary that just took the role (after a
/// failover, or a restart of every node) starts from the commit point it knew before, which
/// may be far below what the previous primary acknowledged: a follower learns the commit
/// point one append late, and a restarted node only from the applied point of its last
/// database checkpoint. Every entry acknowledged before this epoch is in the primary's log up
/// to `barrier_seq` (it was elected with the longest log among in-sync members, each holding
/// every committed entry), and every entry committed since is at most `commit_seq`.
pub fn holds_every_committed(proven: Option<u64>, commit_seq: u64, barrier_seq: u64) -> bool {
    proven.is_some_and(|a| a >= commit_seq.max(barrier_seq))
}

/// Learners (or lagging replicas) the primary waits for before anything commits.
///
/// An admission is *provisional* while the admit call that made it has not answered ready:
/// it lapses at that call's deadline, so an admission of a member that never catches up (a
/// hung disk, a broken link) cannot stall the partition's writes for longer than one call
/// (issue item 4, gray failures: admit calls are abortable). Once a call answered ready the
/// admission is *confirmed*: the operator may list the learner in `inSync` on the strength of
/// that answer, so it is kept (across map installs, issue item 6) until a map lists the
/// learner in sync (it is then required as an in-sync member) or drops it.
///
/// Letting a provisional admission lapse is safe: the operator lists a learner in `inSync`
/// only after a ready answer, and from a ready answer on the admission never lapses, so every
/// commit after that answer waited for the learner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admissions {
    /// `None`: confirmed; `Some(deadline)`: provisional until then.
    members: BTreeMap<NodeId, Option<Instant>>,
}

impl Admissions {
    /// Admits `n` provisionally until `deadline` (a confirmed admission stays confirmed; a
    /// later call extends a provisional one).
    pub fn admit(&mut self, n: &str, deadline: Instant) {
        let slot = self.members.entry(n.to_owned()).or_insert(Some(deadline));
        if let Some(d) = slot {
            *d = (*d).max(deadline);
        }
    }

    /// An admit call answered ready for `n`: its admission no longer lapses.
    pub fn confirm(&mut self, n: &str) {
        self.members.insert(n.to_owned(), None);
    }

    /// Whether the primary must wait for `n` at `now`.
    pub fn requires(&self, n: &str, now: Instant) -> bool {
        self.members
            .get(n)
            .is_some_and(|d| d.is_none_or(|d| now < d))
    }

    /// The members the primary must wait for at `now`.
    pub fn required(&self, now: Instant) -> impl Iterator<Item = &NodeId> {
        self.members
            .iter()
            .filter(move |(_, d)| d.is_none_or(|d| now < d))
            .map(|(n, _)| n)
    }

    /// Obeys a map entry: admissions of members it lists in sync (now required as in-sync
    /// members) or no longer lists at all end; others stay, confirmed or not.
    pub fn retain(&mut self, entry: &PartitionEntry) {
        self.members
            .retain(|n, _| entry.is_member(n) && !entry.is_in_sync(n));
    }

    /// Forgets provisional admissions that lapsed before `now`.
    pub fn forget_lapsed(&mut self, now: Instant) {
        self.members.retain(|_, d| d.is_none_or(|d| now < d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check() -> LeadCheck {
        LeadCheck {
            entry_epoch: 3,
            named_primary: true,
            known_epoch: 3,
            lead_floor: 0,
            unproven: false,
            installing: false,
        }
    }

    /// Issue item 1 (same-epoch restart): after a restart a node does not lead an epoch it
    /// may have led before; a map with a higher epoch lets it lead again.
    #[test]
    fn a_restarted_node_leads_only_a_higher_epoch() {
        assert_eq!(may_lead(&check()), Ok(()));
        let restarted = LeadCheck {
            lead_floor: 3,
            ..check()
        };
        assert_eq!(may_lead(&restarted), Err(NoLead::LedBeforeRestart));
        let next = LeadCheck {
            entry_epoch: 4,
            known_epoch: 4,
            ..restarted
        };
        assert_eq!(may_lead(&next), Ok(()));
    }

    /// Finding C1 (stale admission after a restart of every node): a learner is ready only
    /// when its proven position reaches the primary's commit point *and* where the primary's
    /// log ended when it took the role; a position not proven in the live session never is.
    #[test]
    fn a_learner_is_ready_only_past_the_commit_point_and_the_role_barrier() {
        // Restarted primary: commit point 20 (last checkpoint), log ends at 25.
        assert!(!holds_every_committed(Some(20), 20, 25));
        assert!(!holds_every_committed(Some(24), 20, 25));
        assert!(holds_every_committed(Some(25), 20, 25));
        // Later in the term the commit point leads.
        assert!(!holds_every_committed(Some(29), 30, 25));
        assert!(holds_every_committed(Some(30), 30, 25));
        // Not (re-)probed in the live session.
        assert!(!holds_every_committed(None, 0, 0));
    }

    fn entry(epoch: u64, in_sync: &[&str], learners: &[&str]) -> PartitionEntry {
        let in_sync: Vec<NodeId> = in_sync.iter().map(|s| s.to_string()).collect();
        PartitionEntry {
            epoch,
            primary: in_sync.first().cloned(),
            replicas: in_sync.clone(),
            in_sync,
            learners: learners.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Issue item 6 (empty disk): a copy created empty while listed in sync after the first
    /// epoch is unproven, may not lead, and stays so until a map drops it from `inSync`.
    #[test]
    fn an_empty_copy_listed_in_sync_is_unproven_until_dropped_from_in_sync() {
        let e = entry(2, &["a", "b"], &[]);
        assert!(unproven_when_created(&e, "b", None, "d1"));
        assert!(!unproven_when_created(
            &entry(1, &["a", "b"], &[]),
            "b",
            None,
            "d1"
        ));
        assert!(!unproven_when_created(
            &entry(2, &["a"], &["b"]),
            "b",
            None,
            "d1"
        ));
        let c = LeadCheck {
            unproven: true,
            ..check()
        };
        assert_eq!(may_lead(&c), Err(NoLead::Unproven));
        assert!(still_unproven(true, &e, "b"));
        let demoted = entry(3, &["a"], &["b"]);
        assert!(!still_unproven(true, &demoted, "b"));
    }

    /// Issue item 6 (empty disk at the first epoch): the first map of a new store lists every
    /// node in sync with empty logs, and so does the unchanged map pushed to a node that came
    /// back on a wiped disk. The disk the map records for the node tells them apart: a copy
    /// created at epoch 1 is unproven when the map records another disk than the node's own,
    /// and proven on the recorded disk (or with none recorded, maps older than the rule).
    #[test]
    fn an_empty_copy_at_the_first_epoch_is_unproven_on_another_disk_than_the_recorded_one() {
        let first = entry(1, &["a", "b"], &[]);
        assert!(unproven_when_created(&first, "b", Some("old"), "new"));
        assert!(!unproven_when_created(&first, "b", Some("new"), "new"));
        assert!(!unproven_when_created(&first, "b", None, "new"));
        // Not listed in sync: a learner's copy starts empty by design.
        assert!(!unproven_when_created(
            &entry(1, &["a"], &["b"]),
            "b",
            Some("old"),
            "new"
        ));
        // Past the first epoch, unproven whatever is recorded.
        assert!(unproven_when_created(
            &entry(3, &["a", "b"], &[]),
            "b",
            Some("new"),
            "new"
        ));
    }

    /// Issue item 6 (stale admission): an admitted learner stays admitted across map installs
    /// that do not list it in sync.
    #[test]
    fn an_admitted_learner_stays_admitted_across_unrelated_maps() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut a = Admissions::default();
        a.admit("c", later);
        a.retain(&entry(2, &["a", "b"], &["c"]));
        assert!(a.requires("c", now));
        // Listed in sync: required as an in-sync member from now on.
        a.retain(&entry(2, &["a", "b", "c"], &[]));
        assert!(!a.requires("c", now));
        let mut a = Admissions::default();
        a.confirm("c");
        a.retain(&entry(2, &["a", "b"], &[]));
        assert!(!a.requires("c", now), "a dropped learner is forgotten");
    }

    /// Issue item 4 (gray failures; admit calls abortable): a provisional admission lapses at
    /// its call's deadline, a confirmed one (the call answered ready) never does.
    #[test]
    fn a_provisional_admission_lapses_at_its_deadline_a_confirmed_one_never() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        let mut a = Admissions::default();
        a.admit("c", deadline);
        a.admit("d", deadline);
        assert!(a.requires("c", now));
        assert!(!a.requires("c", deadline), "lapsed at the deadline");
        a.confirm("d");
        a.admit("d", now);
        let far = now + Duration::from_secs(3600);
        assert!(a.requires("d", far), "a confirmed admission stays");
        assert_eq!(a.required(far).collect::<Vec<_>>(), vec!["d"]);
        // A later call extends a provisional admission.
        a.admit("c", now + Duration::from_secs(9));
        assert!(a.requires("c", deadline));
        a.forget_lapsed(far);
        assert!(!a.requires("c", now));
        assert!(a.requires("d", far));
    }
}
