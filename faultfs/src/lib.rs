//! A FUSE pass-through file system that injects the disk faults real clusters meet: a disk
//! that hangs (freeze/thaw), a slow disk (fsync delay), a full disk (ENOSPC at a chosen
//! size), a failing disk (EIO on fsync or write), and power loss (every write not yet
//! fsynced is dropped, as LazyFS does). See docs/faultfs.md.
//!
//! ```no_run
//! # fn demo() -> Result<(), shardedstore_faultfs::FaultFsError> {
//! use shardedstore_faultfs::FaultFs;
//! let fs = FaultFs::mount("/tmp/backing".as_ref(), "/tmp/mnt".as_ref())?;
//! let control = fs.control();
//! control.freeze(); // every write and fsync under /tmp/mnt now blocks
//! control.thaw();
//! control.power_loss(); // drop everything not fsynced (kill the writers first)
//! drop(fs); // unmounts
//! # Ok(()) }
//! ```

mod command;
mod error;
mod faults;
mod fs;
mod inodes;
mod mount;
mod overlay;
mod socket;
mod stale;

pub use command::{Command, CommandError};
pub use error::FaultFsError;
pub use faults::{Counters, FaultControl, Faults, PowerLoss};
pub use mount::{FaultFs, fuse_unavailable};
pub use socket::{send_command, serve_control};
pub use stale::{FaultMount, faultfs_mounts, stale, sweep_stale_mounts};
