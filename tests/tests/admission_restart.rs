//! Finding C1 (acknowledged writes lost after a move finished onto a learner, issue item 6:
//! stale admission): every node is killed while a learner catches up; after the restart the
//! primary of the new epoch must not answer the learner `ready` (so that it joins `inSync`)
//! before it holds every entry acknowledged before the restart. The test plays the operator.
//!
//! After a restart a primary's commit point starts from the applied point of its last
//! database checkpoint, and it cannot commit (so cannot raise it) before its lease is
//! confirmed: comparing the learner's position with that commit point admitted a learner
//! that missed the last acknowledged writes. Here the learner holds the first writes, its
//! disk hangs (test-only storage hook) so that it cannot take the rest, and the admission
//! is asked before the primary holds a lease. The move then finishes onto the learner, the
//! nodes that held the data die, and the learner is failed over to: every acknowledged
//! write must read back from it.

use shardedstore_node::admin_api::{AdmitRequest, HeartbeatResponse, ReplicaRole};
use shardedstore_node::map::PartitionMap;
use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::path::PathBuf;
use std::time::Duration;

const STALL: &str = "SHARDEDSTORE_TEST_STALL_FILE";
const LEASE: Duration = Duration::from_secs(4);
/// Writes the learner takes before its disk hangs, and writes it misses.
const FIRST: usize = 20;
const MISSED: usize = 5;

/// Removes the stall flag when the test ends (also on failure), so no writer stays blocked.
struct Flag(PathBuf);

