//! How many bytes a replica's retained log holds, in runs of consecutive entries, so that
//! compaction can keep the log behind the applied point within a byte budget
//! (`--log-window-bytes`) as well as within `--log-window` entries.
//!
//! An entry count alone does not bound the disk: 100 000 entries of 16 KiB are 1.6 GB per
//! partition. Keeping one counter per entry would cost memory of its own, so entries are
//! counted in runs of up to [`RUN_BYTES`]; cutting a run (a truncated suffix, a compaction
//! point inside it) keeps the share of its bytes that its remaining entries are of its
//! count. The figure is for the entries this process saw appended: entries already on disk
//! when it started count as nothing until compaction passes them (the first time the entries
//! appended since then exceed the budget, everything older is dropped too).

use std::collections::VecDeque;

/// A run takes no more entries once it holds this many bytes.
const RUN_BYTES: u64 = 256 * 1024;
/// Bytes an entry takes beyond its key and value (sequence number, epoch, encoding).
pub const ENTRY_OVERHEAD: u64 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    first: u64,
    last: u64,
    bytes: u64,
}

impl Run {
    /// The bytes of the entries `from..=to` of this run, by their share of its count.
    fn share(&self, from: u64, to: u64) -> u64 {
        let all = self.last - self.first + 1;
        let kept = to.min(self.last).saturating_sub(from.max(self.first)) + 1;
        self.bytes * kept / all
    }
}

#[derive(Debug, Default)]
pub struct LogBytes {
    runs: VecDeque<Run>,
    total: u64,
}

impl LogBytes {
    /// Bytes of the entries counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts an appended entry. An entry at or below the last one counted replaces what was
    /// counted from there on (as the log's own append does).
    pub fn push(&mut self, seq: u64, bytes: u64) {
        self.truncate_after(seq.saturating_sub(1));
        self.total += bytes;
        match self.runs.back_mut() {
            Some(r) if r.last + 1 == seq && r.bytes < RUN_BYTES => {
                r.last = seq;
                r.bytes += bytes;
            }
            _ => self.runs.push_back(Run {
                first: seq,
                last: seq,
                bytes,
            }),
        }
    }

    /// Forgets the entries after `seq` (a divergent suffix removed).
    pub fn truncate_after(&mut self, seq: u64) {
        while let Some(r) = self.runs.back_mut() {
            if r.first > seq {
                self.total -= r.bytes;
                self.runs.pop_back();
            } else {
                if r.last > seq {
                    let kept = r.share(r.first, seq);
                    self.total -= r.bytes - kept;
                    *r = Run {
                        first: r.first,
                        last: seq,
                        bytes: kept,
                    };
                }
                return;
            }
        }
    }

    /// Forgets the entries up to and including `seq` (compacted away).
    pub fn drop_through(&mut self, seq: u64) {
        while let Some(r) = self.runs.front_mut() {
            if r.last <= seq {
                self.total -= r.bytes;
                self.runs.pop_front();
            } else {
                if r.first <= seq {
                    let kept = r.share(seq + 1, r.last);
                    self.total -= r.bytes - kept;
                    *r = Run {
                        first: seq + 1,
                        last: r.last,
                        bytes: kept,
                    };
                }
                return;
            }
        }
    }

    /// Forgets everything (the log restarts, e.g. under a snapshot).
    pub fn clear(&mut self) {
        self.runs.clear();
        self.total = 0;
    }

    /// The highest sequence number through which entries must be dropped for the rest to
    /// hold at most `budget` bytes (0 when everything counted fits). Whole runs only, so the
    /// rest may hold up to a run less than the budget.
    pub fn floor_for(&self, budget: u64) -> u64 {
        let mut kept = 0u64;
        for r in self.runs.iter().rev() {
            kept += r.bytes;
            if kept > budget {
                return r.last;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(from: u64, to: u64, each: u64) -> LogBytes {
        let mut l = LogBytes::default();
        for s in from..=to {
            l.push(s, each);
        }
        l
    }

    fn recount(l: &LogBytes) -> u64 {
        l.runs.iter().map(|r| r.bytes).sum()
    }

    #[test]
    fn counts_appends_in_runs_and_finds_the_floor_for_a_budget() {
        // 1 000 entries of 1 KiB: runs of 256 entries (the run that reaches 256 KiB closes).
        let l = filled(1, 1000, 1024);
        assert_eq!(l.total(), 1000 * 1024);
        assert_eq!(l.runs.len(), 4);
        assert_eq!(l.floor_for(u64::MAX), 0);
        assert_eq!(l.floor_for(1000 * 1024), 0);
        // 300 KiB: the newest run (769..=1000, 232 KiB) fits, the one before does not.
        assert_eq!(l.floor_for(300 * 1024), 768);
        assert_eq!(l.floor_for(0), 1000);
    }

    #[test]
    fn truncation_and_compaction_keep_the_share_of_a_cut_run() {
        let mut l = filled(1, 1000, 1024);
        l.truncate_after(900);
        assert_eq!(l.total(), 900 * 1024);
        assert_eq!(recount(&l), l.total());
        l.drop_through(100);
        assert_eq!(l.total(), 800 * 1024);
        assert_eq!(recount(&l), l.total());
        l.drop_through(50); // already gone: nothing changes
        assert_eq!(l.total(), 800 * 1024);
        l.drop_through(900);
        assert_eq!(l.total(), 0);
        assert!(l.runs.is_empty());
    }

    #[test]
    fn an_append_at_a_counted_sequence_number_replaces_the_suffix() {
        let mut l = filled(1, 10, 100);
        l.push(6, 1000);
        assert_eq!(l.total(), 5 * 100 + 1000);
        assert_eq!(recount(&l), l.total());
        l.push(7, 10);
        assert_eq!(l.total(), 5 * 100 + 1010);
        // A gap (entries appended after a snapshot's base) starts a new run.
        l.clear();
        l.push(500, 10);
        l.push(501, 10);
        assert_eq!(l.total(), 20);
        assert_eq!(l.floor_for(10), 501);
    }
}
