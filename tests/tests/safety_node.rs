//! Node-side safety rules with real processes (the test plays the operator): restarts never
//! reuse an epoch, leases start only from confirmed heartbeats, gray failures are visible in
//! heartbeat answers, a fatal storage error aborts the process, the persisted map is served
//! after a restart, and a copy on an empty disk never leads. Disk faults use the test-only
//! storage hooks of debug builds (`SHARDEDSTORE_TEST_STALL_FILE`, `SHARDEDSTORE_TEST_FAIL_FILE`).

use shardedstore_node::admin_api::{
    HandoffRequest, HeartbeatRequest, HeartbeatResponse, ReplicaRole,
};
use shardedstore_node::map::{PartitionMap, partition_of};
use shardedstore_tests::node_harness::{Cluster, Heartbeater, NodeOptions, TaskGuard, wait_until};
use std::path::PathBuf;
use std::time::Duration;

const STALL: &str = "SHARDEDSTORE_TEST_STALL_FILE";
const FAIL: &str = "SHARDEDSTORE_TEST_FAIL_FILE";

fn options(write_timeout_ms: u64) -> NodeOptions {
    NodeOptions {
        extra_args: vec!["--write-timeout-ms".into(), write_timeout_ms.to_string()],
        ..NodeOptions::default()
    }
}

/// A key of `partition` among `partitions`.
fn key_in(partition: u32, partitions: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|k| partition_of(k.as_bytes(), partitions) == partition)
        .unwrap_or_default()
}

/// Restarts node `i` with `env` added (hooks are read at start).
fn restart_with(cluster: &mut Cluster, i: usize, env: &[(&str, &PathBuf)]) -> anyhow::Result<()> {
    let n = &mut cluster.nodes[i];
    n.kill9();
    for (k, v) in env {
        n.env.push(((*k).to_owned(), v.display().to_string()));
    }
    n.start()
}

/// A store of `nodes` nodes whose nodes `hooked` run with a test-only storage hook `hook`
/// (a flag file per node), one partition replicated on all of them (min in-sync
/// `min_in_sync`), heartbeated in the background, with a first write `first_key`
/// acknowledged.
async fn hooked_store(
    nodes: usize,
    min_in_sync: u32,
    hook: &str,
    hooked: &[(usize, &PathBuf)],
    first_key: &str,
) -> anyhow::Result<(Cluster, PartitionMap, TaskGuard)> {
    let mut cluster = Cluster::start(nodes, options(2000))?;
    for (i, flag) in hooked {
        restart_with(&mut cluster, *i, &[(hook, flag)])?;
    }
    if let Err(e) = cluster.wait_healthy().await {
        anyhow::bail!("{e}\n{}", cluster.logs(40));
    }
    let map = cluster.map_round_robin(1, nodes as u32, min_in_sync);
    cluster.install(&map).await?;
    let beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;
    let (status, _) = cluster
        .put(0, first_key, first_key.as_bytes().to_vec())
        .await?;
    assert_eq!(status, 201, "{}", cluster.logs(20));
    Ok((cluster, map, beats))
}

/// The next map version with `partition` at `epoch + 1` led by `primary`.
fn failover(map: &PartitionMap, partition: usize, primary: &str) -> PartitionMap {
    let mut next = map.clone();
    next.version += 1;
    next.partitions[partition].epoch += 1;
    next.partitions[partition].primary = Some(primary.to_owned());
    next
}

async fn beat(c: &Cluster, i: usize) -> anyhow::Result<HeartbeatResponse> {
    let n = &c.nodes[i];
    c.heartbeater
        .beat(&n.id, &n.peer_addr, Duration::from_secs(4))
        .await
}

