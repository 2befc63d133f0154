//! The sequential specification checked: one versioned register per key. Every write
//! carries a value unique to its operation, so a read names the write it saw; versions come
//! from the partition's log sequence, so each write's version is unique and they only grow.

use super::history::{Command, Cond, Op, Outcome, Response};
use std::collections::HashMap;

/// What the history proves on its own, before any search: a read of a value no write
/// produced, a write reported as not applied that was read, or one write seen at two
/// versions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Anomaly {
    #[error("a read returned {value:?}, which no operation wrote: {op}")]
    UnknownValue { value: String, op: Box<Op> },
    #[error(
        "a read returned the value of a write reported as not applied: read {read}, write {write}"
    )]
    FailedWriteObserved { read: Box<Op>, write: Box<Op> },
    #[error("the write of {value:?} was seen at versions {first} and {second}")]
    ConflictingVersions {
        value: String,
        first: u64,
        second: u64,
    },
    #[error("version {version} was given to two writes: {first:?} and {second:?}")]
    DuplicateVersion {
        version: u64,
        first: String,
        second: String,
    },
    #[error("the value {value:?} was written twice (the workload must keep values unique)")]
    DuplicateValue { value: String },
}

/// The version each write's value got, learned from its acknowledgement or from any read
/// that saw it. Computed once over the whole history of a key and kept when the history is
/// shrunk: it is a fact about the execution, not about the sub-history.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    version_of_value: HashMap<String, u64>,
}

impl Bindings {
    /// Binds every observed write to its version, or names the anomaly that makes the
    /// history wrong regardless of ordering.
    pub fn learn(ops: &[Op]) -> Result<Self, Anomaly> {
        let mut failed: HashMap<&str, &Op> = HashMap::new();
        let mut applied: HashMap<&str, &Op> = HashMap::new();
        for op in ops {
            if let Command::Put { value, .. } = &op.command {
                if op.may_write() {
                    if applied.insert(value, op).is_some() {
                        return Err(Anomaly::DuplicateValue {
                            value: value.clone(),
                        });
                    }
                } else {
                    failed.insert(value, op);
                }
            }
        }
        let mut b = Self::default();
        let mut bind = |value: &str, version: u64| -> Result<(), Anomaly> {
            match b.version_of_value.insert(value.to_owned(), version) {
                Some(first) if first != version => Err(Anomaly::ConflictingVersions {
                    value: value.to_owned(),
                    first,
                    second: version,
                }),
                _ => Ok(()),
            }
        };
        for op in ops {
            match (&op.command, &op.outcome) {
                (Command::Put { value, .. }, Outcome::Ok(Response::Put { version, .. })) => {
                    bind(value, *version)?;
                }
                (Command::Get, Outcome::Ok(Response::Read(Some((value, version))))) => {
                    if !applied.contains_key(value.as_str()) {
                        return Err(match failed.get(value.as_str()) {
                            Some(write) => Anomaly::FailedWriteObserved {
                                read: Box::new(op.clone()),
                                write: Box::new((*write).clone()),
                            },
                            None => Anomaly::UnknownValue {
                                value: value.clone(),
                                op: Box::new(op.clone()),
                            },
                        });
                    }
                    bind(value, *version)?;
                }
                _ => {}
            }
        }
        let mut by_version: HashMap<u64, &str> = HashMap::new();
        for (value, version) in &b.version_of_value {
            if let Some(first) = by_version.insert(*version, value) {
                return Err(Anomaly::DuplicateVersion {
                    version: *version,
                    first: first.to_owned(),
                    second: value.clone(),
                });
            }
        }
        Ok(b)
    }

    pub fn version_of(&self, value: &str) -> Option<u64> {
        self.version_of_value.get(value).copied()
    }
}

/// State of the register between operations: which write (index into the checked
/// operations) holds the key, and the highest version known to have been assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct State {
    pub current: Option<u32>,
    pub floor: u64,
}

/// The operations under check with what the model needs to step them quickly.
pub struct Model<'a> {
    ops: &'a [Op],
    /// Version of each operation's write, when known.
    version: Vec<Option<u64>>,
    /// Index of the write that produced each value.
    writer: HashMap<&'a str, u32>,
    /// The index a write stands under in [`State::current`]: its own, except for an
    /// interchangeable write (see [`interchangeable`]), which stands under the first of its
    /// class, so states that differ only in which of them took effect are one state.
    stands_as: Vec<u32>,
}

