//! `shardedstore-faultfs`: mount a fault-injecting pass-through by hand and control it.
//!
//! ```sh
//! shardedstore-faultfs mount --backing /var/tmp/disk --mountpoint /mnt/disk --control /run/disk.ctl &
//! shardedstore-faultfs ctl --control /run/disk.ctl freeze
//! shardedstore-faultfs ctl --control /run/disk.ctl status
//! kill %1   # SIGTERM unmounts
//! ```

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use shardedstore_faultfs::{Command, FaultFs, send_command, serve_control};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "shardedstore-faultfs",
    about = "A FUSE pass-through that injects disk faults and power loss"
)]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Mount BACKING at MOUNTPOINT and serve until SIGTERM or SIGINT (then unmount).
    Mount {
        /// Directory the file system passes through to.
        #[arg(long, env = "SHARDEDSTORE_FAULTFS_BACKING")]
        backing: PathBuf,
        /// Existing empty directory to mount on.
        #[arg(long, env = "SHARDEDSTORE_FAULTFS_MOUNTPOINT")]
        mountpoint: PathBuf,
        /// Unix socket to accept control commands on (replaced if it exists).
        #[arg(long, env = "SHARDEDSTORE_FAULTFS_CONTROL")]
        control: PathBuf,
    },
    /// Send one command to a mounted file system and print the reply.
    Ctl {
        /// The mount's control socket.
        #[arg(long, env = "SHARDEDSTORE_FAULTFS_CONTROL")]
        control: PathBuf,
        /// freeze | thaw | fsync-delay MS | capacity BYTES|none | fail-fsync on|off |
        /// fail-writes on|off | power-loss | heal | status
        #[arg(required = true, num_args = 1..=2)]
        command: Vec<String>,
    },
}

fn serve(backing: PathBuf, mountpoint: PathBuf, control: PathBuf) -> Result<(), String> {
    // Block the stop signals before any thread starts, so every thread inherits the mask and
    // the main thread receives them with sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let fs = FaultFs::mount(&backing, &mountpoint).map_err(|e| e.to_string())?;
    if control.exists() {
        std::fs::remove_file(&control)
            .map_err(|e| format!("removing stale {}: {e}", control.display()))?;
    }
    let listener = UnixListener::bind(&control)
        .map_err(|e| format!("control socket {}: {e}", control.display()))?;
    let handle = fs.control();
    std::thread::Builder::new()
        .name("faultfs-control".into())
        .spawn(move || serve_control(listener, handle))
        .map_err(|e| format!("starting the control thread: {e}"))?;
    println!(
        "mounted {} at {}; control socket {}",
        fs.backing().display(),
        fs.mountpoint().display(),
        control.display()
    );
    let signal = stop
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!("faultfs: {signal:?}, unmounting");
    let _ = std::fs::remove_file(&control);
    fs.unmount().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.action {
        Action::Mount {
            backing,
            mountpoint,
            control,
        } => serve(backing, mountpoint, control),
        Action::Ctl { control, command } => command
            .join(" ")
            .parse::<Command>()
            .map_err(|e| e.to_string())
            .and_then(|c| send_command(&control, c).map_err(|e| e.to_string()))
            .map(|reply| match reply.as_str() {
                "" => println!("ok"),
                pairs => println!("ok {pairs}"),
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardedstore-faultfs: {e}");
            ExitCode::FAILURE
        }
    }
}