/// Issue item 1 (same-epoch restart): the primary sends an entry whose own fsync never
/// completes, a follower makes it durable, the primary is killed (losing the unsynced tail)
/// and restarted while the followers are stopped. It must not lead epoch 1 again (where it
/// would write a different entry under the same (epoch, seq)); after the failover to epoch 2
/// every replica holds the same data and the acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_never_reuses_an_epoch_it_led() -> anyhow::Result<()> {
    let hooks = tempfile::tempdir()?;
    let stall = hooks.path().join("stall");
    let (mut cluster, map, _beats) = hooked_store(3, 2, STALL, &[(0, &stall)], "acked").await?;
    let incarnation = beat(&cluster, 0).await?.incarnation;

    // node-0's fsync hangs: the entry reaches the followers' disks, not its own.
    std::fs::write(&stall, b"")?;
    let pending = {
        let http = cluster.http.clone();
        let url = format!("http://{}/v1/kv/tail", cluster.nodes[0].client_addr);
        tokio::spawn(async move { http.put(url).body("unsynced").send().await })
    };
    for i in [1, 2] {
        let addr = cluster.nodes[i].peer_addr.clone();
        wait_until(Duration::from_secs(20), "a follower to hold seq 2", || {
            let admin = cluster.admin.clone();
            let addr = addr.clone();
            async move {
                admin
                    .position(&addr, 0)
                    .await
                    .ok()
                    .filter(|p| p.last_seq >= 2)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(20)))?;
    }
    cluster.nodes[0].kill9();
    pending.abort();
    std::fs::remove_file(&stall)?;

    // The followers cannot be reached while node-0 comes back.
    let stopped = Stopped::new(&cluster, &[1, 2])?;
    cluster.nodes[0].start()?;
    let url = format!("http://{}/healthz", cluster.nodes[0].metrics_addr);
    wait_until(Duration::from_secs(20), "node-0 healthy", || async {
        let r = cluster.http.get(&url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await?;
    let n0 = &cluster.nodes[0];
    let after = cluster
        .heartbeater
        .grant(&n0.id, &n0.peer_addr, Duration::from_secs(4))
        .await?;
    assert_ne!(
        after.incarnation, incarnation,
        "a restart shows a new incarnation"
    );
    let state = after.partitions.iter().find(|s| s.partition == 0);
    assert!(
        state.is_some_and(|s| s.role != ReplicaRole::Primary),
        "the restarted node leads the epoch it led before: {state:?}"
    );
    // A write now must not take seq 2 in epoch 1.
    let short = shardedstore_node::tls::http_client_builder(&Default::default())?
        .timeout(Duration::from_secs(3))
        .build()?;
    let _ = short
        .put(format!("http://{}/v1/kv/tail", n0.client_addr))
        .body("diverging")
        .send()
        .await;
    drop(stopped);

    // The operator fails over on the new incarnation: epoch 2, led by the highest position.
    let mut best = (Default::default(), "node-1".to_owned());
    for n in &cluster.nodes {
        let p = cluster.admin.position(&n.peer_addr, 0).await?;
        if p > best.0 {
            best = (p, n.id.clone());
        }
    }
    let next = failover(&map, 0, &best.1);
    cluster.install(&next).await?;
    // The new primary serves once it has committed its suffix (503 until then).
    wait_until(Duration::from_secs(30), "a write at epoch 2", || async {
        let (status, _) = cluster.put(1, "after", b"after".to_vec()).await.ok()?;
        (status == 200 || status == 201).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    for key in ["acked", "tail", "after"] {
        let want = cluster.get(1, key).await?;
        for i in 0..3 {
            wait_until(
                Duration::from_secs(20),
                &format!("node-{i} to hold the primary's {key}"),
                || {
                    let c = &cluster;
                    let want = want.clone();
                    async move {
                        let got = c.get_local(i, key).await.ok()?;
                        (got.0 == want.0 && got.2 == want.2).then_some(())
                    }
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("replicas differ: {e}\n{}", cluster.logs(30)))?;
        }
    }
    let acked = cluster.get(1, "acked").await?;
    assert_eq!((acked.0, acked.2), (200, b"acked".to_vec()));
    Ok(())
}

/// Nodes stopped with SIGSTOP; continued (SIGCONT) when dropped, also when the test fails.
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(cluster: &Cluster, nodes: &[usize]) -> anyhow::Result<Self> {
        // Dropped on an error part-way: the nodes stopped so far are continued.
        let mut guard = Self(Vec::new());
        for &i in nodes {
            let pid = cluster.nodes[i]
                .pid()
                .ok_or_else(|| anyhow::anyhow!("node-{i} is not running"))?;
            signal(pid, "STOP")?;
            guard.0.push(pid);
        }
        Ok(guard)
    }
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = signal(pid, "CONT");
        }
    }
}

/// Issue item 2 (lease start): a heartbeat grants a lease only once a later heartbeat
/// confirms that the operator received its answer; a late heartbeat (confirming only old
/// ones) or a new coordinator's first heartbeat never extends it. Issue item 11 (node id
/// checked in heartbeats): a heartbeat meant for another node id is refused (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_or_late_heartbeat_grants_no_lease() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, options(2000))?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(1, 1, 1);
    cluster.install(&map).await?;
    let n = &cluster.nodes[0];
    let lease = Duration::from_millis(1500);
    let hb = &cluster.heartbeater;
    hb.beat(&n.id, &n.peer_addr, lease).await?;
    let (status, _) = cluster.put(0, "k", b"v".to_vec()).await?;
    assert_eq!(status, 503, "an unconfirmed heartbeat granted a lease");
    hb.beat(&n.id, &n.peer_addr, lease).await?;
    let (status, _) = cluster.put(0, "k", b"v".to_vec()).await?;
    assert_eq!(status, 201, "{}", cluster.logs(20));
    wait_until(Duration::from_secs(20), "the lease to expire", || async {
        let (status, _) = cluster.put(0, "k", b"w".to_vec()).await.ok()?;
        (status == 503).then_some(())
    })
    .await?;
    // A heartbeat delivered late: it confirms only the first heartbeat.
    let late = HeartbeatRequest {
        confirmed_seq: Some(1),
        ..hb.request(&n.id, lease)
    };
    cluster.admin.heartbeat(&n.peer_addr, &late).await?;
    let (status, _) = cluster.put(0, "k", b"late".to_vec()).await?;
    assert_eq!(status, 503, "a late heartbeat extended the lease");
    // A new coordinator: its first heartbeat confirms nothing, its second grants the lease.
    let fresh = Heartbeater::new(cluster.admin.clone(), &cluster.options.store);
    fresh.beat(&n.id, &n.peer_addr, lease).await?;
    let (status, _) = cluster.put(0, "k", b"fresh".to_vec()).await?;
    assert_eq!(
        status, 503,
        "a new coordinator's first heartbeat granted a lease"
    );
    fresh.beat(&n.id, &n.peer_addr, lease).await?;
    let (status, _) = cluster.put(0, "k", b"fresh".to_vec()).await?;
    assert_eq!(status, 200, "{}", cluster.logs(20));
    // A heartbeat meant for another node is refused.
    let wrong = HeartbeatRequest {
        node: "node-9".into(),
        ..hb.request(&n.id, lease)
    };
    let refused = cluster.admin.heartbeat(&n.peer_addr, &wrong).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(409));
    Ok(())
}

/// Issue item 4 (gray failures): a follower whose disk hangs shows a growing `pendingSinceMs`
/// at the primary (while it still answers heartbeats), a hand-off to it answers
/// `ready: false` within the request's timeout, and a primary whose disk hangs reports
/// `storageStalledMs`, takes no lease and serves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_disks_show_in_heartbeats_and_stop_a_primary() -> anyhow::Result<()> {
    let hooks = tempfile::tempdir()?;
    let stall0 = hooks.path().join("stall-0");
    let stall1 = hooks.path().join("stall-1");
    let (cluster, map, _beats) =
        hooked_store(2, 1, STALL, &[(0, &stall0), (1, &stall1)], "k").await?;

    // The follower's disk hangs: the write stays pending, heartbeats still answer.
    std::fs::write(&stall1, b"")?;
    let _ = cluster.put(0, "k", b"w".to_vec()).await?;
    let pending = wait_until(
        Duration::from_secs(20),
        "pendingSinceMs >= 1500",
        || async {
            let r = beat(&cluster, 0).await.ok()?;
            let f = r.partitions.first()?.followers.first()?.clone();
            f.pending_since_ms.filter(|&ms| ms >= 1500)
        },
    )
    .await?;
    assert!(pending >= 1500);
    let follower = beat(&cluster, 1).await?;
    assert!(follower.storage_stalled_ms > 0, "{follower:?}");
    let handoff = HandoffRequest {
        epoch: 1,
        to: "node-1".into(),
        timeout_ms: 500,
    };
    let answer = cluster
        .admin
        .handoff(&cluster.nodes[0].peer_addr, 0, &handoff)
        .await?;
    assert!(!answer.ready, "{answer:?}");
    std::fs::remove_file(&stall1)?;
    wait_until(
        Duration::from_secs(20),
        "the follower to catch up",
        || async {
            let r = beat(&cluster, 0).await.ok()?;
            let f = r.partitions.first()?.followers.first()?.clone();
            f.pending_since_ms.is_none().then_some(())
        },
    )
    .await?;

    // The primary's disk hangs: it reports the stall and stops serving.
    let next = failover(&map, 0, "node-0");
    cluster.install(&next).await?;
    std::fs::write(&stall0, b"")?;
    let stuck = {
        let http = cluster.http.clone();
        let url = format!("http://{}/v1/kv/k", cluster.nodes[0].client_addr);
        tokio::spawn(async move { http.put(url).body("x").send().await })
    };
    let stalled = wait_until(
        Duration::from_secs(20),
        "storageStalledMs > 2000",
        || async {
            let r = beat(&cluster, 0).await.ok()?;
            (r.storage_stalled_ms > 2000).then_some(r)
        },
    )
    .await?;
    assert!(stalled.storage_stalled_ms > 2000);
    let (status, _, body) = cluster.get(0, "k").await?;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    std::fs::remove_file(&stall0)?;
    stuck.abort();
    Ok(())
}

