//! The placement algorithm: keep valid pairs, trim to quotas, fill the gaps, with augmenting
//! paths when a gap can only be filled by shifting another replica (like a max-flow step).

use super::capacity::{Quotas, zone_totals};
use super::primaries::assign_primaries;
use super::{PlacementNode, Target, TargetPartition};
use shardedstore_node::map::{NodeId, NodeState, PartitionMap};
use std::collections::{BTreeMap, VecDeque};

/// Stable per-node hash for deterministic tie-breaking that does not favour low node ids.
pub(crate) fn node_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tie-break score of (partition, node): a splitmix64 mix.
pub(crate) fn tie(partition: usize, node_hash: u64) -> u64 {
    let mut z = node_hash ^ (partition as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Indexed view of the nodes: everything the algorithm needs by `usize`.
pub(crate) struct Nodes<'a> {
    pub(crate) list: Vec<&'a PlacementNode>,
    pub(crate) hash: Vec<u64>,
    pub(crate) zone: Vec<usize>,
    pub(crate) active: Vec<bool>,
    /// Number of distinct zones among Active nodes.
    pub(crate) active_zones: usize,
    /// Whether each zone index has an Active node.
    zone_active: Vec<bool>,
    pub(crate) by_id: BTreeMap<&'a str, usize>,
}

impl<'a> Nodes<'a> {
    pub(crate) fn new(nodes: &'a [PlacementNode]) -> Self {
        let mut list: Vec<&PlacementNode> = nodes.iter().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list.dedup_by(|a, b| a.id == b.id);
        let mut zones: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        let zone = list
            .iter()
            .map(|n| {
                let next = zones.len();
                *zones.entry(n.zone.as_deref()).or_insert(next)
            })
            .collect::<Vec<_>>();
        let active: Vec<bool> = list.iter().map(|n| n.state == NodeState::Active).collect();
        let mut az: Vec<usize> = (0..list.len())
            .filter(|&i| active[i])
            .map(|i| zone[i])
            .collect();
        az.sort_unstable();
        az.dedup();
        let mut zone_active = vec![false; zones.len()];
        for &z in &az {
            zone_active[z] = true;
        }
        Self {
            zone_active,
            hash: list.iter().map(|n| node_hash(&n.id)).collect(),
            by_id: list
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.as_str(), i))
                .collect(),
            active_zones: az.len(),
            zone,
            active,
            list,
        }
    }

    /// May partition (with `members`) take a replica on `n`, zone-wise? A zone may repeat only
    /// once every Active zone is covered. `without` is a member about to leave.
    pub(crate) fn zone_allows(&self, members: &[usize], n: usize, without: Option<usize>) -> bool {
        let zones = || {
            members
                .iter()
                .filter(|&&m| Some(m) != without)
                .map(|&m| self.zone[m])
        };
        if !zones().any(|z| z == self.zone[n]) {
            return true;
        }
        let mut covered: Vec<usize> = zones().filter(|&z| self.is_active_zone(z)).collect();
        covered.sort_unstable();
        covered.dedup();
        covered.len() >= self.active_zones
    }

    fn is_active_zone(&self, z: usize) -> bool {
        self.zone_active.get(z).copied().unwrap_or(false)
    }
}

/// Working state of one placement run.
struct Work<'a, 'n> {
    nodes: &'a Nodes<'n>,
    /// Members (node indices) of each partition: retained Down ones and Active ones.
    members: Vec<Vec<usize>>,
    /// Active members each partition should have.
    want_active: Vec<usize>,
    /// Partitions each node holds (Active nodes only are tracked).
    held: Vec<Vec<usize>>,
    quotas: Quotas,
    /// Members of each partition in the previous map (preferred when balance must give way).
    previous: Vec<Vec<usize>>,
    /// Learners of each partition in the previous map: moves in flight, which an augmenting
    /// path must not shift and a rebalance shifts only when nothing else will do.
    learners: Vec<Vec<usize>>,
}

impl Work<'_, '_> {
    fn active_members(&self, p: usize) -> usize {
        self.members[p]
            .iter()
            .filter(|&&m| self.nodes.active[m])
            .count()
    }

    fn accepts(&self, p: usize, n: usize, without: Option<usize>) -> bool {
        self.nodes.active[n]
            && !self.members[p]
                .iter()
                .any(|&m| m == n && Some(m) != without)
            && self.nodes.zone_allows(&self.members[p], n, without)
    }

    fn add(&mut self, p: usize, n: usize) {
        self.members[p].push(n);
        self.held[n].push(p);
        self.quotas.add(n);
    }

