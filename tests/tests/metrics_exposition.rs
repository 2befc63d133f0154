//! Both processes' `/metrics` pass the real `promtool check metrics` (exposition format and
//! naming conventions), after traffic has touched every metric family.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardedstore_tests::node_harness::{Cluster, NodeOptions};
use shardedstore_tests::tools::require_tool;

fn promtool_check(promtool: &std::path::Path, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting promtool: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("feeding promtool: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn node_metrics_pass_promtool() -> anyhow::Result<()> {
    let Some(promtool) = require_tool("promtool") else {
        return Ok(());
    };
    let cluster = Cluster::start(1, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(4, 1, 1);
    cluster.install(&map).await?;
    cluster.heartbeat_all(Duration::from_secs(30)).await?;
    let (status, _) = cluster.put(0, "metrics-key", b"v".to_vec()).await?;
    assert!(status == 200 || status == 201, "put answered {status}");
    let (status, _, _) = cluster.get(0, "metrics-key").await?;
    assert_eq!(status, 200);
    let (status, _, _) = cluster.get(0, "no-such-key").await?;
    assert_eq!(status, 404);

    let text = cluster.metrics(0).await?;
    assert!(
        text.contains("shardedstore_request_errors_total{code=\"not_found\",operation=\"get\"} 1"),
        "the refused read is not counted by its code:\n{text}"
    );
    for family in [
        "shardedstore_requests_total",
        "shardedstore_request_duration_seconds",
        "shardedstore_fsync_duration_seconds",
        "shardedstore_stored_keys",
    ] {
        assert!(
            text.contains(family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    promtool_check(&promtool, &text);
    Ok(())
}

#[test]
fn operator_metrics_pass_promtool() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let metrics = shardedstore_operator::metrics::Metrics::new()
        .unwrap_or_else(|e| panic!("operator metrics: {e}"));
    metrics.reconciles.inc();
    metrics.reconcile_failed("apply");
    drop(metrics.reconcile_timer());
    let text = metrics.render();
    assert!(
        text.contains("shardedstore_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    promtool_check(&promtool, &text);
}
