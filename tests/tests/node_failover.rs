//! (a) Three nodes, RF 3, concurrent writers; the primary of some partitions is killed with
//! SIGKILL; the test (playing the operator) promotes the in-sync follower with the highest
//! position at epoch + 1; every acknowledged write reads back.

use shardedstore_node::admin_api::LogPosition;
use shardedstore_node::map::PartitionMap;
use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Acked = Arc<Mutex<BTreeMap<String, (u64, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_kill9_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(6, 3, 2);
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.clone())
        .collect();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, addrs, acked, stop) = (
            cluster.http.clone(),
            addrs.clone(),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) && i < 20_000 {
                let key = format!("w{w}-{i}");
                let value = format!("{w}:{i}").into_bytes();
                // Writes go to node-1 and node-2 (node-0 is killed), which forward as needed.
                let addr = &addrs[1 + (i + w) % 2];
                if let Ok(r) = http
                    .put(format!("http://{addr}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                    && matches!(r.status().as_u16(), 200 | 201)
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
        }));
    }
    let count = |a: &Acked| a.lock().map(|a| a.len()).unwrap_or(0);
    wait_until(Duration::from_secs(30), "300 acknowledged writes", || {
        let a = acked.clone();
        async move { (count(&a) >= 300).then_some(()) }
    })
    .await?;

    cluster.nodes[0].kill9();
    if let Ok(mut s) = cluster.heartbeat_skip.lock() {
        s.push("node-0".into());
    }
    let before_failover = count(&acked);
    let next = fail_over(&cluster, &map, "node-0").await?;
    cluster.install_on(&next, &["node-1", "node-2"]).await?;

    wait_until(
        Duration::from_secs(30),
        "writes to continue after fail-over",
        || {
            let a = acked.clone();
            async move { (count(&a) >= before_failover + 300).then_some(()) }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(40)))?;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }
    // Every partition node-0 led accepts writes under its new primary.
    for (p, entry) in map.partitions.iter().enumerate() {
        if entry.primary.as_deref() != Some("node-0") {
            continue;
        }
        let key = (0..)
            .map(|i| format!("probe-{i}"))
            .find(|k| next.partition_of(k.as_bytes()) == p as u32)
            .unwrap_or_default();
        let status = wait_until(
            Duration::from_secs(10),
            "a write to a failed-over partition",
            || {
                let c = &cluster;
                let k = key.clone();
                async move {
                    c.put(2, &k, b"x".to_vec())
                        .await
                        .ok()
                        .filter(|r| r.0 != 503)
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e} (partition {p})\n{}", cluster.logs(80)));
        if let Err(e) = status {
            let mut states = String::new();
            for n in &cluster.nodes[1..] {
                let req = shardedstore_node::admin_api::HeartbeatRequest {
                    store: cluster.options.store.clone(),
                    map_version: 0,
                    lease_ms: 4000,
                    ..Default::default()
                };
                let beat = cluster.admin.heartbeat(&n.peer_addr, &req).await?;
                states.push_str(&format!(
                    "{}: {:?}\n",
                    n.id,
                    beat.partitions.iter().find(|s| s.partition == p as u32)
                ));
            }
            let url = format!("http://{}/v1/kv/{key}", cluster.nodes[2].client_addr);
            let body = cluster.http.put(url).body("x").send().await?.text().await?;
            anyhow::bail!("{e}\n{states}\nlast answer: {body}");
        }
        let (status, _) = status?;
        assert_eq!(status, 201, "partition {p}");
        assert_eq!(next.partitions[p].epoch, 2);
    }
    let expected = acked.lock().map(|a| a.clone()).unwrap_or_default();
    for (key, (version, value)) in &expected {
        // 503 means the new primary is still committing its suffix: clients retry.
        let (status, v, body) = wait_until(Duration::from_secs(10), "a non-503 answer", || {
            let c = &cluster;
            async move { c.get(1, key).await.ok().filter(|r| r.0 != 503) }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(40)))?;
        assert_eq!(
            status,
            200,
            "acknowledged key {key} lost: {}\n{}",
            String::from_utf8_lossy(&body),
            cluster.logs(30)
        );
        assert_eq!(v, Some(*version), "key {key}");
        assert_eq!(&body, value, "key {key}");
    }
    Ok(())
}

/// The operator's fail-over: for partitions led by `dead`, the live in-sync member with the
/// highest `(lastEpoch, lastSeq)` becomes primary at epoch + 1; `dead` leaves every in-sync set.
async fn fail_over(
    cluster: &Cluster,
    map: &PartitionMap,
    dead: &str,
) -> anyhow::Result<PartitionMap> {
    let mut next = map.clone();
    next.version += 1;
    for (p, entry) in next.partitions.iter_mut().enumerate() {
        entry.in_sync.retain(|n| n != dead);
        if entry.primary.as_deref() != Some(dead) {
            continue;
        }
        let mut best: Option<(LogPosition, String)> = None;
        for candidate in &entry.in_sync {
            let node = cluster
                .node(candidate)
                .ok_or_else(|| anyhow::anyhow!("no {candidate}"))?;
            let pos = cluster.admin.position(&node.peer_addr, p as u32).await?;
            if best.as_ref().is_none_or(|(b, _)| pos > *b) {
                best = Some((pos, candidate.clone()));
            }
        }
        entry.primary = best.map(|(_, n)| n);
        entry.epoch += 1;
    }
    Ok(next)
}
