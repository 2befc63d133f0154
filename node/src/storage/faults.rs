//! Test-only storage fault hooks, honoured only in debug builds (the test profile); a release
//! binary ignores the variables. They let multi-process tests reproduce disk faults with real
//! processes:
//!
//! - `SHARDEDSTORE_TEST_STALL_FILE=<path>`: while `<path>` exists, the writer holds every
//!   durable commit before it reaches the disk (a hung fsync). Entries appended meanwhile are
//!   in memory and already sent to followers; killing the process then loses this unsynced
//!   tail exactly as a power loss before the fsync would.
//! - `SHARDEDSTORE_TEST_FAIL_FILE=<path>`: while `<path>` exists, every durable commit fails
//!   (a failed fsync or write).
//! - `SHARDEDSTORE_TEST_APPLY_HOLD_FILE=<path>`: while `<path>` exists, no replica applies
//!   committed entries to its data table (a slow apply); appends, acknowledgements and
//!   commits go on ([`apply_held`]).
//! - `SHARDEDSTORE_TEST_CHECKPOINT_HOLD_FILE=<path>`: while `<path>` exists, the database
//!   thread holds every checkpoint before its durable commit (a slow checkpoint); the log
//!   goes on, so log commands are still made durable and answered ([`hold_checkpoint`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The file a hold hook's variable `var` names, in debug builds (`None` in release builds);
/// logs once that the hook (`what`) is active.
fn hold_file(var: &str, what: &str) -> Option<PathBuf> {
    let f = cfg!(debug_assertions)
        .then(|| std::env::var_os(var).map(PathBuf::from))
        .flatten();
    if let Some(f) = &f {
        tracing::warn!(file = %f.display(), "test-only {what} hold hook is active");
    }
    f
}

/// Whether the apply of committed entries is held by `SHARDEDSTORE_TEST_APPLY_HOLD_FILE`
/// (read once; always `false` in release builds).
pub fn apply_held() -> bool {
    static HOLD: OnceLock<Option<PathBuf>> = OnceLock::new();
    let hold = HOLD.get_or_init(|| hold_file("SHARDEDSTORE_TEST_APPLY_HOLD_FILE", "apply"));
    hold.as_deref().is_some_and(Path::exists)
}

/// Blocks while `SHARDEDSTORE_TEST_CHECKPOINT_HOLD_FILE` names a file that exists (read once;
/// never blocks in release builds). Called by the database thread before a checkpoint's
/// durable commit.
pub fn hold_checkpoint() {
    static HOLD: OnceLock<Option<PathBuf>> = OnceLock::new();
    let hold =
        HOLD.get_or_init(|| hold_file("SHARDEDSTORE_TEST_CHECKPOINT_HOLD_FILE", "checkpoint"));
    if let Some(f) = hold.as_deref() {
        wait_while_exists(f, "checkpoint held");
    }
}

/// Blocks while `f` exists, logging once that `what` is held.
fn wait_while_exists(f: &Path, what: &str) {
    let mut warned = false;
    while f.exists() {
        if !warned {
            tracing::warn!(file = %f.display(), "test hook: {what}");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The hooks read from the environment at writer start.
#[derive(Clone, Debug, Default)]
pub struct FaultHooks {
    stall_file: Option<PathBuf>,
    fail_file: Option<PathBuf>,
}

impl FaultHooks {
    /// Reads the variables in debug builds; nothing in release builds.
    pub fn from_env() -> Self {
        if !cfg!(debug_assertions) {
            return Self::default();
        }
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let hooks = Self {
            stall_file: path("SHARDEDSTORE_TEST_STALL_FILE"),
            fail_file: path("SHARDEDSTORE_TEST_FAIL_FILE"),
        };
        if hooks.stall_file.is_some() || hooks.fail_file.is_some() {
            tracing::warn!(?hooks, "test-only storage fault hooks are active");
        }
        hooks
    }

    /// Blocks while the stall file exists (called before a durable commit).
    pub fn stall(&self) {
        if let Some(f) = &self.stall_file {
            wait_while_exists(f, "durable commit held");
        }
    }

    /// Whether this durable commit must fail.
    pub fn fail(&self) -> bool {
        self.fail_file.as_ref().is_some_and(|f| f.exists())
    }
}