    fn remove(&mut self, p: usize, n: usize) {
        self.members[p].retain(|&m| m != n);
        self.held[n].retain(|&q| q != p);
        self.quotas.remove(n);
    }

    /// Best Active node that accepts `p`: least loaded, then a hash tie-break. Without `room`
    /// (balance must give way, e.g. to zones) a node that already held `p` comes first, so
    /// that placing again from the result moves nothing.
    fn best(&self, p: usize, room: bool, zones: bool) -> Option<usize> {
        (0..self.nodes.list.len())
            .filter(|&n| self.nodes.active[n] && !self.members[p].contains(&n))
            .filter(|&n| !zones || self.nodes.zone_allows(&self.members[p], n, None))
            .filter(|&n| !room || self.quotas.has_room(n))
            .min_by_key(|&n| {
                let fresh = room || !self.previous[p].contains(&n);
                (fresh, self.quotas.count(n), tie(p, self.nodes.hash[n]))
            })
    }

    /// Finds a chain `p → c0`, `q1: c0 → c1`, …, ending at a node with room, and applies it.
    fn augment(&mut self, p: usize) -> bool {
        let n_nodes = self.nodes.list.len();
        // parent[n] = (previous node or None for the root, partition moved into n)
        let mut parent: Vec<Option<(Option<usize>, usize)>> = vec![None; n_nodes];
        let mut queue = VecDeque::new();
        for (c, slot) in parent.iter_mut().enumerate() {
            if self.accepts(p, c, None) {
                *slot = Some((None, p));
                queue.push_back(c);
            }
        }
        while let Some(c) = queue.pop_front() {
            if self.quotas.has_room(c) {
                return self.apply_chain(&parent, c);
            }
            let shiftable = self.held[c]
                .iter()
                .filter(|&&q| !self.learners[q].contains(&c));
            for &q in shiftable {
                for m in 0..n_nodes {
                    if parent[m].is_none() && self.accepts(q, m, Some(c)) {
                        parent[m] = Some((Some(c), q));
                        if self.quotas.has_room(m) {
                            return self.apply_chain(&parent, m);
                        }
                        queue.push_back(m);
                    }
                }
            }
        }
        false
    }

    /// Last resort after a relaxed fill: move single replicas from the most to the least
    /// loaded Active nodes while they differ by two or more and a valid move exists.
    fn rebalance(&mut self) {
        let active: Vec<usize> = (0..self.nodes.list.len())
            .filter(|&n| self.nodes.active[n])
            .collect();
        let count = |w: &Self, n: usize| w.quotas.count(n);
        for _ in 0..self.members.len() * 2 {
            let mut order = active.clone();
            order.sort_by_key(|&n| (count(self, n), self.nodes.hash[n]));
            let found = order.iter().rev().find_map(|&hi| {
                order
                    .iter()
                    .take_while(|&&lo| count(self, lo) + 2 <= count(self, hi))
                    .filter(|&&lo| self.quotas.group(lo) == self.quotas.group(hi))
                    .find_map(|&lo| {
                        self.held[hi]
                            .iter()
                            .copied()
                            .filter(|&q| self.accepts(q, lo, Some(hi)))
                            .min_by_key(|&q| self.learners[q].contains(&hi))
                            .map(|q| (q, hi, lo))
                    })
            });
            let Some((q, hi, lo)) = found else {
                return;
            };
            self.remove(q, hi);
            self.add(q, lo);
        }
    }

    fn apply_chain(&mut self, parent: &[Option<(Option<usize>, usize)>], end: usize) -> bool {
        let mut steps = Vec::new();
        let mut at = end;
        while let Some((prev, q)) = parent[at] {
            steps.push((prev, q, at));
            match prev {
                Some(prev) => at = prev,
                None => break,
            }
        }
        // Apply from the end: each node first gains its new partition, then (its predecessor)
        // gives its old one away, so quotas stay consistent.
        for (prev, q, to) in steps {
            if let Some(from) = prev {
                if !self.accepts(q, to, Some(from)) {
                    return false;
                }
                self.remove(q, from);
            } else if !self.accepts(q, to, None) {
                return false;
            }
            self.add(q, to);
        }
        true
    }
}

