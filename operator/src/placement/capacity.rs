//! Per-node quotas for an even spread: every node gets `floor` or `floor + 1` items, and exactly
//! `ceil_slots` nodes may hold `floor + 1`. Used for both replicas and primaries.

/// Quota bookkeeping over node indices `0..n`.
#[derive(Clone, Debug)]
pub(crate) struct Quota {
    floor: u32,
    ceil: u32,
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

    pub(crate) fn ceil(&self) -> u32 {
        self.ceil
    }

    pub(crate) fn floor(&self) -> u32 {
        self.floor
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
