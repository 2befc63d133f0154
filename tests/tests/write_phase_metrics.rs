//! The per-phase write latency histograms on `/metrics`: three node processes, RF 3; after
//! real writes through the primary every phase counted each write exactly once, the phases
//! come in their order (a write is acknowledged at commit and applied after that, so
//! `applied` is counted once the apply caught up), and both followers timed their durable
//! appends.

use shardedstore_tests::node_harness::{Cluster, NodeOptions, metric_value, wait_until};
use std::time::Duration;

const PHASES: [&str; 5] = [
    "local_durable",
    "replicated",
    "committed",
    "applied",
    "acknowledged",
];
const PHASE: &str = "shardedstore_write_phase_duration_seconds";
const FOLLOWER: &str = "shardedstore_follower_append_duration_seconds";
const ROUND_TRIP: &str = "shardedstore_append_round_trip_duration_seconds";

/// `(count, sum)` of every phase at the primary.
fn phases(text: &str) -> Vec<(f64, f64)> {
    PHASES
        .iter()
        .map(|p| {
            let filter = format!("phase=\"{p}\"");
            (
                metric_value(text, &format!("{PHASE}_count"), &filter),
                metric_value(text, &format!("{PHASE}_sum"), &filter),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_phases_count_every_replicated_write() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    // One partition led by node-0, followed by node-1 and node-2, all in sync.
    let _beats = cluster.lead_one_partition("warm-up", b"w").await?;

    let text = cluster.metrics(0).await?;
    for p in PHASES {
        assert!(
            text.contains(&format!("{PHASE}_bucket{{phase=\"{p}\",le=\"0.0001\"}}")),
            "phase {p} is not exported:\n{text}"
        );
    }

    // Acknowledged at commit: wait until the warm-up writes' apply was counted too.
    let applied = PHASES.iter().position(|p| *p == "applied").unwrap_or(0);
    let acknowledged = PHASES
        .iter()
        .position(|p| *p == "acknowledged")
        .unwrap_or(0);
    let before = wait_until(
        Duration::from_secs(20),
        "the primary applied the warm-up writes",
        || async {
            let before = phases(&cluster.metrics(0).await.ok()?);
            (before[applied].0 >= before[acknowledged].0).then_some(before)
        },
    )
    .await?;
    let follower_before = [
        metric_value(&cluster.metrics(1).await?, &format!("{FOLLOWER}_count"), ""),
        metric_value(&cluster.metrics(2).await?, &format!("{FOLLOWER}_count"), ""),
    ];
    let round_trips_before = metric_value(
        &cluster.metrics(0).await?,
        &format!("{ROUND_TRIP}_count"),
        "",
    );
    const WRITES: f64 = 5.0;
    for i in 0..WRITES as usize {
        let (status, _) = cluster.put(0, &format!("k{i}"), vec![b'x'; 1024]).await?;
        assert!(matches!(status, 200 | 201), "put k{i} answered {status}");
    }
    // The last writes' apply may still be under way.
    let after = wait_until(
        Duration::from_secs(20),
        "the primary applied every acknowledged write",
        || async {
            let after = phases(&cluster.metrics(0).await.ok()?);
            (after[applied].0 - before[applied].0 >= WRITES).then_some(after)
        },
    )
    .await?;

    let delta: Vec<(f64, f64)> = before
        .iter()
        .zip(&after)
        .map(|((c0, s0), (c1, s1))| (c1 - c0, s1 - s0))
        .collect();
    for (p, (count, sum)) in PHASES.iter().zip(&delta) {
        assert_eq!(
            *count, WRITES,
            "phase {p} counted {count} of {WRITES} writes"
        );
        assert!(*sum > 0.0, "phase {p} recorded no time");
    }
    // Each write reaches the phases in order, so the summed latencies grow phase by phase
    // (replicated and local durable happen in parallel; committed follows both; the answer
    // and the apply both follow the commit).
    let sum = |p: &str| delta[PHASES.iter().position(|x| *x == p).unwrap_or(0)].1;
    assert!(sum("committed") >= sum("local_durable"), "{delta:?}");
    assert!(sum("committed") >= sum("replicated"), "{delta:?}");
    assert!(sum("applied") >= sum("committed"), "{delta:?}");
    assert!(sum("acknowledged") >= sum("committed"), "{delta:?}");

    // A write is acknowledged only after both followers answered its append, and the
    // primary timed each of those round trips before.
    let round_trips = metric_value(
        &cluster.metrics(0).await?,
        &format!("{ROUND_TRIP}_count"),
        "",
    ) - round_trips_before;
    assert!(
        round_trips >= 2.0 * WRITES,
        "the primary timed {round_trips} append round trips for {WRITES} writes to two followers"
    );
    for (i, before) in follower_before.iter().enumerate() {
        let text = cluster.metrics(i + 1).await?;
        let count = metric_value(&text, &format!("{FOLLOWER}_count"), "");
        assert!(
            count - before >= WRITES,
            "node-{} timed {} durable appends for {WRITES} writes",
            i + 1,
            count - before
        );
    }
    Ok(())
}
