//! Append streams on three node processes: the primary carries its appends to each member
//! node on one long-lived stream (counted in `shardedstore_append_streams`), the peer token is
//! checked when a stream opens, a malformed batch on a stream is answered and counted without
//! ending it, and when a member restarts the primary opens a new stream and goes on.

use shardedstore_tests::node_harness::{Cluster, NodeOptions, metric_value, wait_until};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STREAMS: &str = "shardedstore_append_streams";

/// Waits until node `i`'s `side` streams number `want`.
async fn streams_become(cluster: &Cluster, i: usize, side: &str, want: f64) -> anyhow::Result<()> {
    let filter = format!("side=\"{side}\"");
    wait_until(
        Duration::from_secs(20),
        &format!("node-{i} has {want} {side} append streams"),
        || async {
            let text = cluster.metrics(i).await.ok()?;
            (metric_value(&text, STREAMS, &filter) == want).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))
}

/// Sends an upgrade request for an append stream to `addr` with `headers`; returns the
/// connection and the answer's status line and headers.
async fn upgrade(addr: &str, headers: &str) -> anyhow::Result<(TcpStream, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!("GET /peer/v1/stream HTTP/1.1\r\nhost: {addr}\r\n{headers}\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            tcp.read(&mut byte).await? == 1,
            "connection closed in the answer's head"
        );
        head.push(byte[0]);
    }
    Ok((tcp, String::from_utf8_lossy(&head).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_travel_on_one_stream_per_node_pair() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let beats = cluster.lead_one_partition("warm-up", b"w").await?;
    for i in 0..20 {
        let (status, _) = cluster.put(0, &format!("k{i}"), b"v".to_vec()).await?;
        anyhow::ensure!(matches!(status, 200 | 201), "put k{i} answered {status}");
    }
    // node-0 leads: one stream to each member node, none back.
    streams_become(&cluster, 0, "outgoing", 2.0).await?;
    streams_become(&cluster, 0, "incoming", 0.0).await?;
    for i in 1..3 {
        streams_become(&cluster, i, "incoming", 1.0).await?;
    }

    // The token is checked when a stream opens; a request that is not an upgrade is refused.
    let addr = cluster.nodes[1].peer_addr.clone();
    let upgrade_headers = "connection: upgrade\r\nupgrade: shardedstore-appends/1\r\n";
    let (_, head) = upgrade(
        &addr,
        &format!("authorization: Bearer wrong\r\n{upgrade_headers}"),
    )
    .await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 403"), "wrong token: {head}");
    let (_, head) = upgrade(&addr, upgrade_headers).await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 401"), "no token: {head}");
    let token = cluster.options.token.clone();
    let (_, head) = upgrade(&addr, &format!("authorization: Bearer {token}\r\n")).await?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 400"),
        "no upgrade header: {head}"
    );

    // A stream opened by hand: a malformed batch is answered 400 and counted, and the
    // stream stays open for the next frame.
    let (mut tcp, head) = upgrade(
        &addr,
        &format!("authorization: Bearer {token}\r\n{upgrade_headers}"),
    )
    .await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "upgrade: {head}");
    streams_become(&cluster, 1, "incoming", 2.0).await?;
    let rejected_before = metric_value(
        &cluster.metrics(1).await?,
        "shardedstore_rejected_peer_frames_total",
        "",
    );
    for id in [7u32, 8] {
        let garbage = b"not a batch";
        let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(garbage);
        tcp.write_all(&frame).await?;
        let mut header = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut header)).await??;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let got_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let status = u16::from_be_bytes([header[8], header[9]]);
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await?;
        anyhow::ensure!(
            (got_id, status) == (id, 400),
            "frame {id}: answered id {got_id} status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let rejected = metric_value(
        &cluster.metrics(1).await?,
        "shardedstore_rejected_peer_frames_total",
        "",
    );
    anyhow::ensure!(
        rejected >= rejected_before + 2.0,
        "rejected frames went from {rejected_before} to {rejected}"
    );
    drop(tcp);
    streams_become(&cluster, 1, "incoming", 1.0).await?;

    // A member restarts: its stream ends, and the primary opens a new one for its next
    // appends; a write then reaches the restarted member.
    cluster.nodes[1].kill9();
    cluster.nodes[1].start()?;
    wait_until(
        Duration::from_secs(30),
        "node-1 holds a write made after its restart",
        || async {
            let (status, _) = cluster.put(0, "after", b"restart".to_vec()).await.ok()?;
            if !matches!(status, 200 | 201) {
                return None;
            }
            let (status, _, body) = cluster.get_local(1, "after").await.ok()?;
            (status == 200 && body == b"restart").then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;
    streams_become(&cluster, 1, "incoming", 1.0).await?;
    streams_become(&cluster, 0, "outgoing", 2.0).await?;
    drop(beats);
    Ok(())
}
