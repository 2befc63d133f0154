//! Per-phase latency of writes at a partition's primary: how long after a write reached the
//! replica it was durable locally, durable on every other member that must acknowledge it,
//! committed, applied and acknowledged to the client. The next bottleneck of the write path
//! shows as the phase whose latency jumps.
//!
//! Each partition keeps a [`Timeline`] of its writes in flight (sequence number, arrival
//! time). The replication code reports how far a phase has advanced (`reached(phase, seq)`,
//! one call per advance, covering every write up to `seq`). Writes are acknowledged at
//! commit, usually before they are applied: an acknowledged write stays on the timeline
//! until the applied phase covers it, so `applied` still counts every acknowledged write. A
//! write that fails leaves the timeline when its [`WriteTimer`] is dropped.

use prometheus::{Histogram, HistogramVec};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// A point in a write's life at the primary, in the order they normally happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePhase {
    /// The entry is in the primary's fsynced write-ahead log.
    LocalDurable,
    /// Every other member that must acknowledge (the in-sync followers and admitted
    /// learners) has it durably. Not observed when there is no such member (RF 1).
    Replicated,
    /// The commit point covers it (durable on every in-sync member, lease valid).
    Committed,
    /// Applied to the primary's data table.
    Applied,
    /// Answered to the client as successful.
    Acknowledged,
}

impl WritePhase {
    pub const ALL: [WritePhase; 5] = [
        WritePhase::LocalDurable,
        WritePhase::Replicated,
        WritePhase::Committed,
        WritePhase::Applied,
        WritePhase::Acknowledged,
    ];

