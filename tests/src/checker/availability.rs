//! Unavailability windows (pure): for each partition, the longest stretch without an
//! acknowledged probe write, counting only the time during which a majority of the
//! partition's replicas were healthy (not killed, frozen or cut off by the nemesis), and
//! the faults active around it.

use super::nemesis::Kind;
use super::nemesis::inject::Record;
use std::collections::BTreeMap;

/// One probe write: a unique key of `partition`, acknowledged (`ok`) or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOp {
    pub partition: u32,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub ok: bool,
}

/// The replicas of every partition (indexed by partition) as of `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSample {
    pub at_ms: u64,
    pub replicas: Vec<Vec<String>>,
}

/// The worst unavailability of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub partition: u32,
    /// The last acknowledged write before the window and the first after it (or the ends of
    /// the measured span).
    pub from_ms: u64,
    pub to_ms: u64,
    /// Time inside the window during which a majority of the replicas was healthy.
    pub unavailable_ms: u64,
    /// The faults active within a second before the window or during it.
    pub causes: Vec<String>,
}

/// Resolution of the healthy-majority accounting.
const STEP_MS: u64 = 10;

/// How long before a window a fault still counts as its cause.
const CAUSE_LEAD_MS: u64 = 1000;

fn majority_healthy(
    partition: usize,
    t: u64,
    samples: &[ReplicaSample],
    records: &[Record],
) -> bool {
    let Some(sample) = samples
        .iter()
        .rev()
        .find(|s| s.at_ms <= t)
        .or_else(|| samples.first())
    else {
        return true;
    };
    let Some(replicas) = sample.replicas.get(partition) else {
        return true;
    };
    let healthy = replicas
        .iter()
        .filter(|r| {
            !records
                .iter()
                .flat_map(|rec| &rec.unhealthy)
                .any(|u| &u.node == *r && u.from_ms <= t && t < u.to_ms)
        })
        .count();
    healthy * 2 > replicas.len()
}

