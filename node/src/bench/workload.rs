//! What the benchmark does: the operation mix (YCSB presets A, B, C or a custom read ratio),
//! the key space and its popularity distribution, and the key names.

use super::zipf::{YCSB_THETA, Zipfian};
use serde::Serialize;

/// YCSB core workloads that only read and update whole records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Preset {
    /// Update heavy: 50% reads, 50% updates.
    YcsbA,
    /// Read mostly: 95% reads, 5% updates.
    YcsbB,
    /// Read only.
    YcsbC,
}

impl Preset {
    pub fn read_ratio(self) -> f64 {
        match self {
            Self::YcsbA => 0.5,
            Self::YcsbB => 0.95,
            Self::YcsbC => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::YcsbA => "ycsb-a",
            Self::YcsbB => "ycsb-b",
            Self::YcsbC => "ycsb-c",
        }
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// YCSB's Zipfian (θ = 0.99): a few hot keys take most accesses.
    Zipfian,
    Uniform,
}

/// One benchmark operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Read,
    Update,
}

impl OpType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Update => "update",
        }
    }
}

/// The name of key number `i` (fixed width, so every key has the same size).
pub fn key_name(i: u64) -> String {
    format!("bench-{i:010}")
}

/// Picks operations and keys from uniform samples in `[0, 1)`. Pure and cheap to clone (one
/// per client task).
#[derive(Clone, Debug)]
pub struct Chooser {
    read_ratio: f64,
    keys: u64,
    zipf: Option<Zipfian>,
}

impl Chooser {
    pub fn new(read_ratio: f64, keys: u64, distribution: Distribution) -> Self {
        let keys = keys.max(1);
        Self {
            read_ratio: read_ratio.clamp(0.0, 1.0),
            keys,
            zipf: match distribution {
                Distribution::Zipfian => Some(Zipfian::new(keys, YCSB_THETA)),
                Distribution::Uniform => None,
            },
        }
    }

    pub fn op(&self, u: f64) -> OpType {
        if u < self.read_ratio {
            OpType::Read
        } else {
            OpType::Update
        }
    }

    /// Key index for sample `u`. Zipfian ranks are used as indexes directly: keys are
    /// hashed to partitions, so hot ranks still spread over the partitions.
    pub fn key(&self, u: f64) -> u64 {
        match &self.zipf {
            Some(z) => z.rank(u),
            None => ((u * self.keys as f64) as u64).min(self.keys - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_ycsb_mixes() {
        let mix = |p: Preset| {
            let c = Chooser::new(p.read_ratio(), 10, Distribution::Uniform);
            (0..1000)
                .filter(|i| c.op(f64::from(*i) / 1000.0) == OpType::Read)
                .count()
        };
        assert_eq!(mix(Preset::YcsbA), 500);
        assert_eq!(mix(Preset::YcsbB), 950);
        assert_eq!(mix(Preset::YcsbC), 1000);
    }

    #[test]
    fn uniform_keys_cover_the_key_space_evenly() {
        let c = Chooser::new(0.5, 10, Distribution::Uniform);
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[c.key(f64::from(i) / 10_000.0) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n == 1000), "{counts:?}");
        assert_eq!(c.key(0.999_999_9), 9);
    }

    #[test]
    fn zipfian_keys_are_skewed() {
        let c = Chooser::new(0.5, 1000, Distribution::Zipfian);
        let zero = (0..10_000)
            .filter(|i| c.key(f64::from(*i) / 10_000.0) == 0)
            .count();
        assert!(zero > 1000, "{zero}");
    }

    #[test]
    fn key_names_have_a_fixed_width() {
        assert_eq!(key_name(7), "bench-0000000007");
        assert_eq!(key_name(7).len(), key_name(9_999_999_999).len());
    }
}