impl Flag {
    fn set(&self) -> anyhow::Result<()> {
        std::fs::write(&self.0, b"stall")?;
        Ok(())
    }
    fn clear(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for Flag {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One zero-lease heartbeat (a status query that never makes a lease valid).
async fn status(cluster: &Cluster, i: usize) -> anyhow::Result<HeartbeatResponse> {
    let n = &cluster.nodes[i];
    cluster
        .heartbeater
        .beat(&n.id, &n.peer_addr, Duration::ZERO)
        .await
}

fn next(map: &PartitionMap, f: impl FnOnce(&mut PartitionMap)) -> PartitionMap {
    let mut m = map.clone();
    m.version += 1;
    f(&mut m);
    m
}

async fn admit(cluster: &Cluster, epoch: u64, timeout_ms: u64) -> anyhow::Result<(bool, u64)> {
    let req = AdmitRequest {
        epoch,
        learner: "node-2".into(),
        timeout_ms,
        wait_for_copy_within: None,
    };
    let r = cluster
        .admin
        .admit(&cluster.nodes[0].peer_addr, 0, &req)
        .await?;
    Ok((r.ready, r.learner_acked_seq))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_missing_acknowledged_writes_is_not_admitted_after_every_node_restarted()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, NodeOptions::default())?;
    let flag = Flag(cluster.nodes[2].data_dir.with_extension("stall"));
    flag.clear();
    {
        let n = &mut cluster.nodes[2];
        n.kill9();
        n.env.push((STALL.into(), flag.0.display().to_string()));
        n.start()?;
    }
    cluster.wait_healthy().await?;
    // v1: node-0 leads, node-1 follows, node-2 holds nothing yet.
    let v1 = cluster.map_round_robin(1, 2, 1);
    cluster.install(&v1).await?;
    let beats = cluster.heartbeat_in_background(LEASE).await?;
    let mut acked = Vec::new();
    for i in 0..FIRST {
        let key = format!("first-{i}");
        let (s, _) = cluster.put(0, &key, key.clone().into_bytes()).await?;
        anyhow::ensure!(s == 201, "write {key}: {s}\n{}", cluster.logs(20));
        acked.push(key);
    }
    let first_end = cluster
        .admin
        .position(&cluster.nodes[0].peer_addr, 0)
        .await?;

    // v2: node-2 becomes a learner and catches up with the first writes.
    let v2 = next(&v1, |m| m.partitions[0].learners = vec!["node-2".into()]);
    cluster.install(&v2).await?;
    wait_until(
        Duration::from_secs(20),
        "the learner to hold the first writes",
        || async {
            let p = cluster
                .admin
                .position(&cluster.nodes[2].peer_addr, 0)
                .await
                .ok()?;
            (p.last_seq >= first_end.last_seq).then_some(())
        },
    )
    .await?;

    // The learner's disk hangs; the last writes are acknowledged without it (a learner is
    // not waited for), then every node is killed at once.
    flag.set()?;
    for i in 0..MISSED {
        let key = format!("missed-{i}");
        let (s, _) = cluster.put(0, &key, key.clone().into_bytes()).await?;
        anyhow::ensure!(s == 201, "write {key}: {s}\n{}", cluster.logs(20));
        acked.push(key);
    }
    for n in &mut cluster.nodes {
        n.kill9();
    }
    drop(beats);
    for n in &mut cluster.nodes {
        n.start()?;
    }
    cluster.wait_healthy().await?;

    // v3: node-0 leads epoch 2 (it never leads epoch 1 again after its restart). Not
    // installed on node-2, whose disk still hangs (a map install waits for the disk).
    let v3 = next(&v2, |m| m.partitions[0].epoch = 2);
    cluster.install_on(&v3, &["node-0", "node-1"]).await?;
    wait_until(
        Duration::from_secs(20),
        "node-0 to lead epoch 2",
        || async {
            let r = status(&cluster, 0).await.ok()?;
            r.partitions
                .iter()
                .any(|s| s.role == ReplicaRole::Primary && s.epoch == 2)
                .then_some(())
        },
    )
    .await?;

    // Ask for the admission before node-0 holds a lease, as an operator may right after the
    // restart: until the learner was probed, or the primary answers ready.
    let early = wait_until(
        Duration::from_secs(20),
        "an admit answer about the probed learner",
        || async {
            let (ready, learner_acked) = admit(&cluster, 2, 200).await.ok()?;
            (ready || learner_acked >= first_end.last_seq).then_some(ready)
        },
    )
    .await
    .unwrap_or(false);

    if !early {
        // The learner's disk comes back: it takes the missed writes and is admitted.
        flag.clear();
        let _beats = cluster.heartbeat_in_background(LEASE).await?;
        wait_until(
            Duration::from_secs(30),
            "the learner to be ready",
            || async {
                admit(&cluster, 2, 1000)
                    .await
                    .ok()
                    .and_then(|(ready, _)| ready.then_some(()))
            },
        )
        .await?;
    }
    // v4: the move finishes: node-2 in sync, node-1 leaves.
    let v4 = next(&v3, |m| {
        let e = &mut m.partitions[0];
        e.learners.clear();
        e.replicas = vec!["node-0".into(), "node-2".into()];
        e.in_sync = e.replicas.clone();
    });
    cluster.install_on(&v4, &["node-0", "node-1"]).await?;

    // The nodes that held the data die; the learner's restart ends its hung disk (what its
    // disk did not persist is gone), and it is failed over to.
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    flag.clear();
    cluster.nodes[2].start()?;
    cluster.wait_healthy().await?;
    let v5 = next(&v4, |m| {
        let e = &mut m.partitions[0];
        e.epoch = 3;
        e.primary = Some("node-2".into());
        e.in_sync = vec!["node-2".into()];
    });
    cluster.install_on(&v5, &["node-2"]).await?;
    let _beats = cluster.heartbeat_in_background(LEASE).await?;
    wait_until(Duration::from_secs(20), "node-2 to serve", || async {
        let (s, _, _) = cluster.get(2, &acked[0]).await.ok()?;
        (s == 200 || s == 404).then_some(())
    })
    .await?;
    let mut lost = Vec::new();
    for key in &acked {
        let (s, _, body) = cluster.get(2, key).await?;
        if s != 200 || body != key.as_bytes() {
            lost.push(format!("{key} ({s})"));
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after the move (learner answered ready before the \
         restarted primary held a lease: {early}): {lost:?}\n{}",
        cluster.logs(30)
    );
    assert!(
        !early,
        "the learner was answered ready while missing acknowledged writes"
    );
    Ok(())
}
