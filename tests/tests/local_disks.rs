//! Disk faults on a real local-mode store: every node's data directory is a faultfs mount
//! (`docs/faultfs.md`), so a test hangs or fails one node's disk while the others work.
//!
//! - Issue item 4 (gray failures): a follower whose fsync hangs leaves `inSync`, and a
//!   primary whose fsync hangs is failed over; in both cases every partition takes writes
//!   again within lease + 5 s of the fault, and nothing acknowledged is lost.
//! - Issue item 10 (fatal storage error): a node whose fsync fails (EIO) stops serving at once
//!   (the process exits) and, restarted on a healthy disk, rejoins with nothing acknowledged
//!   lost.
//!
//! Needs root and `/dev/fuse`; skipped (passing) without them.

use shardedstore_faultfs::FaultControl;
use shardedstore_node::map::PartitionMap;
use shardedstore_operator::local::control::LocalStatus;
use shardedstore_tests::checker::nemesis::disks::Disks;
use shardedstore_tests::local_harness::{LocalOptions, LocalStore, WriteLoad, ensure_none_lost};
use shardedstore_tests::node_harness::wait_until;
use shardedstore_tests::partition_probes::PartitionProbes;
use std::time::Duration;

/// A store whose nodes write to their own faultfs disks; dropped store first (processes
/// die), then the disks (healed and unmounted).
struct Setup {
    store: LocalStore,
    disks: Disks,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.disks.heal_all();
        self.store.kill_all();
    }
}

async fn setup() -> anyhow::Result<Option<Setup>> {
    if !shardedstore_tests::tools::require_fuse() {
        return Ok(None);
    }
    let options = LocalOptions::default();
    let store = LocalStore::create(options.clone())?;
    let disks = Disks::mount(store.data_dir(), options.nodes)?;
    let mut s = Setup { store, disks };
    s.store.launch().await?;
    Ok(Some(s))
}

fn map_of(store: &LocalStore) -> anyhow::Result<PartitionMap> {
    store
        .stored_map()
        .ok_or_else(|| anyhow::anyhow!("no stored map"))
}

/// The node leading the most partitions, and one partition it leads.
fn busiest_primary(map: &PartitionMap) -> anyhow::Result<(String, u32)> {
    map.nodes
        .keys()
        .filter_map(|id| {
            let led: Vec<u32> = (0..map.partitions.len() as u32)
                .filter(|p| map.partitions[*p as usize].primary.as_deref() == Some(id))
                .collect();
            led.first().map(|p| (id.clone(), *p, led.len()))
        })
        .max_by_key(|(_, _, n)| *n)
        .map(|(id, p, _)| (id, p))
        .ok_or_else(|| anyhow::anyhow!("no primary in the map"))
}

/// Issue item 4's bound: after a gray failure on one node every partition takes writes
/// again within lease + 5 s.
fn gray_bound(store: &LocalStore) -> Duration {
    Duration::from_millis(store.options.lease_ms) + Duration::from_secs(5)
}

/// Heals every disk, stops the load and checks that every acknowledged write reads back
/// once the store settled.
async fn heal_and_check(
    s: &Setup,
    load: WriteLoad,
    probed: Vec<(String, String)>,
) -> anyhow::Result<()> {
    s.disks.heal_all();
    let mut report = load.stop().await;
    report.acked.extend(probed);
    s.store.wait_settled(Duration::from_secs(90)).await?;
    ensure_none_lost(&s.store.client()?, &report, 50).await
}

