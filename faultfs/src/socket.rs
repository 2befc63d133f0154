//! The control protocol ([`crate::Command`]) over a unix socket: the binary serves it for a
//! mount it holds; `shardedstore-faultfs ctl` and tests in other processes send commands.

use crate::command::{Command, apply};
use crate::error::FaultFsError;
use crate::faults::FaultControl;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Answers every connection to `listener` on its own thread, one reply line per command
/// line, until the listener fails.
pub fn serve_control(listener: UnixListener, control: FaultControl) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        let control = control.clone();
        let spawned = std::thread::Builder::new()
            .name("faultfs-control".into())
            .spawn(move || answer(stream, &control));
        if let Err(e) = spawned {
            eprintln!("faultfs: cannot serve a control connection: {e}");
        }
    }
}

fn answer(stream: UnixStream, control: &FaultControl) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else {
            return;
        };
        let reply = match line.parse::<Command>() {
            Ok(command) => apply(control, command),
            Err(e) => format!("error: {e}"),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// Sends `command` to the control socket at `socket`; returns the reply after `ok`
/// (e.g. `files=1 bytes=4096` for a power loss, the pairs of `status`, or nothing).
pub fn send_command(socket: &Path, command: Command) -> Result<String, FaultFsError> {
    let io = |source| FaultFsError::ControlSocket {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    writeln!(stream, "{command}").map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    let reply = reply.trim_end();
    match reply.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim_start().to_owned()),
        None => Err(FaultFsError::CommandRefused {
            reply: reply.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_travel_over_the_socket_and_change_the_faults() -> Result<(), FaultFsError> {
        let dir = tempfile::tempdir().map_err(|source| FaultFsError::ControlSocket {
            path: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).map_err(|source| FaultFsError::ControlSocket {
            path: path.clone(),
            source,
        })?;
        let control = FaultControl::new();
        let served = control.clone();
        std::thread::spawn(move || serve_control(listener, served));
        assert_eq!(send_command(&path, Command::FailFsync(true))?, "");
        assert!(control.faults().fail_fsync);
        let status = send_command(&path, Command::Status)?;
        assert!(status.contains("fail_fsync=true"), "{status}");
        Ok(())
    }
}