/// Issue item 10 (fatal storage error): a failed durable commit aborts the process at once
/// (no graceful drain answering with unpersisted positions); it restarts cleanly with every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_aborts_the_node_and_it_restarts_cleanly() -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let hooks = tempfile::tempdir()?;
    let fail = hooks.path().join("fail");
    let (mut cluster, map, _beats) = hooked_store(1, 1, FAIL, &[(0, &fail)], "acked").await?;
    std::fs::write(&fail, b"")?;
    let _ = cluster.put(0, "lost", b"never acked".to_vec()).await;
    let exit = cluster.nodes[0].wait_exit(Duration::from_secs(20)).await?;
    assert_eq!(exit.signal(), Some(6), "expected an abort, got {exit:?}");
    std::fs::remove_file(&fail)?;
    cluster.nodes[0].start()?;
    cluster.wait_healthy().await?;
    cluster.install(&failover(&map, 0, "node-0")).await?;
    let value = wait_until(
        Duration::from_secs(20),
        "the restarted node serving",
        || async {
            let r = cluster.get(0, "acked").await.ok()?;
            (r.0 != 503).then_some(r)
        },
    )
    .await?;
    assert_eq!((value.0, value.2), (200, b"acked".to_vec()));
    Ok(())
}

/// Issue item 5 (node part): a node serves the map it persisted on the admin port, also
/// after a restart, so an operator that lost its map store can recover it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persisted_map_is_served_after_a_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let none = cluster.admin.map(&cluster.nodes[0].peer_addr).await;
    assert_eq!(none.err().and_then(|e| e.status()), Some(404));
    let mut map = cluster.map_round_robin(2, 1, 1);
    map.version = 7;
    cluster.install(&map).await?;
    cluster.nodes[0].kill9();
    cluster.nodes[0].start()?;
    cluster.wait_healthy().await?;
    let stored = cluster.admin.map(&cluster.nodes[0].peer_addr).await?;
    assert_eq!(stored, map);
    Ok(())
}

