//! The nodes' disks of a run with disk faults: node `i`'s data directory
//! (`<store data dir>/node-<i>`) is a faultfs mount over its own backing directory, so the
//! nemesis can hang, slow down, fill or fail one node's disk, or cut its power, without
//! touching the others (docs/faultfs.md).
//!
//! Mounting first detaches the faultfs mounts of runs that were killed without unmounting.
//! Dropping [`Disks`] heals and unmounts every mount (lazily if a process still has a file
//! open) and then removes the backing directories: drop it after the processes using it.

use shardedstore_faultfs::{FaultControl, FaultFs, sweep_stale_mounts};
use std::path::Path;

/// One faultfs mount per node ordinal.
pub struct Disks {
    /// (node id, its mount); dropped (unmounted) before the backing directories.
    mounts: Vec<(String, FaultFs)>,
    _backing: tempfile::TempDir,
}

/// Total apparent size of the regular files below `dir` (as the processes see them: a
/// file's unsynced tail counts).
fn used_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += used_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

impl Disks {
    /// Mounts a fresh faultfs at `data_dir/node-<i>` for `i` in `0..nodes` (before the store
    /// starts, so every node's data lives on its mount from the first write).
    pub fn mount(data_dir: &Path, nodes: u32) -> anyhow::Result<Self> {
        let swept = sweep_stale_mounts()?;
        if !swept.is_empty() {
            eprintln!("faultfs: detached stale mounts of dead runs: {swept:?}");
        }
        let backing = tempfile::Builder::new()
            .prefix("shardedstore-disks-")
            .tempdir()?;
        let mut mounts = Vec::new();
        for i in 0..nodes {
            let id = format!("node-{i}");
            let (b, m) = (backing.path().join(&id), data_dir.join(&id));
            std::fs::create_dir_all(&b)?;
            std::fs::create_dir_all(&m)?;
            mounts.push((id, FaultFs::mount(&b, &m)?));
        }
        Ok(Self {
            mounts,
            _backing: backing,
        })
    }

    /// The fault switch of `node`'s disk.
    pub fn control(&self, node: &str) -> anyhow::Result<FaultControl> {
        self.mounts
            .iter()
            .find(|(id, _)| id == node)
            .map(|(_, fs)| fs.control())
            .ok_or_else(|| anyhow::anyhow!("{node} has no faultfs disk"))
    }

    /// Every disk's switch, by node id.
    pub fn all(&self) -> impl Iterator<Item = (&str, FaultControl)> {
        self.mounts
            .iter()
            .map(|(id, fs)| (id.as_str(), fs.control()))
    }

    /// Bytes the files on `node`'s disk take now (the base of an ENOSPC capacity).
    pub fn used_bytes(&self, node: &str) -> anyhow::Result<u64> {
        let (_, fs) = self
            .mounts
            .iter()
            .find(|(id, _)| id == node)
            .ok_or_else(|| anyhow::anyhow!("{node} has no faultfs disk"))?;
        Ok(used_bytes(fs.mountpoint())?)
    }

    /// Clears every fault on every disk (blocked operations proceed).
    pub fn heal_all(&self) {
        for (_, fs) in &self.mounts {
            fs.control().heal();
        }
    }
}