    /// The `phase` label value.
    pub fn label(self) -> &'static str {
        match self {
            WritePhase::LocalDurable => "local_durable",
            WritePhase::Replicated => "replicated",
            WritePhase::Committed => "committed",
            WritePhase::Applied => "applied",
            WritePhase::Acknowledged => "acknowledged",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How far the other required members hold the log durably: the lowest acknowledged
/// position, `None` while any of them is unknown or when there is none to wait for.
pub fn replicated_through(required_acks: &[Option<u64>]) -> Option<u64> {
    let mut point: Option<u64> = None;
    for ack in required_acks {
        let a = (*ack)?;
        point = Some(point.map_or(a, |p| p.min(a)));
    }
    point
}

/// The writes of one partition in flight and how far each phase has advanced (pure: no
/// clock, no metrics).
#[derive(Debug, Default)]
pub struct Timeline {
    /// `(seq, arrival, acknowledged)`, ordered by `seq`.
    writes: VecDeque<(u64, Instant, bool)>,
    /// Per phase (except acknowledged), the sequence number it has been observed through.
    through: [u64; 4],
}

impl Timeline {
    /// Adds a write that was given `seq`. A lower `seq` than phases have been observed
    /// through means the log was cut back (a new term): those marks restart below it.
    pub fn start(&mut self, seq: u64, arrived: Instant) {
        for t in &mut self.through {
            *t = (*t).min(seq.saturating_sub(1));
        }
        let at = self.writes.partition_point(|(s, ..)| *s < seq);
        self.writes.insert(at, (seq, arrived, false));
    }

    /// Arrival times of the writes that reach `phase` now that it advanced through `upto`
    /// (each write at most once per phase).
    pub fn reached(&mut self, phase: WritePhase, upto: u64) -> Vec<Instant> {
        let Some(through) = self.through.get_mut(phase.index()) else {
            return Vec::new();
        };
        if upto <= *through {
            return Vec::new();
        }
        let from = *through;
        *through = upto;
        let lo = self.writes.partition_point(|(s, ..)| *s <= from);
        let hi = self.writes.partition_point(|(s, ..)| *s <= upto);
        let arrivals = self.writes.range(lo..hi).map(|(_, at, _)| *at).collect();
        if phase == WritePhase::Applied {
            // The last phase an acknowledged write waits for.
            self.writes.retain(|(s, _, acked)| !(*acked && *s <= upto));
        }
        arrivals
    }

    /// Removes a write that failed.
    pub fn finish(&mut self, seq: u64) {
        let at = self.writes.partition_point(|(s, ..)| *s < seq);
        if self.writes.get(at).is_some_and(|(s, ..)| *s == seq) {
            self.writes.remove(at);
        }
    }

    /// A write was acknowledged: it stays until the applied phase covers it.
    pub fn acknowledge(&mut self, seq: u64) {
        if self.through[WritePhase::Applied.index()] >= seq {
            self.finish(seq);
            return;
        }
        let at = self.writes.partition_point(|(s, ..)| *s < seq);
        if let Some(w) = self.writes.get_mut(at).filter(|(s, ..)| *s == seq) {
            w.2 = true;
        }
    }

    /// The replica's state jumped to `seq` without applying entries (a snapshot was
    /// installed): writes up to it are no longer timed.
    pub fn skip_through(&mut self, seq: u64) {
        self.writes.retain(|(s, ..)| *s > seq);
        for t in &mut self.through {
            *t = (*t).max(seq);
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.writes.len()
    }
}

/// One partition's timeline and the histograms it feeds.
pub struct WritePhases {
    timeline: Mutex<Timeline>,
    histograms: [Histogram; 5],
}

impl WritePhases {
    /// `by_phase`: the node's `shardedstore_write_phase_duration_seconds`.
    pub fn new(by_phase: &HistogramVec) -> Self {
        Self {
            timeline: Mutex::new(Timeline::default()),
            histograms: WritePhase::ALL.map(|p| by_phase.with_label_values(&[p.label()])),
        }
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts timing the write given `seq`, which reached the replica at `arrived`.
    pub fn start(&self, seq: u64, arrived: Instant) -> WriteTimer<'_> {
        self.timeline().start(seq, arrived);
        WriteTimer {
            phases: self,
            seq,
            arrived,
            acknowledged: false,
        }
    }

    /// The replica's state jumped to `seq` (a snapshot was installed): see
    /// [`Timeline::skip_through`].
    pub fn skip_through(&self, seq: u64) {
        self.timeline().skip_through(seq);
    }

    /// `phase` has advanced through `upto`: observes every write in flight it newly covers.
    pub fn reached(&self, phase: WritePhase, upto: u64) {
        let arrivals = self.timeline().reached(phase, upto);
        if arrivals.is_empty() {
            return;
        }
        let now = Instant::now();
        let h = &self.histograms[phase.index()];
        for at in arrivals {
            h.observe(now.saturating_duration_since(at).as_secs_f64());
        }
    }
}

/// A write in flight; dropping it unacknowledged (the write failed) takes the write off the
/// timeline.
pub struct WriteTimer<'a> {
    phases: &'a WritePhases,
    seq: u64,
    arrived: Instant,
    acknowledged: bool,
}

impl WriteTimer<'_> {
    /// The write is answered as successful; its apply is still timed.
    pub fn acknowledged(mut self) {
        self.phases.histograms[WritePhase::Acknowledged.index()]
            .observe(self.arrived.elapsed().as_secs_f64());
        self.phases.timeline().acknowledge(self.seq);
        self.acknowledged = true;
    }
}

impl Drop for WriteTimer<'_> {
    fn drop(&mut self) {
        if !self.acknowledged {
            self.phases.timeline().finish(self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seqs(t: &mut Timeline, phase: WritePhase, upto: u64, base: Instant) -> Vec<u64> {
        t.reached(phase, upto)
            .into_iter()
            .map(|at| at.duration_since(base).as_millis() as u64)
            .collect()
    }

    #[test]
    fn each_write_reaches_each_phase_once() {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_millis(s);
        let mut t = Timeline::default();
        for s in 1..=3 {
            t.start(s, at(s));
        }
        // Arrival times encode the sequence numbers.
        assert_eq!(seqs(&mut t, WritePhase::LocalDurable, 2, base), vec![1, 2]);
        assert_eq!(
            seqs(&mut t, WritePhase::LocalDurable, 2, base),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(&mut t, WritePhase::LocalDurable, 3, base), vec![3]);
        assert_eq!(seqs(&mut t, WritePhase::Committed, 1, base), vec![1]);
        t.finish(2);
        assert_eq!(seqs(&mut t, WritePhase::Committed, 3, base), vec![3]);
        assert_eq!(t.in_flight(), 2);
        // Acknowledged is timed by the write itself, never by an advance.
        assert!(t.reached(WritePhase::Acknowledged, 9).is_empty());
    }

    #[test]
    fn a_cut_back_log_restarts_the_marks() {
        let base = Instant::now();
        let mut t = Timeline::default();
        t.start(10, base);
        assert_eq!(t.reached(WritePhase::Applied, 10).len(), 1);
        t.finish(10);
        // New term: the log was truncated to 7, the next write is 8.
        t.start(8, base);
        assert_eq!(t.reached(WritePhase::Applied, 8).len(), 1);
    }

    #[test]
    fn finishing_an_unknown_write_changes_nothing() {
        let mut t = Timeline::default();
        t.start(5, Instant::now());
        t.finish(4);
        t.finish(6);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn replicated_waits_for_every_required_member() {
        assert_eq!(replicated_through(&[]), None);
        assert_eq!(replicated_through(&[Some(4), Some(7)]), Some(4));
        assert_eq!(replicated_through(&[Some(4), None]), None);
    }

    #[test]
    fn observations_land_in_the_phase_histogram() {
        let m = crate::metrics::NodeMetrics::new().unwrap_or_else(|e| panic!("{e}"));
        let phases = WritePhases::new(&m.write_phase_seconds);
        let timer = phases.start(1, Instant::now());
        phases.reached(WritePhase::LocalDurable, 1);
        phases.reached(WritePhase::Replicated, 1);
        timer.acknowledged();
        let count = |p: WritePhase| {
            m.write_phase_seconds
                .with_label_values(&[p.label()])
                .get_sample_count()
        };
        assert_eq!(count(WritePhase::LocalDurable), 1);
        assert_eq!(count(WritePhase::Replicated), 1);
        assert_eq!(count(WritePhase::Committed), 0);
        assert_eq!(count(WritePhase::Acknowledged), 1);
        // Acknowledged at commit: the write stays on the timeline until it is applied ...
        phases.reached(WritePhase::Committed, 1);
        assert_eq!(count(WritePhase::Committed), 1);
        phases.reached(WritePhase::Applied, 1);
        assert_eq!(count(WritePhase::Applied), 1);
        // ... and then leaves it: later advances observe nothing.
        assert_eq!(phases.timeline().in_flight(), 0);
        // A write that fails leaves at once.
        drop(phases.start(2, Instant::now()));
        phases.reached(WritePhase::LocalDurable, 2);
        assert_eq!(count(WritePhase::LocalDurable), 1);
    }

    #[test]
    fn acknowledged_writes_wait_for_the_applied_phase() {
        let base = Instant::now();
        let mut t = Timeline::default();
        for s in 1..=3 {
            t.start(s, base);
        }
        assert_eq!(t.reached(WritePhase::Committed, 3).len(), 3);
        t.acknowledge(1);
        t.acknowledge(2);
        t.finish(3);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.reached(WritePhase::Applied, 1).len(), 1);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.reached(WritePhase::Applied, 3).len(), 1);
        assert_eq!(t.in_flight(), 0);
        // Acknowledged after its apply was observed: leaves at once.
        t.start(4, base);
        assert_eq!(t.reached(WritePhase::Applied, 4).len(), 1);
        t.acknowledge(4);
        assert_eq!(t.in_flight(), 0);
        // A snapshot install skips what it covers.
        t.start(5, base);
        t.acknowledge(5);
        t.skip_through(9);
        assert_eq!(t.in_flight(), 0);
        assert!(t.reached(WritePhase::Applied, 9).is_empty());
    }
}
