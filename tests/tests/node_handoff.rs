//! Hand-off and drop semantics of the admin API: the primary stops taking writes, answers
//! ready once the target holds everything, and the new map moves the role without losing a
//! write; a replica is dropped only once the map no longer lists it.

use shardedstore_node::admin_api::{HandoffRequest, ReplicaRole};
use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_moves_the_primary_without_losing_writes() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(1, 2, 1);
    map.partitions[0].primary = Some("node-0".into());
    map.partitions[0].replicas = vec!["node-0".into(), "node-1".into()];
    map.partitions[0].in_sync = map.partitions[0].replicas.clone();
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;

    let mut versions = Vec::new();
    for i in 0..50 {
        let (status, v) = cluster
            .put(0, &format!("k{i}"), format!("v{i}").into_bytes())
            .await?;
        assert_eq!(status, 201, "{}", cluster.logs(20));
        versions.push(v);
    }
    let node0 = cluster.nodes[0].peer_addr.clone();

    // Refused for a target that is not in sync.
    let bad = HandoffRequest {
        epoch: 1,
        to: "node-2".into(),
        timeout_ms: 100,
    };
    let err = cluster.admin.handoff(&node0, 0, &bad).await.err();
    assert_eq!(err.and_then(|e| e.status()), Some(409));

    let req = HandoffRequest {
        epoch: 1,
        to: "node-1".into(),
        timeout_ms: 5000,
    };
    let answer = cluster.admin.handoff(&node0, 0, &req).await?;
    assert!(answer.ready, "{answer:?}\n{}", cluster.logs(20));
    assert_eq!(answer.position.last_seq, 50);
    // The old primary takes no more writes (and serves nothing) until a newer map.
    let (status, _) = cluster.put(0, "during", b"x".to_vec()).await?;
    assert_eq!(status, 503);
    let (status, _, _) = cluster.get(0, "k1").await?;
    assert_eq!(status, 503);

    // The operator writes primary = node-1 at epoch 2.
    let mut next = map.clone();
    next.version = 2;
    next.partitions[0].epoch = 2;
    next.partitions[0].primary = Some("node-1".into());
    cluster.install(&next).await?;
    for (i, v) in versions.iter().enumerate() {
        let (status, version, body) =
            wait_until(Duration::from_secs(10), "the new primary", || {
                let c = &cluster;
                async move { c.get(0, &format!("k{i}")).await.ok().filter(|r| r.0 != 503) }
            })
            .await?;
        assert_eq!((status, version), (200, *v));
        assert_eq!(body, format!("v{i}").into_bytes());
    }
    let (status, version) = cluster.put(0, "after", b"y".to_vec()).await?;
    assert_eq!((status, version), (201, Some(51)));
    let beat = cluster
        .admin
        .heartbeat(
            &node0,
            &shardedstore_node::admin_api::HeartbeatRequest {
                store: cluster.options.store.clone(),
                map_version: 2,
                lease_ms: 4000,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(beat.partitions[0].role, ReplicaRole::Follower);

    // Dropping is refused while the map lists the node, and happens once it does not.
    let err = cluster.admin.drop_partition(&node0, 0).await.err();
    assert_eq!(err.and_then(|e| e.status()), Some(409));
    let mut last = next.clone();
    last.version = 3;
    last.replication_factor = 1;
    last.partitions[0].replicas = vec!["node-1".into()];
    last.partitions[0].in_sync = vec!["node-1".into()];
    cluster.install(&last).await?;
    cluster.admin.drop_partition(&node0, 0).await?;
    let err = cluster.admin.position(&node0, 0).await.err();
    assert_eq!(
        err.and_then(|e| e.status()),
        Some(404),
        "node-0 still holds the partition"
    );
    let (status, _, body) = cluster.get(0, "after").await?;
    assert_eq!((status, body), (200, b"y".to_vec()));
    Ok(())
}
