//! Checking a whole history: split it per key (linearizability is compositional, so each
//! key's register is checked alone), learn the version bindings, search, and shrink what
//! fails into a witness.

use super::history::Op;
use super::model::{Anomaly, Bindings};
use super::search::{Verdict, search};
use super::shrink::{ShrinkLimits, earliest_unproven_cut, shrink};
use std::collections::BTreeMap;
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

/// Checks the history of one key.
pub fn check_key(key: &str, ops: &[Op], limits: CheckLimits) -> KeyReport {
    let mut relevant: Vec<Op> = ops.iter().filter(|o| o.is_relevant()).cloned().collect();
    relevant.sort_by_key(|o| (o.invoke, o.complete));
    let verdict = match Bindings::learn(ops) {
        Err(a) => KeyVerdict::Anomaly(a),
        Ok(bindings) => match search(&relevant, &bindings, limits.budget) {
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
