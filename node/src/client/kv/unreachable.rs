//! Addresses that recently failed to answer: refused a connection, or let an attempt or a map
//! fetch time out (a powered-off host or a black-holed link refuses nothing, it just never
//! answers). Requests routed to such a map address go through a seed endpoint instead (any
//! node forwards to the primary), the next attempt through a seed prefers one that answers,
//! and map refreshes ask such addresses last and only when no other source answered —
//! until the entry expires or a newer map arrives. So a client outside the cluster network,
//! or one facing a dead node, pays the failed connection or the timeout once, not on every
//! request and every map refresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an address stays avoided after a failed connection or a timeout.
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

    /// `addr` refused a connection or did not answer in time at `now`.
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

    /// `addrs` split into those to ask first and the avoided ones, each in the given order.
    pub(super) fn split(&self, addrs: Vec<String>, now: Instant) -> (Vec<String>, Vec<String>) {
        addrs.into_iter().partition(|a| !self.is_avoided(a, now))
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
    fn avoided_addresses_are_split_off_in_order() {
        let u = Unreachable::default();
        let t0 = Instant::now();
        u.mark("b:1", t0);
        let addrs = ["a:1", "b:1", "c:1", "d:1"].map(String::from).to_vec();
        let (first, last) = u.split(addrs, t0);
        assert_eq!(first, ["a:1", "c:1", "d:1"]);
        assert_eq!(last, ["b:1"]);
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
