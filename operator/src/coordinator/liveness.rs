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

use std::time::{Duration, Instant};

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
    confirmed_dead: bool,
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
            confirmed_dead: false,
        }
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
        }
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
    }

    /// The supervisor (container terminated in Pod status, child process exit) reports the
    /// node dead.
    pub fn confirm_dead(&mut self, now: Instant) {
        self.confirmed_dead = true;
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
        if self.confirmed_dead {
            return Liveness::Dead;
        }
        if !self.failing {
            return if self.answered {
                Liveness::Alive
            } else {
                Liveness::Unknown
            };
        }
        if now < self.fence_reference() + fence {
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
}
