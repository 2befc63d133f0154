//! Shrinking a non-linearizable history of one key to a small witness. Only steps that keep
//! the witness honest are taken: removing observations (reads and 412s) never makes a linearizable history non-linearizable, and neither does cutting the
//! history at some time (see [`cut_at`]). So the witness is non-linearizable on its own.

use super::history::{Nanos, Op, Outcome};
use super::model::Bindings;
use super::search::{Verdict, search};
use std::time::{Duration, Instant};

/// Limits of one shrink.
#[derive(Clone, Copy, Debug)]
pub struct ShrinkLimits {
    /// Step budget of each search.
    pub budget: u64,
    /// Wall-clock bound of the whole shrink.
    pub time: Duration,
}

fn violates(ops: &[Op], bindings: &Bindings, budget: u64) -> bool {
    matches!(search(ops, bindings, budget), Verdict::Violation { .. })
}

/// Cuts the history at time `end`: drops every operation invoked after it and turns writes
/// still running then into indeterminate ones. Sound for any `end`: in any linearization of
/// the original, every definite operation that completed by `end` precedes the dropped
/// writes, and the writes still running may be taken as never applied from the first
/// dropped write on. So if the cut history is not linearizable, neither is the original.
fn cut_at(ops: &[Op], end: Nanos) -> Vec<Op> {
    ops.iter()
        .filter(|o| o.invoke <= end)
        .cloned()
        .map(|mut o| {
            if o.complete > end && o.may_write() {
                o.outcome = Outcome::Indeterminate;
            }
            o
        })
        .collect()
}

/// Cuts the history right after its last observation.
fn cut_after_last_observation(ops: Vec<Op>) -> Vec<Op> {
    match ops
        .iter()
        .filter(|o| o.is_observation())
        .map(|o| o.complete)
        .max()
    {
        Some(end) => cut_at(&ops, end),
        None => ops,
    }
}

/// The shortest cut of `ops` that still violates (a violating cut stays violating when
/// cut later, so binary search over completion times finds it).
fn shortest_violating_cut(ops: &[Op], bindings: &Bindings, budget: u64) -> Vec<Op> {
    let mut ends: Vec<Nanos> = ops
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Indeterminate))
        .map(|o| o.complete)
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if violates(&cut_at(ops, ends[mid]), bindings, budget) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    match ends.get(lo) {
        Some(end) => cut_at(ops, *end),
        None => ops.to_vec(),
    }
}

/// The earliest cut of `ops` (by completion time) the search cannot prove linearizable
/// within `budget`, and its verdict. Used when the whole history is too hard to search:
/// a violating cut proves the whole history violates; an unknown cut at least locates where
/// the search gets hard.
pub fn earliest_unproven_cut(ops: &[Op], bindings: &Bindings, budget: u64) -> (Vec<Op>, Verdict) {
    let mut ends: Vec<Nanos> = ops
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Indeterminate))
        .map(|o| o.complete)
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if search(&cut_at(ops, ends[mid]), bindings, budget) == Verdict::Linearizable {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let cut = ends
        .get(lo)
        .map_or_else(|| ops.to_vec(), |end| cut_at(ops, *end));
    let verdict = search(&cut, bindings, budget);
    (cut, verdict)
}

/// A smaller history that still violates linearizability (delta debugging over the
/// observations, then trimming late writes). `ops` must violate it.
pub fn shrink(ops: &[Op], bindings: &Bindings, limits: ShrinkLimits) -> Vec<Op> {
    let start = Instant::now();
    let mut kept: Vec<Op> = shortest_violating_cut(ops, bindings, limits.budget);
    let mut chunk = kept
        .iter()
        .filter(|o| o.is_observation())
        .count()
        .div_ceil(2);
    while chunk >= 1 && start.elapsed() < limits.time {
        let observations: Vec<usize> = kept
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_observation())
            .map(|(i, _)| i)
            .collect();
        let mut removed_any = false;
        let mut from = 0;
        while from < observations.len() && start.elapsed() < limits.time {
            let drop: std::collections::HashSet<usize> = observations
                [from..(from + chunk).min(observations.len())]
                .iter()
                .copied()
                .collect();
            let candidate: Vec<Op> = kept
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, o)| o.clone())
                .collect();
            let candidate = cut_after_last_observation(candidate);
            if violates(&candidate, bindings, limits.budget) {
                kept = candidate;
                removed_any = true;
                break;
            }
            from += chunk;
        }
        if !removed_any {
            chunk /= 2;
        }
    }
    let trimmed = cut_after_last_observation(kept.clone());
    if violates(&trimmed, bindings, limits.budget) {
        trimmed
    } else {
        kept
    }
}
