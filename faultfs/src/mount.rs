//! Mounting a [`FaultFs`] in this process (a `fuser` background session) and unmounting it
//! on every path: explicitly, or on drop, lazily if something still holds a file open.

use crate::error::FaultFsError;
use crate::faults::FaultControl;
use crate::fs::PassThrough;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use std::path::{Path, PathBuf};

/// Threads serving FUSE requests (operations held back by a fault wait on their own threads).
const SERVING_THREADS: usize = 4;

/// Why FUSE cannot be mounted here, or `None` if it can: it needs `/dev/fuse` and root
/// (the mount is made with mount(2) directly, without a setuid helper).
pub fn fuse_unavailable() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("mounting FUSE needs root".into());
    }
    None
}

/// A mounted fault-injecting pass-through of a backing directory. Dropping it unmounts.
pub struct FaultFs {
    control: FaultControl,
    backing: PathBuf,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultFs")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

fn directory(
    path: &Path,
    wrap: impl FnOnce(std::io::Error) -> FaultFsError,
) -> Result<PathBuf, FaultFsError> {
    let path = path.canonicalize().map_err(wrap)?;
    if !path.is_dir() {
        return Err(FaultFsError::NotADirectory { path });
    }
    Ok(path)
}

impl FaultFs {
    /// Mounts a pass-through of `backing` at `mountpoint` (both existing directories, neither
    /// inside the other), with no fault on. Returns once the mount serves requests.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Self, FaultFsError> {
        let backing = directory(backing, |source| FaultFsError::OpenBacking {
            path: backing.to_owned(),
            source,
        })?;
        let mountpoint = directory(mountpoint, |source| FaultFsError::OpenMountpoint {
            path: mountpoint.to_owned(),
            source,
        })?;
        if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
            return Err(FaultFsError::Nested {
                mountpoint,
                backing,
            });
        }
        let control = FaultControl::new();
        let fs = PassThrough::new(backing.clone(), control.shared.clone()).map_err(|source| {
            FaultFsError::OpenBacking {
                path: backing.clone(),
                source,
            }
        })?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(crate::stale::source(std::process::id(), &backing)),
            MountOption::Subtype("faultfs".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        config.acl = SessionACL::All;
        config.n_threads = Some(SERVING_THREADS);
        let session =
            fuser::spawn_mount(fs, &mountpoint, &config).map_err(|source| FaultFsError::Mount {
                path: mountpoint.clone(),
                source,
            })?;
        Ok(Self {
            control,
            backing,
            mountpoint,
            session: Some(session),
        })
    }

    /// A handle that switches this file system's faults.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }

    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The directory it passes through to.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Heals every fault (so held-back operations finish) and unmounts. If a process still
    /// has a file open below the mount point, the mount is detached lazily and
    /// [`FaultFsError::UnmountBusy`] is returned.
    pub fn unmount(mut self) -> Result<(), FaultFsError> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> Result<(), FaultFsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.control.heal();
        let Err(source) = session.umount_and_join() else {
            return Ok(());
        };
        if source.raw_os_error() == Some(nix::libc::EBUSY) {
            nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(
                |e| FaultFsError::Unmount {
                    path: self.mountpoint.clone(),
                    source: e.into(),
                },
            )?;
            return Err(FaultFsError::UnmountBusy {
                path: self.mountpoint.clone(),
                source,
            });
        }
        Err(FaultFsError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            eprintln!("faultfs: {e}");
        }
    }
}
