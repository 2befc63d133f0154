//! Which backing path each FUSE inode number stands for.
//!
//! FUSE inode numbers are the backing file system's inode numbers, except that the backing
//! root is presented as FUSE's root (1) and whatever backing file had number 1 takes the
//! root's number. Paths are relative to the backing root and updated on rename, so a
//! renamed directory's children keep resolving. Pure bookkeeping, no I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// FUSE's inode number of the root directory.
pub const ROOT: u64 = 1;

/// Inode number ↔ path table.
#[derive(Debug)]
pub struct Inodes {
    root_backing_ino: u64,
    paths: HashMap<u64, PathBuf>,
}

impl Inodes {
    /// A table whose root is the backing directory with inode number `root_backing_ino`.
    pub fn new(root_backing_ino: u64) -> Self {
        let mut paths = HashMap::new();
        paths.insert(ROOT, PathBuf::new());
        Self {
            root_backing_ino,
            paths,
        }
    }

    /// The FUSE inode number of backing inode `ino`.
    pub fn fuse_ino(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_backing_ino {
            ROOT
        } else if backing_ino == ROOT {
            self.root_backing_ino
        } else {
            backing_ino
        }
    }

    /// The path (relative to the backing root) last seen for `ino`.
    pub fn path(&self, ino: u64) -> Option<&Path> {
        self.paths.get(&ino).map(PathBuf::as_path)
    }

    /// Records that `path` is inode `ino` (a lookup, create or mkdir saw it).
    pub fn remember(&mut self, ino: u64, path: PathBuf) {
        if ino != ROOT {
            self.paths.insert(ino, path);
        }
    }

    /// Forgets inodes known under `path` (it was removed).
    pub fn removed(&mut self, path: &Path) {
        self.paths.retain(|ino, p| *ino == ROOT || p != path);
    }

    /// Moves `from` (and everything under it) to `to`; whatever was known at `to` is gone.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        self.removed(to);
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_owned()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backing_root_is_fuse_root_and_inode_one_takes_its_place() {
        let t = Inodes::new(500);
        assert_eq!(t.fuse_ino(500), ROOT);
        assert_eq!(t.fuse_ino(1), 500);
        assert_eq!(t.fuse_ino(77), 77);
        assert_eq!(t.path(ROOT), Some(Path::new("")));
    }

    #[test]
    fn renaming_a_directory_moves_its_children() {
        let mut t = Inodes::new(2);
        t.remember(10, "a".into());
        t.remember(11, "a/f".into());
        t.remember(12, "ab".into());
        t.remember(13, "b".into());
        t.renamed(Path::new("a"), Path::new("b"));
        assert_eq!(t.path(10), Some(Path::new("b")));
        assert_eq!(t.path(11), Some(Path::new("b/f")));
        assert_eq!(
            t.path(12),
            Some(Path::new("ab")),
            "a prefix of a name is not a parent"
        );
        assert_eq!(t.path(13), None, "the replaced target is forgotten");
    }

    #[test]
    fn removal_forgets_only_that_path_and_never_the_root() {
        let mut t = Inodes::new(2);
        t.remember(10, "x".into());
        t.remember(11, "y".into());
        t.removed(Path::new("x"));
        t.removed(Path::new(""));
        assert_eq!(t.path(10), None);
        assert_eq!(t.path(11), Some(Path::new("y")));
        assert_eq!(t.path(ROOT), Some(Path::new("")));
    }
}
