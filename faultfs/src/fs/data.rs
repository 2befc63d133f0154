//! File data: reads see the unsynced overlay over the backing file, writes go to the
//! overlay, fsync writes the overlay through and syncs the backing file, truncation goes
//! straight through to the backing file and cuts the overlay. Capacity (ENOSPC) is checked
//! here for everything that makes a file longer.

use super::inner::{Inner, errno};
use crate::faults::lock;
use crate::overlay::Overlay;
use fuser::Errno;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Reads into `buf` from `offset` until it is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Total apparent size of the regular files under `dir`, each at its logical length.
fn usage(inner: &Inner, dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += usage(inner, &entry.path())?;
        } else if meta.is_file() {
            let ino = inner.fuse_ino(meta.ino());
            total += inner.shared.overlay_len(ino).unwrap_or(meta.size());
        }
    }
    Ok(total)
}

/// Guards a size-growing operation when a capacity is set: returns the guard (held until the
/// growth is applied) and the bytes still free.
fn reserve(inner: &Inner) -> Result<Option<(std::sync::MutexGuard<'_, ()>, u64)>, Errno> {
    let Some(capacity) = inner.shared.faults().capacity else {
        return Ok(None);
    };
    let guard = lock(&inner.shared.capacity_lock);
    let used = usage(inner, inner.root()).map_err(errno)?;
    Ok(Some((guard, capacity.saturating_sub(used))))
}

impl Inner {
    /// Total apparent size of the files (each at its logical length).
    pub(crate) fn used_bytes(&self) -> Result<u64, Errno> {
        usage(self, self.root()).map_err(errno)
    }

    /// The file's logical length: the overlay's, else the backing file's.
    fn current_len(file: &File, overlay: Option<&Overlay>) -> Result<u64, Errno> {
        match overlay {
            Some(ov) => Ok(ov.len()),
            None => Ok(file.metadata().map_err(errno)?.len()),
        }
    }

    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (file, ino) = self.handle(fh)?;
        let slot = self.shared.existing_slot(ino);
        let guard = slot.as_ref().map(|s| lock(s));
        match guard.as_ref().and_then(|g| g.as_ref()) {
            Some(ov) => {
                let n = u64::from(size).min(ov.len().saturating_sub(offset)) as usize;
                let mut buf = vec![0u8; n];
                read_full_at(&file, offset, &mut buf).map_err(errno)?;
                ov.patch(offset, &mut buf);
                Ok(buf)
            }
            None => {
                let mut buf = vec![0u8; size as usize];
                let n = read_full_at(&file, offset, &mut buf).map_err(errno)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    /// Records a write in the file's overlay (nothing reaches the backing file yet).
    pub(crate) fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let (file, ino) = self.handle(fh)?;
        let reserved = reserve(self)?;
        let slot = self.shared.slot(ino);
        let mut guard = lock(&slot);
        let len = Self::current_len(&file, guard.as_ref())?;
        let end = offset + data.len() as u64;
        if let Some((_, free)) = &reserved
            && end.saturating_sub(len) > *free
        {
            self.shared.count_enospc();
            return Err(Errno::ENOSPC);
        }
        guard
            .get_or_insert_with(|| Overlay::new(len))
            .write(offset, data);
        self.shared.count_write(data.len() as u64);
        Ok(data.len() as u32)
    }

    /// Writes the overlay through to the backing file and syncs it. On failure the overlay
    /// stays: the data is still not durable.
    pub(crate) fn fsync(&self, fh: u64, datasync: bool) -> Result<(), Errno> {
        let (file, ino) = self.handle(fh)?;
        let slot = self.shared.existing_slot(ino);
        let mut guard = slot.as_ref().map(|s| lock(s));
        if let Some(ov) = guard.as_ref().and_then(|g| g.as_ref()) {
            for (offset, data) in ov.extents() {
                file.write_all_at(data, offset).map_err(errno)?;
            }
            if file.metadata().map_err(errno)?.len() != ov.len() {
                file.set_len(ov.len()).map_err(errno)?;
            }
        }
        if datasync {
            file.sync_data().map_err(errno)?;
        } else {
            file.sync_all().map_err(errno)?;
        }
        if let Some(g) = guard.as_mut() {
            **g = None;
        }
        self.shared.count_fsync();
        Ok(())
    }

    /// fsync of a directory: nothing is buffered for directories, the backing one is synced.
    pub(crate) fn fsyncdir(&self, ino: u64) -> Result<(), Errno> {
        File::open(self.path(ino)?)
            .and_then(|d| d.sync_all())
            .map_err(errno)?;
        self.shared.count_fsync();
        Ok(())
    }

    /// Sets the length of `ino` (through `fh` when given): straight through to the backing
    /// file, and the overlay loses what lies past the new end.
    pub(crate) fn set_len(&self, ino: u64, fh: Option<u64>, size: u64) -> Result<(), Errno> {
        let file = match fh.and_then(|fh| self.handle(fh).ok()) {
            Some((file, _)) => file,
            None => std::sync::Arc::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.path(ino)?)
                    .map_err(errno)?,
            ),
        };
        let reserved = reserve(self)?;
        let slot = self.shared.slot(ino);
        let mut guard = lock(&slot);
        let len = Self::current_len(&file, guard.as_ref())?;
        if let Some((_, free)) = &reserved
            && size.saturating_sub(len) > *free
        {
            self.shared.count_enospc();
            return Err(Errno::ENOSPC);
        }
        file.set_len(size).map_err(errno)?;
        if let Some(ov) = guard.as_mut() {
            ov.truncate(size);
        }
        Ok(())
    }
}
