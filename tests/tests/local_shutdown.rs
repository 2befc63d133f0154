//! Local mode, real processes: the hand-off wait on SIGTERM (`--shutdown-handoff-seconds`)
//! ends as soon as the node holds no lease. With the operator gone (as when a store is
//! deleted, or its operator crashed) nobody hands the node's partitions off and, without a
//! lease, it serves none of them as primary: waiting the whole hand-off timeout would only
//! hold every pod of a deleted store in Terminating for that long.
//!
//! And every node stopped cleanly at once, right after a burst of writes, keeps them all.

use shardedstore_node::client::kv::Condition;
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

/// Every node stopped cleanly (SIGTERM) at once, right after a burst of acknowledged writes;
/// the supervisor restarts them, and every write is read back. A clean stop closes the
/// node's database, and redb then makes its last commit durable, a checkpoint or not: the
/// rows applied since the last checkpoint, which the node keeps in memory, must never be
/// behind the applied seq that commit stores (docs/protocol.md, "Applied rows in memory until
/// the checkpoint"). A build that stored the applied seq ahead of them lost 17 and 42 of 300
/// such writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_stopped_cleanly_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    const KEYS: usize = 300;
    let store = LocalStore::start(LocalOptions::default()).await?;
    let status = store.wait_settled(Duration::from_secs(60)).await?;
    let client = store.client()?;
    for i in 0..KEYS {
        client
            .put(format!("key{i}"), format!("value{i}"), Condition::Always)
            .await?;
    }
    for e in &status.endpoints {
        let pid = e
            .pid
            .ok_or_else(|| anyhow::anyhow!("no pid for {}", e.id))?;
        let ok = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -s TERM {pid} failed");
    }
    // Every node stops and the supervisor starts a new process for it.
    let old: Vec<Option<u32>> = status.endpoints.iter().map(|e| e.pid).collect();
    wait_until(Duration::from_secs(120), "every node restarted", || {
        let (store, old) = (&store, &old);
        async move {
            let now = store.status().await?;
            let restarted = now.endpoints.len() == old.len()
                && now
                    .endpoints
                    .iter()
                    .zip(old)
                    .all(|(e, was)| e.pid.is_some() && e.pid != *was)
                && old.iter().flatten().all(|pid| !running(*pid));
            restarted.then_some(())
        }
    })
    .await?;
    // Once they serve again, every write reads back.
    let missing = wait_until(Duration::from_secs(120), "every key readable", || {
        let client = &client;
        async move {
            let mut missing = Vec::new();
            for i in 0..KEYS {
                match client.get(format!("key{i}")).await {
                    Ok(Some(v)) if v.value == format!("value{i}").as_bytes() => {}
                    Ok(other) => missing.push((i, other.map(|v| v.value))),
                    Err(_) => return None,
                }
            }
            Some(missing)
        }
    })
    .await?;
    anyhow::ensure!(
        missing.is_empty(),
        "{} of {KEYS} acknowledged writes lost after a clean stop of every node: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}
