//! Shrinking a non-linearizable history of one key to a small witness. Only steps that keep
//! the witness honest are taken: removing observations (reads, 412s, deletes of absent
//! keys) never makes a linearizable history non-linearizable, and neither does removing
//! writes invoked after every remaining definite operation completed (they can only take
//! effect after all of them). So the witness is non-linearizable on its own.

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

/// Drops, from the end, writes invoked after every other definite operation completed:
/// they can be linearized last, where nothing observes them.
fn drop_late_writes(mut ops: Vec<Op>) -> Vec<Op> {
    ops.sort_by_key(|o| (o.invoke, o.complete));
    while let Some(last) = ops.last() {
        let rest = &ops[..ops.len() - 1];
        let finished: Nanos = rest
            .iter()
            .filter(|o| !matches!(o.outcome, Outcome::Indeterminate))
            .map(|o| o.complete)
            .max()
            .unwrap_or(0);
        if last.may_write() && last.invoke > finished {
            ops.pop();
        } else {
            break;
        }
    }
    ops
}

/// A smaller history that still violates linearizability (delta debugging over the
/// observations, then trimming late writes). `ops` must violate it.
pub fn shrink(ops: &[Op], bindings: &Bindings, limits: ShrinkLimits) -> Vec<Op> {
    let start = Instant::now();
    let mut kept: Vec<Op> = ops.to_vec();
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
            let candidate = drop_late_writes(candidate);
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
    let trimmed = drop_late_writes(kept.clone());
    if violates(&trimmed, bindings, limits.budget) {
        trimmed
    } else {
        kept
    }
}
