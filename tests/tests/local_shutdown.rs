//! Local mode, real processes: the hand-off wait on SIGTERM (`--shutdown-handoff-seconds`)
//! ends as soon as the node holds no lease. With the operator gone (as when a store is
//! deleted, or its operator crashed) nobody hands the node's partitions off and, without a
//! lease, it serves none of them as primary: waiting the whole hand-off timeout would only
//! hold every pod of a deleted store in Terminating for that long.

use shardedstore_tests::local_harness::{LocalOptions, LocalStore};
use shardedstore_tests::node_harness::wait_until;
use std::time::Duration;

/// The hand-off timeout given to every node: far longer than the test waits.
const HANDOFF_SECONDS: u64 = 300;

fn running(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) has stopped too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_node_without_an_operator_stops_once_its_lease_lapses() -> anyhow::Result<()> {
    let options = LocalOptions {
        extra_env: vec![(
            "SHARDEDSTORE_SHUTDOWN_HANDOFF_SECONDS".into(),
            HANDOFF_SECONDS.to_string(),
        )],
        ..LocalOptions::default()
    };
    let lease = Duration::from_millis(options.lease_ms);
    let mut store = LocalStore::start(options).await?;
    let status = store.wait_settled(Duration::from_secs(60)).await?;
    let victim = status
        .coordinator
        .nodes
        .iter()
        .max_by_key(|n| n.primaries)
        .filter(|n| n.primaries > 0)
        .map(|n| n.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no node leads a partition: {status:?}"))?;
    let pid = status
        .endpoints
        .iter()
        .find(|e| e.id == victim)
        .and_then(|e| e.pid)
        .ok_or_else(|| anyhow::anyhow!("no pid for {victim}"))?;
    anyhow::ensure!(running(pid), "{victim} (pid {pid}) is not running");

    // The operator crashes: the nodes keep running, nobody heartbeats or hands off.
    store.kill9_operator();
    let ok = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -s TERM {pid} failed");

    // It stops once its lease lapses (one lease after the last heartbeat), well before the
    // hand-off timeout; the deadline leaves room for a loaded machine.
    let deadline = lease + Duration::from_secs(30);
    anyhow::ensure!(deadline < Duration::from_secs(HANDOFF_SECONDS));
    wait_until(deadline, "the terminated node to stop", || async {
        (!running(pid)).then_some(())
    })
    .await?;
    Ok(())
}
