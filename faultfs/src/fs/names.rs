//! Namespace and attribute operations, passed straight through to the backing directory
//! (they are not held back until an fsync; see docs/faultfs.md).

use super::inner::{Inner, errno};
use fuser::{Errno, FileAttr, FileType, TimeOrNow};
use nix::fcntl::OFlag;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

/// Who asked: files created on their behalf are given to them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Attribute changes of one setattr call (size is handled by [`Inner::set_len`]).
#[derive(Debug, Default)]
pub(crate) struct AttrChange {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) atime: Option<TimeOrNow>,
    pub(crate) mtime: Option<TimeOrNow>,
}

fn when(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn give_to(path: &Path, caller: Caller) -> Result<(), Errno> {
    if caller.uid == 0 && caller.gid == 0 {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(caller.uid), Some(caller.gid)).map_err(errno)
}

impl Inner {
    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        let meta = std::fs::symlink_metadata(self.root().join(&rel)).map_err(errno)?;
        self.remember(&meta, rel);
        Ok(self.attr(&meta))
    }

    /// Opens the backing file read-write whatever the caller asked (fsync must be able to
    /// write the overlay through); read-only if that is all the backing file allows.
    pub(crate) fn open(&self, ino: u64) -> Result<u64, Errno> {
        let path = self.path(ino)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .or_else(|_| File::open(&path))
            .map_err(errno)?;
        Ok(self.add_handle(file, ino))
    }

    pub(crate) fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(FileAttr, u64), Errno> {
        let rel = self.child(parent, name)?;
        let path = self.root().join(&rel);
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(true)
            .mode(mode & 0o7777);
        if flags & OFlag::O_EXCL.bits() != 0 {
            options.create_new(true);
        }
        let truncate = flags & OFlag::O_TRUNC.bits() != 0;
        options.truncate(truncate);
        let file = options.open(&path).map_err(errno)?;
        give_to(&path, caller)?;
        let meta = file.metadata().map_err(errno)?;
        let ino = self.remember(&meta, rel);
        if truncate {
            self.shared.discard(ino);
        }
        let attr = self.attr(&meta);
        Ok((attr, self.add_handle(file, ino)))
    }

    pub(crate) fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        let path = self.root().join(&rel);
        std::fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&path)
            .map_err(errno)?;
        give_to(&path, caller)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        self.remember(&meta, rel);
        Ok(self.attr(&meta))
    }

    pub(crate) fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        caller: Caller,
    ) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        let path = self.root().join(&rel);
        std::os::unix::fs::symlink(target, &path).map_err(errno)?;
        give_to(&path, caller)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        self.remember(&meta, rel);
        Ok(self.attr(&meta))
    }

    pub(crate) fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        use std::os::unix::ffi::OsStringExt;
        let target = std::fs::read_link(self.path(ino)?).map_err(errno)?;
        Ok(target.into_os_string().into_vec())
    }

    /// Forgets the unsynced data of a file whose last name is going away, unless it is still
    /// open (then it is forgotten when closed).
    fn last_link_gone(&self, meta: &std::fs::Metadata) {
        if meta.is_file() && meta.nlink() <= 1 {
            let ino = self.fuse_ino(meta.ino());
            if !self.is_open(ino) {
                self.shared.discard(ino);
            }
        }
    }

    pub(crate) fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let rel = self.child(parent, name)?;
        let path = self.root().join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        std::fs::remove_file(&path).map_err(errno)?;
        self.forget_path(&rel);
        self.last_link_gone(&meta);
        Ok(())
    }

    pub(crate) fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let rel = self.child(parent, name)?;
        std::fs::remove_dir(self.root().join(&rel)).map_err(errno)?;
        self.forget_path(&rel);
        Ok(())
    }

    /// rename(2) without flags (RENAME_NOREPLACE/EXCHANGE are refused with EINVAL).
    pub(crate) fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        let (from_path, to_path) = (self.root().join(&from), self.root().join(&to));
        let source = std::fs::symlink_metadata(&from_path).map_err(errno)?;
        let replaced = std::fs::symlink_metadata(&to_path).ok();
        std::fs::rename(&from_path, &to_path).map_err(errno)?;
        self.renamed(&from, &to);
        if let Some(old) = replaced
            && old.ino() != source.ino()
        {
            self.last_link_gone(&old);
        }
        Ok(())
    }

    /// Mode, owner and times; the size is changed by [`Inner::set_len`].
    pub(crate) fn change_attrs(&self, ino: u64, change: AttrChange) -> Result<(), Errno> {
        let path = self.path(ino)?;
        if let Some(mode) = change.mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            std::os::unix::fs::lchown(&path, change.uid, change.gid).map_err(errno)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
            if !meta.file_type().is_symlink() {
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = change.atime {
                    times = times.set_accessed(when(t));
                }
                if let Some(t) = change.mtime {
                    times = times.set_modified(when(t));
                }
                File::open(&path)
                    .and_then(|f| f.set_times(times))
                    .map_err(errno)?;
            }
        }
        Ok(())
    }

    /// The entries of directory `ino` from position `offset` on: (inode, next offset, kind, name).
    pub(crate) fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<Vec<(u64, u64, FileType, OsString)>, Errno> {
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(self.path(ino)?).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            use std::os::unix::fs::DirEntryExt;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push((self.fuse_ino(entry.ino()), kind, entry.file_name()));
        }
        Ok(entries
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(i, (ino, kind, name))| (ino, i as u64 + 1, kind, name))
            .collect())
    }

    /// statfs of the backing file system, or of the configured capacity when one is set.
    pub(crate) fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs, Errno> {
        nix::sys::statvfs::statvfs(self.root()).map_err(|e| Errno::from_i32(e as i32))
    }
}
