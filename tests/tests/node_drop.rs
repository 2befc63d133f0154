//! Dropping a copy, with real processes: a map that takes a partition away from a node is
//! answered, and the node's log goes on, while the drop waits for its checkpoint; a crash
//! before that checkpoint is durable loses no acknowledged write, and the node drops the old
//! copy again when it starts. The checkpoint is held by the test-only hook of debug builds
//! (`SHARDEDSTORE_TEST_CHECKPOINT_HOLD_FILE`).

use shardedstore_node::map::PartitionMap;
use shardedstore_tests::node_harness::{Cluster, NodeOptions, TaskGuard, wait_until};
use std::time::Duration;

const CHECKPOINT_HOLD: &str = "SHARDEDSTORE_TEST_CHECKPOINT_HOLD_FILE";
/// How long an install or a write may take here before the test calls it stuck (on the old
/// code both waited for the held checkpoint, for ever).
const STUCK: Duration = Duration::from_secs(10);

/// A key of partition `p`.
fn key_in(map: &PartitionMap, p: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| map.partition_of(k.as_bytes()) == p)
        .unwrap_or_default()
}

/// Removes the hold on every path, so the node processes (killed on drop) never wait on it.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Two nodes, node-1 with the checkpoint hold hook (not held yet), and a map of `partitions`
/// partitions led in turn by node-0 and node-1 (0 by node-0, 1 by node-1, 2 by node-0…), each
/// followed by the other node; both primaries have acknowledged a first write of `k0` and
/// `k1`.
struct Setup {
    cluster: Cluster,
    map: PartitionMap,
    hold: std::path::PathBuf,
    k0: String,
    k1: String,
    _beats: TaskGuard,
    _release: Release,
    _hold_dir: tempfile::TempDir,
}

async fn setup(partitions: u32) -> anyhow::Result<Setup> {
    // No timed checkpoint while a test holds one (the next would wait for it).
    let options = NodeOptions {
        extra_args: vec!["--checkpoint-interval-ms".into(), "60000".into()],
        ..NodeOptions::default()
    };
    let mut cluster = Cluster::start(2, options)?;
    let hold_dir = tempfile::tempdir()?;
    let hold = hold_dir.path().join("hold-checkpoint");
    let release = Release(hold.clone());
    {
        let n = &mut cluster.nodes[1];
        n.kill9();
        n.env
            .push((CHECKPOINT_HOLD.into(), hold.display().to_string()));
        n.start()?;
    }
    if let Err(e) = cluster.wait_healthy().await {
        anyhow::bail!("{e}\n{}", cluster.logs(30));
    }
    let map = cluster.map_round_robin(partitions, 2, 1);
    let k0 = key_in(&map, 0, "a");
    let k1 = key_in(&map, 1, "b");
    cluster.install(&map).await?;
    let beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;
    for (via, key) in [(0, &k0), (1, &k1)] {
        wait_until(STUCK, "the primaries accept writes", || async {
            let (status, _) = cluster.put(via, key, b"v1".to_vec()).await.ok()?;
            matches!(status, 200 | 201).then_some(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    }
    Ok(Setup {
        cluster,
        map,
        hold,
        k0,
        k1,
        _beats: beats,
        _release: release,
        _hold_dir: hold_dir,
    })
}

/// `map` with partition 0 on node-0 alone (node-1's copy dropped), one version later.
fn without_node1_in_p0(map: &PartitionMap) -> PartitionMap {
    without_node1_in(map, 0)
}

/// `map` with partition `p` (led by node-0) on node-0 alone, one version later.
fn without_node1_in(map: &PartitionMap, p: usize) -> PartitionMap {
    let mut next = map.clone();
    next.version += 1;
    let entry = &mut next.partitions[p];
    entry.replicas.retain(|n| n == "node-0");
    entry.in_sync.retain(|n| n == "node-0");
    next
}

/// Waits until node-0, partition `p`'s primary, reports node-1's copy of it holding every
/// committed entry.
async fn node1_filled(cluster: &Cluster, p: u32) -> anyhow::Result<()> {
    wait_until(
        STUCK,
        &format!("node-1 takes in its new copy of partition {p}"),
        || async {
            let r = report(cluster, 0).await.ok()?;
            let entry = r.partitions.iter().find(|s| s.partition == p)?;
            let f = entry.followers.iter().find(|f| f.node == "node-1")?;
            (f.acked_seq > 0 && f.acked_seq >= entry.commit_seq).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))
}

/// Installs `map` on every node, each answering within [`STUCK`].
async fn install_promptly(cluster: &Cluster, map: &PartitionMap) -> anyhow::Result<()> {
    for n in &cluster.nodes {
        tokio::time::timeout(STUCK, cluster.admin.install_map(&n.peer_addr, map))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} did not answer the map while its drop waits for the checkpoint\n{}",
                    n.id,
                    cluster.logs(30)
                )
            })??;
    }
    Ok(())
}

