//! Cleaning up after processes that died with a [`crate::FaultFs`] mounted (a test killed
//! with SIGKILL cannot unmount): every mount names the process serving it in its source
//! (`faultfs:<pid>:<backing>`), and [`sweep_stale_mounts`] detaches the faultfs mounts whose
//! process no longer runs. Mounts of live processes (other tests running now) are left alone,
//! and nothing is ever stat'ed through a mount (a frozen one could block the caller).

use crate::error::FaultFsError;
use std::path::{Path, PathBuf};

/// Whether a mount table's file system type is FUSE (`fuse`, or `fuse.<subtype>` when the
/// subtype is recorded).
fn is_fuse(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type.starts_with("fuse.")
}

/// The mount source naming the serving process and the backing directory.
pub(crate) fn source(pid: u32, backing: &Path) -> String {
    format!("faultfs:{pid}:{}", backing.display())
}

/// One faultfs mount found in a mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMount {
    pub mountpoint: PathBuf,
    /// The process that mounted it (`None` for a source in another format).
    pub pid: Option<u32>,
}

/// Undoes the octal escapes of `/proc/*/mountinfo` (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The faultfs mounts listed in `mountinfo` (the text of `/proc/self/mountinfo`), innermost
/// (last mounted) first, so detaching them in this order never detaches a parent first.
pub fn faultfs_mounts(mountinfo: &str) -> Vec<FaultMount> {
    let mut found: Vec<FaultMount> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            if !is_fuse(r.next()?) {
                return None;
            }
            let source = unescape(r.next()?);
            let rest = source.strip_prefix("faultfs:")?;
            let mountpoint = unescape(left.split(' ').nth(4)?);
            let pid = rest.split_once(':').and_then(|(pid, _)| pid.parse().ok());
            Some(FaultMount {
                mountpoint: PathBuf::from(mountpoint),
                pid,
            })
        })
        .collect();
    found.reverse();
    found
}

/// Whether process `pid` exists (a zombie counts as gone: it serves nothing).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// The mounts of `mounts` whose serving process is gone by `alive`.
pub fn stale(mounts: &[FaultMount], alive: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.pid.is_some_and(|p| !alive(p)))
        .map(|m| m.mountpoint.clone())
        .collect()
}

/// Detaches (`umount -l`) every faultfs mount whose serving process no longer runs, and
/// returns their mount points. Needs root, like mounting.
pub fn sweep_stale_mounts() -> Result<Vec<PathBuf>, FaultFsError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| FaultFsError::Unmount {
        path: path.to_owned(),
        source,
    })?;
    let gone = stale(&faultfs_mounts(&text), alive);
    for mountpoint in &gone {
        nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            FaultFsError::Unmount {
                path: mountpoint.clone(),
                source: e.into(),
            }
        })?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
80 27 0:50 / /tmp/a rw,nosuid,nodev,relatime - fuse faultfs:4242:/tmp/b rw,user_id=0,group_id=0,default_permissions
81 27 0:51 / /tmp/with\\040space rw,relatime - fuse.faultfs faultfs:77:/tmp/x\\040y rw,user_id=0
82 27 0:52 / /tmp/other rw,relatime - fuse.sshfs host:/ rw
84 27 0:54 / /tmp/tmpfs rw,relatime - tmpfs faultfs:1:/x rw
83 27 0:53 / /tmp/old rw,relatime - fuse.faultfs faultfs:/tmp/z rw
";

    #[test]
    fn mounts_are_read_with_their_process_innermost_first() {
        let m = faultfs_mounts(TABLE);
        assert_eq!(
            m,
            vec![
                FaultMount {
                    mountpoint: "/tmp/old".into(),
                    pid: None
                },
                FaultMount {
                    mountpoint: "/tmp/with space".into(),
                    pid: Some(77)
                },
                FaultMount {
                    mountpoint: "/tmp/a".into(),
                    pid: Some(4242)
                },
            ]
        );
    }

    #[test]
    fn only_mounts_of_dead_processes_are_stale() {
        let m = faultfs_mounts(TABLE);
        assert_eq!(stale(&m, |p| p == 77), vec![PathBuf::from("/tmp/a")]);
        assert!(stale(&m, |_| true).is_empty());
        // A source without a pid is never touched: it may be served by anyone.
        assert_eq!(stale(&m, |_| false).len(), 2);
    }

    #[test]
    fn this_process_is_alive_and_a_source_names_it() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
        let s = source(std::process::id(), Path::new("/b"));
        assert_eq!(s, format!("faultfs:{}:/b", std::process::id()));
    }
}
