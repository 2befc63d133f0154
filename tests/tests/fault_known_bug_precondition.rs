//! KNOWN BUG REPRODUCTION — expected to FAIL until the node is fixed; ignored so CI stays
//! green. Run with
//! `cargo test -p shardedstore-tests --test fault_known_bug_precondition -- --ignored`.
//!
//! The primary decides `If-Match`/`If-None-Match` against the latest *pending* (appended,
//! not yet committed) write of the key (`Replica::write`, `pending`), and answers 412 at
//! once, while reads serve the committed state. So a client can get "412: the version is
//! not v" and then read version v: the 412 reflects a write that has not committed (and
//! that may never commit if the primary fails). No faults are needed: a few concurrent
//! clients with conditional writes hit it within a second.

use shardedstore_tests::checker::{RunConfig, run};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "known bug: 412 decided against uncommitted writes (docs/fault-injection.md)"]
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
