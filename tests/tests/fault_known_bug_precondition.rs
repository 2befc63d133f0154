//! Regression test of fault-injection finding 1 (docs/fault-injection.md), fixed in the node.
//!
//! The primary used to decide `If-Match`/`If-None-Match` against the latest *pending*
//! (appended, not yet committed) write of the key and answer 412 at once, while reads serve
//! the committed state: a client could get "412: the version is not v" and then read
//! version v. Now a condition that fails against a pending write waits until that write is
//! applied and is decided again. No faults are needed: a few concurrent clients with
//! conditional writes hit the old behaviour within a second; the run takes about 5 s.

use shardedstore_tests::checker::{RunConfig, run};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn precondition_failures_are_linearizable_without_faults() -> anyhow::Result<()> {
    let mut cfg = RunConfig::for_seed(1);
    cfg.faults = false;
    cfg.workload.conditional = true;
    cfg.duration = Duration::from_secs(5);
    let report = run(&cfg).await?;
    println!("{}", report.render());
    anyhow::ensure!(
        report.failures().is_empty(),
        "not linearizable:\n{}",
        report.render()
    );
    Ok(())
}
