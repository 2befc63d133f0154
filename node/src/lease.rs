//! The node's lease, granted by confirmed operator heartbeats (`docs/protocol.md`, "Leases").
//!
//! The rule is a pure state machine ([`LeaseChain`]) over monotonic instants: the node notes
//! its receipt of every heartbeat `(coordinator, seq)`; a heartbeat whose `confirmed_seq`
//! names a heartbeat of the same coordinator that the node received sets the lease to end at
//! `receipt(confirmed_seq) + lease`. A heartbeat that confirms nothing (the first of a
//! coordinator, a late one, or one from an operator that never got the answer) extends
//! nothing. The operator fences from its receipt of the reply to `confirmed_seq`, which
//! happens after the node's receipt, so the node's lease always ends first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Receipts remembered per coordinator (the operator confirms one of its latest heartbeats).
const RECEIPTS: usize = 64;

/// One heartbeat as the lease rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat<'a> {
    pub coordinator: &'a str,
    pub seq: u64,
    pub confirmed_seq: Option<u64>,
    pub lease: Duration,
}

/// Pure lease state: the chain of heartbeats of the current coordinator and the lease end.
#[derive(Clone, Debug, Default)]
pub struct LeaseChain {
    coordinator: String,
    /// `(seq, receipt, lease)` of heartbeats of `coordinator`, oldest first.
    receipts: VecDeque<(u64, Instant, Duration)>,
    until: Option<Instant>,
    /// Highest seq of `coordinator` at whose receipt the lease was revoked (storage stalled):
    /// no heartbeat up to it is ever confirmed into a lease again.
    revoked_through: Option<u64>,
}

impl LeaseChain {
    /// Notes a heartbeat received at `now` (before it is answered) and extends the lease if
    /// it confirms an earlier heartbeat of the same coordinator. `may_extend` false (storage
    /// stalled) revokes the lease through this heartbeat ([`LeaseChain::revoke_through`]):
    /// the answer then tells the operator that this node holds no lease and never gets one
    /// back from a heartbeat it received so far.
    pub fn on_heartbeat(&mut self, beat: &Beat<'_>, now: Instant, may_extend: bool) {
        if beat.coordinator != self.coordinator {
            // A new coordinator starts a fresh chain; a lease granted by the previous one
            // stays (its fence covers it) but is not extended by this heartbeat.
            self.coordinator = beat.coordinator.to_owned();
            self.receipts.clear();
            self.revoked_through = None;
        }
        if !may_extend {
            self.revoke_through(beat.seq);
        } else {
            let revoked = self.revoked_through;
            let confirmed = beat
                .confirmed_seq
                .filter(|c| revoked.is_none_or(|r| *c > r))
                .and_then(|c| {
                    self.receipts
                        .iter()
                        .find(|(seq, _, _)| *seq == c)
                        .map(|&(_, at, lease)| at + lease.min(beat.lease))
                });
            if let Some(end) = confirmed {
                self.until = Some(self.until.map_or(end, |u| u.max(end)));
            }
        }
        // Keep the earliest receipt of a sequence number: a duplicate delivered later must
        // not move the lease start past the instant the operator fences from.
        if !self.receipts.iter().any(|(seq, _, _)| *seq == beat.seq) {
            self.receipts.push_back((beat.seq, now, beat.lease));
            while self.receipts.len() > RECEIPTS {
                self.receipts.pop_front();
            }
        }
    }

    /// When the lease ends, if one was ever granted.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    pub fn valid_at(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Ends the lease at once (storage stalled: serve nothing).
    pub fn revoke(&mut self) {
        self.until = None;
    }

    /// Ends the lease at once and for good as far as heartbeats up to `seq` go: every receipt
    /// so far is forgotten and no heartbeat at or below `seq` is confirmed later, so a lease
    /// exists again only from a heartbeat received after this instant that the operator sent
    /// after it learned of the revocation (issue item 4: the operator may then fail the node
    /// over at once instead of waiting a lease).
    pub fn revoke_through(&mut self, seq: u64) {
        self.until = None;
        self.receipts.clear();
        self.revoked_through = Some(self.revoked_through.map_or(seq, |r| r.max(seq)));
    }
}

/// The node's lease (thread-safe wrapper of [`LeaseChain`] on the monotonic clock).
#[derive(Default)]
pub struct Lease {
    chain: Mutex<LeaseChain>,
}

impl Lease {
    /// Applies the lease rule to a heartbeat received now.
    pub fn on_heartbeat(&self, beat: &Beat<'_>, may_extend: bool) {
        if let Ok(mut c) = self.chain.lock() {
            c.on_heartbeat(beat, Instant::now(), may_extend);
        }
    }

    pub fn valid(&self) -> bool {
        self.chain
            .lock()
            .ok()
            .is_some_and(|c| c.valid_at(Instant::now()))
    }

    pub fn revoke(&self) {
        if let Ok(mut c) = self.chain.lock() {
            c.revoke();
        }
    }

    /// Heartbeat of an operator older than the confirmation rule (no coordinator id): the
    /// lease runs from receipt, as before. Kept so a mixed-version store keeps working
    /// during an upgrade; such an operator must fence from its send time plus a margin.
    pub fn grant_from_receipt(&self, duration: Duration) {
        if let Ok(mut c) = self.chain.lock() {
            c.until = Some(Instant::now() + duration);
        }
    }