/// The stretches between acknowledged probe writes of `partition` (and the ends of `span`).
fn gaps(partition: u32, probes: &[ProbeOp], span: (u64, u64)) -> Vec<(u64, u64)> {
    let mut marks: Vec<u64> = probes
        .iter()
        .filter(|o| o.partition == partition && o.ok)
        .map(|o| o.complete_ms.clamp(span.0, span.1))
        .collect();
    marks.push(span.0);
    marks.push(span.1);
    marks.sort_unstable();
    marks.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Time within `a..b` during which a majority of `partition`'s replicas was healthy.
fn unavailable(
    partition: u32,
    (a, b): (u64, u64),
    samples: &[ReplicaSample],
    records: &[Record],
) -> u64 {
    (a..b)
        .step_by(STEP_MS as usize)
        .filter(|t| majority_healthy(partition as usize, *t, samples, records))
        .count() as u64
        * STEP_MS
}

/// The faults active within a second before `from..to` or during it.
fn around(records: &[Record], (from, to): (u64, u64)) -> impl Iterator<Item = &Record> {
    records
        .iter()
        .filter(move |r| r.start_ms <= to && r.end_ms + CAUSE_LEAD_MS >= from)
}

/// The longest unavailability over all partitions within `span` (ms since the run start).
pub fn worst_window(
    partitions: u32,
    probes: &[ProbeOp],
    samples: &[ReplicaSample],
    records: &[Record],
    span: (u64, u64),
) -> Option<Window> {
    let mut worst: Option<Window> = None;
    for p in 0..partitions {
        for (a, b) in gaps(p, probes, span) {
            let unavailable = unavailable(p, (a, b), samples, records);
            if worst
                .as_ref()
                .is_none_or(|x| unavailable > x.unavailable_ms)
            {
                worst = Some(Window {
                    partition: p,
                    from_ms: a,
                    to_ms: b,
                    unavailable_ms: unavailable,
                    causes: Vec::new(),
                });
            }
        }
    }
    worst.map(|mut w| {
        w.causes = around(records, (w.from_ms, w.to_ms))
            .map(|r| format!("{} ms {}", r.start_ms, r.what))
            .collect();
        w
    })
}

/// For every fault kind injected, the longest unavailability (as in [`worst_window`]) of a
/// stretch that a fault of that kind was active around: how long each kind of fault kept a
/// partition from taking writes while a majority of its replicas was healthy.
pub fn worst_by_kind(
    partitions: u32,
    probes: &[ProbeOp],
    samples: &[ReplicaSample],
    records: &[Record],
    span: (u64, u64),
) -> BTreeMap<Kind, u64> {
    let mut worst: BTreeMap<Kind, u64> = records
        .iter()
        .flat_map(|r| r.kinds.iter().map(|k| (*k, 0)))
        .collect();
    for p in 0..partitions {
        for gap in gaps(p, probes, span) {
            let unavailable = unavailable(p, gap, samples, records);
            for k in around(records, gap).flat_map(|r| &r.kinds) {
                let w = worst.entry(*k).or_insert(0);
                *w = (*w).max(unavailable);
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::nemesis::inject::Unhealthy;

    fn ok(partition: u32, at: u64) -> ProbeOp {
        ProbeOp {
            partition,
            invoke_ms: at.saturating_sub(5),
            complete_ms: at,
            ok: true,
        }
    }

    fn sample() -> Vec<ReplicaSample> {
        let r = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        vec![ReplicaSample {
            at_ms: 0,
            replicas: vec![r.clone(), r],
        }]
    }

    fn record(start: u64, end: u64, nodes: &[&str]) -> Record {
        Record {
            kinds: Vec::new(),
            what: format!("fault at {start}"),
            start_ms: start,
            end_ms: end,
            unhealthy: nodes
                .iter()
                .map(|n| Unhealthy {
                    node: (*n).to_owned(),
                    from_ms: start,
                    to_ms: end,
                })
                .collect(),
        }
    }

    #[test]
    fn the_longest_gap_between_acknowledged_writes_is_reported_with_its_cause() {
        let mut probes: Vec<ProbeOp> = (0..=100).map(|i| ok(0, i * 100)).collect();
        probes.extend((0..=30).map(|i| ok(1, i * 100)));
        probes.extend((70..=100).map(|i| ok(1, i * 100)));
        // One node of three is down: a majority stays healthy, so the whole gap counts.
        let records = vec![record(3100, 3500, &["a"])];
        let w = worst_window(2, &probes, &sample(), &records, (0, 10_000))
            .unwrap_or_else(|| panic!("no window"));
        assert_eq!((w.partition, w.from_ms, w.to_ms), (1, 3000, 7000));
        assert_eq!(w.unavailable_ms, 4000);
        assert_eq!(w.causes, vec!["3100 ms fault at 3100".to_owned()]);
    }

    #[test]
    fn time_without_a_healthy_majority_does_not_count() {
        let mut probes: Vec<ProbeOp> = (0..=10).map(|i| ok(0, i * 100)).collect();
        probes.extend((50..=60).map(|i| ok(0, i * 100)));
        // Two of three replicas down for 3 s of the 4 s gap.
        let records = vec![record(1500, 4500, &["a", "b"])];
        let w = worst_window(1, &probes, &sample(), &records, (0, 6000))
            .unwrap_or_else(|| panic!("no window"));
        assert_eq!((w.from_ms, w.to_ms), (1000, 5000));
        assert_eq!(w.unavailable_ms, 1000);
    }

    #[test]
    fn each_kind_is_charged_the_worst_stretch_it_was_active_around() {
        let mut probes: Vec<ProbeOp> = (0..=10).map(|i| ok(0, i * 100)).collect();
        probes.extend((30..=60).map(|i| ok(0, i * 100)));
        probes.extend((90..=100).map(|i| ok(0, i * 100)));
        let mut kill = record(1100, 1200, &["a"]);
        kill.kinds = vec![Kind::Kill];
        let mut hang = record(6500, 6600, &["b"]);
        hang.kinds = vec![Kind::Overlap, Kind::DiskHang, Kind::Isolate];
        let mut scale = record(4000, 4000, &[]);
        scale.kinds = vec![Kind::Scale];
        let w = worst_by_kind(1, &probes, &sample(), &[kill, hang, scale], (0, 10_000));
        // kill: the 1000..3000 gap; the hang and the isolation of the overlap: 6000..9000; the
        // scale step happened while writes went on (gaps of 100 ms around it).
        let expect: BTreeMap<Kind, u64> = [
            (Kind::Kill, 2000),
            (Kind::Overlap, 3000),
            (Kind::DiskHang, 3000),
            (Kind::Isolate, 3000),
            (Kind::Scale, 100),
        ]
        .into_iter()
        .collect();
        assert_eq!(w, expect);
    }

    #[test]
    fn a_partition_never_written_is_unavailable_for_the_whole_span() {
        let probes = vec![ok(0, 100)];
        let w = worst_window(2, &probes, &sample(), &[], (0, 2000))
            .unwrap_or_else(|| panic!("no window"));
        assert_eq!((w.partition, w.unavailable_ms), (1, 2000));
        assert!(w.causes.is_empty());
    }
}
