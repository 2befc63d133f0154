//! Failure detection per node: heartbeat bookkeeping that tells alive, suspected (silent, but
//! its lease may still hold) and dead (confirmed, or silent past lease + drift margin) apart.

use std::time::{Duration, Instant};

/// What the coordinator may assume about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Never answered since the coordinator started (state in the map is kept as is).
    Unknown,
    /// Answered its last heartbeat or probe.
    Alive,
    /// Stopped answering; its lease may still hold, so nothing it leads may move yet.
    Suspected,
    /// Confirmed dead, or silent for longer than one lease plus the drift margin after the
    /// last heartbeat sent: its lease has certainly expired.
    Dead,
}

/// Heartbeat history of one node.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// When the last heartbeat (lease grant) was sent, answered or not.
    last_sent: Option<Instant>,
    answered: bool,
    failing: bool,
    /// When the node was first seen dead (for `replaceAfter`).
    dead_since: Option<Instant>,
    confirmed_dead: bool,
}

impl Health {
    /// A heartbeat is about to be sent: from now on the node may hold a lease until
    /// `now + lease` on its own clock.
    pub fn heartbeat_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// The node answered a heartbeat or a probe.
    pub fn answered(&mut self) {
        self.answered = true;
        self.failing = false;
        self.dead_since = None;
        self.confirmed_dead = false;
    }

    /// A heartbeat or probe got no answer.
    pub fn failed(&mut self) {
        self.failing = true;
    }

    /// The supervisor (pod watch, child process exit) reports the node dead.
    pub fn confirm_dead(&mut self, now: Instant) {
        self.confirmed_dead = true;
        self.failing = true;
        self.dead_since.get_or_insert(now);
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
        match self.last_sent {
            Some(sent) if now < sent + fence => Liveness::Suspected,
            _ => {
                self.dead_since.get_or_insert(now);
                Liveness::Dead
            }
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
    fn silent_node_is_suspected_until_the_fence_after_the_last_heartbeat_sent() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(h.liveness(t0, FENCE), Liveness::Unknown);
        h.heartbeat_sent(t0);
        h.answered();
        assert_eq!(h.liveness(t0, FENCE), Liveness::Alive);
        let t1 = t0 + Duration::from_millis(500);
        h.heartbeat_sent(t1);
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
        let mut h = Health::default();
        h.heartbeat_sent(t0);
        h.answered();
        h.confirm_dead(t0);
        assert_eq!(h.liveness(t0, FENCE), Liveness::Dead);
    }
}