/// Classes of interchangeable operations: indeterminate writes whose value no read returned
/// and indeterminate deletes, grouped by condition. Two members of a class have the same
/// effect on every state (a write's value is never read and its version never learned, so
/// no later operation can tell which one took effect), and neither ever has to take effect.
/// So a linearization that applies a later-invoked member while an earlier one is still
/// pending stays valid with the two swapped; the search may apply the members of a class in
/// invocation order only. For each operation: the member of its class invoked just before
/// it, if any.
pub fn interchangeable(ops: &[Op]) -> Vec<Option<usize>> {
    let observed: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|o| match (&o.command, &o.outcome) {
            (Command::Get, Outcome::Ok(Response::Read(Some((value, _))))) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke, i));
    let mut last: HashMap<(bool, Cond), usize> = HashMap::new();
    let mut previous = vec![None; ops.len()];
    for i in order {
        let op = &ops[i];
        if !matches!(op.outcome, Outcome::Indeterminate) {
            continue;
        }
        let class = match &op.command {
            Command::Put { value, cond } if !observed.contains(value.as_str()) => (true, *cond),
            Command::Delete { cond } => (false, *cond),
            _ => continue,
        };
        previous[i] = last.insert(class, i);
    }
    previous
}

impl<'a> Model<'a> {
    pub fn new(ops: &'a [Op], bindings: &Bindings) -> Self {
        let mut version = Vec::with_capacity(ops.len());
        let mut writer = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            match &op.command {
                Command::Put { value, .. } => {
                    version.push(bindings.version_of(value));
                    writer.insert(value.as_str(), i as u32);
                }
                _ => version.push(None),
            }
        }
        let previous = interchangeable(ops);
        let mut stands_as: Vec<u32> = (0..ops.len() as u32).collect();
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| (ops[i].invoke, i));
        for i in order {
            if let Some(p) = previous[i] {
                stands_as[i] = stands_as[p];
            }
        }
        Self {
            ops,
            version,
            writer,
            stands_as,
        }
    }

    /// The operation (index) whose write produced `value`, if any.
    pub fn writer_of(&self, value: &str) -> Option<usize> {
        self.writer.get(value).map(|&w| w as usize)
    }

    fn current_version(&self, s: &State) -> Option<u64> {
        s.current.and_then(|w| self.version[w as usize])
    }

    fn holds(&self, s: &State, cond: Cond) -> bool {
        match cond {
            Cond::Always => true,
            Cond::IfAbsent => s.current.is_none(),
            Cond::IfVersion(v) => self.current_version(s) == Some(v),
        }
    }

    /// Applies operation `i` to `s` at its linearization point: the next state, or `None`
    /// when the operation's answer is impossible in state `s`.
    pub fn step(&self, s: &State, i: usize) -> Option<State> {
        let op = &self.ops[i];
        let me = Some(self.stands_as[i]);
        match (&op.command, &op.outcome) {
            (Command::Get, Outcome::Ok(Response::Read(None))) => s.current.is_none().then_some(*s),
            (Command::Get, Outcome::Ok(Response::Read(Some((value, _))))) => {
                let w = self.writer.get(value.as_str()).copied();
                (w.is_some() && s.current == w).then_some(*s)
            }
            (Command::Put { cond, .. }, Outcome::Ok(Response::Put { version, created })) => {
                let ok =
                    self.holds(s, *cond) && *created == s.current.is_none() && *version > s.floor;
                ok.then_some(State {
                    current: me,
                    floor: *version,
                })
            }
            (Command::Put { cond, .. }, Outcome::Indeterminate) => {
                let version = self.version[i];
                let ok = self.holds(s, *cond) && version.is_none_or(|v| v > s.floor);
                ok.then_some(State {
                    current: me,
                    floor: version.unwrap_or(s.floor),
                })
            }
            (
                Command::Put { cond, .. } | Command::Delete { cond },
                Outcome::PreconditionFailed { current_version },
            ) => {
                let reported_ok = match (current_version, self.current_version(s)) {
                    (Some(reported), Some(actual)) => *reported == actual,
                    _ => true,
                };
                (!self.holds(s, *cond) && reported_ok).then_some(*s)
            }
            // The nodes answer 204 to every applied delete, present key or not
            // (docs/protocol.md), so `existed` carries no information and is not checked.
            (Command::Delete { cond }, Outcome::Ok(Response::Delete { .. })) => {
                self.holds(s, *cond).then_some(State {
                    current: None,
                    floor: s.floor,
                })
            }
            (Command::Delete { cond }, Outcome::Indeterminate) => Some(if self.holds(s, *cond) {
                State {
                    current: None,
                    floor: s.floor,
                }
            } else {
                *s
            }),
            _ => None,
        }
    }
}
