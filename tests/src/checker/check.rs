//! Checking a whole history: split it per key (linearizability is compositional, so each
//! key's register is checked alone), learn the version bindings, search, and shrink what
//! fails into a witness.

use super::history::{Command, Op, Outcome, Response};
use super::model::{Anomaly, Bindings};
use super::search::{Verdict, search};
use super::shrink::{ShrinkLimits, earliest_unproven_cut, shrink};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Limits of a check.
#[derive(Clone, Copy, Debug)]
pub struct CheckLimits {
    /// Search steps per key (a key whose search needs more is reported as unknown).
    pub budget: u64,
    /// Wall-clock bound of shrinking one failing key.
    pub shrink_time: Duration,
}

impl Default for CheckLimits {
    fn default() -> Self {
        Self {
            budget: 20_000_000,
            shrink_time: Duration::from_secs(30),
        }
    }
}

/// The verdict on one key.
#[derive(Clone, Debug)]
pub enum KeyVerdict {
    Linearizable,
    /// Wrong whatever the order (see [`Anomaly`]).
    Anomaly(Anomaly),
    /// No linearization exists; `witness` is a shrunk sub-history that is non-linearizable
    /// on its own, `blocking` the operation the search could not place.
    Violation {
        witness: Vec<Op>,
        blocking: Box<Op>,
    },
    /// The search ran out of budget; `from` (ns into the run) is about where the history
    /// becomes too hard to search (the earliest cut not proven linearizable).
    Unknown {
        steps: u64,
        from: u64,
    },
}

/// The result of checking one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: String,
    /// Operations that took part in the check (no-effect failures excluded).
    pub relevant: usize,
    pub verdict: KeyVerdict,
}

/// Checks every key of `history`.
pub fn check(history: &[Op], limits: CheckLimits) -> Vec<KeyReport> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, limits))
        .collect()
}

/// The history without the indeterminate writes and deletes no read observed, or `None`
/// when there are none. A linearization of that history is one of the whole history in
/// which those operations never took effect (which an indeterminate operation may do), so
/// when it is linearizable, so is the whole. The converse does not hold (an unobserved
/// write may be what made a later 412 or `created: false` possible), so any other verdict
/// is taken from the whole history.
fn without_unobserved_indeterminate(ops: &[Op]) -> Option<Vec<Op>> {
    let observed: HashSet<&str> = ops
        .iter()
        .filter_map(|o| match (&o.command, &o.outcome) {
            (Command::Get, Outcome::Ok(Response::Read(Some((value, _))))) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let unobserved = |o: &Op| {
        matches!(o.outcome, Outcome::Indeterminate)
            && match &o.command {
                Command::Put { value, .. } => !observed.contains(value.as_str()),
                Command::Delete { .. } => true,
                Command::Get => false,
            }
    };
    ops.iter()
        .any(unobserved)
        .then(|| ops.iter().filter(|o| !unobserved(o)).cloned().collect())
}

/// Searches the reduced history of [`without_unobserved_indeterminate`] first (with a
/// quarter of the budget) and the whole one only when that does not prove it linearizable.
fn search_reduced_first(ops: &[Op], bindings: &Bindings, budget: u64) -> Verdict {
    if let Some(reduced) = without_unobserved_indeterminate(ops)
        && search(&reduced, bindings, budget / 4) == Verdict::Linearizable
    {
        return Verdict::Linearizable;
    }
    search(ops, bindings, budget)
}

/// Checks the history of one key.
pub fn check_key(key: &str, ops: &[Op], limits: CheckLimits) -> KeyReport {
    let mut relevant: Vec<Op> = ops.iter().filter(|o| o.is_relevant()).cloned().collect();
    relevant.sort_by_key(|o| (o.invoke, o.complete));
    let verdict = match Bindings::learn(ops) {
        Err(a) => KeyVerdict::Anomaly(a),
        Ok(bindings) => match search_reduced_first(&relevant, &bindings, limits.budget) {
            Verdict::Linearizable => KeyVerdict::Linearizable,
            Verdict::Unknown { steps } => {
                // Too hard as a whole: a cut that violates still proves a violation.
                match earliest_unproven_cut(&relevant, &bindings, limits.budget / 4) {
                    (cut, Verdict::Violation { blocking, .. }) => {
                        let blocking = Box::new(cut[blocking].clone());
                        let witness = shrink(
                            &cut,
                            &bindings,
                            ShrinkLimits {
                                budget: limits.budget,
                                time: limits.shrink_time,
                            },
                        );
                        KeyVerdict::Violation { witness, blocking }
                    }
                    (cut, _) => KeyVerdict::Unknown {
                        steps,
                        from: cut.iter().map(|o| o.invoke).max().unwrap_or(0),
                    },
                }
            }
            Verdict::Violation { blocking, .. } => {
                let blocking = Box::new(relevant[blocking].clone());
                let witness = shrink(
                    &relevant,
                    &bindings,
                    ShrinkLimits {
                        budget: limits.budget,
                        time: limits.shrink_time,
                    },
                );
                KeyVerdict::Violation { witness, blocking }
            }
        },
    };
    KeyReport {
        key: key.to_owned(),
        relevant: relevant.len(),
        verdict,
    }
}
