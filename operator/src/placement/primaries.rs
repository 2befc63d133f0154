//! Choosing one primary per partition among its Active replicas, balanced per node within ±1,
//! keeping current primaries where the balance allows (each change costs a hand-off).

use super::assign::{Nodes, tie};
use super::capacity::Quota;
use shardedstore_node::map::PartitionMap;
use std::collections::VecDeque;

/// One step of a shift chain: partition `q` moves its primary from `from` (None: unassigned)
/// to `to`.
type Step = (Option<usize>, usize, usize);

struct Leaders {
    /// Active target replicas of each partition: the possible primaries.
    candidates: Vec<Vec<usize>>,
    slot: Vec<usize>,
    quota: Quota,
    primary: Vec<Option<usize>>,
    /// Partitions each node leads.
    led: Vec<Vec<usize>>,
}

impl Leaders {
    fn count(&self, n: usize) -> u32 {
        self.quota.count(self.slot[n])
    }

    fn set(&mut self, q: usize, to: usize) {
        if let Some(from) = self.primary[q] {
            self.quota.remove(self.slot[from]);
            self.led[from].retain(|&x| x != q);
        }
        self.quota.add(self.slot[to]);
        self.primary[q] = Some(to);
        self.led[to].push(q);
    }

    /// Breadth-first search over primary shifts from `starts` to a node satisfying `is_end`.
    /// Returns the steps ordered end first.
    fn search(
        &self,
        starts: Vec<Step>,
        is_end: impl Fn(&Self, usize) -> bool,
    ) -> Option<Vec<Step>> {
        // parent[n] = (step that brought a partition to n, whether that step starts the chain)
        let mut parent: Vec<Option<(Step, bool)>> = vec![None; self.led.len()];
        let mut seen = vec![false; self.led.len()];
        for step in &starts {
            if let Some(origin) = step.0 {
                seen[origin] = true;
            }
        }
        let mut queue = VecDeque::new();
        for step in starts {
            if !seen[step.2] {
                seen[step.2] = true;
                parent[step.2] = Some((step, true));
                queue.push_back(step.2);
            }
        }
        let path = |parent: &[Option<(Step, bool)>], end: usize| {
            let mut steps = Vec::new();
            let mut at = end;
            while let Some((step, first)) = parent[at] {
                steps.push(step);
                match step.0 {
                    Some(prev) if !first => at = prev,
                    _ => break,
                }
            }
            steps
        };
        while let Some(c) = queue.pop_front() {
            if is_end(self, c) {
                return Some(path(&parent, c));
            }
            for &q in &self.led[c] {
                for &m in &self.candidates[q] {
                    if !seen[m] {
                        seen[m] = true;
                        parent[m] = Some(((Some(c), q, m), false));
                        if is_end(self, m) {
                            return Some(path(&parent, m));
                        }
                        queue.push_back(m);
                    }
                }
            }
        }
        None
    }

    /// Applies steps ordered end first, so every node gains before its predecessor gives away.
    fn apply(&mut self, steps: &[Step]) {
        for &(_, q, to) in steps {
            self.set(q, to);
        }
    }

    /// Moves primaries along chains from overloaded nodes to nodes two or more below them.
    fn rebalance(&mut self) {
        let active: Vec<usize> = (0..self.led.len())
            .filter(|&n| self.slot[n] != usize::MAX)
            .collect();
        for _ in 0..self.primary.len() * 2 {
            let mut order = active.clone();
            order.sort_by_key(|&n| std::cmp::Reverse(self.count(n)));
            let path = order.iter().find_map(|&hi| {
                let starts = self.led[hi]
                    .iter()
                    .flat_map(|&q| self.candidates[q].iter().map(move |&m| (Some(hi), q, m)))
                    .collect();
                let limit = self.count(hi);
                self.search(starts, |s, n| s.count(n) + 2 <= limit)
            });
            match path {
                Some(steps) => self.apply(&steps),
                None => return,
            }
        }
    }
}

/// Returns the primary (node index) of every partition; `members` are the target replicas.
pub(crate) fn assign_primaries(
    previous: &PartitionMap,
    nodes: &Nodes<'_>,
    members: &[Vec<usize>],
) -> Vec<Option<usize>> {
    let n_nodes = nodes.list.len();
    let mut slot = vec![usize::MAX; n_nodes];
    for (i, n) in (0..n_nodes).filter(|&n| nodes.active[n]).enumerate() {
        slot[n] = i;
    }
    let active_count = nodes.active.iter().filter(|&&a| a).count();
    let candidates: Vec<Vec<usize>> = members
        .iter()
        .map(|m| m.iter().copied().filter(|&n| nodes.active[n]).collect())
        .collect();
    let total = candidates.iter().filter(|c| !c.is_empty()).count();
    let mut l = Leaders {
        quota: Quota::new(total as u32, active_count),
        primary: vec![None; members.len()],
        led: vec![Vec::new(); n_nodes],
        candidates,
        slot,
    };

    // Keep current primaries while their node has room.
    for (p, entry) in previous.partitions.iter().enumerate() {
        let current = entry
            .primary
            .as_deref()
            .and_then(|id| nodes.by_id.get(id).copied());
        if let Some(n) = current
            && l.candidates[p].contains(&n)
            && l.quota.has_room(l.slot[n])
        {
            l.set(p, n);
        }
    }

    for p in 0..members.len() {
        if l.primary[p].is_some() || l.candidates[p].is_empty() {
            continue;
        }
        let by_load = |l: &Leaders, room: bool| {
            l.candidates[p]
                .iter()
                .copied()
                .filter(|&n| !room || l.quota.has_room(l.slot[n]))
                .min_by_key(|&n| (l.count(n), tie(p, nodes.hash[n])))
        };
        if let Some(n) = by_load(&l, true) {
            l.set(p, n);
            continue;
        }
        let starts = l.candidates[p].iter().map(|&m| (None, p, m)).collect();
        if let Some(steps) = l.search(starts, |s, n| s.quota.has_room(s.slot[n])) {
            l.apply(&steps);
        } else if let Some(n) = by_load(&l, false) {
            // No balanced choice exists now; the rebalance below evens it out if it can.
            l.set(p, n);
        }
    }
    l.rebalance();
    l.primary
}
