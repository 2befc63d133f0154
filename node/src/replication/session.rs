//! Replication sessions: every probe, append and snapshot chunk carries the id of the
//! primary's replication session to that member (`docs/protocol.md`, "Sessions"). A replica
//! refuses messages of an older session than the newest it accepted, so a message delayed in
//! the network (a truncate, the first chunk of a snapshot) cannot act after a newer session
//! has re-probed the replica's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most appends a primary keeps in flight per partition and member (`--appends-in-flight`).
/// Each append names its primary's window; a replica bounds the staleness of what a message
/// tells it by the receipt of the message that many before it, and remembers this many.
pub const APPENDS_IN_FLIGHT: usize = 4;

/// A session as the replica compares them: the primary's epoch, then its session id.
pub type SessionId = (u64, u64);

/// Whether a message of `msg` may act on a replica whose newest accepted session is `newest`;
/// on acceptance, the new newest session.
///
/// A higher epoch always starts a newer session (the epoch check fences lower ones). Within
/// an epoch only one primary sends, and its session ids increase, so a lower id is older.
/// Session 0 (a sender older than sessions) is the lowest.
pub fn accept(newest: SessionId, msg: SessionId) -> Option<SessionId> {
    (msg >= newest).then_some(msg)
}

/// Source of increasing session ids on a primary. Seeded from the wall clock so ids also
/// increase across restarts (a restarted node leads only a higher epoch anyway).
pub struct SessionIds(AtomicU64);

impl Default for SessionIds {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self(AtomicU64::new(seed.max(1)))
    }
}

impl SessionIds {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue item 7 (sessions): once a newer session was accepted, a delayed message of an
    /// older one is refused; a newer epoch or session is accepted.
    #[test]
    fn older_sessions_are_refused() {
        let newest = (3, 20);
        assert_eq!(accept(newest, (3, 20)), Some((3, 20)));
        assert_eq!(accept(newest, (3, 21)), Some((3, 21)));
        assert_eq!(accept(newest, (4, 1)), Some((4, 1)));
        assert_eq!(accept(newest, (3, 19)), None);
        assert_eq!(accept(newest, (3, 0)), None);
        let ids = SessionIds::default();
        let a = ids.next();
        assert!(ids.next() > a);
    }
}
