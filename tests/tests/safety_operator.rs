//! Local mode, real processes: the operator side of the safety rules. Each test names the
//! rule it guards in its doc comment.
//!
//! - Map recovery: the stored map is lost while nodes hold it; the operator resumes from the
//!   nodes' newest map instead of bootstrapping a fresh one over them.
//! - Map store unreadable: heartbeats (and so leases and writes) continue while the store
//!   cannot be read; only map changes wait.
//! - Fresh coordinator: a restarted operator waits a full lease before failing over a node it
//!   has never heard from (the previous operator may have granted it a lease just before).

use shardedstore_tests::local_harness::{LocalOptions, LocalStore, WriteLoad, ensure_none_lost};
use shardedstore_tests::node_harness::wait_until;
use std::time::{Duration, Instant};

/// Map recovery (issue item 5): the operator is killed, `map.json` deleted, the operator
/// restarted. It recovers the nodes' map (the version continues from theirs), failover still
/// works afterwards, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_map_is_recovered_from_the_nodes() -> anyhow::Result<()> {
    let mut store = LocalStore::start(LocalOptions::default()).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "recover", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    // A few map changes first, so that the nodes' version is well above 1.
    store.kill9_node("node-1").await?;
    wait_until(Duration::from_secs(30), "node-1's failover", || async {
        store
            .status()
            .await
            .filter(|s| s.coordinator.map_version > 2)
    })
    .await?;
    let settled = store.wait_settled(Duration::from_secs(60)).await?;
    let version = settled.coordinator.map_version;

    store.kill9_operator();
    std::fs::remove_file(store.data_dir().join("map.json"))?;
    store.start_operator()?;

    let resumed = wait_until(Duration::from_secs(60), "a recovered map", || async {
        store
            .status()
            .await
            .filter(|s| s.coordinator.map_version > 0)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(40)))?;
    anyhow::ensure!(
        resumed.coordinator.map_version >= version,
        "bootstrapped over the nodes: version {} < {version}\n{}",
        resumed.coordinator.map_version,
        store.log_tail(40)
    );
    let stored: shardedstore_node::map::PartitionMap =
        serde_json::from_slice(&std::fs::read(store.data_dir().join("map.json"))?)?;
    anyhow::ensure!(stored.version >= version, "map.json at {}", stored.version);

    // The recovered map is the live one: the nodes take the next versions.
    store.kill9_node("node-2").await?;
    wait_until(Duration::from_secs(30), "node-2's failover", || async {
        store
            .status()
            .await
            .filter(|s| s.coordinator.map_version > version)
    })
    .await?;
    let after = store.wait_settled(Duration::from_secs(60)).await?;
    let map = client.map().await?;
    anyhow::ensure!(
        map.version >= after.coordinator.map_version,
        "nodes hold {} < {}",
        map.version,
        after.coordinator.map_version
    );
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let report = load.stop().await;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}

/// Map store unreadable (issue item 9): an operator restarted while `map.json` cannot be
/// read keeps heartbeating, so writes are acknowledged throughout several leases; once the
/// store is readable again it resumes planning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_continue_while_the_map_store_is_unreadable() -> anyhow::Result<()> {
    let mut store = LocalStore::start(LocalOptions::default()).await?;
    let lease = Duration::from_millis(store.options.lease_ms);
    let client = store.client()?;
    let load = WriteLoad::start(&client, "unreadable", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    store.kill9_operator();
    let map_path = store.data_dir().join("map.json");
    let saved = store.data_dir().join("map.json.saved");
    std::fs::rename(&map_path, &saved)?;
    // A directory where the file should be: every read fails (root ignores permissions).
    std::fs::create_dir(&map_path)?;
    store.start_operator()?;
    let restarted = Instant::now();

    // Writes keep being acknowledged, one lease at a time, for three leases: without
    // heartbeats every node's lease would have run out after one.
    while restarted.elapsed() < 3 * lease {
        load.wait_for_acks(5, lease).await.map_err(|e| {
            anyhow::anyhow!(
                "{e} after {:?}\n{}",
                restarted.elapsed(),
                store.log_tail(30)
            )
        })?;
    }
    anyhow::ensure!(
        store.log_tail(200).contains("loading the partition map"),
        "the store was not unreadable"
    );

    std::fs::remove_dir(&map_path)?;
    std::fs::rename(&saved, &map_path)?;
    store.kill9_node("node-0").await?;
    store.wait_settled(Duration::from_secs(60)).await?;
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let report = load.stop().await;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}

/// Fresh coordinator (issue item 3): a node is frozen (SIGSTOP: its process exists, so it is
/// not confirmed dead) and the operator restarted at once. The new operator has never heard
/// from the node, and the old one may have granted it a lease just before dying: it must not
/// fail the node's primaries over before one full lease has passed since it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_waits_a_lease_before_failing_over_an_unheard_node()
-> anyhow::Result<()> {
    let mut store = LocalStore::start(LocalOptions::default()).await?;
    let lease = Duration::from_millis(store.options.lease_ms);
    let led = |s: &shardedstore_operator::local::control::LocalStatus| {
        s.coordinator
            .nodes
            .iter()
            .find(|n| n.name == "node-0")
            .map_or(0, |n| n.primaries)
    };
    let status = store
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    anyhow::ensure!(led(&status) > 0, "node-0 leads nothing");
    let pid = status
        .endpoints
        .iter()
        .find(|e| e.id == "node-0")
        .and_then(|e| e.pid)
        .ok_or_else(|| anyhow::anyhow!("no pid for node-0"))?;
    let signal = |name: &str| -> anyhow::Result<()> {
        let ok = std::process::Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -s {name} {pid} failed");
        Ok(())
    };

    // The harness's anchor process keeps the nodes' process group from being orphaned when
    // the operator dies, so the kernel never hangs up (SIGHUP) the frozen node.
    store.kill9_operator();
    signal("STOP")?;
    let restarted = Instant::now();
    store.start_operator()?;
    let moved = wait_until(
        Duration::from_secs(60),
        "node-0's primaries failed over",
        || async {
            store
                .status()
                .await
                .filter(|s| s.coordinator.map_version > 0 && led(s) == 0)
                .map(|_| restarted.elapsed())
        },
    )
    .await;
    // Thaw the node before judging, so that nothing is left frozen on failure.
    let thawed = signal("CONT");
    let moved = moved.map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(40)))?;
    thawed?;
    anyhow::ensure!(
        moved >= lease,
        "failed over {moved:?} after the restart, within the {lease:?} lease the old operator may have granted"
    );
    store.wait_settled(Duration::from_secs(60)).await?;
    Ok(())
}
