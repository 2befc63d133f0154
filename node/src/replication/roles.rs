//! Pure rules deciding when a replica may take the primary role and whom it must wait for:
//! the epoch floor after a restart, unproven copies on an empty or foreign disk, and which
//! admitted learners stay admitted across map installs (`docs/protocol.md`).

use crate::map::{NodeId, PartitionEntry};
use std::collections::BTreeSet;

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
/// already lists this node in sync, after the first epoch (by then entries may have
/// committed that this copy never received). A copy created for a learner, or at the first
/// epoch of a new partition, holds everything committed so far.
pub fn unproven_when_created(entry: &PartitionEntry, me: &str) -> bool {
    entry.is_in_sync(me) && entry.epoch > 1
}

/// An unproven mark stays until a map no longer lists this node in sync (from then on it is a
/// learner that the primary admits like any other).
pub fn still_unproven(unproven: bool, entry: &PartitionEntry, me: &str) -> bool {
    unproven && entry.is_in_sync(me)
}

/// Admitted learners stay admitted across map installs until the map lists them in sync
/// (they are then required as in-sync members) or drops them.
pub fn retain_admitted(admitted: &mut BTreeSet<NodeId>, entry: &PartitionEntry) {
    admitted.retain(|n| entry.is_member(n) && !entry.is_in_sync(n));
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(unproven_when_created(&e, "b"));
        assert!(!unproven_when_created(&entry(1, &["a", "b"], &[]), "b"));
        assert!(!unproven_when_created(&entry(2, &["a"], &["b"]), "b"));
        let c = LeadCheck {
            unproven: true,
            ..check()
        };
        assert_eq!(may_lead(&c), Err(NoLead::Unproven));
        assert!(still_unproven(true, &e, "b"));
        let demoted = entry(3, &["a"], &["b"]);
        assert!(!still_unproven(true, &demoted, "b"));
    }

    /// Issue item 6 (stale admission): an admitted learner stays admitted across map installs
    /// that do not list it in sync.
    #[test]
    fn an_admitted_learner_stays_admitted_across_unrelated_maps() {
        let mut admitted: BTreeSet<NodeId> = ["c".to_string()].into();
        retain_admitted(&mut admitted, &entry(2, &["a", "b"], &["c"]));
        assert!(admitted.contains("c"));
        // Listed in sync: required as an in-sync member from now on.
        retain_admitted(&mut admitted, &entry(2, &["a", "b", "c"], &[]));
        assert!(admitted.is_empty());
        let mut admitted: BTreeSet<NodeId> = ["c".to_string()].into();
        retain_admitted(&mut admitted, &entry(2, &["a", "b"], &[]));
        assert!(admitted.is_empty(), "a dropped learner is forgotten");
    }
}