/// Freezes `node`'s disk and checks the bound: every partition takes writes within lease +
/// 5 s, and `settled` holds of the stored map by then.
async fn hang_and_check(
    s: &Setup,
    prefix: &str,
    pick: impl Fn(&PartitionMap) -> anyhow::Result<(String, u32)>,
    settled: impl Fn(&PartitionMap, &str, u32) -> bool,
) -> anyhow::Result<()> {
    let client = s.store.client()?;
    let load = WriteLoad::start(&client, prefix, 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let map = map_of(&s.store)?;
    let (victim, partition) = pick(&map)?;
    let disk: FaultControl = s.disks.control(&victim)?;
    disk.freeze();
    let probes = PartitionProbes::start(&client, &map, prefix);
    let probed = probes
        .within(gray_bound(&s.store))
        .await
        .map_err(|e| anyhow::anyhow!("{e} ({victim}'s disk hung)\n{}", s.store.log_tail(60)))?;
    wait_until(
        Duration::from_secs(10),
        "the map to work around the hung disk",
        || async {
            let m = s.store.stored_map()?;
            settled(&m, &victim, partition).then_some(())
        },
    )
    .await?;
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    heal_and_check(s, load, probed).await
}

/// Issue item 4 (gray failures): a follower whose fsync hangs still answers heartbeats but
/// acknowledges nothing; it leaves `inSync` and every partition takes writes again within
/// lease + 5 s; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_disk_hangs_leaves_in_sync_within_the_bound() -> anyhow::Result<()> {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let pick = |map: &PartitionMap| {
        let (primary, p) = busiest_primary(map)?;
        let e = &map.partitions[p as usize];
        let follower = e
            .in_sync
            .iter()
            .find(|n| **n != primary)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no in-sync follower in {e:?}"))?;
        Ok((follower, p))
    };
    let settled = |m: &PartitionMap, victim: &str, p: u32| {
        let e = &m.partitions[p as usize];
        !e.in_sync.iter().any(|n| n == victim) || e.primary.as_deref() == Some(victim)
    };
    hang_and_check(&s, "hung-follower", pick, settled).await
}

/// Issue item 4 (gray failures): a primary whose fsync hangs cannot persist (its storage
/// stall shows in its heartbeat answers); it is failed over and every partition takes
/// writes again within lease + 5 s; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_whose_disk_hangs_is_failed_over_within_the_bound() -> anyhow::Result<()> {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let settled = |m: &PartitionMap, victim: &str, p: u32| {
        m.partitions[p as usize].primary.as_deref() != Some(victim)
    };
    hang_and_check(&s, "hung-primary", busiest_primary, settled).await
}

/// Issue item 10 (fatal storage error): fsync fails with EIO under a primary. The node stops
/// serving at once — its process exits instead of answering with unpersisted positions —
/// its partitions are failed over, and once its disk works again the operator's restart
/// brings it back cleanly; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_stops_the_node_at_once_and_it_restarts_cleanly() -> anyhow::Result<()> {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let client = s.store.client()?;
    let load = WriteLoad::start(&client, "eio", 4);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let map = map_of(&s.store)?;
    let (victim, partition) = busiest_primary(&map)?;
    let pid_of = |status: &LocalStatus| {
        status
            .endpoints
            .iter()
            .find(|e| e.id == victim)
            .and_then(|e| e.pid)
    };
    let before = s
        .store
        .status()
        .await
        .as_ref()
        .and_then(pid_of)
        .ok_or_else(|| anyhow::anyhow!("no pid for {victim}"))?;
    let disk = s.disks.control(&victim)?;
    disk.fail_fsync(true);
    // The first failed commit ends the process (the load keeps it writing).
    wait_until(Duration::from_secs(10), "the node to exit", || async {
        let alive = std::path::Path::new(&format!("/proc/{before}")).exists()
            && !std::fs::read_to_string(format!("/proc/{before}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
        (!alive).then_some(())
    })
    .await?;
    let probes = PartitionProbes::start(&client, &map, "eio");
    let probed = probes.within(gray_bound(&s.store)).await?;
    wait_until(
        Duration::from_secs(10),
        "the failed node's partition led elsewhere",
        || async {
            let m = s.store.stored_map()?;
            (m.partitions[partition as usize].primary.as_deref() != Some(victim.as_str()))
                .then_some(())
        },
    )
    .await?;
    disk.heal();
    // Restarted by the operator on its healed disk: a new process that rejoins.
    wait_until(Duration::from_secs(60), "the node restarted", || async {
        let status = s.store.status().await?;
        pid_of(&status).filter(|p| *p != before).map(|_| ())
    })
    .await?;
    heal_and_check(&s, load, probed).await
}
