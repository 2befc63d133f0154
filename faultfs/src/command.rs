//! The control protocol of a mounted file system: one command per line, one reply line
//! (`ok ...` or `error: ...`). Parsing, printing and applying commands are pure functions of
//! the text and a [`FaultControl`].
//!
//! | command | effect |
//! |---|---|
//! | `freeze` / `thaw` | block / unblock every mutating operation |
//! | `fsync-delay MS` | add MS milliseconds to every fsync (0: none) |
//! | `capacity BYTES` / `capacity none` | ENOSPC past BYTES of total file size / unlimited |
//! | `fail-fsync on\|off` | EIO on fsync |
//! | `fail-writes on\|off` | EIO on write |
//! | `power-loss` | drop every unsynced write; replies `ok files=N bytes=M` |
//! | `heal` | clear every fault |
//! | `status` | the faults and counters as `key=value` pairs |

use crate::faults::FaultControl;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One control command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Freeze,
    Thaw,
    FsyncDelay(Duration),
    Capacity(Option<u64>),
    FailFsync(bool),
    FailWrites(bool),
    PowerLoss,
    Heal,
    Status,
}

/// A line that is not a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error(
        "unknown command {0:?} (expected freeze, thaw, fsync-delay, capacity, fail-fsync, fail-writes, power-loss, heal or status)"
    )]
    Unknown(String),
    #[error("{command} takes {expected}, got {got:?}")]
    BadArgument {
        command: &'static str,
        expected: &'static str,
        got: String,
    },
}

fn switch(command: &'static str, arg: Option<&str>) -> Result<bool, CommandError> {
    match arg {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        other => Err(CommandError::BadArgument {
            command,
            expected: "on or off",
            got: other.unwrap_or_default().into(),
        }),
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or(CommandError::Empty)?;
        let arg = words.next();
        let extra = words.next();
        let no_arg = |c: Command, command: &'static str| match (arg, extra) {
            (None, _) => Ok(c),
            (Some(a), _) => Err(CommandError::BadArgument {
                command,
                expected: "no argument",
                got: a.into(),
            }),
        };
        if let Some(x) = extra {
            return Err(CommandError::BadArgument {
                command: "a command",
                expected: "at most one argument",
                got: x.into(),
            });
        }
        match name {
            "freeze" => no_arg(Command::Freeze, "freeze"),
            "thaw" => no_arg(Command::Thaw, "thaw"),
            "power-loss" => no_arg(Command::PowerLoss, "power-loss"),
            "heal" => no_arg(Command::Heal, "heal"),
            "status" => no_arg(Command::Status, "status"),
            "fail-fsync" => Ok(Command::FailFsync(switch("fail-fsync", arg)?)),
            "fail-writes" => Ok(Command::FailWrites(switch("fail-writes", arg)?)),
            "fsync-delay" => arg
                .and_then(|a| a.parse::<u64>().ok())
                .map(|ms| Command::FsyncDelay(Duration::from_millis(ms)))
                .ok_or_else(|| CommandError::BadArgument {
                    command: "fsync-delay",
                    expected: "milliseconds",
                    got: arg.unwrap_or_default().into(),
                }),
            "capacity" => match arg {
                Some("none") => Ok(Command::Capacity(None)),
                Some(a) => a
                    .parse::<u64>()
                    .map(|b| Command::Capacity(Some(b)))
                    .map_err(|_| CommandError::BadArgument {
                        command: "capacity",
                        expected: "bytes or none",
                        got: a.into(),
                    }),
                None => Err(CommandError::BadArgument {
                    command: "capacity",
                    expected: "bytes or none",
                    got: String::new(),
                }),
            },
            other => Err(CommandError::Unknown(other.into())),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        match self {
            Command::Freeze => write!(f, "freeze"),
            Command::Thaw => write!(f, "thaw"),
            Command::FsyncDelay(d) => write!(f, "fsync-delay {}", d.as_millis()),
            Command::Capacity(None) => write!(f, "capacity none"),
            Command::Capacity(Some(b)) => write!(f, "capacity {b}"),
            Command::FailFsync(b) => write!(f, "fail-fsync {}", on(*b)),
            Command::FailWrites(b) => write!(f, "fail-writes {}", on(*b)),
            Command::PowerLoss => write!(f, "power-loss"),
            Command::Heal => write!(f, "heal"),
            Command::Status => write!(f, "status"),
        }
    }
}

