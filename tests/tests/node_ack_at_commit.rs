//! Acknowledging writes at commit, with real processes: the primary answers a write once it
//! is durable on every in-sync member, before it applies it to its data table, and no read
//! or conditional write at the primary misses an acknowledged write. The primary's apply is
//! held by the test-only hook of debug builds (`SHARDEDSTORE_TEST_APPLY_HOLD_FILE`) while
//! writes go on committing.

use shardedstore_tests::node_harness::{Cluster, NodeOptions};
use std::time::Duration;

const APPLY_HOLD: &str = "SHARDEDSTORE_TEST_APPLY_HOLD_FILE";
/// The nodes' `--write-timeout-ms`: also how long a read waits for the apply.
const WRITE_TIMEOUT_MS: u64 = 1500;

/// Reads after an acknowledged write wait for its apply (a read that missed the write would
/// answer the old value). Regression test for acknowledging at commit: without the read
/// barrier at the primary, both reads below answer `v1` while the apply is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_the_primary_never_miss_a_write_acknowledged_before_its_apply()
-> anyhow::Result<()> {
    let options = NodeOptions {
        extra_args: vec!["--write-timeout-ms".into(), WRITE_TIMEOUT_MS.to_string()],
        ..NodeOptions::default()
    };
    let mut cluster = Cluster::start(3, options)?;
    let hold_dir = tempfile::tempdir()?;
    let hold = hold_dir.path().join("hold-apply");
    // Removes the hold on every path, so the node processes (killed on drop) never wait on it.
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _release = Release(hold.clone());
    {
        let n = &mut cluster.nodes[0];
        n.kill9();
        n.env.push((APPLY_HOLD.into(), hold.display().to_string()));
        n.start()?;
    }
    if let Err(e) = cluster.wait_healthy().await {
        anyhow::bail!("{e}\n{}", cluster.logs(30));
    }
    // One partition led by node-0 and followed by node-1 and node-2, all in sync.
    let _beats = cluster.lead_one_partition("k", b"v1").await?;

    std::fs::write(&hold, b"")?;
    // Acknowledged at commit although the primary applies nothing now.
    let (status, v2) = cluster.put(0, "k", b"v2".to_vec()).await?;
    assert_eq!(status, 200, "{}", cluster.logs(30));
    let v2 = v2.ok_or_else(|| anyhow::anyhow!("no x-version"))?;
    let beat = cluster
        .heartbeater
        .beat(
            "node-0",
            &cluster.nodes[0].peer_addr,
            Duration::from_secs(4),
        )
        .await?;
    let p = beat
        .partitions
        .first()
        .ok_or_else(|| anyhow::anyhow!("no partition in {beat:?}"))?;
    assert!(
        p.commit_seq >= v2 && p.applied_seq < v2,
        "the write is acknowledged, committed and not applied yet: {p:?}"
    );

    // Linearizable and local reads at the primary wait for the apply; held past their
    // wait, they refuse (503) instead of answering the old value.
    let (status, _, body) = cluster.get(0, "k").await?;
    assert_eq!(
        status,
        503,
        "read answered {:?}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = cluster.get_local(0, "k").await?;
    assert_eq!(
        status,
        503,
        "local read answered {:?}",
        String::from_utf8_lossy(&body)
    );

    // A conditional write decides on the acknowledged write without waiting for its apply.
    let url = format!("http://{}/v1/kv/k", cluster.nodes[0].client_addr);
    let r = cluster
        .http
        .put(&url)
        .header("if-match", v2.to_string())
        .body(b"v3".to_vec())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "{}", cluster.logs(30));
    let v3: u64 = r
        .headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no x-version"))?;
    assert!(v3 > v2);

    // A read issued while the apply is held answers the newest acknowledged value once the
    // apply resumes.
    let http = cluster.http.clone();
    let read_url = url.clone();
    let pending_read = tokio::spawn(async move {
        let r = http.get(&read_url).send().await?;
        let status = r.status().as_u16();
        anyhow::Ok((status, r.bytes().await?.to_vec()))
    });
    std::fs::remove_file(&hold)?;
    let (status, body) = pending_read.await??;
    if status == 200 {
        assert_eq!(body, b"v3");
    } else {
        // Sent before the release and held past its wait: a refusal, never the old value.
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    }
    for read in [cluster.get(0, "k").await?, cluster.get_local(0, "k").await?] {
        assert_eq!(
            (read.0, read.1, read.2.as_slice()),
            (200, Some(v3), &b"v3"[..])
        );
    }
    // Every in-sync follower serves it to a session that wrote it.
    for i in 1..3 {
        let r = cluster
            .http
            .get(format!(
                "http://{}/v1/kv/k?consistency=local",
                cluster.nodes[i].client_addr
            ))
            .header("x-min-version", v3.to_string())
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.bytes().await?.as_ref(), b"v3");
    }
    Ok(())
}
