//! Throughput and latency per interval of the measured run (`bench --timeline`).
//!
//! Operations are grouped by their send time (the intended send time in an open loop), not by
//! when they answered: a stall of the server then shows as the intervals whose operations
//! waited, with their p99 and max, instead of vanishing into the whole run's percentiles.
//! Each client keeps the send interval and latency of each of its operations (8 bytes); they
//! are merged and reduced once the run is over.

use serde::Serialize;
use std::time::{Duration, Instant};

/// The shortest interval a timeline takes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What one client measured: its operations by interval.
#[derive(Clone, Debug)]
pub struct Timeline {
    interval: Duration,
    /// `(interval, latency in µs)` of each successful operation, in the order they ended.
    ok: Vec<(u32, u32)>,
    /// The interval of each failed operation.
    errors: Vec<u32>,
}

/// One interval of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interval {
    /// Start of the interval, in seconds after the measured run began.
    pub start_secs: f64,
    /// Successful operations sent in the interval.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Timeline {
    /// `interval` is raised to [`MIN_INTERVAL`] if shorter.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(MIN_INTERVAL),
            ok: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The length of its intervals.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn slot(&self, start: Instant, sent: Instant) -> u32 {
        let n = sent.saturating_duration_since(start).as_nanos() / self.interval.as_nanos();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// A successful operation sent at `sent` that took `latency`.
    pub fn ok(&mut self, start: Instant, sent: Instant, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.ok.push((self.slot(start, sent), micros));
    }

    /// A failed operation sent at `sent`.
    pub fn error(&mut self, start: Instant, sent: Instant) {
        self.errors.push(self.slot(start, sent));
    }

    /// Adds another client's measurements (same interval).
    pub fn merge(&mut self, other: Timeline) {
        self.ok.extend(other.ok);
        self.errors.extend(other.errors);
    }

    /// The intervals from the run's start to the last one in which an operation was sent,
    /// empty ones included (nothing sent: every client was waiting for an answer).
    pub fn intervals(mut self) -> Vec<Interval> {
        self.ok.sort_unstable();
        self.errors.sort_unstable();
        let Some(last) = self
            .ok
            .last()
            .map(|&(s, _)| s)
            .max(self.errors.last().copied())
        else {
            return Vec::new();
        };
        let secs = self.interval.as_secs_f64();
        let (mut ok, mut errors) = (self.ok.as_slice(), self.errors.as_slice());
        (0..=u64::from(last))
            .map(|i| {
                // Both are sorted: this interval's operations lead what is left.
                let (here, rest) = ok.split_at(ok.partition_point(|&(s, _)| u64::from(s) <= i));
                ok = rest;
                let failed = errors.partition_point(|&s| u64::from(s) <= i);
                errors = &errors[failed..];
                // Sorted by latency within the interval.
                let lat: Vec<u32> = here.iter().map(|&(_, l)| l).collect();
                let ops = lat.len() as u64;
                Interval {
                    start_secs: i as f64 * secs,
                    ops,
                    ops_per_sec: ops as f64 / secs,
                    errors: failed as u64,
                    p50_us: rank(&lat, 0.50),
                    p99_us: rank(&lat, 0.99),
                    max_us: lat.last().copied().map_or(0, u64::from),
                }
            })
            .collect()
    }
}

/// The nearest-rank `q` quantile of sorted values (0 when there are none).
fn rank(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let r = (q * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[r.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_fall_in_the_interval_they_were_sent_in_and_gaps_stay_visible() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Timeline::new(ms(100));
        let mut b = Timeline::new(ms(100));
        // Interval 0: latencies 1..=100 ms over two clients; interval 2: one slow operation;
        // interval 1: nothing sent; interval 3: one failure.
        for i in 1..=100u64 {
            let t = if i % 2 == 0 { &mut a } else { &mut b };
            t.ok(start, start + ms(i % 100), ms(i));
        }
        b.ok(start, start + ms(250), ms(900));
        a.error(start, start + ms(399));
        a.merge(b);
        let iv = a.intervals();
        assert_eq!(iv.len(), 4);
        assert_eq!((iv[0].ops, iv[0].errors), (100, 0));
        assert_eq!(iv[0].p50_us, 50_000);
        assert_eq!(iv[0].p99_us, 99_000);
        assert_eq!(iv[0].max_us, 100_000);
        assert!((iv[0].ops_per_sec - 1000.0).abs() < 1e-9);
        assert_eq!((iv[1].ops, iv[1].p99_us, iv[1].max_us), (0, 0, 0));
        assert_eq!(
            (iv[2].ops, iv[2].p50_us, iv[2].max_us),
            (1, 900_000, 900_000)
        );
        assert!((iv[2].start_secs - 0.2).abs() < 1e-9);
        assert_eq!((iv[3].ops, iv[3].errors), (0, 1));
    }

    #[test]
    fn a_run_without_operations_has_no_intervals() {
        assert!(Timeline::new(Duration::from_secs(1)).intervals().is_empty());
    }

    #[test]
    fn an_interval_below_the_minimum_is_raised_to_it() {
        let start = Instant::now();
        let mut t = Timeline::new(Duration::from_micros(1));
        t.ok(
            start,
            start + Duration::from_millis(15),
            Duration::from_millis(1),
        );
        let iv = t.intervals();
        assert_eq!(iv.len(), 2);
        assert!((iv[1].start_secs - 0.01).abs() < 1e-9);
    }
}