/// Writes `v2` to `key` (led by node-1) at node-1, which must acknowledge it within
/// [`STUCK`] (on the old code the write waited for `what`, for ever).
async fn put_at_node1_promptly(cluster: &Cluster, key: &str, what: &str) -> anyhow::Result<()> {
    let url = format!("http://{}/v1/kv/{key}", cluster.nodes[1].client_addr);
    let r = tokio::time::timeout(STUCK, cluster.http.put(&url).body(b"v2".to_vec()).send())
        .await
        .map_err(|_| {
            anyhow::anyhow!("a write at node-1 waited for {what}\n{}", cluster.logs(30))
        })??;
    let status = r.status().as_u16();
    let body = r.text().await?;
    anyhow::ensure!(status == 200, "{status} {body}\n{}", cluster.logs(30));
    Ok(())
}

async fn report(
    cluster: &Cluster,
    i: usize,
) -> anyhow::Result<shardedstore_node::admin_api::HeartbeatResponse> {
    let n = &cluster.nodes[i];
    cluster
        .heartbeater
        .beat(&n.id, &n.peer_addr, Duration::from_secs(4))
        .await
}

/// Regression test: a node answered the map that took a copy away only once the drop was
/// durable (a checkpoint, 100–250 ms under load), and wrote nothing to its log meanwhile, so
/// every move of a scale-out stalled its source's writes and the coordinator's next step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_copy_stalls_neither_the_install_nor_the_log_and_a_crash_loses_nothing()
-> anyhow::Result<()> {
    // Kept whole: its guards (heartbeats, the hold's release) live as long as the test.
    let mut setup = setup(2).await?;
    let (map, hold, k0, k1) = (
        setup.map.clone(),
        setup.hold.clone(),
        setup.k0.clone(),
        setup.k1.clone(),
    );
    let cluster = &mut setup.cluster;

    // Partition 0 leaves node-1 while node-1's checkpoints are held.
    std::fs::write(&hold, b"")?;
    let next = without_node1_in_p0(&map);
    install_promptly(cluster, &next).await?;
    // node-1 no longer holds partition 0, and its log goes on: a write it leads is
    // acknowledged (durable in its log and at node-0) while the drop is not durable yet.
    let r = report(cluster, 1).await?;
    assert!(
        r.partitions.iter().all(|s| s.partition != 0),
        "node-1 still reports partition 0: {r:?}"
    );
    put_at_node1_promptly(cluster, &k1, "the drop").await?;
    assert!(hold.exists());

    // A crash before the drop's checkpoint: nothing acknowledged is lost, and the node drops
    // the old copy again at start (its persisted map no longer lists it).
    cluster.nodes[1].kill9();
    std::fs::remove_file(&hold)?;
    cluster.nodes[1].start()?;
    if let Err(e) = cluster.wait_healthy().await {
        anyhow::bail!("{e}\n{}", cluster.logs(30));
    }
    let r = report(cluster, 1).await?;
    assert_eq!(r.map_version, next.version, "{r:?}");
    assert!(
        r.partitions.iter().all(|s| s.partition != 0),
        "node-1 holds partition 0 again after the restart: {r:?}"
    );
    // A restarted node leads none of its old epochs: partition 1 gets a new one, still led
    // by node-1, which serves it from its own log.
    let mut third = next.clone();
    third.version += 1;
    third.partitions[1].epoch += 1;
    cluster.install(&third).await?;
    let read = wait_until(STUCK, "node-1 serves partition 1 again", || async {
        let (status, _, body) = cluster.get(1, &k1).await.ok()?;
        (status == 200).then_some(body)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    assert_eq!(read, b"v2", "the write acknowledged before the crash");
    let (status, _, body) = cluster.get(0, &k0).await?;
    assert_eq!((status, body.as_slice()), (200, b"v1".as_slice()));
    Ok(())
}

/// A copy taken away and given back before its drop is durable: the node creates no replica
/// of the partition until the drop is on disk (else a record of the new copy, replayed after
/// a crash that lost the drop, would land on the old one), and takes the new copy in once it
/// is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_given_back_before_its_drop_is_durable_waits_for_the_drop() -> anyhow::Result<()> {
    // Kept whole: its guards (heartbeats, the hold's release) live as long as the test.
    let setup = setup(2).await?;
    let (map, hold, k0) = (setup.map.clone(), setup.hold.clone(), setup.k0.clone());
    let cluster = &setup.cluster;
    std::fs::write(&hold, b"")?;
    let next = without_node1_in_p0(&map);
    install_promptly(cluster, &next).await?;
    // node-1 back in partition 0, as a learner.
    let mut back = next.clone();
    back.version += 1;
    back.partitions[0].learners.push("node-1".into());
    install_promptly(cluster, &back).await?;
    let r = report(cluster, 1).await?;
    assert!(
        r.partitions.iter().all(|s| s.partition != 0),
        "node-1 created a copy of partition 0 while its drop is not durable: {r:?}"
    );
    std::fs::remove_file(&hold)?;
    // Once the drop is durable, the primary fills the new copy.
    node1_filled(cluster, 0).await?;
    let (status, _, body) = cluster.get(0, &k0).await?;
    assert_eq!((status, body.as_slice()), (200, b"v1".as_slice()));
    Ok(())
}

/// Regression test: a drop (or a snapshot's end) taken in while an earlier checkpoint was still
/// under way waited for it in the log thread, with the log stopped, so a burst of moves
/// finishing together stalled the node's writes once per move. Now its batch is handed on
/// without a checkpoint, the drop is answered at the next one, and that one starts as soon as
/// the one under way is done, even with nothing else to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_taken_in_while_a_checkpoint_is_under_way_neither_stops_the_log_nor_is_lost()
-> anyhow::Result<()> {
    // Kept whole: its guards (heartbeats, the hold's release) live as long as the test.
    let setup = setup(3).await?;
    let (map, hold, k1) = (setup.map.clone(), setup.hold.clone(), setup.k1.clone());
    let cluster = &setup.cluster;
    let k2 = key_in(&map, 2, "c");
    let (status, _) = cluster.put(0, &k2, b"v1".to_vec()).await?;
    assert!(matches!(status, 200 | 201), "{status}");

    // The first drop's checkpoint is held; the second drop comes while it is under way.
    std::fs::write(&hold, b"")?;
    let first = without_node1_in(&map, 0);
    install_promptly(cluster, &first).await?;
    let second = without_node1_in(&first, 2);
    install_promptly(cluster, &second).await?;
    // node-1's log goes on: a write it leads is acknowledged (on the old code it waited for
    // the held checkpoint).
    put_at_node1_promptly(cluster, &k1, "the checkpoint under way").await?;

    // Partition 2 given back: no copy while its drop is not durable…
    let mut back = second.clone();
    back.version += 1;
    back.partitions[2].learners.push("node-1".into());
    install_promptly(cluster, &back).await?;
    let r = report(cluster, 1).await?;
    assert!(
        r.partitions.iter().all(|s| s.partition != 2),
        "node-1 created a copy of partition 2 while its drop is not durable: {r:?}"
    );
    // …and once the held checkpoint is let go, the next one makes the second drop durable
    // without anything else being written, and node-1 takes its new copy in.
    std::fs::remove_file(&hold)?;
    node1_filled(cluster, 2).await?;
    let (status, _, body) = cluster.get(0, &k2).await?;
    assert_eq!((status, body.as_slice()), (200, b"v1".as_slice()));
    Ok(())
}
