//! The FUSE file system: a pass-through to a backing directory whose mutating operations are
//! admitted by the fault rules first. An operation that must wait (frozen disk, fsync delay)
//! waits on its own thread, so reads and other files go on meanwhile.

mod data;
mod inner;
mod names;

use crate::faults::{Op, Refusal, Shared};
use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use inner::{Inner, TTL, refusal};
use names::{AttrChange, Caller};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Every open file bypasses the kernel page cache, so each read and write reaches us (and a
/// power loss cannot leave dropped data cached in the kernel).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

/// The pass-through file system handed to `fuser`.
pub(crate) struct PassThrough {
    inner: Arc<Inner>,
}

impl PassThrough {
    pub(crate) fn new(root: PathBuf, shared: Arc<Shared>) -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner::new(root, shared)?),
        })
    }

    /// Runs `f` once `op` is admitted: at once when no fault holds it back, else on a thread
    /// that waits for the thaw or serves the delay. If that thread cannot be started the reply
    /// inside `f` is dropped, and `fuser` answers EIO for it.
    fn admit<F>(&self, op: Op, f: F)
    where
        F: FnOnce(Result<(), Refusal>) + Send + 'static,
    {
        let shared = self.inner.shared.clone();
        if let Some(now) = shared.try_admit(op) {
            f(now);
            return;
        }
        let epoch = shared.epoch();
        let spawned = std::thread::Builder::new()
            .name("faultfs-wait".into())
            .spawn(move || f(shared.admit(op, epoch)));
        if let Err(e) = spawned {
            eprintln!("faultfs: cannot start a thread for a held-back operation: {e}");
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn entry(reply: ReplyEntry, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PassThrough {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // No writeback cache is requested: every write reaches the file system as it happens.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.inner.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let inner = self.inner.clone();
        let change = AttrChange {
            mode,
            uid,
            gid,
            atime,
            mtime,
        };
        let (ino, fh) = (ino.0, fh.map(|f| f.0));
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted.map_err(refusal).and_then(|()| {
                if let Some(size) = size {
                    inner.set_len(ino, fh, size)?;
                }
                inner.change_attrs(ino, change)?;
                inner.getattr(ino, fh)
            });
            match r {
                Ok(attr) => reply.attr(&TTL, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (inner, name, who) = (self.inner.clone(), name.to_owned(), caller(req));
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.mkdir(parent.0, &name, mode & !umask, who));
            entry(reply, r);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.unlink(parent.0, &name));
            empty(reply, r);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (inner, name) = (self.inner.clone(), name.to_owned());
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.rmdir(parent.0, &name));
            empty(reply, r);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (inner, name, target, who) = (
            self.inner.clone(),
            link_name.to_owned(),
            target.to_owned(),
            caller(req),
        );
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.symlink(parent.0, &name, &target, who));
            entry(reply, r);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (inner, name, newname) = (self.inner.clone(), name.to_owned(), newname.to_owned());
        let flags = flags.bits();
        self.admit(Op::Metadata, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.rename(parent.0, &name, newparent.0, &newname, flags));
            empty(reply, r);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.inner.open(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.inner.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (inner, data) = (self.inner.clone(), data.to_vec());
        self.admit(Op::Write, move |admitted| {
            match admitted
                .map_err(refusal)
                .and_then(|()| inner.write(fh.0, offset, &data))
            {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let inner = self.inner.clone();
        self.admit(Op::Fsync, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.fsync(fh.0, datasync));
            empty(reply, r);
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.inner.readdir(ino.0, offset) {
            Ok(entries) => {
                for (ino, next, kind, name) in entries {
                    if reply.add(INodeNo(ino), next, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let inner = self.inner.clone();
        self.admit(Op::Fsync, move |admitted| {
            let r = admitted
                .map_err(refusal)
                .and_then(|()| inner.fsyncdir(ino.0));
            empty(reply, r);
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = match self.inner.statfs() {
            Ok(st) => st,
            Err(e) => return reply.error(e),
        };
        let frsize = st.fragment_size().max(1);
        let (mut blocks, mut bfree, mut bavail) =
            (st.blocks(), st.blocks_free(), st.blocks_available());
        if let Some(capacity) = self.inner.shared.faults().capacity {
            let used = self.inner.used_bytes().unwrap_or(capacity);
            blocks = capacity / frsize;
            bfree = capacity.saturating_sub(used) / frsize;
            bavail = bfree;
        }
        reply.statfs(
            blocks,
            bfree,
            bavail,
            st.files(),
            st.files_free(),
            u32::try_from(st.block_size()).unwrap_or(4096),
            u32::try_from(st.name_max()).unwrap_or(255),
            u32::try_from(frsize).unwrap_or(4096),
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions (the mount uses default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (inner, name, who) = (self.inner.clone(), name.to_owned(), caller(req));
        self.admit(Op::Metadata, move |admitted| {
            match admitted
                .map_err(refusal)
                .and_then(|()| inner.create(parent.0, &name, mode & !umask, flags, who))
            {
                Ok((attr, fh)) => {
                    reply.created(&TTL, &attr, Generation(0), FileHandle(fh), OPEN_FLAGS)
                }
                Err(e) => reply.error(e),
            }
        });
    }
}
