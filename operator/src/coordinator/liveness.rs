//! Failure detection per node: heartbeat bookkeeping that tells alive, suspected (silent, but
//! its lease may still hold) and dead (confirmed, or silent past lease + drift margin after
//! the fence reference) apart.
//!
//! The fence reference is the coordinator's receipt of the reply to the last heartbeat it
//! got a reply for, never earlier than its own start (a previous coordinator may have
//! granted a lease just before). A node starts a lease at its receipt of heartbeat n only
//! when a later heartbeat confirms that the reply to n arrived (`confirmedSeq`); its receipt
//! of n precedes the coordinator's receipt of the reply, so every lease it holds ends before
//! `reference + lease` (plus clock-rate drift). Unanswered heartbeats never move it.
//!
//! A node that answers but reports its storage stalled beyond the node's bound (a hung
//! disk: it cannot persist, so it can neither lead nor acknowledge) is treated like a silent
//! one (issue item 4, a primary that cannot persist is failed over): from the instant the
//! coordinator learns it, its heartbeats carry a zero lease, so every lease it may hold was
//! granted by a heartbeat sent before that instant and ends before `instant + lease` (plus
//! drift). It is suspected until then, dead afterwards, and alive again once it reports its
//! storage moving.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lease-granting heartbeats remembered per node, to tell from a reply whether the node
/// turned its heartbeat into a lease ([`Health::incarnation_answered`]).
const GRANTS_REMEMBERED: usize = 16;

/// What the coordinator may assume about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Never answered since the coordinator started (state in the map is kept as is).
    Unknown,
    /// Answered its last heartbeat or probe.
    Alive,
    /// Stopped answering (or never answered this coordinator); its lease may still hold, so
    /// nothing it leads may move yet.
    Suspected,
    /// Confirmed dead, or silent for longer than one lease plus the drift margin after the
    /// fence reference: its lease has certainly expired.
    Dead,
}

/// Heartbeat history of one node.
#[derive(Clone, Debug)]
pub struct Health {
    /// When this coordinator started: no lease granted by an earlier coordinator outlives
    /// `started + lease`, so no fence is measured from before it.
    started: Instant,
    /// Number of the last heartbeat sent.
    seq: u64,
    /// Highest heartbeat seq answered, and when its reply was received.
    replied: Option<(u64, Instant)>,
    answered: bool,
    failing: bool,
    /// When the node was first seen dead (for `replaceAfter`).
    dead_since: Option<Instant>,
    /// When this coordinator learned that the node's storage is stalled (it stopped granting
    /// leases then), while it stays stalled.
    stalled_since: Option<Instant>,
    /// The newest report said the node revoked its lease (storage stalled): it holds none
    /// and gets none back while it stays stalled (its heartbeats carry a zero lease).
    revoked: bool,
    confirmed_dead: bool,
    /// The process incarnation that answered the heartbeat in `replied`.
    replied_by: Option<u64>,
    /// Heartbeats sent with a lease, newest last: `(seq, the incarnation that answered the
    /// heartbeat it confirmed)`.
    grants: VecDeque<(u64, u64)>,
    /// The incarnation known to hold a lease of this coordinator: it answered a heartbeat
    /// that granted a lease and confirmed an earlier heartbeat this same incarnation
    /// answered, so it started a lease at its receipt of that earlier one.
    leased: Option<u64>,
}

