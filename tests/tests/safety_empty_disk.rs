//! Local mode, real processes: a node that comes back on an empty disk (issue item 6, empty
//! disk and stale admission). It holds nothing of what the map says it holds in sync, so the
//! operator must drop it from every `inSync` set, never elect it while it is unproven, and let
//! it back in only through admission (the primary proves it holds every committed entry).

use shardedstore_node::client::KvClient;
use shardedstore_node::map::PartitionMap;
use shardedstore_tests::local_harness::{LocalOptions, LocalStore, WriteLoad, lost_writes};
use shardedstore_tests::node_harness::wait_until;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Processes stopped with SIGSTOP; every one still frozen is thawed (SIGCONT) on drop, so a
/// failing test leaves nothing stopped.
struct Frozen(Vec<u32>);

impl Frozen {
    fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
        let ok = std::process::Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -s {name} {pid} failed");
        Ok(())
    }

    fn freeze(&mut self, pid: u32) -> anyhow::Result<()> {
        Self::signal(pid, "STOP")?;
        self.0.push(pid);
        Ok(())
    }

    fn thaw(&mut self) -> anyhow::Result<()> {
        for pid in std::mem::take(&mut self.0) {
            Self::signal(pid, "CONT")?;
        }
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Self::signal(*pid, "CONT");
        }
    }
}

async fn pids(store: &LocalStore) -> anyhow::Result<BTreeMap<String, u32>> {
    let status = store
        .status()
        .await
        .ok_or_else(|| anyhow::anyhow!("control endpoint not answering"))?;
    Ok(status
        .endpoints
        .iter()
        .filter_map(|e| Some((e.id.clone(), e.pid?)))
        .collect())
}

/// Every map version seen in `map.json` while polling for `window`, in order.
async fn watch_maps(store: &LocalStore, window: Duration) -> Vec<PartitionMap> {
    let mut seen: Vec<PartitionMap> = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Some(m) = store.stored_map()
            && seen.last().is_none_or(|l| l.version != m.version)
        {
            seen.push(m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Issue item 6 (empty disk): RF 3. After acknowledged writes, node-2 is stopped, its data
/// directory wiped and it restarts with the same node id, while node-0 and node-1 — the
/// nodes that hold the data — are frozen. node-2 is then the only live member of every
/// partition, but its copies hold nothing: it must leave every `inSync` set and never be
/// elected (the partitions stay unavailable) while it is unproven. Once the others are thawed
/// it is admitted again through the primaries; then node-0 and node-1 are frozen once more,
/// every partition fails over to node-2, and every acknowledged write reads back from it
/// alone (admission really caught it up).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_on_an_empty_disk_is_not_in_sync_nor_elected_until_admitted()
-> anyhow::Result<()> {
    let store = LocalStore::start(LocalOptions::default()).await?;
    let lease = Duration::from_millis(store.options.lease_ms);
    let client = store.client()?;
    let load = WriteLoad::start(&client, "disk", 4);
    load.wait_for_acks(200, Duration::from_secs(30)).await?;
    let mut acked = load.stop().await.acked;

    let before = store
        .stored_map()
        .ok_or_else(|| anyhow::anyhow!("no map.json"))?;
    let pid = pids(&store).await?;
    let get = |id: &str| {
        pid.get(id)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no pid for {id}"))
    };
    let mut frozen = Frozen(Vec::new());
    // Stopped while its directory is wiped, then killed: the supervisor restarts it on an
    // empty directory with the same node id.
    frozen.freeze(get("node-2")?)?;
    let dir = store.data_dir().join("node-2");
    std::fs::remove_dir_all(&dir)?;
    std::fs::create_dir(&dir)?;
    frozen.freeze(get("node-0")?)?;
    frozen.freeze(get("node-1")?)?;
    store.kill9_node("node-2").await?;
    let killed = get("node-2")?;
    frozen.0.retain(|p| *p != killed);

    // Long enough for the restart, the frozen nodes' fences (lease + drift) and a few rounds.
    let maps = watch_maps(&store, 2 * lease + Duration::from_secs(4)).await;
    frozen.thaw()?;
    let log = store.log_tail(400);
    for m in &maps {
        for (p, e) in m.partitions.iter().enumerate() {
            let old = &before.partitions[p];
            anyhow::ensure!(
                !(e.primary.as_deref() == Some("node-2") && e.epoch != old.epoch),
                "map {}: node-2 elected primary of partition {p} at epoch {} while its disk was empty\n{log}",
                m.version,
                e.epoch
            );
        }
    }
    let dropped = maps
        .iter()
        .find(|m| m.partitions.iter().all(|e| !e.is_in_sync("node-2")))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no map dropped node-2 from inSync (versions {:?}); last: {:?}\n{log}",
                maps.iter().map(|m| m.version).collect::<Vec<_>>(),
                maps.last()
            )
        })?;
    println!("map {} lists node-2 in no inSync set", dropped.version);
    anyhow::ensure!(
        log.contains("new disk identity"),
        "the operator did not notice the new disk\n{log}"
    );

    // Back through admission: every partition in sync again, node-2 included.
    let settled = store.wait_settled(Duration::from_secs(90)).await?;
    let map = store
        .stored_map()
        .ok_or_else(|| anyhow::anyhow!("no map.json"))?;
    anyhow::ensure!(
        map.partitions.iter().all(|e| e.is_in_sync("node-2")),
        "node-2 not admitted again: {map:?}"
    );
    println!("settled at map {}", settled.coordinator.map_version);
    let load = WriteLoad::start(&client, "after", 4);
    load.wait_for_acks(200, Duration::from_secs(30)).await?;
    acked.extend(load.stop().await.acked);

    // node-2 alone: every partition fails over to it, and it holds every acknowledged write.
    let pid = pids(&store).await?;
    for id in ["node-0", "node-1"] {
        let p = pid
            .get(id)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no pid for {id}"))?;
        frozen.freeze(p)?;
    }
    let led = wait_until(
        Duration::from_secs(60),
        "every partition led by node-2",
        || async {
            store.stored_map().filter(|m| {
                m.partitions
                    .iter()
                    .all(|e| e.primary.as_deref() == Some("node-2"))
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", store.log_tail(60)));
    let lost = match led {
        Ok(_) => {
            let alone = KvClient::builder(&store.client_addrs(3)[2..])
                .request_timeout(Duration::from_secs(3))
                .build()?;
            Ok(lost_writes(&alone, &acked).await)
        }
        Err(e) => Err(e),
    };
    frozen.thaw()?;
    let lost = lost?;
    anyhow::ensure!(
        lost.is_empty(),
        "{} of {} acknowledged writes missing on node-2, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    println!(
        "{} acknowledged writes read back from node-2 alone",
        acked.len()
    );
    store.wait_settled(Duration::from_secs(90)).await?;
    Ok(())
}
