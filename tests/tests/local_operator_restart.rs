//! Local mode, real processes: the operator is killed (-9) while moves are in flight; a new
//! operator on the same data directory adopts the running nodes, resumes from the stored map,
//! finishes the moves, keeps supervising (restarting) the adopted nodes, and no acknowledged
//! write is lost.

use shardedstore_operator::coordinator::MoveState;
use shardedstore_tests::local_harness::{
    LocalOptions, LocalStore, WriteLoad, ensure_none_lost, placement_violations,
};
use shardedstore_tests::node_harness::wait_until;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_killed_mid_move_resumes_and_loses_nothing() -> anyhow::Result<()> {
    let options = LocalOptions {
        partitions: 32,
        max_concurrent_moves_per_node: 1,
        ..LocalOptions::default()
    };
    let mut store = LocalStore::start(options).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "restart", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    store.scale(5).await?;
    let version = wait_until(Duration::from_secs(60), "a move in flight", || async {
        store
            .status()
            .await
            .filter(|s| {
                s.coordinator
                    .moves
                    .iter()
                    .any(|m| m.state == MoveState::CatchingUp)
            })
            .map(|s| s.coordinator.map_version)
    })
    .await?;
    store.kill9_operator();
    // The restarted operator is told the same node count, as the custom resource would.
    store.options.nodes = 5;
    store.start_operator()?;

    let resumed = wait_until(
        Duration::from_secs(30),
        "the new operator's status",
        || async {
            store
                .status()
                .await
                .filter(|s| s.coordinator.map_version > 0)
        },
    )
    .await?;
    anyhow::ensure!(
        resumed.coordinator.map_version >= version,
        "the new operator did not resume from the stored map: {} < {version}",
        resumed.coordinator.map_version
    );
    let settled = store
        .wait_settled_at(Some(5), Duration::from_secs(120))
        .await?;
    anyhow::ensure!(settled.endpoints.len() == 5, "{:?}", settled.endpoints);
    let map = client.map().await?;
    let violations = placement_violations(&map);
    anyhow::ensure!(violations.is_empty(), "{violations:?}");

    // The adopted nodes are supervised too: one killed is restarted and rejoins.
    let old_pid = settled
        .endpoints
        .iter()
        .find(|e| e.id == "node-0")
        .and_then(|e| e.pid);
    anyhow::ensure!(old_pid.is_some(), "adopted node-0 has no known pid");
    store.kill9_node("node-0").await?;
    wait_until(Duration::from_secs(30), "node-0 restarted", || async {
        store.status().await.filter(|s| {
            s.endpoints
                .iter()
                .any(|e| e.id == "node-0" && e.running && e.pid.is_some() && e.pid != old_pid)
        })
    })
    .await?;
    store
        .wait_settled_at(Some(5), Duration::from_secs(120))
        .await?;
    load.wait_for_acks(50, Duration::from_secs(30)).await?;

    let report = load.stop().await;
    ensure_none_lost(&client, &report, 100).await?;
    Ok(())
}

/// An operator restarted during a scale-in, told the smaller node count, keeps draining the
/// node beyond it (it still holds replicas in the stored map) instead of taking it for dead:
/// the store settles at the smaller size with every partition fully in sync, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_restarted_during_a_drain_finishes_it() -> anyhow::Result<()> {
    let options = LocalOptions {
        partitions: 16,
        ..LocalOptions::default()
    };
    let mut store = LocalStore::start(options).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "drain-restart", 4);
    load.wait_for_acks(25, Duration::from_secs(30)).await?;
    store.scale(4).await?;
    store
        .wait_settled_at(Some(4), Duration::from_secs(120))
        .await?;

    store.scale(3).await?;
    wait_until(Duration::from_secs(30), "node-3 draining", || async {
        store.status().await.filter(|s| {
            s.coordinator.nodes.iter().any(|n| {
                n.name == "node-3"
                    && n.state == shardedstore_node::map::NodeState::Draining
                    && n.replicas > 0
            })
        })
    })
    .await?;
    store.kill9_operator();
    store.options.nodes = 3;
    store.start_operator()?;

    let settled = store
        .wait_settled_at(Some(3), Duration::from_secs(120))
        .await?;
    anyhow::ensure!(
        settled.coordinator.partition_summary.under_replicated == 0,
        "{:?}",
        settled.coordinator.partition_summary
    );
    load.wait_for_acks(25, Duration::from_secs(30)).await?;
    let report = load.stop().await;
    ensure_none_lost(&client, &report, 50).await?;
    Ok(())
}