/// Issue item 6 (empty disk): a node that comes back with an empty data directory reports a
/// new disk identity, its copy of a partition that lists it in sync is unproven (reported as
/// a learner), and it refuses to lead even when a map names it primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_on_an_empty_disk_never_leads() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let first = cluster.map_round_robin(1, 3, 2);
    cluster.install(&first).await?;
    // A failover back to node-0 moves the partition past its first epoch.
    let map = failover(&first, 0, "node-0");
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;
    let key = key_in(0, 1, "k");
    let (status, _) = cluster.put(0, &key, b"acked".to_vec()).await?;
    assert_eq!(status, 201, "{}", cluster.logs(20));
    let disk = beat(&cluster, 2).await?.disk_id;
    assert!(!disk.is_empty());

    cluster.nodes[2].kill9();
    std::fs::remove_file(cluster.nodes[2].data_dir.join("node.redb"))?;
    cluster.nodes[2].start()?;
    cluster.wait_healthy().await?;
    cluster.install_on(&map, &["node-2"]).await?;
    let report = wait_until(Duration::from_secs(20), "node-2 to hold a copy", || async {
        let r = beat(&cluster, 2).await.ok()?;
        (!r.partitions.is_empty()).then_some(r)
    })
    .await?;
    assert_ne!(
        report.disk_id, disk,
        "an empty data directory has a new identity"
    );
    let state = &report.partitions[0];
    assert!(state.unproven, "{state:?}");
    assert_eq!(state.role, ReplicaRole::Learner);

    // A (wrong) failover to node-2 alone: it must not take the primary role.
    let bad = failover(&map, 0, "node-2");
    cluster.install_on(&bad, &["node-2"]).await?;
    let report = beat(&cluster, 2).await?;
    assert_ne!(
        report.partitions[0].role,
        ReplicaRole::Primary,
        "{report:?}"
    );
    let (status, _, _) = cluster.get(2, &key).await?;
    assert_ne!(status, 200, "the empty copy served a read");
    Ok(())
}
