//! Fault injection with a per-key linearizability checker (docs/fault-injection.md).
//!
//! - `history`: the recorded operations (invoke/complete times, outcomes).
//! - `model`: the versioned-register specification and version bindings.
//! - `search`: the Wing–Gong/Lowe linearizability search for one key.
//! - `shrink`: reducing a failing key's history to a small witness.
//! - `check`: checking a whole history key by key.
//! - `workload`: concurrent clients that record a history against a live store.
//! - `nemesis`: the seeded fault schedule and its execution on a local-mode store.
//! - `probe`: per-partition probe writes and map samples (availability, lost writes).
//! - `availability`: unavailability windows from the probes (pure).
//! - `runner`: one run end to end — start, load under faults, heal, final reads, check.
//! - `summary`: the `make chaos` table over many runs.

pub mod availability;
pub mod check;
pub mod history;
pub mod model;
pub mod nemesis;
pub mod probe;
pub mod runner;
pub mod search;
pub mod shrink;
pub mod summary;
#[cfg(test)]
mod tests;
pub mod workload;

pub use check::{CheckLimits, KeyReport, KeyVerdict, check};
pub use history::{Command, Cond, Op, Outcome, Response};
pub use runner::{RunConfig, RunReport, run};
