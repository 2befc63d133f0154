//! The load driver, after a preload phase that writes every key once.
//!
//! - Closed loop (default): each client task issues its next operation as soon as the previous
//!   one answered.
//! - Open loop (`rate`): operations are scheduled at a fixed total rate, spread evenly over
//!   the clients, and latency is measured from each operation's *intended* send time. A client
//!   that falls behind sends at once, and the time it spent behind counts as latency, so a
//!   stalled server cannot hide its queueing (no coordinated omission).

use super::BenchError;
use super::report::{PreloadReport, RunReport};
use super::stats::Recorder;
use super::target::{Session, Target};
use super::timeline::Timeline;
use super::workload::{Chooser, Distribution, OpType, key_name};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    /// After this many operations in total (successful or not).
    Ops(u64),
}

/// Everything a run needs, target aside.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub read_ratio: f64,
    /// Name in reports: a preset (`ycsb-a`) or `custom`.
    pub workload: String,
    pub distribution: Distribution,
    pub stop: Stop,
    pub preload: bool,
    /// Seed of the per-client random streams (same seed, same operation sequence).
    pub seed: u64,
    /// Open loop: total operations per second over all clients; `None` is a closed loop.
    pub rate: Option<f64>,
    /// Also measure throughput and latency per interval of this length ([`Timeline`]).
    pub timeline: Option<Duration>,
}

/// Open-loop schedule of one client: its k-th operation is due at `start + offset + k·interval`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Schedule {
    interval: Duration,
    offset: Duration,
}

impl Schedule {
    /// Client `i` of `clients` sharing `rate` operations per second; staggered so the clients'
    /// sends interleave instead of arriving in bursts.
    fn new(rate: f64, clients: usize, i: usize) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(clients as f64 / rate).ok()?;
        let offset = interval.mul_f64(i as f64 / clients as f64);
        Some(Self { interval, offset })
    }

    fn due(&self, start: Instant, k: u32) -> Instant {
        start + self.offset + self.interval * k
    }
}

/// Runs of more than this share of failed preload writes abort: measuring a store that
/// cannot take writes says nothing.
const MAX_PRELOAD_FAILURES: f64 = 0.01;

