//! Per-node quotas for an even spread: every node gets `floor` or `floor + 1` items, and exactly
//! `ceil_slots` nodes may hold `floor + 1`. Used for both replicas and primaries.

/// Quota bookkeeping over node indices `0..n`.
#[derive(Clone, Debug)]
pub(crate) struct Quota {
    floor: u32,
    ceil: u32,
    /// How many nodes may hold `ceil`.
    ceil_slots: u32,
    at_ceil: u32,
    count: Vec<u32>,
}

impl Quota {
    /// Spread `total` items over `nodes` nodes.
    pub(crate) fn new(total: u32, nodes: usize) -> Self {
        let n = nodes.max(1) as u32;
        let floor = total / n;
        let rem = total % n;
        Self {
            floor,
            ceil: floor + u32::from(rem > 0),
            ceil_slots: rem,
            at_ceil: 0,
            count: vec![0; nodes],
        }
    }

    pub(crate) fn count(&self, node: usize) -> u32 {
        self.count[node]
    }

    /// May `node` take one more item without breaking the spread?
    pub(crate) fn has_room(&self, node: usize) -> bool {
        let c = self.count[node];
        c < self.floor
            || (c == self.floor && self.ceil > self.floor && self.at_ceil < self.ceil_slots)
    }

    pub(crate) fn add(&mut self, node: usize) {
        self.count[node] += 1;
        if self.ceil > self.floor && self.count[node] == self.ceil {
            self.at_ceil += 1;
        }
    }

    pub(crate) fn remove(&mut self, node: usize) {
        if self.ceil > self.floor && self.count[node] == self.ceil {
            self.at_ceil -= 1;
        }
        self.count[node] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_remainder_may_reach_the_ceiling() {
        let mut q = Quota::new(10, 4); // 3,3,2,2
        for n in 0..4 {
            while q.has_room(n) {
                q.add(n);
            }
        }
        let counts: Vec<u32> = (0..4).map(|n| q.count(n)).collect();
        assert_eq!(counts, vec![3, 3, 2, 2]);
        q.remove(0);
        assert!(q.has_room(3), "the freed +1 slot goes to another node");
    }
}

/// Quotas per failure zone: each zone gets a share of the replicas proportional to its size
/// (within what zone spread allows), spread ±1 over its nodes. With equal zones (or none)
/// this is the plain ±1 spread over all nodes; with skewed zones it is the balance that zone
/// spread still permits, so placement stays a fixed point.
#[derive(Clone, Debug)]
pub(crate) struct Quotas {
    groups: Vec<Quota>,
    /// (group, index in group) of each node; `None` for nodes that take no replicas.
    at: Vec<Option<(usize, usize)>>,
}

impl Quotas {
    /// `group_of[n]`: the zone group of each eligible node; `totals[g]`: items for group g.
    pub(crate) fn new(group_of: &[Option<usize>], totals: &[u32]) -> Self {
        let mut sizes = vec![0usize; totals.len()];
        let at = group_of
            .iter()
            .map(|g| {
                g.map(|g| {
                    sizes[g] += 1;
                    (g, sizes[g] - 1)
                })
            })
            .collect();
        let groups = totals
            .iter()
            .zip(&sizes)
            .map(|(&t, &s)| Quota::new(t, s))
            .collect();
        Self { groups, at }
    }

    pub(crate) fn group(&self, node: usize) -> Option<usize> {
        self.at[node].map(|(g, _)| g)
    }

    pub(crate) fn count(&self, node: usize) -> u32 {
        self.at[node].map_or(0, |(g, i)| self.groups[g].count(i))
    }

    pub(crate) fn has_room(&self, node: usize) -> bool {
        self.at[node].is_some_and(|(g, i)| self.groups[g].has_room(i))
    }

    pub(crate) fn add(&mut self, node: usize) {
        if let Some((g, i)) = self.at[node] {
            self.groups[g].add(i);
        }
    }

    pub(crate) fn remove(&mut self, node: usize) {
        if let Some((g, i)) = self.at[node] {
            self.groups[g].remove(i);
        }
    }

    /// Per-node keep limits for current loads `raw`: in each group the most loaded nodes get
    /// the `floor + 1` slots, so that the fewest replicas move.
    pub(crate) fn limits(&self, raw: &[u32], hash: &[u64]) -> Vec<u32> {
        let mut limit = vec![0u32; raw.len()];
        for (g, q) in self.groups.iter().enumerate() {
            let mut members: Vec<usize> = (0..raw.len())
                .filter(|&n| self.group(n) == Some(g))
                .collect();
            members.sort_by_key(|&n| (std::cmp::Reverse(raw[n]), hash[n]));
            for (rank, n) in members.into_iter().enumerate() {
                limit[n] = if (rank as u32) < q.ceil_slots {
                    q.ceil
                } else {
                    q.floor
                };
            }
        }
        limit
    }
}

/// Splits `total` items over zone groups of `sizes` nodes, proportionally to size but within
/// `[lower[g], upper[g]]` (what zone spread forces and allows), by water-filling.
pub(crate) fn zone_totals(total: u32, sizes: &[usize], lower: &[u32], upper: &[u32]) -> Vec<u32> {
    let g = sizes.len();
    if g == 0 {
        return Vec::new();
    }
    let fill = |lambda: f64| -> Vec<f64> {
        (0..g)
            .map(|i| (lambda * sizes[i] as f64).clamp(f64::from(lower[i]), f64::from(upper[i])))
            .collect()
    };
    let (mut lo, mut hi) = (0.0f64, f64::from(total.max(1)));
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if fill(mid).iter().sum::<f64>() < f64::from(total) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let shares = fill(hi);
    let mut out: Vec<u32> = shares.iter().map(|s| s.floor() as u32).collect();
    let mut left = total.saturating_sub(out.iter().sum());
    // Largest remainders first, within the upper bounds; ties to the larger zone.
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| {
        let ra = shares[a] - shares[a].floor();
        let rb = shares[b] - shares[b].floor();
        rb.total_cmp(&ra)
            .then(sizes[b].cmp(&sizes[a]))
            .then(a.cmp(&b))
    });
    while left > 0 {
        let mut progressed = false;
        for &i in &order {
            if left > 0 && out[i] < upper[i] {
                out[i] += 1;
                left -= 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    out
}

#[cfg(test)]
mod zone_tests {
    use super::*;

    #[test]
    fn zone_totals_follow_sizes_within_bounds() {
        // RF 3 over 3 zones: every zone holds exactly one replica of each of 46 partitions.
        assert_eq!(
            zone_totals(138, &[1, 2, 1], &[46; 3], &[46; 3]),
            vec![46, 46, 46]
        );
        // No zone constraint: proportional.
        assert_eq!(
            zone_totals(12, &[1, 2, 1], &[0; 3], &[12; 3]),
            vec![3, 6, 3]
        );
        assert_eq!(zone_totals(10, &[5], &[0], &[10]), vec![10]);
    }
}
