//! Finding the external tools some suites need (helm, promtool).
//!
//! A tool is looked up in `SHARDEDSTORE_<NAME>` (e.g. `SHARDEDSTORE_HELM`), then `PATH`, then
//! the cache that `hack/install-tools.sh` fills. A suite without its tool prints why it did
//! not run — unless `SHARDEDSTORE_REQUIRE_TOOLS=1` (CI sets it), which makes that a failure.

use std::path::PathBuf;

/// Where `hack/install-tools.sh` puts the tools it builds.
pub fn tool_cache() -> PathBuf {
    std::env::var("SHARDEDSTORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/shardedstore")
        })
        .join("tools/bin")
}

/// The path of tool `name`, if it is installed anywhere we look.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let var = format!("SHARDEDSTORE_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([tool_cache().join(name)])
        .find(|p| p.is_file())
}

/// Like [`find_tool`], but a missing tool fails the test when `SHARDEDSTORE_REQUIRE_TOOLS=1`
/// and otherwise prints a `SKIPPED:` line saying how to install it.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        assert!(
            std::env::var("SHARDEDSTORE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} not found but SHARDEDSTORE_REQUIRE_TOOLS=1; run `bash hack/install-tools.sh {name}`"
        );
        eprintln!("SKIPPED: {name} not found; run `bash hack/install-tools.sh {name}`");
    }
    found
}

/// True if FUSE file systems can be mounted here (`/dev/fuse` and root). Otherwise the test
/// fails when `SHARDEDSTORE_REQUIRE_TOOLS=1` and prints a `SKIPPED:` line.
pub fn require_fuse() -> bool {
    let Some(why) = shardedstore_faultfs::fuse_unavailable() else {
        return true;
    };
    assert!(
        std::env::var("SHARDEDSTORE_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "FUSE unavailable but SHARDEDSTORE_REQUIRE_TOOLS=1: {why}"
    );
    eprintln!("SKIPPED: FUSE unavailable: {why}");
    false
}