impl Health {
    /// A node first considered by a coordinator that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            seq: 0,
            replied: None,
            answered: false,
            failing: false,
            dead_since: None,
            stalled_since: None,
            revoked: false,
            confirmed_dead: false,
            replied_by: None,
            grants: VecDeque::new(),
            leased: None,
        }
    }

    /// The node answered heartbeat `seq` (reply received at `at`), reporting whether its
    /// storage is stalled beyond the node's bound and whether it revoked its lease for it. A
    /// stalled node gets zero-lease heartbeats from now on ([`Health::may_grant_lease`]) and
    /// is fenced from now; one that revoked its lease holds none, so it is dead at once
    /// (its partitions fail over without waiting a lease). The answer to an older heartbeat
    /// than one already answered says nothing new about the storage.
    pub fn reported(&mut self, seq: u64, at: Instant, storage_stalled: bool, revoked: bool) {
        self.answered = true;
        self.failing = false;
        self.confirmed_dead = false;
        let newest = self.replied.is_none_or(|(s, _)| seq > s);
        self.reply_received(seq, at);
        if !newest {
            return;
        }
        if storage_stalled {
            self.stalled_since.get_or_insert(at);
            self.revoked = revoked;
            self.leased = None;
        } else {
            self.stalled_since = None;
            self.revoked = false;
            self.dead_since = None;
        }
    }

    /// Whether heartbeats to the node may grant a lease (not while its storage is stalled).
    pub fn may_grant_lease(&self) -> bool {
        self.stalled_since.is_none()
    }

    /// A heartbeat is about to be sent: its seq, and the highest seq whose reply arrived
    /// (which the node may then turn into a lease from its receipt of that heartbeat).
    pub fn next_heartbeat(&mut self, _now: Instant) -> (u64, Option<u64>) {
        self.seq += 1;
        (self.seq, self.replied.map(|(s, _)| s))
    }

    /// The reply to heartbeat `seq` arrived at `at`.
    pub fn reply_received(&mut self, seq: u64, at: Instant) {
        if self.replied.is_none_or(|(s, _)| seq > s) {
            self.replied = Some((seq, at));
            self.replied_by = None;
        }
    }

    /// Heartbeat `seq`, sent at `now` carrying `confirmed_seq`, grants a lease of `lease`
    /// (its `lease_ms` is not 0). The node's lease then runs from its receipt of the
    /// confirmed heartbeat, at about the time its reply came back: one confirmed after a
    /// silence (an old reply) grants one that may have ended already, and is not counted.
    pub fn granting(
        &mut self,
        seq: u64,
        confirmed_seq: Option<u64>,
        now: Instant,
        lease: Duration,
    ) {
        let by = self.replied.zip(self.replied_by);
        if let (Some(c), Some(((replied, at), by))) = (confirmed_seq, by)
            && c == replied
            && at + lease / 2 > now
        {
            if self.grants.len() == GRANTS_REMEMBERED {
                self.grants.pop_front();
            }
            self.grants.push_back((seq, by));
        }
    }

    /// Process `incarnation` of the node answered heartbeat `seq` (after
    /// [`Health::reported`]). When that heartbeat granted a lease and confirmed one this
    /// same incarnation answered, the node now holds a lease ([`Health::holds_lease`]). A
    /// new incarnation (the node restarted) holds none until then.
    pub fn incarnation_answered(&mut self, seq: u64, incarnation: u64) {
        if self.replied.is_some_and(|(s, _)| s == seq) {
            self.replied_by = Some(incarnation);
        }
        if self.leased.is_some_and(|l| l != incarnation) {
            self.leased = None;
        }
        let granted = self
            .grants
            .iter()
            .any(|&(s, by)| s == seq && by == incarnation);
        if granted && self.stalled_since.is_none() {
            self.leased = Some(incarnation);
        }
    }

    /// Whether the node is known to hold a lease of this coordinator: the incarnation that
    /// answered last turned a heartbeat into a lease. (A silence, a confirmed death and a
    /// stalled disk clear `leased`.) A node that just (re)started holds none for its first
    /// heartbeat or two: made primary then, it answers every write `lease_expired` until it
    /// has one.
    pub fn holds_lease(&self) -> bool {
        self.leased.is_some() && self.leased == self.replied_by
    }

    /// The node answered a heartbeat or a probe.
    pub fn answered(&mut self) {
        self.answered = true;
        self.failing = false;
        self.dead_since = None;
        self.confirmed_dead = false;
    }

    /// A heartbeat or probe got no answer (or the node cannot be contacted at all).
    pub fn failed(&mut self) {
        self.failing = true;
        self.leased = None;
    }

    /// The supervisor (container terminated in Pod status, child process exit) reports the
    /// node dead.
    pub fn confirm_dead(&mut self, now: Instant) {
        self.confirmed_dead = true;
        self.leased = None;
        self.failing = true;
        self.dead_since.get_or_insert(now);
    }

    /// The instant the fence is measured from.
    pub fn fence_reference(&self) -> Instant {
        self.replied
            .map_or(self.started, |(_, at)| at.max(self.started))
    }

    /// Current liveness; `fence` is lease + drift margin.
    pub fn liveness(&mut self, now: Instant, fence: Duration) -> Liveness {
        if self.confirmed_dead || (self.revoked && self.stalled_since.is_some()) {
            self.dead_since.get_or_insert(now);
            return Liveness::Dead;
        }
        // Both references bound every lease the node may hold; the earlier one counts.
        let reference = match (self.failing, self.stalled_since) {
            (false, None) => {
                return if self.answered {
                    Liveness::Alive
                } else {
                    Liveness::Unknown
                };
            }
            (false, Some(stalled)) => stalled,
            (true, stalled) => {
                stalled.map_or(self.fence_reference(), |s| s.min(self.fence_reference()))
            }
        };
        if now < reference + fence {
            Liveness::Suspected
        } else {
            self.dead_since.get_or_insert(now);
            Liveness::Dead
        }
    }

    /// When the node was first seen dead, if it is.
    pub fn dead_since(&self) -> Option<Instant> {
        self.dead_since
    }

    /// Should the node get a heartbeat (lease grant) now? Only while it answers: a silent node
    /// gets none, so that its lease runs out by the fence deadline.
    pub fn may_heartbeat(&self) -> bool {
        self.answered && !self.failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FENCE: Duration = Duration::from_millis(4500);

    #[test]
    fn silent_node_is_suspected_until_the_fence_after_the_last_reply_received() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        assert_eq!(h.liveness(t0, FENCE), Liveness::Unknown);
        let (s0, _) = h.next_heartbeat(t0);
        let t1 = t0 + Duration::from_millis(500);
        h.reply_received(s0, t1);
        h.answered();
        assert_eq!(h.liveness(t1, FENCE), Liveness::Alive);
        // The next heartbeat confirms s0 but gets no reply: the fence stays at t1.
        let (_, confirmed) = h.next_heartbeat(t1 + Duration::from_millis(400));
        assert_eq!(confirmed, Some(s0));
        h.failed();
        assert!(!h.may_heartbeat(), "a silent node must not get new leases");
        assert_eq!(
            h.liveness(t1 + FENCE - Duration::from_millis(1), FENCE),
            Liveness::Suspected
        );
        assert_eq!(h.liveness(t1 + FENCE, FENCE), Liveness::Dead);
        assert_eq!(h.dead_since(), Some(t1 + FENCE));
        h.answered();
        assert_eq!(h.liveness(t1 + FENCE, FENCE), Liveness::Alive);
    }

    /// Issue item 4 (a primary that cannot persist is failed over): a node reporting its
    /// storage stalled gets no lease from then on, is suspected for a fence and then dead,
    /// and is alive again once its storage moves.
    #[test]
    fn a_node_with_stalled_storage_is_fenced_from_when_it_was_learned() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        let (s1, _) = h.next_heartbeat(t0);
        h.reported(s1, t0, false, false);
        assert!(h.may_grant_lease());
        let t1 = t0 + Duration::from_secs(1);
        let (s2, _) = h.next_heartbeat(t1);
        h.reported(s2, t1, true, false);
        assert!(
            !h.may_grant_lease(),
            "a stalled node gets zero-lease heartbeats"
        );
        assert!(
            h.may_heartbeat(),
            "it is still asked (its reports tell when it recovers)"
        );
        assert_eq!(h.liveness(t1, FENCE), Liveness::Suspected);
        // Later stalled reports do not move the reference.
        let t2 = t1 + Duration::from_secs(2);
        let (s3, _) = h.next_heartbeat(t2);
        h.reported(s3, t2, true, false);
        assert_eq!(
            h.liveness(t1 + FENCE - Duration::from_millis(1), FENCE),
            Liveness::Suspected
        );
        assert_eq!(h.liveness(t1 + FENCE, FENCE), Liveness::Dead);
        let dead_since = h.dead_since();
        assert_eq!(dead_since, Some(t1 + FENCE));
        let t3 = t1 + FENCE + Duration::from_secs(1);
        let (s4, _) = h.next_heartbeat(t3);
        h.reported(s4, t3, true, false);
        assert_eq!(h.liveness(t3, FENCE), Liveness::Dead);
        assert_eq!(
            h.dead_since(),
            dead_since,
            "still dead since then (replaceAfter)"
        );
        let (s5, _) = h.next_heartbeat(t3);
        h.reported(s5, t3, false, false);
        assert_eq!(h.liveness(t3, FENCE), Liveness::Alive);
        assert!(h.may_grant_lease());
        assert_eq!(h.dead_since(), None);
    }

    /// Issue item 4 (a primary whose disk hangs is failed over within lease + 5 s): a node
    /// that revoked its lease for a stalled storage is dead at once; the answer to an older
    /// heartbeat changes nothing; a report of moving storage makes it alive again.
    #[test]
    fn a_node_that_revoked_its_lease_is_dead_at_once() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        let (s1, _) = h.next_heartbeat(t0);
        let (s2, _) = h.next_heartbeat(t0);
        h.reported(s2, t0, false, false);
        // The older heartbeat's answer arrives late: it does not count.
        h.reported(s1, t0, true, true);
        assert_eq!(h.liveness(t0, FENCE), Liveness::Alive);
        let (s3, _) = h.next_heartbeat(t0);
        h.reported(s3, t0, true, true);
        assert!(!h.may_grant_lease());
        assert_eq!(h.liveness(t0, FENCE), Liveness::Dead);
        assert_eq!(h.dead_since(), Some(t0));
        let t1 = t0 + Duration::from_secs(1);
        let (s4, _) = h.next_heartbeat(t1);
        h.reported(s4, t1, false, false);
        assert_eq!(h.liveness(t1, FENCE), Liveness::Alive);
        assert!(h.may_grant_lease());
    }

    #[test]
    fn confirmed_death_is_immediate() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        h.answered();
        h.confirm_dead(t0);
        assert_eq!(h.liveness(t0, FENCE), Liveness::Dead);
    }

    /// Issue item 3 (fresh coordinator): a coordinator that just started and has never heard
    /// from a node waits a full lease plus drift from its own start before presuming it dead,
    /// because the previous coordinator may have granted it a lease just before.
    #[test]
    fn a_fresh_coordinator_waits_a_full_fence_before_presuming_an_unheard_node_dead() {
        let started = Instant::now();
        let mut h = Health::new(started);
        // The first probe fails at once.
        h.failed();
        assert_eq!(h.liveness(started, FENCE), Liveness::Suspected);
        assert_eq!(
            h.liveness(started + FENCE - Duration::from_millis(1), FENCE),
            Liveness::Suspected
        );
        assert_eq!(h.liveness(started + FENCE, FENCE), Liveness::Dead);
    }

    /// A node holds a lease once it answered a heartbeat that granted one and confirmed an
    /// earlier heartbeat answered by the same process; a restarted process (another
    /// incarnation) holds none until the same has happened to it, and neither does one that
    /// stopped answering or whose storage stalled.
    #[test]
    fn a_lease_is_known_held_once_a_grant_confirming_the_same_process_is_answered() {
        let t0 = Instant::now();
        let mut h = Health::new(t0);
        // `granting` as the runner calls it: for every heartbeat sent with a lease.
        let mut now = t0;
        fn beat(h: &mut Health, now: &mut Instant, incarnation: u64, stalled: bool) -> bool {
            *now += Duration::from_millis(500);
            let (seq, confirmed) = h.next_heartbeat(*now);
            if h.may_grant_lease() {
                h.granting(seq, confirmed, *now, Duration::from_secs(4));
            }
            h.reported(seq, *now, stalled, false);
            h.incarnation_answered(seq, incarnation);
            h.holds_lease()
        }
        // The first heartbeat confirms nothing: no lease yet.
        assert!(!beat(&mut h, &mut now, 7, false));
        assert!(beat(&mut h, &mut now, 7, false));
        assert!(beat(&mut h, &mut now, 7, false));
        // The process restarted: the heartbeat it answered confirmed one of the old process.
        assert!(!beat(&mut h, &mut now, 8, false));
        assert!(beat(&mut h, &mut now, 8, false));
        // Silent: whatever it held may lapse. Answering again after a long silence, its
        // first heartbeat confirms a reply from before it, which grants a lease already over.
        h.failed();
        assert!(!h.holds_lease());
        now += Duration::from_secs(10);
        h.answered();
        assert!(!beat(&mut h, &mut now, 8, false));
        assert!(beat(&mut h, &mut now, 8, false));
        // Storage stalled: its heartbeats grant nothing from here on.
        assert!(!beat(&mut h, &mut now, 8, true));
        assert!(!beat(&mut h, &mut now, 8, true));
        // Moving again: the first heartbeat granting again confirms a reply of the same
        // process, so it holds a lease once that one is answered.
        assert!(!beat(&mut h, &mut now, 8, false));
        assert!(beat(&mut h, &mut now, 8, false));
    }
}