/// Computes the target assignment. Deterministic: the same inputs always give the same target.
pub fn place(previous: &PartitionMap, nodes: &[PlacementNode], replication_factor: u32) -> Target {
    let nodes = Nodes::new(nodes);
    let n_nodes = nodes.list.len();
    let rf = replication_factor as usize;
    let active_count = nodes.active.iter().filter(|&&a| a).count();

    // 1. Keep valid pairs: members on Active or Down nodes, primary first, zone-compatible.
    let partitions = previous.partitions.len();
    let mut members: Vec<Vec<usize>> = Vec::with_capacity(partitions);
    let mut want_active = Vec::with_capacity(partitions);
    let mut previous_members = Vec::with_capacity(partitions);
    let mut learners = Vec::with_capacity(partitions);
    for entry in &previous.partitions {
        let mut kept: Vec<usize> = Vec::new();
        let index = |id: &NodeId| nodes.by_id.get(id.as_str()).copied();
        let learners_here: Vec<usize> = entry.learners.iter().filter_map(index).collect();
        // Learners on Active nodes first: each is a move an earlier target asked for, and
        // losing it here would cancel its copy half way. Then the primary, the replicas and
        // learners on Down nodes.
        let (moving, stalled): (Vec<usize>, Vec<usize>) =
            learners_here.iter().partition(|&&n| nodes.active[n]);
        let ordered = moving
            .into_iter()
            .chain(
                entry
                    .primary
                    .iter()
                    .chain(&entry.replicas)
                    .filter_map(index),
            )
            .chain(stalled);
        let mut candidates: Vec<usize> = ordered
            .filter(|&n| matches!(nodes.list[n].state, NodeState::Active | NodeState::Down))
            .collect();
        let mut seen = Vec::new();
        candidates.retain(|&n| {
            let first = !seen.contains(&n);
            seen.push(n);
            first
        });
        // One member per zone first, then the rest where zones allow: the order of the map's
        // lists must not decide which pairs survive.
        for n in candidates.iter().copied() {
            if !kept.iter().any(|&k| nodes.zone[k] == nodes.zone[n]) {
                kept.push(n);
            }
        }
        for n in candidates.iter().copied() {
            if !kept.contains(&n) && nodes.zone_allows(&kept, n, None) {
                kept.push(n);
            }
        }
        previous_members.push(candidates.clone());
        learners.push(learners_here);
        let down = kept.iter().filter(|&&n| !nodes.active[n]).count().min(rf);
        want_active.push((rf.min(active_count + down)).saturating_sub(down));
        members.push(kept);
    }

    // 2. Trim partitions holding more Active members than wanted (a move in flight, or a
    //    lowered replication factor): drop the member on the most loaded node, but only one
    //    whose zone another member still covers, and never a learner before a replica.
    let mut raw = vec![0u32; n_nodes];
    for m in members.iter().flatten() {
        raw[*m] += 1;
    }
    for (p, kept) in members.iter_mut().enumerate() {
        loop {
            let active: Vec<usize> = kept.iter().copied().filter(|&n| nodes.active[n]).collect();
            if active.len() <= want_active[p] {
                break;
            }
            let entry = &previous.partitions[p];
            let Some(drop) = active.iter().copied().max_by_key(|&n| {
                let id = nodes.list[n].id.as_str();
                let is_primary = Some(id) == entry.primary.as_deref();
                let is_learner = learners[p].contains(&n);
                let zone_shared = kept
                    .iter()
                    .any(|&m| m != n && nodes.zone[m] == nodes.zone[n]);
                let load = raw[n];
                (
                    zone_shared,
                    !is_learner,
                    load,
                    !is_primary,
                    tie(p, nodes.hash[n]),
                )
            }) else {
                break;
            };
            kept.retain(|&n| n != drop);
            raw[drop] -= 1;
        }
    }

    // 3. Per-node quotas: each zone gets its share of the replicas (see `Quotas`), spread
    //    over its nodes ±1; trim the overloaded, letting the most loaded nodes keep the +1 so
    //    that the fewest replicas move.
    let total: usize = want_active.iter().sum();
    let mut group_ids: BTreeMap<usize, usize> = BTreeMap::new();
    for n in (0..n_nodes).filter(|&n| nodes.active[n]) {
        let next = group_ids.len();
        group_ids.entry(nodes.zone[n]).or_insert(next);
    }
    let group_of: Vec<Option<usize>> = (0..n_nodes)
        .map(|n| nodes.active[n].then(|| group_ids[&nodes.zone[n]]))
        .collect();
    let zones = group_ids.len();
    let mut sizes = vec![0usize; zones];
    for g in group_of.iter().flatten() {
        sizes[*g] += 1;
    }
    // What zone spread (`Nodes::zone_allows`) permits each partition's Active members per
    // zone: a new member goes to a zone the partition does not cover yet, and a zone repeats
    // only once every Active zone is covered. A Down member covers its zone: a partition
    // with one there may hold no Active member in it and more in the others.
    let (mut lower, mut upper) = (vec![0u32; zones], vec![0u32; zones]);
    for (p, &a) in want_active.iter().enumerate() {
        let mut covered = vec![false; zones];
        for &m in members[p].iter().filter(|&&m| !nodes.active[m]) {
            if let Some(&g) = group_ids.get(&nodes.zone[m]) {
                covered[g] = true;
            }
        }
        let open = covered.iter().filter(|&&c| !c).count();
        let repeats = a.saturating_sub(open) as u32;
        for g in 0..zones {
            if covered[g] {
                upper[g] += repeats;
            } else if a >= open {
                lower[g] += 1;
                upper[g] += 1 + repeats;
            } else if a > 0 {
                upper[g] += 1;
            }
        }
    }
    let totals = zone_totals(total as u32, &sizes, &lower, &upper);
    let quotas = Quotas::new(&group_of, &totals);
    let limit = quotas.limits(&raw, &nodes.hash);
    let under: Vec<usize> = (0..n_nodes)
        .filter(|&m| nodes.active[m] && raw[m] < limit[m])
        .collect();
    for n in (0..n_nodes).filter(|&n| nodes.active[n]) {
        if raw[n] <= limit[n] {
            continue;
        }
        let mut mine: Vec<usize> = (0..partitions)
            .filter(|&p| members[p].contains(&n))
            .collect();
        // Prefer partitions not trimmed yet: two gaps in one partition cannot both be filled
        // by the same underloaded node, which would cost extra moves. Then partitions an
        // underloaded node can take: one it already holds would have to go to a full node,
        // which then sheds another replica (two moves where one would do).
        // A learner goes last, as in step 2.
        mine.sort_by_key(|&p| {
            let entry = &previous.partitions[p];
            let id = nodes.list[n].id.as_str();
            let is_primary = Some(id) == entry.primary.as_deref();
            let is_learner = learners[p].contains(&n);
            let active = members[p].iter().filter(|&&m| nodes.active[m]).count();
            let gaps = want_active[p].saturating_sub(active);
            let takeable = under
                .iter()
                .any(|&m| !members[p].contains(&m) && nodes.zone_allows(&members[p], m, Some(n)));
            (
                is_learner,
                gaps,
                !takeable,
                is_primary,
                std::cmp::Reverse(tie(p, nodes.hash[n])),
            )
        });
        for &p in mine.iter().take((raw[n] - limit[n]) as usize) {
            members[p].retain(|&m| m != n);
        }
        raw[n] = limit[n];
    }

    let mut work = Work {
        nodes: &nodes,
        members: vec![Vec::new(); partitions],
        want_active,
        held: vec![Vec::new(); n_nodes],
        quotas,
        previous: previous_members,
        learners,
    };
    for (p, kept) in members.into_iter().enumerate() {
        for n in kept {
            if nodes.active[n] {
                work.add(p, n);
            } else {
                work.members[p].push(n);
            }
        }
    }

    // 4. Fill: every gap goes to the least-loaded accepting node with room; if none has room,
    //    shift replicas along an augmenting path; as a last resort relax balance, then zones.
    // Augmenting searches are bounded: once a few fail, balance is not achievable anyway.
    // The partitions with the fewest nodes that have room and could take their gap go
    // first: filled late, they would find those few nodes full and could only be placed by
    // shifting another replica (two moves where one would do). A partition that no node with
    // room can take goes last: it needs such a shift anyway, and placed early its chain would
    // use up room another partition could have taken directly.
    let mut order: Vec<(bool, usize, usize)> = (0..partitions)
        .filter(|&p| work.active_members(p) < work.want_active[p])
        .map(|p| {
            let takers = (0..n_nodes)
                .filter(|&n| work.quotas.has_room(n) && work.accepts(p, n, None))
                .count();
            (takers == 0, takers, p)
        })
        .collect();
    order.sort_unstable();
    let mut failed_searches = 0;
    for (_, _, p) in order {
        while work.active_members(p) < work.want_active[p] {
            if let Some(n) = work.best(p, true, true) {
                work.add(p, n);
                continue;
            }
            if failed_searches < 3 {
                if work.augment(p) {
                    continue;
                }
                failed_searches += 1;
            }
            match work
                .best(p, false, true)
                .or_else(|| work.best(p, false, false))
            {
                Some(n) => work.add(p, n),
                None => break,
            }
        }
    }

    work.rebalance();

    let primaries = assign_primaries(previous, &nodes, &work.members);
    let partitions = work
        .members
        .iter()
        .zip(primaries)
        .map(|(members, primary)| {
            let mut replicas: Vec<String> =
                members.iter().map(|&n| nodes.list[n].id.clone()).collect();
            replicas.sort();
            TargetPartition {
                replicas,
                primary: primary.map(|n| nodes.list[n].id.clone()),
            }
        })
        .collect();
    Target { partitions }
}
