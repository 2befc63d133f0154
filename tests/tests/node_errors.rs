//! (e) Oversized, malformed and unauthenticated requests get the documented errors and
//! change nothing; garbage replication frames are rejected and the node keeps serving.

use shardedstore_node::admin_api::LogPosition;
use shardedstore_node::replication::frame::{Append, AppendBatch, BatchReply, Status};
use shardedstore_tests::node_harness::{Cluster, NodeOptions, metric_value, wait_until};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors_and_change_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(4, 1, 1);
    map.limits.max_key_bytes = 16;
    map.limits.max_value_bytes = 1000;
    cluster.install(&map).await?;
    cluster.heartbeat_all(Duration::from_secs(60)).await?;
    let node = &cluster.nodes[0];
    let base = format!("http://{}", node.client_addr);
    let http = &cluster.http;

    // A good write first, to show that the API works and to detect changes later.
    let (status, v1) = cluster.put(0, "good", b"v".to_vec()).await?;
    assert_eq!(status, 201, "{}", cluster.logs(30));

    let code = |r: &serde_json::Value| r["error"]["code"].as_str().unwrap_or("").to_owned();

    // Key too large: 413.
    let r = http
        .put(format!("{base}/v1/kv/{}", "k".repeat(17)))
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(code(&r.json().await?), "key_too_large");
    // Value too large, with Content-Length: 413.
    let r = http
        .put(format!("{base}/v1/kv/big"))
        .body(vec![0u8; 1001])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(code(&r.json().await?), "value_too_large");
    // Value too large, streamed without Content-Length: 413.
    let answer = chunked_put(&node.client_addr, "/v1/kv/big2", &[600, 600]).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Malformed keys: 400.
    for bad in ["a%zz", "a/b", ""] {
        let r = http
            .put(format!("{base}/v1/kv/{bad}"))
            .body("x")
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 400, "key {bad:?}");
        assert_eq!(code(&r.json().await?), "malformed_key");
    }
    // Malformed conditions: 400.
    let r = http
        .put(format!("{base}/v1/kv/good"))
        .header("if-match", "not-a-version")
        .body("y")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);

    // Peer port without a token: 401; wrong token: 403; nothing installed.
    let mut newer = map.clone();
    newer.version = 2;
    newer.partitions[0].epoch = 9;
    let url = format!("http://{}/admin/v1/map", node.peer_addr);
    let r = http.post(&url).json(&newer).send().await?;
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(&url)
        .bearer_auth("wrong")
        .json(&newer)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .post(format!(
            "http://{}/admin/v1/partitions/0/handoff",
            node.peer_addr
        ))
        .json(&serde_json::json!({"epoch": 1, "to": "x", "timeoutMs": 10}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .delete(format!("http://{}/admin/v1/partitions/0", node.peer_addr))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403);

    // Authenticated but bad maps: minInSync out of bounds is 400; a map of another
    // partition count is 409 (the partition count never changes); nothing installed.
    let mut bad_min = newer.clone();
    bad_min.min_in_sync = 2;
    let r = http
        .post(&url)
        .bearer_auth(&cluster.options.token)
        .json(&bad_min)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(code(&body), "invalid_map");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("minInSync")),
        "{body}"
    );
    let mut regrown = cluster.map_round_robin(8, 1, 1);
    regrown.version = 2;
    let r = http
        .post(&url)
        .bearer_auth(&cluster.options.token)
        .json(&regrown)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(code(&r.json().await?), "partition_count");

    // Garbage and truncated replication frames: 400, logged, node keeps serving.
    let append_url = format!("http://{}/peer/v1/partitions/0/append", node.peer_addr);
    for body in [b"garbage".to_vec(), vec![1u8, 2, 0, 0], vec![1u8]] {
        let r = http
            .post(&append_url)
            .bearer_auth(&cluster.options.token)
            .body(body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 400);
    }
    let r = http
        .post(&append_url)
        .body(b"garbage".to_vec())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    // Batched appends: a garbage batch is refused whole (400); in a well-formed batch every
    // item gets the answer it would get alone — a garbage frame 400, an append older than the
    // partition's epoch `StaleEpoch`, a partition the node does not hold `NotMember`.
    let batch_url = format!("http://{}/peer/v1/appends", node.peer_addr);
    for body in [b"garbage".to_vec(), vec![1u8, 6, 9, 0, 0, 0]] {
        let r = http
            .post(&batch_url)
            .bearer_auth(&cluster.options.token)
            .body(body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 400);
    }
    let stale = Append {
        epoch: 0,
        leader: "node-9".into(),
        truncate_to: Some(0),
        prev: LogPosition::default(),
        commit_seq: 0,
        entries: Vec::new(),
        session: 1,
        in_flight: 1,
    }
    .encode();
    let items = [(0u32, &b"garbage"[..]), (1, &stale[..]), (999, &stale[..])];
    let r = http
        .post(&batch_url)
        .bearer_auth(&cluster.options.token)
        .body(AppendBatch::encode(items.into_iter()))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let replies = BatchReply::decode(&r.bytes().await?)?;
    let statuses: Vec<_> = replies
        .items
        .iter()
        .copied()
        .map(|i| i.map(|reply| reply.status))
        .collect();
    assert_eq!(
        statuses,
        vec![Err(400), Ok(Status::StaleEpoch), Ok(Status::NotMember)],
        "{replies:?}"
    );
    let r = http
        .post(&batch_url)
        .body(AppendBatch::encode(items.into_iter()))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    // Nothing changed: same map, same value and version, no other keys, still serving.
    let current: serde_json::Value = http
        .get(format!("{base}/v1/map"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(current["version"], 1);
    assert_eq!(current["partitions"][0]["epoch"], 1);
    let (status, v, body) = cluster.get(0, "good").await?;
    assert_eq!((status, v, body), (200, v1, b"v".to_vec()));
    for k in ["big", "big2"] {
        assert_eq!(cluster.get(0, k).await?.0, 404, "key {k}");
    }
    let beat = cluster
        .admin
        .heartbeat(
            &node.peer_addr,
            &shardedstore_node::admin_api::HeartbeatRequest {
                store: cluster.options.store.clone(),
                map_version: 1,
                lease_ms: 60_000,
                ..Default::default()
            },
        )
        .await?;
    let keys: u64 = beat.partitions.iter().map(|p| p.keys).sum();
    assert_eq!(keys, 1, "{beat:?}");
    let metrics = cluster.metrics(0).await?;
    // Three garbage appends, two garbage batches and one garbage batched append.
    assert!(metric_value(&metrics, "shardedstore_rejected_peer_frames_total", "") >= 6.0);
    let (status, _) = cluster.put(0, "after", b"still serving".to_vec()).await?;
    assert_eq!(status, 201);
    Ok(())
}

/// Sends a PUT with a chunked body (no Content-Length) and returns the raw answer.
async fn chunked_put(addr: &str, path: &str, chunks: &[usize]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for &n in chunks {
        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'z', n));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = s.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_a_lease_refuses_to_serve() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(2, 1, 1);
    cluster.install(&map).await?;
    // No heartbeat yet: no lease.
    let (status, _) = cluster.put(0, "k", b"v".to_vec()).await?;
    assert_eq!(status, 503);
    cluster.heartbeat_all(Duration::from_millis(400)).await?;
    let (status, _) = cluster.put(0, "k", b"v".to_vec()).await?;
    assert_eq!(status, 201);
    // The lease runs out: reads and writes get 503 with Retry-After.
    let url = format!("http://{}/v1/kv/k", cluster.nodes[0].client_addr);
    let answer = wait_until(Duration::from_secs(5), "the lease to expire", || {
        let (http, url) = (cluster.http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            (r.status().as_u16() == 503).then_some(r)
        }
    })
    .await?;
    assert!(answer.headers().contains_key("retry-after"));
    let body: serde_json::Value = answer.json().await?;
    assert_eq!(body["error"]["code"], "lease_expired");
    let (status, _) = cluster.put(0, "k2", b"v".to_vec()).await?;
    assert_eq!(status, 503);
    // A new heartbeat restores service.
    cluster.heartbeat_all(Duration::from_secs(30)).await?;
    let (status, _, body) = cluster.get(0, "k").await?;
    assert_eq!((status, body), (200, b"v".to_vec()));
    assert_eq!(cluster.get(0, "k2").await?.0, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_is_one_hop_and_local_reads_report_staleness() -> anyhow::Result<()> {
    let cluster = Cluster::start(2, NodeOptions::default())?;
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(1, 2, 2);
    map.partitions[0].primary = Some("node-0".into());
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(4))
        .await?;

    // A write through the follower is forwarded to the primary.
    let (status, version) = cluster.put(1, "k", b"v".to_vec()).await?;
    assert_eq!((status, version), (201, Some(1)), "{}", cluster.logs(20));
    // A request already forwarded once is never forwarded again: 421 with the map version.
    let r = cluster
        .http
        .get(format!("http://{}/v1/kv/k", cluster.nodes[1].client_addr))
        .header("x-shardedstore-forwarded", "node-9")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 421);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "misdirected");
    assert_eq!(body["error"]["mapVersion"], 1);
    // The in-sync follower serves local reads itself, with a staleness bound.
    let r = wait_until(
        Duration::from_secs(10),
        "a local read at the follower",
        || {
            let c = &cluster;
            async move {
                let r = c
                    .http
                    .get(format!(
                        "http://{}/v1/kv/k?consistency=local",
                        c.nodes[1].client_addr
                    ))
                    .header("x-shardedstore-forwarded", "test")
                    .send()
                    .await
                    .ok()?;
                (r.status().as_u16() == 200).then_some(r)
            }
        },
    )
    .await?;
    let staleness: u64 = r
        .headers()
        .get("x-staleness-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no x-staleness-ms"))?;
    assert!(staleness < 5000, "staleness {staleness}");
    assert_eq!(r.bytes().await?.as_ref(), b"v");
    Ok(())
}
