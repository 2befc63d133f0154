//! Local mode, real processes: a node that stays dead past `replaceAfter` has its replicas
//! re-created on the others; when it returns, it takes replicas again (its stale copies are
//! dropped or caught up) and nothing acknowledged is lost.

use shardedstore_node::map::NodeState;
use shardedstore_tests::local_harness::{
    LocalOptions, LocalStore, WriteLoad, ensure_none_lost, placement_violations,
};
use shardedstore_tests::node_harness::wait_until;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_node_is_replaced_after_replace_after_and_rejoins_when_back() -> anyhow::Result<()> {
    let options = LocalOptions {
        nodes: 4,
        replace_after_secs: 2,
        // Long enough for the replacement to finish before the node is started again.
        restart_delay_ms: 15_000,
        ..LocalOptions::default()
    };
    let store = LocalStore::start(options).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "replace", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    store.kill9_node("node-0").await?;
    wait_until(
        Duration::from_secs(14),
        "node-0 replaced and its replicas re-created",
        || async {
            store.status().await.filter(|s| {
                let c = &s.coordinator;
                c.nodes.iter().any(|n| {
                    n.name == "node-0" && n.state == NodeState::Replaced && n.replicas == 0
                }) && c.partition_summary.healthy == c.partition_summary.total
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(40)))?;

    // node-0 is restarted by the supervisor, comes back Active and receives replicas again.
    let settled = store
        .wait_settled_at(Some(4), Duration::from_secs(90))
        .await?;
    let back = settled
        .coordinator
        .nodes
        .iter()
        .find(|n| n.name == "node-0")
        .map_or(0, |n| n.replicas);
    anyhow::ensure!(
        back > 0,
        "node-0 holds nothing after returning: {settled:?}"
    );
    let map = client.map().await?;
    let violations = placement_violations(&map);
    anyhow::ensure!(violations.is_empty(), "{violations:?}");
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    let report = load.stop().await;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}
