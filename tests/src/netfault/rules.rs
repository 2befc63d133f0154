//! The pure part of network faults: which (source, destination) pairs a cut puts into which
//! nftables set, reference-counted so that overlapping cuts of the same link heal
//! independently, and the nftables script of a harness table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A cut between two addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cut {
    /// Every packet between `a` and `b`, both ways: neither can reach the other.
    Both { a: Ipv4Addr, b: Ipv4Addr },
    /// Connections that `from` opens to `to` (all their packets, both ways); connections
    /// that `to` opens to `from` keep working. For request/response traffic this is "`from`
    /// cannot talk to `to`", e.g. a primary that cannot replicate to one follower while that
    /// follower still reaches the primary.
    Initiated { from: Ipv4Addr, to: Ipv4Addr },
    /// Every packet from `from` to `to`, and nothing the other way: one-way loss at the
    /// packet level (a TCP connection either way stalls, datagrams to `from` still arrive).
    OneWay { from: Ipv4Addr, to: Ipv4Addr },
}

/// The nftables set an element goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    /// `saddr . daddr` pairs whose packets are dropped.
    Packets,
    /// `saddr . daddr` pairs whose connections (opened by saddr) are dropped.
    Connections,
}

impl Set {
    pub fn name(self) -> &'static str {
        match self {
            Set::Packets => "packets",
            Set::Connections => "connections",
        }
    }
}

/// One set element: (set, source, destination).
pub type Element = (Set, Ipv4Addr, Ipv4Addr);

impl Cut {
    /// The set elements that realise this cut.
    pub fn elements(&self) -> Vec<Element> {
        match *self {
            Cut::Both { a, b } => vec![(Set::Packets, a, b), (Set::Packets, b, a)],
            Cut::Initiated { from, to } => vec![(Set::Connections, from, to)],
            Cut::OneWay { from, to } => vec![(Set::Packets, from, to)],
        }
    }

    /// Every address the cut names.
    pub fn addresses(&self) -> [Ipv4Addr; 2] {
        match *self {
            Cut::Both { a, b } => [a, b],
            Cut::Initiated { from, to } | Cut::OneWay { from, to } => [from, to],
        }
    }
}

/// Reference counts of installed elements: an element is added to nftables when its first
/// cut arrives and removed when its last cut heals.
#[derive(Debug, Default)]
pub struct Installed {
    counts: BTreeMap<Element, u32>,
}

impl Installed {
    /// Records `cut`; returns the elements that must be added now.
    pub fn add(&mut self, cut: &Cut) -> Vec<Element> {
        let mut new = Vec::new();
        for e in cut.elements() {
            let n = self.counts.entry(e).or_insert(0);
            *n += 1;
            if *n == 1 {
                new.push(e);
            }
        }
        new
    }

    /// Forgets one instance of `cut`; returns the elements that must be removed now.
    pub fn remove(&mut self, cut: &Cut) -> Vec<Element> {
        let mut gone = Vec::new();
        for e in cut.elements() {
            if let Some(n) = self.counts.get_mut(&e) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&e);
                    gone.push(e);
                }
            }
        }
        gone
    }

    /// Forgets everything (after the sets were flushed).
    pub fn clear(&mut self) {
        self.counts.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The script creating harness table `table`: two sets and an input-hook chain that drops
/// packets by pair and connections by the pair that opened them. Dropping on input (after
/// loopback delivery) behaves like loss on a wire: the sender retransmits.
pub fn table_script(table: &str) -> String {
    format!(
        "table ip {table} {{
  set packets {{ type ipv4_addr . ipv4_addr; }}
  set connections {{ type ipv4_addr . ipv4_addr; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ip saddr . ip daddr @packets drop
    ip saddr . ip daddr @connections ct direction original drop
    ip daddr . ip saddr @connections ct direction reply drop
  }}
}}
"
    )
}

/// The `nft` command adding (`add`) or deleting (`delete`) `elements` in `table`.
pub fn element_script(verb: &str, table: &str, elements: &[Element]) -> String {
    elements
        .iter()
        .map(|(set, s, d)| format!("{verb} element ip {table} {} {{ {s} . {d} }}\n", set.name()))
        .collect()
}

/// Prefix of every harness table name; the rest is `<pid>_<n>`.
pub const TABLE_PREFIX: &str = "shardedstore_netfault_";

/// The pid in a harness table's name, if `name` is one.
pub fn table_owner(name: &str) -> Option<u32> {
    name.strip_prefix(TABLE_PREFIX)?
        .split('_')
        .next()?
        .parse()
        .ok()
}

/// Harness tables listed in `nft list tables` output.
pub fn harness_tables(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table ip "))
        .filter(|name| name.starts_with(TABLE_PREFIX))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 9, 9, last)
    }

    #[test]
    fn a_symmetric_cut_drops_packets_both_ways_and_the_others_one_pair() {
        let both = Cut::Both { a: ip(1), b: ip(2) }.elements();
        assert_eq!(
            both,
            vec![(Set::Packets, ip(1), ip(2)), (Set::Packets, ip(2), ip(1))]
        );
        let init = Cut::Initiated {
            from: ip(1),
            to: ip(2),
        };
        assert_eq!(init.elements(), vec![(Set::Connections, ip(1), ip(2))]);
        let one = Cut::OneWay {
            from: ip(2),
            to: ip(1),
        };
        assert_eq!(one.elements(), vec![(Set::Packets, ip(2), ip(1))]);
    }

    #[test]
    fn overlapping_cuts_of_one_link_heal_independently() {
        let mut inst = Installed::default();
        let both = Cut::Both { a: ip(1), b: ip(2) };
        let one = Cut::OneWay {
            from: ip(1),
            to: ip(2),
        };
        assert_eq!(inst.add(&both).len(), 2);
        assert!(inst.add(&one).is_empty(), "already dropped");
        // Healing the symmetric cut keeps the one-way drop that is still active.
        assert_eq!(inst.remove(&both), vec![(Set::Packets, ip(2), ip(1))]);
        assert_eq!(inst.remove(&one), vec![(Set::Packets, ip(1), ip(2))]);
        assert!(inst.is_empty());
        assert!(inst.remove(&one).is_empty(), "healing twice is harmless");
    }

    #[test]
    fn scripts_name_the_table_and_sets() {
        let t = "shardedstore_netfault_42_0";
        let s = table_script(t);
        assert!(s.starts_with("table ip shardedstore_netfault_42_0 {"));
        assert!(s.contains("ct direction original drop"));
        let e = element_script("add", t, &[(Set::Connections, ip(1), ip(2))]);
        assert_eq!(
            e,
            "add element ip shardedstore_netfault_42_0 connections { 127.9.9.1 . 127.9.9.2 }\n"
        );
    }

    #[test]
    fn leftover_tables_are_recognised_by_prefix_and_pid() {
        let listing = "table inet filter\ntable ip shardedstore_netfault_77_3\ntable ip nat\n";
        assert_eq!(harness_tables(listing), vec!["shardedstore_netfault_77_3"]);
        assert_eq!(table_owner("shardedstore_netfault_77_3"), Some(77));
        assert_eq!(table_owner("filter"), None);
    }
}