/// Preload (if configured), then the measured closed loop; returns the report.
pub async fn run<T: Target>(target: &T, cfg: &BenchConfig) -> Result<RunReport, BenchError> {
    let clients = cfg.clients.max(1);
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(target.session().await?);
    }
    let preload = if cfg.preload {
        let (report, returned) = preload(sessions, cfg).await?;
        sessions = returned;
        Some(report)
    } else {
        None
    };
    let chooser = Chooser::new(cfg.read_ratio, cfg.keys, cfg.distribution);
    let handed_before = target.handed_over();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match cfg.stop {
        Stop::After(d) => Some(start + d),
        Stop::Ops(_) => None,
    };
    let budget = match cfg.stop {
        Stop::Ops(n) => n,
        Stop::After(_) => u64::MAX,
    };
    let mut tasks = Vec::with_capacity(clients);
    for (i, mut session) in sessions.into_iter().enumerate() {
        let (chooser, issued) = (chooser.clone(), issued.clone());
        let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let value = random_value(&mut rng, cfg.value_size);
        let mut rec = Recorder::new()?;
        let schedule = cfg.rate.and_then(|r| Schedule::new(r, clients, i));
        let mut timeline = cfg.timeline.map(Timeline::new);
        tasks.push(tokio::spawn(async move {
            let mut k: u32 = 0;
            while deadline.is_none_or(|d| Instant::now() < d)
                && issued.fetch_add(1, Ordering::Relaxed) < budget
            {
                let op = chooser.op(rng.random());
                let key = key_name(chooser.key(rng.random()));
                let t0 = match schedule {
                    Some(s) => {
                        let due = s.due(start, k);
                        k = k.saturating_add(1);
                        if deadline.is_some_and(|d| due >= d) {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let result = match op {
                    OpType::Read => session.read(&key).await,
                    OpType::Update => session.write(&key, value.clone()).await.map(|()| true),
                };
                match result {
                    Ok(found) => {
                        let latency = t0.elapsed();
                        rec.record(op, latency);
                        if let Some(t) = timeline.as_mut() {
                            t.ok(start, t0, latency);
                        }
                        if !found {
                            rec.read_miss();
                        }
                    }
                    Err(kind) => {
                        rec.error(op, kind);
                        if let Some(t) = timeline.as_mut() {
                            t.error(start, t0);
                        }
                    }
                }
            }
            (rec, timeline)
        }));
    }
    let mut total = Recorder::new()?;
    let mut timeline: Option<Timeline> = None;
    for t in tasks {
        let (rec, tl) = t.await.map_err(BenchError::Task)?;
        total.merge(&rec)?;
        match (timeline.as_mut(), tl) {
            (Some(all), Some(tl)) => all.merge(tl),
            (None, tl) => timeline = tl,
            (Some(_), None) => {}
        }
    }
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    Ok(RunReport {
        target: target.name(),
        workload: cfg.workload.clone(),
        read_ratio: cfg.read_ratio,
        distribution: cfg.distribution,
        clients,
        keys: cfg.keys,
        value_size: cfg.value_size,
        elapsed_secs: secs,
        ops: total.ok_count(),
        ops_per_sec: total.ok_count() as f64 / secs,
        operations: total.summarize(elapsed),
        errors: total.errors(),
        read_misses: total.read_misses(),
        target_rate: cfg.rate,
        preload,
        handed_to_library: target
            .handed_over()
            .map(|n| n.saturating_sub(handed_before.unwrap_or(0))),
        timeline_interval_secs: timeline.as_ref().map(|t| t.interval().as_secs_f64()),
        timeline: timeline.map(Timeline::intervals).unwrap_or_default(),
    })
}

fn random_value(rng: &mut SmallRng, size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

/// Write every key once, the key space split round-robin over the sessions.
async fn preload<S: Session>(
    sessions: Vec<S>,
    cfg: &BenchConfig,
) -> Result<(PreloadReport, Vec<S>), BenchError> {
    let n = sessions.len() as u64;
    let start = Instant::now();
    // Every client stops once the failures exceed what the run may have, or once as many
    // writes in a row failed as there are clients (no client got a write through in its
    // last retry window): a store that went away mid-preload would otherwise be tried for
    // every remaining key, each write for the client's whole retry window.
    let allowed = (cfg.keys as f64 * MAX_PRELOAD_FAILURES) as u64;
    let failures = Arc::new(AtomicU64::new(0));
    let in_a_row = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, mut session) in sessions.into_iter().enumerate() {
        let (keys, seed, size) = (cfg.keys, cfg.seed, cfg.value_size);
        let (failures, in_a_row) = (failures.clone(), in_a_row.clone());
        let mut rec = Recorder::new()?;
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(i as u64));
            let value = random_value(&mut rng, size);
            let mut k = i as u64;
            while k < keys
                && failures.load(Ordering::Relaxed) <= allowed
                && in_a_row.load(Ordering::Relaxed) < n
            {
                let t0 = Instant::now();
                match session.write(&key_name(k), value.clone()).await {
                    Ok(()) => {
                        rec.record(OpType::Update, t0.elapsed());
                        in_a_row.store(0, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        rec.error(OpType::Update, kind);
                        failures.fetch_add(1, Ordering::Relaxed);
                        in_a_row.fetch_add(1, Ordering::Relaxed);
                    }
                }
                k += n;
            }
            (session, rec)
        }));
    }
    let mut total = Recorder::new()?;
    let mut sessions = Vec::new();
    for t in tasks {
        let (session, rec) = t.await.map_err(BenchError::Task)?;
        total.merge(&rec)?;
        sessions.push(session);
    }
    let elapsed = start.elapsed().as_secs_f64().max(f64::EPSILON);
    let failed = total.error_count();
    if failed > allowed || in_a_row.load(Ordering::Relaxed) >= n {
        return Err(BenchError::Preload {
            failed,
            tried: failed + total.ok_count(),
            keys: cfg.keys,
            errors: total
                .errors()
                .into_iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let report = PreloadReport {
        keys: cfg.keys,
        elapsed_secs: elapsed,
        ops_per_sec: total.ok_count() as f64 / elapsed,
        errors: total.errors(),
    };
    Ok((report, sessions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory target that fails every `fail_every`-th write with `unavailable`.
    #[derive(Clone, Default)]
    struct Memory {
        data: Arc<Mutex<HashMap<String, Bytes>>>,
        writes: Arc<AtomicU64>,
        fail_every: u64,
    }

    impl Session for Memory {
        async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
            Ok(self.data.lock().map_err(|_| "poisoned")?.contains_key(key))
        }
        async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
            let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
                return Err("unavailable");
            }
            self.data
                .lock()
                .map_err(|_| "poisoned")?
                .insert(key.to_owned(), value);
            Ok(())
        }
    }

    impl Target for Memory {
        type Session = Memory;
        fn name(&self) -> String {
            "memory".into()
        }
        async fn session(&self) -> Result<Memory, BenchError> {
            Ok(self.clone())
        }
    }

    fn cfg(stop: Stop, read_ratio: f64) -> BenchConfig {
        BenchConfig {
            clients: 4,
            keys: 100,
            value_size: 16,
            read_ratio,
            workload: "custom".into(),
            distribution: Distribution::Uniform,
            stop,
            preload: true,
            seed: 1,
            rate: None,
            timeline: None,
        }
    }

    #[tokio::test]
    async fn an_ops_budget_runs_exactly_that_many_operations_after_preload() {
        let target = Memory::default();
        let report = run(&target, &cfg(Stop::Ops(1000), 0.5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.ops, 1000);
        assert_eq!(report.read_misses, 0, "preload wrote every key");
        assert_eq!(target.data.lock().map(|d| d.len()).unwrap_or(0), 100);
        let preload = report.preload.unwrap_or_else(|| panic!("no preload"));
        assert_eq!(preload.keys, 100);
        let reads = report
            .operations
            .iter()
            .find(|s| s.op == OpType::Read)
            .map_or(0, |s| s.count);
        assert!((400..600).contains(&reads), "{reads}");
        // 100 preload writes plus the measured updates all reached the target.
        let updates = 1000 - reads;
        assert_eq!(target.writes.load(Ordering::SeqCst), 100 + updates);
    }

    #[tokio::test]
    async fn errors_are_counted_by_kind_and_excluded_from_throughput() {
        let target = Memory {
            fail_every: 10,
            ..Memory::default()
        };
        let mut c = cfg(Stop::Ops(500), 0.0);
        c.preload = false;
        let report = run(&target, &c).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.errors.get("update/unavailable"), Some(&50));
        assert_eq!(report.ops, 450);
        assert!(report.timeline.is_empty() && report.timeline_interval_secs.is_none());
    }

    #[tokio::test]
    async fn a_timeline_accounts_for_every_operation_of_the_run() {
        let target = Memory {
            fail_every: 10,
            ..Memory::default()
        };
        let mut c = cfg(Stop::After(Duration::from_millis(120)), 0.0);
        c.preload = false;
        c.rate = Some(2000.0);
        c.timeline = Some(Duration::from_millis(20));
        let report = run(&target, &c).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.timeline_interval_secs, Some(0.02));
        // Grouped by intended send time, all before the 120 ms deadline: six intervals at
        // most, however late the clients ran.
        assert!(
            (1..=6).contains(&report.timeline.len()),
            "{:?}",
            report.timeline
        );
        for (i, iv) in report.timeline.iter().enumerate() {
            assert!((iv.start_secs - 0.02 * i as f64).abs() < 1e-9, "{iv:?}");
        }
        let ops: u64 = report.timeline.iter().map(|i| i.ops).sum();
        let errors: u64 = report.timeline.iter().map(|i| i.errors).sum();
        assert_eq!((ops, errors), (report.ops, report.error_count()));
        assert!(errors > 0);
    }

    #[tokio::test]
    async fn a_failing_preload_aborts_the_run() {
        let target = Memory {
            fail_every: 2,
            ..Memory::default()
        };
        let err = run(&target, &cfg(Stop::Ops(10), 0.5)).await;
        // 1 % of 100 keys may fail: the clients stop soon after the second failure (each
        // finishes the write it has under way), long before trying all 100 keys.
        match err {
            Err(BenchError::Preload {
                failed,
                tried,
                keys: 100,
                ..
            }) => assert!(
                (2..=8).contains(&failed) && tried < 20,
                "{failed} of {tried}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_preload_whose_writes_all_fail_stops_after_one_failure_per_client() {
        let target = Memory {
            fail_every: 1,
            ..Memory::default()
        };
        let mut c = cfg(Stop::Ops(10), 0.5);
        c.keys = 100_000;
        let err = run(&target, &c).await;
        match err {
            Err(BenchError::Preload { failed, tried, .. }) => {
                assert!(
                    (4..=8).contains(&failed) && tried == failed,
                    "{failed} of {tried}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_duration_bound_run_stops_in_time() {
        let target = Memory::default();
        let t0 = Instant::now();
        let report = run(&target, &cfg(Stop::After(Duration::from_millis(200)), 0.9))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(report.ops > 0 && report.elapsed_secs >= 0.2);
    }

    #[test]
    fn an_open_loop_schedule_spreads_the_rate_over_staggered_clients() {
        let s0 = Schedule::new(1000.0, 4, 0).unwrap_or_else(|| panic!("schedule"));
        let s1 = Schedule::new(1000.0, 4, 1).unwrap_or_else(|| panic!("schedule"));
        assert_eq!(s0.interval, Duration::from_millis(4));
        assert_eq!(s1.offset, Duration::from_millis(1));
        let start = Instant::now();
        assert_eq!(s1.due(start, 2) - start, Duration::from_millis(9));
        assert!(Schedule::new(0.0, 4, 0).is_none());
        assert!(Schedule::new(f64::NAN, 4, 0).is_none());
    }

    /// A target whose every operation takes `delay`: a closed loop never sees more than
    /// `delay` per operation, an open loop above the target's capacity sees the queue grow.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
    }

    impl Session for Slow {
        async fn read(&mut self, _key: &str) -> Result<bool, &'static str> {
            tokio::time::sleep(self.delay).await;
            Ok(true)
        }
        async fn write(&mut self, _key: &str, _value: Bytes) -> Result<(), &'static str> {
            tokio::time::sleep(self.delay).await;
            Ok(())
        }
    }

    impl Target for Slow {
        type Session = Slow;
        fn name(&self) -> String {
            "slow".into()
        }
        async fn session(&self) -> Result<Slow, BenchError> {
            Ok(self.clone())
        }
    }

    #[tokio::test]
    async fn an_open_loop_above_capacity_counts_queueing_as_latency() {
        let target = Slow {
            delay: Duration::from_millis(10),
        };
        let mut c = cfg(Stop::After(Duration::from_millis(600)), 1.0);
        c.preload = false;
        c.clients = 1;
        // One client can do at most ~100 ops/s; ask for 400/s.
        c.rate = Some(400.0);
        let open = run(&target, &c).await.unwrap_or_else(|e| panic!("{e}"));
        c.rate = None;
        let closed = run(&target, &c).await.unwrap_or_else(|e| panic!("{e}"));
        let p99 = |r: &RunReport| r.operations.iter().map(|o| o.p99_us).max().unwrap_or(0);
        assert!(p99(&closed) < 100_000, "closed loop p99 {}", p99(&closed));
        assert!(
            p99(&open) > 200_000,
            "open loop p99 {} should include the growing queue",
            p99(&open)
        );
        assert_eq!(open.target_rate, Some(400.0));
    }
}
