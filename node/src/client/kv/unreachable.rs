//! Node addresses from the map that recently refused connections. Requests routed to them go
//! through a seed endpoint instead (any node forwards to the primary) until the entry expires
//! or a newer map arrives — so a client outside the cluster network, or one facing a dead
//! node, does not pay a failed connection on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an address stays avoided after a failed connection.
pub(super) const AVOID_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Unreachable {
    until: Mutex<HashMap<String, Instant>>,
}

impl Unreachable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `addr` refused a connection at `now`.
    pub(super) fn mark(&self, addr: &str, now: Instant) {
        self.lock().insert(addr.to_owned(), now + AVOID_FOR);
    }

    /// Whether requests for `addr` should go through a seed at `now`.
    pub(super) fn is_avoided(&self, addr: &str, now: Instant) -> bool {
        let mut until = self.lock();
        match until.get(addr) {
            Some(t) if *t > now => true,
            Some(_) => {
                until.remove(addr);
                false
            }
            None => false,
        }
    }

    /// A newer map may place the partitions elsewhere or list restarted nodes: start over.
    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_avoided_until_the_entry_expires() {
        let u = Unreachable::default();
        let t0 = Instant::now();
        assert!(!u.is_avoided("a:1", t0));
        u.mark("a:1", t0);
        assert!(u.is_avoided("a:1", t0 + Duration::from_secs(1)));
        assert!(!u.is_avoided("b:1", t0 + Duration::from_secs(1)));
        assert!(!u.is_avoided("a:1", t0 + AVOID_FOR));
        // Expired entries are dropped, so the address is tried directly again.
        assert!(!u.is_avoided("a:1", t0));
    }

    #[test]
    fn a_new_map_clears_every_entry() {
        let u = Unreachable::default();
        let t0 = Instant::now();
        u.mark("a:1", t0);
        u.mark("b:1", t0);
        u.clear();
        assert!(!u.is_avoided("a:1", t0) && !u.is_avoided("b:1", t0));
    }
}
