//! Local reads and sessions with real processes in local mode: every answer names the node
//! that served it; a `consistency=local` read on a follower that carries the version of a
//! write just acknowledged (`x-min-version`) returns that write, also under write load
//! (read-your-writes); a client's successive local reads spread over replicas never go back
//! in time (monotonic reads); the staleness bound is honoured; the CLI carries versions.

use shardedstore_node::client::kv::LocalReadOptions;
use shardedstore_node::map::PartitionMap;
use shardedstore_tests::local_harness::{LocalOptions, LocalStore, WriteLoad, ensure_none_lost};
use shardedstore_tests::node_harness::binary_path;
use std::collections::BTreeSet;
use std::time::Duration;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn number(r: &reqwest::Response, name: &str) -> Option<u64> {
    header(r, name).and_then(|v| v.parse().ok())
}

/// A follower (in-sync, not primary) of `key`'s partition: its id and client address.
fn follower_of(map: &PartitionMap, key: &str) -> Option<(String, String)> {
    let entry = map.entry(map.partition_of(key.as_bytes()))?;
    let id = entry
        .in_sync
        .iter()
        .find(|n| entry.primary.as_ref() != Some(*n))?;
    Some((id.clone(), map.nodes.get(id)?.client_addr.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reads_name_their_node_and_keep_session_guarantees() -> anyhow::Result<()> {
    let store = LocalStore::start(LocalOptions {
        nodes: 3,
        partitions: 8,
        replication_factor: 3,
        ..LocalOptions::default()
    })
    .await?;
    let writer = store.client()?;
    let load = WriteLoad::start(&writer, "load", 3);
    load.wait_for_acks(50, Duration::from_secs(30)).await?;
    let map = writer.map().await?;
    let http = shardedstore_node::tls::http_client_builder(&Default::default())?
        .timeout(Duration::from_secs(10))
        .build()?;

    // Read-your-writes on a follower, under load: the read carries the write's version.
    let mut on_follower = 0;
    for i in 0..40 {
        let key = format!("ryw-{i}");
        let put = writer
            .put(&key, format!("v{i}"), Default::default())
            .await?;
        let (follower, addr) =
            follower_of(&map, &key).ok_or_else(|| anyhow::anyhow!("no follower of {key}"))?;
        let r = http
            .get(format!("http://{addr}/v1/kv/{key}?consistency=local"))
            .header("x-min-version", put.version.to_string())
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200, "{}", store.log_tail(20));
        let served_by = header(&r, "x-served-by").unwrap_or_default();
        assert!(
            map.nodes.contains_key(&served_by),
            "served by {served_by:?}"
        );
        assert_eq!(number(&r, "x-version"), Some(put.version));
        assert!(number(&r, "x-session-version").is_some_and(|s| s >= put.version));
        assert!(number(&r, "x-staleness-ms").is_some());
        if served_by == follower {
            on_follower += 1;
        }
        assert_eq!(r.text().await?, format!("v{i}"));
    }
    println!("{on_follower} of 40 read-your-writes reads answered by the follower itself");
    assert!(on_follower > 0, "no read was served by the follower");

    // Monotonic reads and read-your-writes through the client library's session: local
    // reads spread over the replicas never return an older version.
    let hot_writer = writer.clone();
    let updates = tokio::spawn(async move {
        for n in 0..150 {
            if hot_writer
                .put("hot", format!("n{n}"), Default::default())
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    });
    let reader = store.client()?;
    let mut last = 0;
    let mut servers = BTreeSet::new();
    for j in 0..150 {
        if let Some(r) = reader.get_local("hot").await? {
            assert!(
                r.version >= last,
                "read went back from {last} to {}",
                r.version
            );
            last = r.version;
            servers.extend(r.served_by);
        }
        if j % 5 == 0 {
            let mine = reader
                .put("mine", format!("m{j}"), Default::default())
                .await?;
            let got = reader
                .get_local("mine")
                .await?
                .ok_or_else(|| anyhow::anyhow!("own write missing"))?;
            assert_eq!(got.value, format!("m{j}").as_bytes());
            assert!(got.version >= mine.version);
        }
    }
    assert!(updates.await?, "the hot-key writer failed");
    println!("monotonic reads served by {servers:?}");
    assert!(servers.len() >= 2, "reads were not spread: {servers:?}");

    // A bounded read is never answered staler than its bound.
    for key in ["ryw-1", "ryw-2", "ryw-3"] {
        let (_, addr) = follower_of(&map, key).ok_or_else(|| anyhow::anyhow!("no follower"))?;
        let r = http
            .get(format!(
                "http://{addr}/v1/kv/{key}?consistency=local&max-staleness-ms=0"
            ))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(number(&r, "x-staleness-ms"), Some(0));
    }
    let bounded = reader
        .get_local_with(
            "ryw-4",
            LocalReadOptions {
                max_staleness: Some(Duration::from_millis(5000)),
                ..LocalReadOptions::default()
            },
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("ryw-4 missing"))?;
    assert!(
        bounded
            .staleness
            .is_some_and(|s| s <= Duration::from_millis(5000))
    );
    // A linearizable read names the primary; a malformed session version is refused.
    let key = "ryw-5";
    let (_, addr) = follower_of(&map, key).ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let primary = map
        .entry(map.partition_of(key.as_bytes()))
        .and_then(|e| e.primary.clone());
    let r = http
        .get(format!("http://{addr}/v1/kv/{key}"))
        .send()
        .await?;
    assert_eq!(header(&r, "x-served-by"), primary);
    let r = http
        .get(format!("http://{addr}/v1/kv/{key}?consistency=local"))
        .header("x-min-version", "yesterday")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);

    // The CLI prints the version of a put and takes it back as --min-version.
    let endpoints = store.client_addrs(3).join(",");
    let cli = binary_path("shardedstore")?;
    let out = std::process::Command::new(&cli)
        .args(["-e", &endpoints, "put", "cli-key", "cli-value", "-v"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let version = err
        .split_whitespace()
        .last()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no version in {err:?}"))?;
    let out = std::process::Command::new(&cli)
        .args(["-e", &endpoints, "get", "cli-key", "--local", "-v"])
        .args(["--min-version", &version.to_string()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cli-value");
    assert!(err.contains("served-by node-"), "{err}");
    assert!(err.contains(&format!("version {version}")), "{err}");

    let report = load.stop().await;
    ensure_none_lost(&writer, &report, 50).await?;
    Ok(())
}
