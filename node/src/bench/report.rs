//! Benchmark results: the report of one run, as text, as a side-by-side comparison of
//! several targets, or as JSON (the structs serialize directly).

use super::stats::OpSummary;
use super::timeline::Interval;
use super::workload::{Distribution, OpType};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The preload phase: every key written once before the measured run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PreloadReport {
    pub keys: u64,
    pub elapsed_secs: f64,
    pub ops_per_sec: f64,
    pub errors: BTreeMap<String, u64>,
}

/// One measured run against one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    pub target: String,
    pub workload: String,
    pub read_ratio: f64,
    pub distribution: Distribution,
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub elapsed_secs: f64,
    /// Successful operations.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub operations: Vec<OpSummary>,
    /// Failed operations by `op/kind`.
    pub errors: BTreeMap<String, u64>,
    /// Reads that found no value.
    pub read_misses: u64,
    /// Open loop: the scheduled total rate (latency counted from intended send times).
    pub target_rate: Option<f64>,
    pub preload: Option<PreloadReport>,
    /// ShardedStore on the load generator's own connections: operations of the measured run
    /// whose direct attempt did not succeed and that went to the client library instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_to_library: Option<u64>,
    /// `--timeline`: the length of its intervals, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline_interval_secs: Option<f64>,
    /// `--timeline`: throughput and latency per interval, by send time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Interval>,
}

impl RunReport {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn op(&self, op: OpType) -> Option<&OpSummary> {
        self.operations.iter().find(|s| s.op == op)
    }
}

/// Human-readable report of one run.
pub fn render_text(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — {} ({:.0}% reads), {} over {} keys, {}-byte values, {} clients",
        r.target,
        r.workload,
        r.read_ratio * 100.0,
        format!("{:?}", r.distribution).to_lowercase(),
        r.keys,
        r.value_size,
        r.clients
    );
    if let Some(rate) = r.target_rate {
        let _ = writeln!(
            out,
            "  open loop at {rate:.0} ops/s scheduled (latency from intended send time)"
        );
    }
    if let Some(p) = &r.preload {
        let errors: u64 = p.errors.values().sum();
        let _ = writeln!(
            out,
            "  preload: {} keys in {:.2} s ({:.0} ops/s), {errors} errors",
            p.keys, p.elapsed_secs, p.ops_per_sec
        );
    }
    let _ = writeln!(
        out,
        "  run: {} ops in {:.2} s = {:.0} ops/s, {} errors, {} read misses",
        r.ops,
        r.elapsed_secs,
        r.ops_per_sec,
        r.error_count(),
        r.read_misses
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8}  (latency in µs)",
        "op", "count", "ops/s", "mean", "p50", "p99", "p99.9", "max"
    );
    for s in &r.operations {
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10.0} {:>9.0} {:>8} {:>8} {:>8} {:>8}",
            s.op.name(),
            s.count,
            s.ops_per_sec,
            s.mean_us,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.max_us
        );
    }
    if let Some(n) = r.handed_to_library.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "  {n} operations went to the client library after their direct attempt did not succeed"
        );
    }
    for (kind, n) in &r.errors {
        let _ = writeln!(out, "  error {kind}: {n}");
    }
    if let Some(secs) = r.timeline_interval_secs {
        let _ = writeln!(
            out,
            "  by send time, every {} ms:\n  {:>8} {:>10} {:>7} {:>9} {:>9} {:>9}",
            (secs * 1000.0).round(),
            "from s",
            "ops/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        for i in &r.timeline {
            let _ = writeln!(
                out,
                "  {:>8.2} {:>10.0} {:>7} {:>9.2} {:>9.2} {:>9.2}",
                i.start_secs,
                i.ops_per_sec,
                i.errors,
                ms(i.p50_us),
                ms(i.p99_us),
                ms(i.max_us)
            );
        }
    }
    out
}

/// One line per target, same workload: throughput and read/update percentiles.
pub fn render_comparison(runs: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "target", "ops/s", "read p50", "p99", "p99.9", "upd p50", "p99", "p99.9", "errors"
    );
    let cell = |s: Option<&OpSummary>, f: fn(&OpSummary) -> u64| {
        s.map_or_else(|| "-".to_owned(), |s| f(s).to_string())
    };
    for r in runs {
        let (read, update) = (r.op(OpType::Read), r.op(OpType::Update));
        let _ = writeln!(
            out,
            "{:<28} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            r.target,
            r.ops_per_sec,
            cell(read, |s| s.p50_us),
            cell(read, |s| s.p99_us),
            cell(read, |s| s.p999_us),
            cell(update, |s| s.p50_us),
            cell(update, |s| s.p99_us),
            cell(update, |s| s.p999_us),
            r.error_count()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str) -> RunReport {
        RunReport {
            target: target.into(),
            workload: "ycsb-b".into(),
            read_ratio: 0.95,
            distribution: Distribution::Zipfian,
            clients: 4,
            keys: 100,
            value_size: 10,
            elapsed_secs: 2.0,
            ops: 2000,
            ops_per_sec: 1000.0,
            operations: vec![OpSummary {
                op: OpType::Read,
                count: 1900,
                ops_per_sec: 950.0,
                mean_us: 120.0,
                p50_us: 100,
                p99_us: 900,
                p999_us: 1500,
                max_us: 2000,
            }],
            errors: [("update/unavailable".to_owned(), 3)].into(),
            read_misses: 0,
            target_rate: None,
            preload: None,
            handed_to_library: None,
            timeline_interval_secs: None,
            timeline: Vec::new(),
        }
    }

    #[test]
    fn text_report_names_throughput_percentiles_and_errors() {
        let text = render_text(&report("shardedstore"));
        assert!(
            text.contains("2000 ops in 2.00 s = 1000 ops/s, 3 errors"),
            "{text}"
        );
        assert!(text.contains("read"), "{text}");
        assert!(text.contains("error update/unavailable: 3"), "{text}");
        assert!(!text.contains("by send time"), "{text}");
    }

    #[test]
    fn a_timeline_is_printed_one_line_per_interval() {
        let mut r = report("shardedstore");
        r.timeline_interval_secs = Some(0.25);
        r.timeline = vec![
            Interval {
                start_secs: 0.0,
                ops: 250,
                ops_per_sec: 1000.0,
                errors: 0,
                p50_us: 1500,
                p99_us: 9000,
                max_us: 12000,
            },
            Interval {
                start_secs: 0.25,
                ops: 0,
                ops_per_sec: 0.0,
                errors: 2,
                p50_us: 0,
                p99_us: 0,
                max_us: 0,
            },
        ];
        let text = render_text(&r);
        assert!(text.contains("by send time, every 250 ms"), "{text}");
        assert!(
            text.contains("0.00       1000       0      1.50      9.00     12.00"),
            "{text}"
        );
        assert!(
            text.contains("0.25          0       2      0.00      0.00      0.00"),
            "{text}"
        );
    }

    #[test]
    fn comparison_has_one_line_per_target_and_dashes_for_missing_ops() {
        let text = render_comparison(&[report("shardedstore"), report("redis")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("redis"));
        assert!(
            lines[2].contains(" 100 ") && lines[2].contains(" - "),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn json_report_is_machine_readable() {
        let json = serde_json::to_value(report("x")).unwrap_or_default();
        assert_eq!(json["operations"][0]["op"], "read");
        assert_eq!(json["distribution"], "zipfian");
        assert_eq!(json["errors"]["update/unavailable"], 3);
    }
}
