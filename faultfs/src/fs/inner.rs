//! The pass-through state: backing root, inode table, open file handles, and the helpers
//! every operation uses (path resolution, attributes, error mapping).

use crate::faults::{Refusal, Shared, lock};
use crate::inodes::Inodes;
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and names: not at all, so sizes are always ours
/// (after a power loss a file may be shorter than the kernel last saw).
pub(crate) const TTL: Duration = Duration::ZERO;

/// One open file: the backing file and the FUSE inode it belongs to.
pub(crate) struct Handle {
    pub(crate) file: Arc<File>,
    pub(crate) ino: u64,
}

/// Everything the file-system operations share.
pub(crate) struct Inner {
    root: PathBuf,
    pub(crate) shared: Arc<Shared>,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
}

/// Maps an I/O error to the errno FUSE returns.
pub(crate) fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

/// Maps a refused admission to the errno FUSE returns.
pub(crate) fn refusal(r: Refusal) -> Errno {
    match r {
        Refusal::Eio | Refusal::PowerLost => Errno::EIO,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

impl Inner {
    pub(crate) fn new(root: PathBuf, shared: Arc<Shared>) -> std::io::Result<Self> {
        let root_ino = std::fs::metadata(&root)?.ino();
        Ok(Self {
            root,
            shared,
            inodes: Mutex::new(Inodes::new(root_ino)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `ino` relative to the backing root.
    pub(crate) fn rel_path(&self, ino: u64) -> Result<PathBuf, Errno> {
        lock(&self.inodes)
            .path(ino)
            .map(Path::to_owned)
            .ok_or(Errno::ESTALE)
    }

    /// The backing path of `ino`.
    pub(crate) fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        Ok(self.root.join(self.rel_path(ino)?))
    }

    /// The relative path of entry `name` in directory `parent`.
    pub(crate) fn child(&self, parent: u64, name: &std::ffi::OsStr) -> Result<PathBuf, Errno> {
        let name = Path::new(name);
        if name.components().count() != 1 {
            return Err(Errno::EINVAL);
        }
        Ok(self.rel_path(parent)?.join(name))
    }

    pub(crate) fn fuse_ino(&self, backing_ino: u64) -> u64 {
        lock(&self.inodes).fuse_ino(backing_ino)
    }

    pub(crate) fn remember(&self, meta: &Metadata, rel: PathBuf) -> u64 {
        let mut inodes = lock(&self.inodes);
        let ino = inodes.fuse_ino(meta.ino());
        inodes.remember(ino, rel);
        ino
    }

    pub(crate) fn forget_path(&self, rel: &Path) {
        lock(&self.inodes).removed(rel);
    }

    pub(crate) fn renamed(&self, from: &Path, to: &Path) {
        lock(&self.inodes).renamed(from, to);
    }

    /// The attributes FUSE reports for a backing file: its own, except that a file with
    /// unsynced data has the overlay's length.
    pub(crate) fn attr(&self, meta: &Metadata) -> FileAttr {
        let ino = self.fuse_ino(meta.ino());
        let size = if meta.is_file() {
            self.shared.overlay_len(ino).unwrap_or(meta.size())
        } else {
            meta.size()
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: u32::try_from(meta.rdev()).unwrap_or(0),
            blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
            flags: 0,
        }
    }

    /// Attributes of `ino`, through its open handle `fh` when given (the file may be unlinked).
    pub(crate) fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let meta = match fh.and_then(|fh| self.handle(fh).ok()) {
            Some((file, _)) => file.metadata(),
            None => std::fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(errno)?;
        Ok(self.attr(&meta))
    }

    pub(crate) fn add_handle(&self, file: File, ino: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        lock(&self.handles).insert(
            fh,
            Handle {
                file: Arc::new(file),
                ino,
            },
        );
        fh
    }

    pub(crate) fn handle(&self, fh: u64) -> Result<(Arc<File>, u64), Errno> {
        lock(&self.handles)
            .get(&fh)
            .map(|h| (h.file.clone(), h.ino))
            .ok_or(Errno::EBADF)
    }

    pub(crate) fn is_open(&self, ino: u64) -> bool {
        lock(&self.handles).values().any(|h| h.ino == ino)
    }

    /// Closes handle `fh`. The unsynced data of a file that was unlinked and is now closed
    /// everywhere can never be read again: it is forgotten.
    pub(crate) fn release(&self, fh: u64) {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return;
        };
        if !self.is_open(h.ino) && h.file.metadata().is_ok_and(|m| m.nlink() == 0) {
            self.shared.discard(h.ino);
        }
    }
}