/// Applies `command` and returns the reply line (without newline).
pub fn apply(control: &FaultControl, command: Command) -> String {
    match command {
        Command::Freeze => control.freeze(),
        Command::Thaw => control.thaw(),
        Command::FsyncDelay(d) => control.set_fsync_delay(d),
        Command::Capacity(c) => control.set_capacity(c),
        Command::FailFsync(b) => control.fail_fsync(b),
        Command::FailWrites(b) => control.fail_writes(b),
        Command::Heal => control.heal(),
        Command::PowerLoss => {
            let lost = control.power_loss();
            return format!("ok files={} bytes={}", lost.files, lost.bytes);
        }
        Command::Status => return format!("ok {}", status(control)),
    }
    "ok".into()
}

/// The faults and counters as `key=value` pairs.
fn status(control: &FaultControl) -> String {
    let f = control.faults();
    let c = control.counters();
    let capacity = f.capacity.map_or("none".into(), |b| b.to_string());
    format!(
        "frozen={} fsync_delay_ms={} capacity={capacity} fail_fsync={} fail_writes={} \
         unsynced_bytes={} fsyncs={} fsync_errors={} writes={} bytes_written={} write_errors={} \
         enospc_errors={} blocked_ops={} waiting_ops={} power_losses={} bytes_dropped={}",
        f.frozen,
        f.fsync_delay.as_millis(),
        f.fail_fsync,
        f.fail_writes,
        control.unsynced_bytes(),
        c.fsyncs,
        c.fsync_errors,
        c.writes,
        c.bytes_written,
        c.write_errors,
        c.enospc_errors,
        c.blocked_ops,
        c.waiting_ops,
        c.power_losses,
        c.bytes_dropped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_back_from_its_text() {
        for c in [
            Command::Freeze,
            Command::Thaw,
            Command::FsyncDelay(Duration::from_millis(250)),
            Command::Capacity(None),
            Command::Capacity(Some(1 << 20)),
            Command::FailFsync(true),
            Command::FailWrites(false),
            Command::PowerLoss,
            Command::Heal,
            Command::Status,
        ] {
            assert_eq!(c.to_string().parse::<Command>(), Ok(c));
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!("".parse::<Command>(), Err(CommandError::Empty));
        assert!(matches!(
            "explode".parse::<Command>(),
            Err(CommandError::Unknown(_))
        ));
        assert!(matches!(
            "fail-fsync maybe".parse::<Command>(),
            Err(CommandError::BadArgument { .. })
        ));
        assert!(matches!(
            "capacity -5".parse::<Command>(),
            Err(CommandError::BadArgument { .. })
        ));
        assert!(matches!(
            "freeze now".parse::<Command>(),
            Err(CommandError::BadArgument { .. })
        ));
        assert!(matches!(
            "fsync-delay 1 2".parse::<Command>(),
            Err(CommandError::BadArgument { .. })
        ));
    }

    #[test]
    fn applying_commands_changes_the_faults_and_status_reports_them() {
        let control = FaultControl::new();
        assert_eq!(apply(&control, Command::Freeze), "ok");
        assert_eq!(apply(&control, Command::Capacity(Some(4096))), "ok");
        let status = apply(&control, Command::Status);
        assert!(status.starts_with("ok frozen=true "), "{status}");
        assert!(status.contains(" capacity=4096 "), "{status}");
        assert_eq!(
            apply(&control, Command::PowerLoss),
            "ok files=0 bytes=0".to_string()
        );
        apply(&control, Command::Heal);
        assert_eq!(control.faults(), crate::Faults::default());
    }
}
