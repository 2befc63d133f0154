//! Errors of mounting, unmounting and controlling a fault-injecting file system.

use std::path::PathBuf;

/// What went wrong, named after the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum FaultFsError {
    #[error("backing directory {path}: {source}")]
    OpenBacking {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount point {path}: {source}")]
    OpenMountpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "the mount point {mountpoint} and the backing directory {backing} must not contain each other"
    )]
    Nested {
        mountpoint: PathBuf,
        backing: PathBuf,
    },
    #[error("mounting FUSE at {path} (needs /dev/fuse and root): {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unmounting {path}: {source} (it was detached lazily instead and disappears once its last open file is closed)"
    )]
    UnmountBusy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmounting {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    ControlSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control command refused: {reply}")]
    CommandRefused { reply: String },
}
