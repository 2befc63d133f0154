//! Pipelined replication on three node processes (`--appends-in-flight 4`): many concurrent
//! writes to one partition, so the primary keeps several appends in flight to each follower
//! and they may arrive out of order. Every write is acknowledged, and both followers end up
//! holding every acknowledged value.

use shardedstore_tests::node_harness::{Cluster, NodeOptions, wait_until};
use std::sync::Arc;
use std::time::Duration;

const WRITERS: usize = 32;
const WRITES_EACH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_replicate_every_acknowledged_write() -> anyhow::Result<()> {
    let options = NodeOptions {
        extra_args: vec!["--appends-in-flight".into(), "4".into()],
        ..NodeOptions::default()
    };
    let cluster = Arc::new(Cluster::start(3, options)?);
    cluster.wait_healthy().await?;
    // One partition led by node-0, followed by node-1 and node-2, all in sync.
    let _beats = cluster.lead_one_partition("warm-up", b"w").await?;

    let writers = (0..WRITERS).map(|w| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in 0..WRITES_EACH {
                let value = format!("w{w}-{i}").into_bytes();
                let (status, _) = cluster.put(0, &format!("k{w}"), value).await?;
                anyhow::ensure!(
                    matches!(status, 200 | 201),
                    "put k{w} #{i} answered {status}"
                );
            }
            Ok(())
        })
    });
    for result in futures::future::join_all(writers).await {
        result??;
    }

    // Every follower applies every acknowledged write (local reads show its applied state).
    for node in 1..3 {
        for w in 0..WRITERS {
            let want = format!("w{w}-{}", WRITES_EACH - 1).into_bytes();
            wait_until(
                Duration::from_secs(20),
                &format!("node-{node} holds the last value of k{w}"),
                || async {
                    let (status, _, body) = cluster.get_local(node, &format!("k{w}")).await.ok()?;
                    (status == 200 && body == want).then_some(())
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
        }
    }
    Ok(())
}
