//! The `make chaos` table: many runs summed up (pure).

use super::availability::Window;
use super::check::KeyVerdict;
use super::nemesis::Kind;
use super::runner::RunReport;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: usize,
    pub kinds: BTreeMap<Kind, usize>,
    pub not_injected: usize,
    /// Operations the checker accounted for (failed no-effect operations excluded).
    pub ops_checked: usize,
    /// Keys not linearizable (violations and anomalies).
    pub violations: usize,
    pub unknown: usize,
    pub lost_writes: usize,
    pub probe_acked: usize,
    /// The worst unavailability and its seed.
    pub worst: Option<(u64, Window)>,
    /// Per fault kind, the worst unavailability it was active around (ms).
    pub worst_by_kind: BTreeMap<Kind, u64>,
    /// Seeds that found something (violation, anomaly, unknown verdict, lost write).
    pub failing: Vec<u64>,
    /// Seeds whose run did not complete (the store did not heal, a final read never
    /// succeeded), with the error.
    pub errors: Vec<(u64, String)>,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, seed: u64, run: &Result<RunReport, String>) {
        self.seeds += 1;
        let r = match run {
            Ok(r) => r,
            Err(e) => {
                self.errors.push((seed, e.clone()));
                return;
            }
        };
        for (k, n) in &r.kinds {
            *self.kinds.entry(*k).or_insert(0) += n;
        }
        self.not_injected += r.not_injected;
        for (k, ms) in &r.worst_by_kind {
            let w = self.worst_by_kind.entry(*k).or_insert(0);
            *w = (*w).max(*ms);
        }
        for k in &r.keys {
            self.ops_checked += k.relevant;
            match k.verdict {
                KeyVerdict::Linearizable => {}
                KeyVerdict::Unknown { .. } => self.unknown += 1,
                KeyVerdict::Anomaly(_) | KeyVerdict::Violation { .. } => self.violations += 1,
            }
        }
        self.lost_writes += r.lost.len();
        self.probe_acked += r.probe_acked;
        if let Some(w) = &r.worst
            && self
                .worst
                .as_ref()
                .is_none_or(|(_, x)| w.unavailable_ms > x.unavailable_ms)
        {
            self.worst = Some((seed, w.clone()));
        }
        if r.failed() {
            self.failing.push(seed);
        }
    }

    /// Total faults injected (an overlap counts once).
    pub fn faults(&self) -> usize {
        self.kinds
            .iter()
            .filter(|(k, _)| **k != Kind::Overlap)
            .map(|(_, n)| n)
            .sum::<usize>()
            - self.kinds.get(&Kind::Overlap).copied().unwrap_or(0)
    }

    /// The table as Markdown.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let worst = self.worst.as_ref().map_or("-".to_owned(), |(seed, w)| {
            format!(
                "{:.1} s (seed {seed}, partition {})",
                w.unavailable_ms as f64 / 1000.0,
                w.partition
            )
        });
        let _ = writeln!(
            s,
            "| seeds | faults | operations checked | violations | lost writes | unknown verdicts | runs not healed | worst unavailability |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} of {} | {} | {} | {} |",
            self.seeds,
            self.faults(),
            self.ops_checked,
            self.violations,
            self.lost_writes,
            self.probe_acked,
            self.unknown,
            self.errors.len(),
            worst
        );
        let _ = writeln!(s);
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        let _ = writeln!(s, "| | {} | not injected |", names.join(" | "));
        let _ = writeln!(s, "|---|{}---|", "---|".repeat(names.len()));
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|k| self.kinds.get(k).copied().unwrap_or(0).to_string())
            .collect();
        let _ = writeln!(
            s,
            "| injected | {} | {} |",
            counts.join(" | "),
            self.not_injected
        );
        let worst: Vec<String> = Kind::ALL
            .iter()
            .map(|k| {
                self.worst_by_kind
                    .get(k)
                    .map_or("-".to_owned(), |ms| format!("{:.1}", *ms as f64 / 1000.0))
            })
            .collect();
        let _ = writeln!(s, "| worst unavailability (s) | {} | |", worst.join(" | "));
        if let Some((seed, w)) = &self.worst {
            let _ = writeln!(
                s,
                "\nWorst unavailability: seed {seed}, partition {}, {}..{} ms, around: {}",
                w.partition,
                w.from_ms,
                w.to_ms,
                if w.causes.is_empty() {
                    "no fault".to_owned()
                } else {
                    w.causes.join("; ")
                }
            );
        }
        if !self.failing.is_empty() {
            let _ = writeln!(s, "\nFailing seeds: {:?}", self.failing);
        }
        for (seed, e) in &self.errors {
            let first = e.lines().next().unwrap_or_default();
            let _ = writeln!(s, "\nSeed {seed} did not complete: {first}");
        }
        s
    }
}

