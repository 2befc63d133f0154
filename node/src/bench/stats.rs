//! Per-client measurements (HDR latency histograms per operation, errors by kind) and their
//! reduction to percentiles.

use super::BenchError;
use super::workload::OpType;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
const MAX_MICROS: u64 = 3_600_000_000;

/// What one client task measured. Merged after the run.
#[derive(Clone, Debug)]
pub struct Recorder {
    hist: BTreeMap<OpType, Histogram<u64>>,
    errors: BTreeMap<(OpType, &'static str), u64>,
    read_misses: u64,
}

/// Latency summary of one operation type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    pub op: OpType,
    pub count: u64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Recorder {
    pub fn new() -> Result<Self, BenchError> {
        let mut hist = BTreeMap::new();
        for op in [OpType::Read, OpType::Update] {
            let h = Histogram::new_with_bounds(1, MAX_MICROS, 3).map_err(BenchError::Histogram)?;
            hist.insert(op, h);
        }
        Ok(Self {
            hist,
            errors: BTreeMap::new(),
            read_misses: 0,
        })
    }

    /// A successful operation and its latency.
    pub fn record(&mut self, op: OpType, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(h) = self.hist.get_mut(&op) {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// A failed operation; `kind` is a stable error label.
    pub fn error(&mut self, op: OpType, kind: &'static str) {
        *self.errors.entry((op, kind)).or_default() += 1;
    }

    /// A read that found no value (the key was never written): counted, not an error.
    pub fn read_miss(&mut self) {
        self.read_misses += 1;
    }

    pub fn merge(&mut self, other: &Recorder) -> Result<(), BenchError> {
        for (op, h) in &other.hist {
            if let Some(mine) = self.hist.get_mut(op) {
                mine.add(h).map_err(BenchError::Merge)?;
            }
        }
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        self.read_misses += other.read_misses;
        Ok(())
    }

    /// Successful operations of every type.
    pub fn ok_count(&self) -> u64 {
        self.hist.values().map(Histogram::len).sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn read_misses(&self) -> u64 {
        self.read_misses
    }

    /// Errors keyed `op/kind`, e.g. `update/unavailable`.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|((op, kind), n)| (format!("{}/{kind}", op.name()), *n))
            .collect()
    }

    /// Percentiles per operation type that ran at least once, over `elapsed`.
    pub fn summarize(&self, elapsed: Duration) -> Vec<OpSummary> {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        self.hist
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(op, h)| OpSummary {
                op: *op,
                count: h.len(),
                ops_per_sec: h.len() as f64 / secs,
                mean_us: h.mean(),
                p50_us: h.value_at_quantile(0.50),
                p99_us: h.value_at_quantile(0.99),
                p999_us: h.value_at_quantile(0.999),
                max_us: h.max(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut r = ok(Recorder::new());
        for us in 1..=1000u64 {
            r.record(OpType::Read, Duration::from_micros(us));
        }
        r.record(OpType::Update, Duration::from_millis(5));
        let s = r.summarize(Duration::from_secs(2));
        assert_eq!(s.len(), 2);
        let read = &s[0];
        assert_eq!(read.op, OpType::Read);
        assert_eq!(read.count, 1000);
        assert!((read.ops_per_sec - 500.0).abs() < 1e-9);
        assert!((499..=501).contains(&read.p50_us), "{}", read.p50_us);
        assert!((989..=991).contains(&read.p99_us), "{}", read.p99_us);
        assert!((998..=1000).contains(&read.p999_us), "{}", read.p999_us);
        assert_eq!(read.max_us, 1000);
        assert!((s[1].p50_us as i64 - 5000).abs() <= 5);
    }

    #[test]
    fn merging_adds_counts_errors_and_misses() {
        let mut a = ok(Recorder::new());
        let mut b = ok(Recorder::new());
        a.record(OpType::Read, Duration::from_micros(10));
        b.record(OpType::Read, Duration::from_micros(20));
        a.error(OpType::Update, "unavailable");
        b.error(OpType::Update, "unavailable");
        b.error(OpType::Read, "transport");
        b.read_miss();
        ok(a.merge(&b));
        assert_eq!(a.ok_count(), 2);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.read_misses(), 1);
        let errors = a.errors();
        assert_eq!(errors.get("update/unavailable"), Some(&2));
        assert_eq!(errors.get("read/transport"), Some(&1));
        // Operation types that never ran are left out of the summary.
        assert_eq!(a.summarize(Duration::from_secs(1)).len(), 1);
    }
}
