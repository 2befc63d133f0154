//! How much memory the database's page cache may hold.
//!
//! redb keeps the pages it reads, and the pages of commits not yet synced, in a cache of its
//! own; left at redb's default it grows to 1 GiB, whatever the container's memory limit, and
//! up to half of it can be pages waiting for the next checkpoint. Two things follow:
//!
//! - a pod with the default limit of 1 GiB could be killed for running out of memory once its
//!   node holds a few hundred MiB of data;
//! - a node taking in a snapshot kept every page it wrote, each in freshly faulted memory,
//!   instead of recycling the buffers of a full cache: a new replica filled at 19–37 MiB/s
//!   with the 1 GiB cache against 75–150 MiB/s with 256 MiB or less on the same machine
//!   (`docs/benchmarks.md`).
//!
//! So the cache defaults to a quarter of the container's memory limit, at most
//! [`MAX_DEFAULT_BYTES`], and `--cache-bytes` sets it outright.

use std::path::{Path, PathBuf};

/// The default cache when the memory limit leaves room for it, or when there is no limit.
pub const MAX_DEFAULT_BYTES: u64 = 128 * 1024 * 1024;
/// The smallest cache: the default never goes below it, and `--cache-bytes` is refused below it.
pub const MIN_BYTES: u64 = 16 * 1024 * 1024;

/// The cache for a process whose memory is limited to `limit` bytes (`None`: no limit).
fn default_for_limit(limit: Option<u64>) -> u64 {
    limit.map_or(MAX_DEFAULT_BYTES, |l| {
        (l / 4).clamp(MIN_BYTES, MAX_DEFAULT_BYTES)
    })
}

/// The memory limit of this process's cgroup, if it has one: `memory.max` (cgroup v2) or
/// `memory.limit_in_bytes` (cgroup v1) of the cgroup `/proc/self/cgroup` names, under
/// `/sys/fs/cgroup` (a container with its own cgroup namespace sees its cgroup as `/`).
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_files(&own)
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .as_deref()
        .and_then(parse_limit)
}

/// The files that may hold the memory limit, most specific first, for a `/proc/self/cgroup`.
fn limit_files(proc_self_cgroup: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            files.push(root.join(path).join("memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(root.join("memory").join(path).join("memory.limit_in_bytes"));
        }
    }
    files.push(root.join("memory.max"));
    files.push(root.join("memory/memory.limit_in_bytes"));
    files
}

/// A cgroup limit file's content: a number of bytes, or `max` (v2) / a value near `u64::MAX`
/// (v1's "no limit", rounded down to the page size) for none.
fn parse_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 62).then_some(n)
}

/// The cache this node uses: `configured` when given, else the default for its memory limit.
pub fn cache_bytes(configured: Option<u64>) -> u64 {
    configured.unwrap_or_else(|| default_for_limit(cgroup_memory_limit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_default_is_a_quarter_of_the_limit_between_the_bounds() {
        assert_eq!(default_for_limit(None), 128 * MIB);
        assert_eq!(default_for_limit(Some(1024 * MIB)), 128 * MIB);
        assert_eq!(default_for_limit(Some(256 * MIB)), 64 * MIB);
        assert_eq!(default_for_limit(Some(8192 * MIB)), 128 * MIB);
        assert_eq!(default_for_limit(Some(512 * MIB)), 128 * MIB);
        assert_eq!(default_for_limit(Some(32 * MIB)), 16 * MIB);
    }

    #[test]
    fn cgroup_limit_files_are_read_with_their_no_limit_values() {
        assert_eq!(parse_limit("1073741824\n"), Some(1024 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        // cgroup v1 without a limit: i64::MAX rounded down to the page size.
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn the_limit_is_looked_for_in_the_process_own_cgroup_first() {
        let v2 = limit_files("0::/kubepods/pod1/c1\n");
        assert_eq!(
            v2[0],
            Path::new("/sys/fs/cgroup/kubepods/pod1/c1/memory.max")
        );
        let v1 = limit_files("5:cpu:/x\n4:memory:/process_api/abc\n0::/\n");
        assert_eq!(
            v1[0],
            Path::new("/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes")
        );
        assert_eq!(v1[1], Path::new("/sys/fs/cgroup/memory.max"));
        assert_eq!(
            limit_files("").last().map(PathBuf::as_path),
            Some(Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        );
    }

    #[test]
    fn a_configured_size_wins_over_the_default() {
        assert_eq!(cache_bytes(Some(64 * MIB)), 64 * MIB);
    }
}