/// Parses a run length such as `90`, `90s`, `30m` or `2h` (`CHAOS_DURATION`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m or 2h"))?;
    let secs = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        _ => return Err(format!("{text:?}: unit must be s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bad_ones_are_refused() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("30m"), Ok(1800));
        assert_eq!(d(" 2h "), Ok(7200));
        assert!(d("2d").is_err());
        assert!(d("m").is_err());
        assert!(d("ten").is_err());
    }
    use crate::checker::check::KeyReport;
    use crate::checker::runner::Counts;

    fn report(seed: u64, verdict: KeyVerdict, lost: usize, worst_ms: u64) -> RunReport {
        RunReport {
            seed,
            counts: Counts::default(),
            faults: Vec::new(),
            kinds: [
                (Kind::Kill, 2),
                (Kind::Overlap, 1),
                (Kind::Scale, 1),
                (Kind::Isolate, 1),
            ]
            .into_iter()
            .collect(),
            not_injected: 1,
            keys: vec![KeyReport {
                key: "k".into(),
                relevant: 100,
                verdict,
            }],
            probe_acked: 50,
            lost: (0..lost).map(|i| format!("probe-{i}")).collect(),
            worst: Some(Window {
                partition: 3,
                from_ms: 1000,
                to_ms: 1000 + worst_ms,
                unavailable_ms: worst_ms,
                causes: vec!["1000 ms kill -9 node-1".into()],
            }),
            worst_by_kind: [(Kind::Kill, worst_ms), (Kind::Isolate, worst_ms * 3 / 5)]
                .into_iter()
                .collect(),
            history_file: None,
        }
    }

    #[test]
    fn totals_count_faults_verdicts_losses_and_the_worst_window() {
        let mut s = Summary::default();
        s.add(1, &Ok(report(1, KeyVerdict::Linearizable, 0, 800)));
        s.add(
            2,
            &Ok(report(
                2,
                KeyVerdict::Unknown { steps: 9, from: 0 },
                2,
                2500,
            )),
        );
        s.add(3, &Err("did not heal".into()));
        assert_eq!(s.seeds, 3);
        // Per run: 2 kills, a scale and an isolation, two of them as one overlap.
        assert_eq!(s.faults(), 2 * 3);
        assert_eq!((s.ops_checked, s.violations, s.unknown), (200, 0, 1));
        assert_eq!((s.lost_writes, s.probe_acked, s.not_injected), (2, 100, 2));
        assert_eq!(s.failing, vec![2]);
        assert_eq!(s.errors.len(), 1);
        let (seed, w) = s.worst.clone().unwrap_or_else(|| panic!("no worst"));
        assert_eq!((seed, w.unavailable_ms), (2, 2500));
        let table = s.render();
        assert!(
            table.contains("| 3 | 6 | 200 | 0 | 2 of 100 | 1 | 1 | 2.5 s (seed 2, partition 3) |"),
            "{table}"
        );
        assert!(table.contains("Failing seeds: [2]"));
        // Kill, stop, pause, op-kill, scale, isolate: the worst of the runs per kind.
        assert!(
            table.contains("| worst unavailability (s) | 2.5 | - | - | - | - | 1.5 | - |"),
            "{table}"
        );
        assert!(
            table.contains("| injected | 4 | 0 | 0 | 0 | 2 | 2 |"),
            "{table}"
        );
    }
}