    #[cfg(test)]
    pub fn grant_for_tests(&self, duration: Duration) {
        self.grant_from_receipt(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(4);

    fn beat(coordinator: &str, seq: u64, confirmed_seq: Option<u64>) -> Beat<'_> {
        Beat {
            coordinator,
            seq,
            confirmed_seq,
            lease: LEASE,
        }
    }

    /// Issue item 2 (lease start): the lease starts at the node's receipt of the confirmed
    /// heartbeat, never at the receipt of the confirming one.
    #[test]
    fn the_lease_runs_from_the_receipt_of_the_confirmed_heartbeat() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        assert_eq!(c.until(), None, "an unconfirmed heartbeat grants nothing");
        let t1 = t0 + Duration::from_secs(1);
        c.on_heartbeat(&beat("a", 2, Some(1)), t1, true);
        assert_eq!(c.until(), Some(t0 + LEASE));
        assert!(c.valid_at(t0 + LEASE - Duration::from_millis(1)));
        assert!(!c.valid_at(t0 + LEASE));
    }

    /// Issue item 4 (a hung disk under a primary): a heartbeat received while the storage is
    /// stalled revokes the lease at once, and no heartbeat received before or at it is
    /// confirmed into a lease later, also once the storage moves again: only heartbeats
    /// received afterwards (sent after the operator learned of the revocation) count.
    #[test]
    fn a_stalled_storage_revokes_the_lease_through_that_heartbeat() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        c.on_heartbeat(&beat("a", 2, Some(1)), t0, true);
        assert!(c.valid_at(t0));
        // Heartbeat 4 overtook 3 (received before the revocation).
        c.on_heartbeat(&beat("a", 4, Some(1)), t0, true);
        c.on_heartbeat(&beat("a", 3, Some(1)), t0, false);
        assert!(!c.valid_at(t0), "revoked at once");
        let t1 = t0 + Duration::from_millis(100);
        // The storage moves again; heartbeats sent before the operator learned of it confirm
        // heartbeats received before or at the revocation: nothing.
        c.on_heartbeat(&beat("a", 5, Some(4)), t1, true);
        c.on_heartbeat(&beat("a", 6, Some(3)), t1, true);
        assert!(!c.valid_at(t1));
        // Heartbeat 7 (received after the revocation) confirmed by 8: a lease again.
        c.on_heartbeat(&beat("a", 7, Some(3)), t1, true);
        c.on_heartbeat(&beat("a", 8, Some(7)), t1, true);
        assert_eq!(c.until(), Some(t1 + LEASE));
    }

    /// Issue item 2: a late heartbeat (delivered after the operator gave up on it, so it
    /// confirms only old heartbeats) never moves the lease end past what was granted.
    #[test]
    fn a_late_heartbeat_does_not_extend_the_lease() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        c.on_heartbeat(
            &beat("a", 2, Some(1)),
            t0 + Duration::from_millis(500),
            true,
        );
        let granted = c.until();
        // Heartbeat 3 was sent confirming 1 (the reply to 2 had not arrived) and is
        // delivered 10 s later.
        c.on_heartbeat(&beat("a", 3, Some(1)), t0 + Duration::from_secs(10), true);
        assert_eq!(c.until(), granted);
        assert!(!c.valid_at(t0 + Duration::from_secs(10)));
        // A heartbeat confirming one the node never received grants nothing either.
        c.on_heartbeat(&beat("a", 9, Some(8)), t0 + Duration::from_secs(11), true);
        assert_eq!(c.until(), granted);
    }

    /// Issue item 2: a new coordinator's heartbeats extend nothing until confirmed, and may
    /// not confirm the previous coordinator's sequence numbers.
    #[test]
    fn a_new_coordinator_starts_a_fresh_chain() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        c.on_heartbeat(&beat("a", 2, Some(1)), t0, true);
        let t5 = t0 + Duration::from_secs(5);
        c.on_heartbeat(&beat("b", 2, Some(1)), t5, true);
        assert!(
            !c.valid_at(t5),
            "seq 1 of coordinator a confirms nothing for b"
        );
        c.on_heartbeat(&beat("b", 3, Some(2)), t5 + Duration::from_secs(1), true);
        assert_eq!(c.until(), Some(t5 + LEASE));
    }

    /// Issue item 2: a duplicate delivery of a heartbeat keeps the earliest receipt.
    #[test]
    fn a_duplicate_heartbeat_keeps_the_earliest_receipt() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        c.on_heartbeat(&beat("a", 1, None), t0 + Duration::from_secs(3), true);
        c.on_heartbeat(&beat("a", 2, Some(1)), t0 + Duration::from_secs(3), true);
        assert_eq!(c.until(), Some(t0 + LEASE));
    }

    /// Issue item 4: a node whose storage is stalled takes no lease from heartbeats.
    #[test]
    fn a_stalled_node_takes_no_lease() {
        let t0 = Instant::now();
        let mut c = LeaseChain::default();
        c.on_heartbeat(&beat("a", 1, None), t0, true);
        c.on_heartbeat(&beat("a", 2, Some(1)), t0, false);
        assert_eq!(c.until(), None);
        c.on_heartbeat(&beat("a", 3, Some(2)), t0, true);
        assert_eq!(
            c.until(),
            None,
            "heartbeat 2 came with the stall: never a lease"
        );
        c.on_heartbeat(&beat("a", 4, Some(3)), t0, true);
        assert_eq!(c.until(), Some(t0 + LEASE));
    }
}
