//! Zipfian key ranks, the YCSB generator (Gray et al., "Quickly generating billion-record
//! synthetic databases"): rank 0 is the hottest key, popularity falls as 1/rank^θ.

/// YCSB's default skew.
pub const YCSB_THETA: f64 = 0.99;

/// Draws ranks in `0..n` with Zipfian popularity. Pure: callers supply the uniform samples.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// `n >= 1` items, skew `theta` in `(0, 1)`.
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = if n > 1 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            1.0
        };
        Self {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// The rank for a uniform sample `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// Probability of rank 0 (the hottest key).
    pub fn top_probability(&self) -> f64 {
        1.0 / self.zeta_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_stay_in_range_and_skew_towards_zero() {
        let z = Zipfian::new(1000, YCSB_THETA);
        let mut counts = vec![0u32; 1000];
        let samples = 200_000;
        for i in 0..samples {
            let u = (i as f64 + 0.5) / samples as f64;
            counts[z.rank(u) as usize] += 1;
        }
        let top = f64::from(counts[0]) / f64::from(samples);
        assert!((top - z.top_probability()).abs() < 0.01, "{top}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        // The hottest 10% of the keys take well over half of the accesses.
        let hot: u32 = counts[..100].iter().sum();
        assert!(f64::from(hot) / f64::from(samples) > 0.6, "{hot}");
    }

    #[test]
    fn degenerate_sizes_do_not_escape_the_range() {
        let z = Zipfian::new(1, YCSB_THETA);
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.999), 0);
        let z = Zipfian::new(2, YCSB_THETA);
        assert!((0..100).all(|i| z.rank(f64::from(i) / 100.0) < 2));
    }
}
