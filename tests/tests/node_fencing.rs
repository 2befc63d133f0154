//! (c) A deposed primary that never saw the new epoch cannot complete a write: the in-sync
//! followers hold a newer map and reject its replication messages.

use shardedstore_node::map::partition_of;
use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::time::Duration;

/// A key of `partition` among `partitions`.
fn key_in(partition: u32, partitions: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| partition_of(k.as_bytes(), partitions) == partition)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_primary_cannot_complete_a_write() -> anyhow::Result<()> {
    let options = NodeOptions {
        extra_args: vec!["--write-timeout-ms".into(), "3000".into()],
        ..NodeOptions::default()
    };
    let cluster = Cluster::start(3, options)?;
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(1, 3, 2);
    map.partitions[0].primary = Some("node-0".into());
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(8))
        .await?;

    let before = key_in(0, 1, "before");
    let (status, version) = cluster.put(0, &before, b"old-epoch".to_vec()).await?;
    assert_eq!(status, 201, "{}", cluster.logs(20));

    // The operator fails over to node-1 at epoch 2; node-0 never receives that map (it is
    // partitioned from the operator) but keeps its lease.
    let mut next = map.clone();
    next.version = 2;
    next.partitions[0].epoch = 2;
    next.partitions[0].primary = Some("node-1".into());
    next.partitions[0].replicas = vec!["node-1".into(), "node-2".into()];
    next.partitions[0].in_sync = next.partitions[0].replicas.clone();
    cluster.install_on(&next, &["node-1", "node-2"]).await?;

    // A write sent straight to the deposed primary must not be acknowledged.
    let url = format!(
        "http://{}/v1/kv/{}",
        cluster.nodes[0].client_addr,
        key_in(0, 1, "after")
    );
    let r = cluster.http.put(&url).body("from-deposed").send().await?;
    let status = r.status().as_u16();
    assert!(
        status != 200 && status != 201,
        "the deposed primary acknowledged a write ({status})\n{}",
        cluster.logs(30)
    );
    // The new primary never saw it, and the write acknowledged before fail-over is there.
    let (status, _, _) = cluster.get(1, &key_in(0, 1, "after")).await?;
    assert_eq!(status, 404);
    let (status, v, body) = wait_until(Duration::from_secs(10), "the new primary serving", || {
        let c = &cluster;
        let k = before.clone();
        async move { c.get(1, &k).await.ok().filter(|r| r.0 != 503) }
    })
    .await?;
    assert_eq!((status, v, body), (200, version, b"old-epoch".to_vec()));
    // The old primary learned of epoch 2 from the rejections and stepped down.
    let beat = cluster
        .admin
        .heartbeat(
            &cluster.nodes[0].peer_addr,
            &shardedstore_node::admin_api::HeartbeatRequest {
                store: cluster.options.store.clone(),
                map_version: 1,
                lease_ms: 8000,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(beat.partitions[0].epoch, 2, "{beat:?}");
    assert_ne!(
        beat.partitions[0].role,
        shardedstore_node::admin_api::ReplicaRole::Primary
    );
    // Writes through the new primary work.
    let (status, _) = cluster
        .put(1, &key_in(0, 1, "new"), b"epoch-2".to_vec())
        .await?;
    assert_eq!(status, 201);
    Ok(())
}
