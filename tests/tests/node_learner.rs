//! (b) A learner catches up ~100 MB under concurrent writes through a snapshot followed by the
//! log tail (a small log window forces the snapshot path), is admitted by the primary
//! (admit → ready) and joins the in-sync set; every acknowledged write is on it.

use shardedstore_node::admin_api::{AdmitRequest, HeartbeatResponse};
use shardedstore_tests::node_harness::{Cluster, NodeOptions, metric_value, wait_until};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: u32 = 2;
const BULK_VALUES: usize = 1600;
const BULK_VALUE_BYTES: usize = 64 * 1024;

type Acked = Arc<Mutex<BTreeMap<String, (u64, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_by_snapshot_and_tail_and_joins_in_sync() -> anyhow::Result<()> {
    let options = NodeOptions {
        extra_args: vec!["--log-window".into(), "50".into()],
        ..NodeOptions::default()
    };
    let cluster = Cluster::start(2, options)?;
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(PARTITIONS, 1, 1);
    for e in &mut map.partitions {
        e.primary = Some("node-0".into());
        e.replicas = vec!["node-0".into()];
        e.in_sync = e.replicas.clone();
    }
    map.limits.max_value_bytes = 1024 * 1024;
    map.rebalance_bandwidth_bytes_per_second = Some(200 * 1024 * 1024);
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(6))
        .await?;

    // ~100 MB of bulk data on node-0.
    let acked: Acked = Arc::default();
    let bulk = (0..4).map(|w| {
        let (http, addr, acked) = (
            cluster.http.clone(),
            cluster.nodes[0].client_addr.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            for i in (w..BULK_VALUES).step_by(4) {
                let key = format!("bulk-{i}");
                let value = vec![(i % 251) as u8; BULK_VALUE_BYTES];
                let r = http
                    .put(format!("http://{addr}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "bulk write {key}: {}", r.status());
                let v = r
                    .headers()
                    .get("x-version")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                if let Ok(mut a) = acked.lock() {
                    a.insert(key, (v, value));
                }
            }
            Ok(())
        })
    });
    for t in bulk.collect::<Vec<_>>() {
        t.await??;
    }
    // The log is compacted down to the window, so a new replica needs a snapshot.
    wait_until(
        Duration::from_secs(20),
        "log compaction on node-0",
        || async {
            let m = cluster.metrics(0).await.ok()?;
            // Both gauges are set in the same maintenance tick, after compaction: the key
            // count proves the tick came after the bulk load (the gauge starts at 0).
            let keys = metric_value(&m, "shardedstore_stored_keys ", "");
            let entries = metric_value(&m, "shardedstore_log_entries ", "");
            (keys >= BULK_VALUES as f64 && entries <= 200.0).then_some(())
        },
    )
    .await?;

    // Concurrent small writes for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (http, addr, acked, stop) = (
            cluster.http.clone(),
            cluster.nodes[0].client_addr.clone(),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 50_000 {
                let key = format!("live-{w}-{i}");
                let value = format!("live value {w} {i}").into_bytes();
                if let Ok(r) = http
                    .put(format!("http://{addr}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                    && r.status().is_success()
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

    // Map v2: node-1 is a learner of every partition.
    let mut v2 = map.clone();
    v2.version = 2;
    for e in &mut v2.partitions {
        e.learners = vec!["node-1".into()];
    }
    cluster.install(&v2).await?;

    // Once the learner is close, the primary admits it; it answers ready when the learner
    // holds every committed entry.
    for p in 0..PARTITIONS {
        wait_until(
            Duration::from_secs(120),
            "the learner to come close",
            || async {
                let b = cluster.report(0).await.ok()?;
                let st = b.partitions.iter().find(|s| s.partition == p)?;
                let f = st.followers.iter().find(|f| f.node == "node-1")?;
                (f.acked_seq + 50 >= st.commit_seq && f.acked_seq > 0).then_some(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
        let req = AdmitRequest {
            epoch: 1,
            learner: "node-1".into(),
            timeout_ms: 0,
            wait_for_copy_within: None,
        };
        let admin = &cluster.admin;
        let addr = &cluster.nodes[0].peer_addr;
        wait_until(Duration::from_secs(30), "admit → ready", || async {
            admin.admit(addr, p, &req).await.ok().filter(|r| r.ready)
        })
        .await?;
    }
    let received = metric_value(
        &cluster.metrics(1).await?,
        "shardedstore_catchup_bytes_total",
        "received",
    );
    assert!(
        received >= 0.9 * (BULK_VALUES * BULK_VALUE_BYTES) as f64,
        "the learner received only {received} snapshot bytes\n{}",
        cluster.logs(30)
    );

    // Map v3: node-1 joins the in-sync set.
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.replication_factor = 2;
    for e in &mut v3.partitions {
        e.learners.clear();
        e.replicas = vec!["node-0".into(), "node-1".into()];
        e.in_sync = e.replicas.clone();
    }
    cluster.install(&v3).await?;
    let before = acked.lock().map(|a| a.len()).unwrap_or(0);
    wait_until(
        Duration::from_secs(30),
        "writes with node-1 in sync",
        || {
            let a = acked.clone();
            async move { (a.lock().map(|a| a.len()).unwrap_or(0) >= before + 200).then_some(()) }
        },
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }

    // node-1 holds exactly what node-0 holds, including every acknowledged write.
    wait_until(
        Duration::from_secs(30),
        "node-1 to apply everything",
        || async {
            let (a, b) = (cluster.report(0).await.ok()?, cluster.report(1).await.ok()?);
            let sum = |h: &HeartbeatResponse| {
                h.partitions
                    .iter()
                    .fold((0, 0), |acc, p| (acc.0 + p.applied_seq, acc.1 + p.keys))
            };
            (sum(&a) == sum(&b)).then_some(())
        },
    )
    .await?;
    let expected = acked.lock().map(|a| a.clone()).unwrap_or_default();
    for (key, (version, value)) in expected.iter().step_by(7) {
        let (status, v, body) = cluster.get_local(1, key).await?;
        assert_eq!((status, v), (200, Some(*version)), "key {key}");
        assert_eq!(&body, value, "key {key}");
    }
    Ok(())
}
