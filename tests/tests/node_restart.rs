//! (d) kill -9 and restart of a node loses no acknowledged write: a single-node store killed
//! under concurrent writes, and a follower of a three-node store killed and restarted, which
//! then catches up and serves the data locally.

use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Acked = Arc<Mutex<BTreeMap<String, (u64, Vec<u8>)>>>;

/// Writes distinct keys through `addrs` (round-robin) until `stop`, recording acknowledged
/// writes (status 200/201) with their versions.
fn spawn_writers(
    http: reqwest::Client,
    addrs: Vec<String>,
    writers: usize,
    acked: Acked,
    stop: tokio_util_stop::Stop,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let http = http.clone();
            let addrs = addrs.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.stopped() && i < 5000 {
                    let key = format!("w{w}-k{i}");
                    let value = format!("value-{w}-{i}").into_bytes();
                    let addr = &addrs[(i as usize + w) % addrs.len()];
                    let r = http
                        .put(format!("http://{addr}/v1/kv/{key}"))
                        .body(value.clone())
                        .send()
                        .await;
                    if let Ok(r) = r
                        && (r.status().as_u16() == 200 || r.status().as_u16() == 201)
                    {
                        let v = r
                            .headers()
                            .get("x-version")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(0);
                        if let Ok(mut a) = acked.lock() {
                            a.insert(key, (v, value));
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// A tiny stop flag shared by writer tasks.
mod tokio_util_stop {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn stop(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
        pub fn stopped(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
}

async fn acked_count(acked: &Acked) -> usize {
    acked.lock().map(|a| a.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_single_node_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(8, 1, 1);
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;

    let acked: Acked = Arc::default();
    let stop = tokio_util_stop::Stop::default();
    let writers = spawn_writers(
        cluster.http.clone(),
        vec![cluster.nodes[0].client_addr.clone()],
        4,
        acked.clone(),
        stop.clone(),
    );
    wait_until(Duration::from_secs(30), "200 acknowledged writes", || {
        let acked = acked.clone();
        async move { (acked_count(&acked).await >= 200).then_some(()) }
    })
    .await?;
    cluster.nodes[0].kill9();
    stop.stop();
    for w in writers {
        let _ = w.await;
    }
    let expected = acked.lock().map(|a| a.clone()).unwrap_or_default();
    cluster.nodes[0].start()?;
    cluster.wait_healthy().await?;
    cluster.heartbeat_all(Duration::from_secs(4)).await?;
    // A restarted node leads no epoch it led before: the operator fails over on its new
    // incarnation, here back to the same node at epoch 2.
    let mut next = map.clone();
    next.version += 1;
    for e in &mut next.partitions {
        e.epoch += 1;
    }
    cluster.install(&next).await?;
    for (key, (version, value)) in &expected {
        let (status, v, body) = wait_until(
            Duration::from_secs(20),
            "the restarted node serving",
            || {
                let c = &cluster;
                async move { c.get(0, key).await.ok().filter(|r| r.0 != 503) }
            },
        )
        .await?;
        assert_eq!(
            status,
            200,
            "acknowledged key {key} lost\n{}",
            cluster.logs(30)
        );
        assert_eq!(v, Some(*version), "key {key}");
        assert_eq!(&body, value, "key {key}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_and_restarted_catches_up() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    // Every partition led by node-0, node-2 a follower of all of them.
    let mut map = cluster.map_round_robin(4, 3, 2);
    for e in &mut map.partitions {
        e.replicas = vec!["node-0".into(), "node-1".into(), "node-2".into()];
        e.in_sync = e.replicas.clone();
        e.primary = Some("node-0".into());
    }
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;

    let acked: Acked = Arc::default();
    let stop = tokio_util_stop::Stop::default();
    let addrs = vec![
        cluster.nodes[0].client_addr.clone(),
        cluster.nodes[1].client_addr.clone(),
    ];
    let writers = spawn_writers(cluster.http.clone(), addrs, 3, acked.clone(), stop.clone());
    wait_until(Duration::from_secs(30), "100 acknowledged writes", || {
        let acked = acked.clone();
        async move { (acked_count(&acked).await >= 100).then_some(()) }
    })
    .await?;
    cluster.nodes[2].kill9();
    let before = acked_count(&acked).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[2].start()?;
    cluster.wait_healthy().await?;
    // Writes stall while an in-sync follower is down and resume once it is back.
    wait_until(Duration::from_secs(30), "writes to resume", || {
        let acked = acked.clone();
        async move { (acked_count(&acked).await >= before + 100).then_some(()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    stop.stop();
    for w in writers {
        let _ = w.await;
    }
    let expected = acked.lock().map(|a| a.clone()).unwrap_or_default();
    for (key, (version, value)) in &expected {
        let (status, v, body) = cluster.get(1, key).await?;
        assert_eq!((status, v), (200, Some(*version)), "key {key}");
        assert_eq!(&body, value);
    }
    // The restarted follower caught up: same applied position and key count as the primary.
    let beat = |i: usize| {
        let c = &cluster;
        async move {
            let req = shardedstore_node::admin_api::HeartbeatRequest {
                store: c.options.store.clone(),
                map_version: 1,
                lease_ms: 4000,
                ..Default::default()
            };
            c.admin.heartbeat(&c.nodes[i].peer_addr, &req).await.ok()
        }
    };
    wait_until(
        Duration::from_secs(20),
        "the follower to apply everything",
        || async {
            let (primary, follower) = (beat(0).await?, beat(2).await?);
            let sum = |b: &shardedstore_node::admin_api::HeartbeatResponse| {
                b.partitions
                    .iter()
                    .map(|p| (p.applied_seq, p.keys))
                    .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1))
            };
            let (p, f) = (sum(&primary), sum(&follower));
            (p == f && p.1 as usize >= expected.len()).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    Ok(())
}
