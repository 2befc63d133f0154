//! Local mode, real processes: kill -9 a node under write load; its partitions fail over
//! within the lease bound and no acknowledged write is lost.

use shardedstore_tests::local_harness::{LocalOptions, LocalStore, WriteLoad, ensure_none_lost};
use shardedstore_tests::node_harness::wait_until;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_node_under_load_fails_over_within_the_lease_and_loses_nothing() -> anyhow::Result<()>
{
    let options = LocalOptions {
        // Keep the victim down while failover is measured; it comes back afterwards.
        restart_delay_ms: 8000,
        ..LocalOptions::default()
    };
    let lease = Duration::from_millis(options.lease_ms);
    let heartbeat = Duration::from_millis(options.heartbeat_ms);
    let store = LocalStore::start(options).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "failover", 4);
    load.wait_for_acks(100, Duration::from_secs(30)).await?;

    let before = store
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    let victim = before
        .coordinator
        .nodes
        .iter()
        .max_by_key(|n| n.primaries)
        .map(|n| n.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let led = before
        .coordinator
        .nodes
        .iter()
        .find(|n| n.name == victim)
        .map_or(0, |n| n.primaries);
    anyhow::ensure!(led > 0, "the victim leads nothing: {before:?}");

    let killed = Instant::now();
    store.kill9_node(&victim).await?;
    // Confirmed death (the child exited) fails over at once; even a merely suspected node
    // would be failed over one lease plus drift after the last heartbeat.
    let bound = lease + Duration::from_millis(500) + 4 * heartbeat + Duration::from_secs(2);
    let took = wait_until(
        bound,
        "every partition to have a live primary again",
        || async {
            store.status().await.and_then(|s| {
                let gone = s
                    .coordinator
                    .nodes
                    .iter()
                    .any(|n| n.name == victim && n.primaries == 0);
                (gone && s.coordinator.partition_summary.unavailable == 0).then(|| killed.elapsed())
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(40)))?;
    println!("failover of {led} partitions took {took:?} (bound {bound:?})");

    load.wait_for_acks(100, Duration::from_secs(30)).await?;
    let report = load.stop().await;

    // The victim restarts, is admitted back, and the store settles fully in sync.
    store.wait_settled(Duration::from_secs(90)).await?;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}

/// A frozen (SIGSTOP) primary does not exit, so its death is never confirmed: the coordinator
/// stops heartbeating it and fails over only once its lease has certainly run out. When it
/// thaws, it is re-admitted and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_primary_is_failed_over_after_its_lease_and_rejoins() -> anyhow::Result<()> {
    let options = LocalOptions::default();
    let lease = Duration::from_millis(options.lease_ms);
    let heartbeat = Duration::from_millis(options.heartbeat_ms);
    let store = LocalStore::start(options).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "frozen", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    let status = store
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    let victim = status
        .coordinator
        .nodes
        .iter()
        .max_by_key(|n| n.primaries)
        .map(|n| n.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let frozen = Instant::now();
    store.signal_node(&victim, "STOP").await?;
    // Not before the lease (plus drift) after the last heartbeat sent, at most a few
    // heartbeat intervals and a detection timeout later.
    let bound = lease + Duration::from_millis(500) + 8 * heartbeat + Duration::from_secs(3);
    let took = wait_until(
        bound,
        "the frozen node's partitions to fail over",
        || async {
            store.status().await.and_then(|s| {
                let moved = s
                    .coordinator
                    .nodes
                    .iter()
                    .any(|n| n.name == victim && n.primaries == 0);
                (moved && s.coordinator.partition_summary.unavailable == 0)
                    .then(|| frozen.elapsed())
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(40)))?;
    println!("suspected failover took {took:?} (lease {lease:?}, bound {bound:?})");
    anyhow::ensure!(
        took >= lease - heartbeat,
        "failed over after {took:?}, before the frozen primary's lease ({lease:?}) could expire"
    );

    store.signal_node(&victim, "CONT").await?;
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let report = load.stop().await;
    store.wait_settled(Duration::from_secs(90)).await?;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}
