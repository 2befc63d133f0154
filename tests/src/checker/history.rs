//! The recorded history of a run: one entry per client operation on one key, with its
//! invoke and complete times on a monotonic clock and what the client learned about it.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the start of the run (monotonic clock).
pub type Nanos = u64;

/// Precondition of a write, as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cond {
    /// Unconditional.
    Always,
    /// `If-Match: <version>`.
    IfVersion(u64),
    /// `If-None-Match: *` (puts only).
    IfAbsent,
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Linearizable read.
    Get,
    /// Write of a value unique to this operation.
    Put {
        value: String,
        cond: Cond,
    },
    Delete {
        cond: Cond,
    },
}

/// The answer of an operation that definitely took effect (or definitely observed state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A read: the value and version, or `None` when absent.
    Read(Option<(String, u64)>),
    /// An acknowledged put: its version, and whether the key was absent before (201).
    Put { version: u64, created: bool },
    /// An acknowledged delete: whether the key existed (204) or was absent (404).
    Delete { existed: bool },
}

/// What the client knows about an operation's effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged with this answer.
    Ok(Response),
    /// 412: the condition did not hold; nothing was applied. Carries the current version
    /// the node reported, if any.
    PreconditionFailed { current_version: Option<u64> },
    /// Definitely not applied (never sent, 421, 4xx): it has no effect and observed nothing.
    Failed,
    /// Unknown (timeout, broken connection, 503 after sending, unexpected status): it may
    /// have taken effect at any point after its invocation, or never.
    Indeterminate,
}

/// One operation of one client on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub command: Command,
    pub invoke: Nanos,
    pub complete: Nanos,
    pub outcome: Outcome,
}

impl Op {
    /// Whether this operation may have changed the key's state.
    pub fn may_write(&self) -> bool {
        !matches!(self.command, Command::Get)
            && matches!(self.outcome, Outcome::Ok(_) | Outcome::Indeterminate)
    }

    /// Whether this operation only observed state (a successful read or a 412): removing it
    /// from a history can neither create nor hide a violation elsewhere.
    pub fn is_observation(&self) -> bool {
        matches!(
            (&self.command, &self.outcome),
            (Command::Get, Outcome::Ok(_)) | (_, Outcome::PreconditionFailed { .. })
        )
    }

    /// Whether the checker must account for it at all (failed operations and failed or
    /// unknown reads have no effect and observed nothing).
    pub fn is_relevant(&self) -> bool {
        self.may_write() || self.is_observation()
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |n: Nanos| n as f64 / 1e6;
        let end = if self.complete == Nanos::MAX {
            "   ...".to_owned()
        } else {
            format!("{:>10.3}", ms(self.complete))
        };
        let cmd = match &self.command {
            Command::Get => "get".to_owned(),
            Command::Put { value, cond } => format!("put {value} {cond:?}"),
            Command::Delete { cond } => format!("delete {cond:?}"),
        };
        let out = match &self.outcome {
            Outcome::Ok(Response::Read(None)) => "-> absent".to_owned(),
            Outcome::Ok(Response::Read(Some((v, ver)))) => format!("-> {v} @{ver}"),
            Outcome::Ok(Response::Put { version, created }) => {
                format!(
                    "-> ok @{version}{}",
                    if *created { " (created)" } else { "" }
                )
            }
            Outcome::Ok(Response::Delete { existed }) => {
                format!("-> {}", if *existed { "deleted" } else { "absent" })
            }
            Outcome::PreconditionFailed { current_version } => {
                format!("-> 412 (current {current_version:?})")
            }
            Outcome::Failed => "-> failed".to_owned(),
            Outcome::Indeterminate => "-> indeterminate".to_owned(),
        };
        write!(
            f,
            "[{:>10.3} {end}] c{} {} {cmd} {out}",
            ms(self.invoke),
            self.client,
            self.key
        )
    }
}
