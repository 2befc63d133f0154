//! Local mode, real processes: scale 3 → 5 → 3 under write load; placement ends balanced
//! (placement `check()` on the installed map) and every acknowledged write is intact.

use shardedstore_tests::local_harness::{
    LocalOptions, LocalStore, WriteLoad, ensure_none_lost, placement_violations,
};
use std::time::Duration;

async fn assert_balanced(store: &LocalStore, nodes: usize) -> anyhow::Result<()> {
    let status = store
        .wait_settled_at(Some(nodes), Duration::from_secs(120))
        .await?;
    let map = store.client()?.map().await?;
    anyhow::ensure!(
        map.nodes.len() == nodes,
        "expected {nodes} nodes in the map, got {:?}",
        map.nodes.keys().collect::<Vec<_>>()
    );
    let violations = placement_violations(&map);
    anyhow::ensure!(violations.is_empty(), "{violations:?}\n{status:?}");
    for e in &map.partitions {
        // The same members; the order may differ (a member dropped from `inSync` and
        // admitted again is appended there, not at its place in `replicas`).
        fn set(v: &[String]) -> std::collections::BTreeSet<&String> {
            v.iter().collect()
        }
        anyhow::ensure!(
            set(&e.in_sync) == set(&e.replicas)
                && e.in_sync.len() == e.replicas.len()
                && e.learners.is_empty(),
            "{e:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_and_in_under_load_stays_balanced_and_keeps_every_write() -> anyhow::Result<()> {
    let store = LocalStore::start(LocalOptions::default()).await?;
    let client = store.client()?;
    let load = WriteLoad::start(&client, "scale", 4);
    // Each phase is checked under writes: so many acknowledged before it and after it,
    // however quickly the moves go.
    let progress = Duration::from_secs(30);
    load.wait_for_acks(50, progress).await?;
    anyhow::ensure!(
        store.scale(2).await.is_err(),
        "scaling below the replication factor must be refused"
    );

    store.scale(5).await?;
    assert_balanced(&store, 5).await?;
    load.wait_for_acks(50, progress).await?;

    store.scale(3).await?;
    assert_balanced(&store, 3).await?;
    let status = store
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    anyhow::ensure!(
        status.endpoints.len() == 3,
        "drained nodes should be stopped: {:?}",
        status.endpoints
    );
    load.wait_for_acks(50, progress).await?;

    let report = load.stop().await;
    ensure_none_lost(&client, &report, 150).await?;
    Ok(())
}
