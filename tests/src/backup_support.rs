//! Helpers of the backup suites: a write load that records when each write was acknowledged,
//! running the `shardedstore` CLI, waiting for a local-mode restore to finish, probing a
//! node with a plain client read (the restore gate), and copying a backup with one object
//! damaged.

use crate::local_harness::LocalStore;
use crate::node_harness::{binary_path, wait_until};
use shardedstore_node::backup::Destination;
use shardedstore_node::client::KvClient;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A write acknowledged at (or before) `acked_at`.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub value: String,
    pub acked_at: Instant,
}

/// Writers putting fresh keys `prefix-<writer>-<n>` until stopped.
pub struct TimedLoad {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Ack>>>,
    count: tokio::sync::watch::Sender<u64>,
}

impl TimedLoad {
    pub fn start(client: &KvClient, prefix: &str, writers: usize, value_bytes: usize) -> Self {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (count, _) = tokio::sync::watch::channel(0u64);
        let tasks = (0..writers)
            .map(|w| {
                let client = client.clone();
                let rx = rx.clone();
                let count = count.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    let mut n = 0u64;
                    let pad = "x".repeat(value_bytes);
                    while !*rx.borrow() {
                        let key = format!("{prefix}-{w}-{n}");
                        let value = format!("{key}-{pad}");
                        n += 1;
                        if client
                            .put(&key, value.clone().into_bytes(), Default::default())
                            .await
                            .is_ok()
                        {
                            acks.push(Ack {
                                key,
                                value,
                                acked_at: Instant::now(),
                            });
                            count.send_modify(|c| *c += 1);
                        }
                    }
                    acks
                })
            })
            .collect();
        Self { stop, tasks, count }
    }

    /// Waits until at least `n` writes in total have been acknowledged.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| anyhow::anyhow!("fewer than {n} writes acknowledged within {timeout:?}"))?
            .map(|_| ())
            .map_err(|_| anyhow::anyhow!("the writers stopped"))
    }

    pub async fn stop(self) -> Vec<Ack> {
        self.stop.send_replace(true);
        let mut all = Vec::new();
        for t in self.tasks {
            if let Ok(acks) = t.await {
                all.extend(acks);
            }
        }
        all
    }
}

/// Runs `shardedstore --endpoint <store's nodes> ARGS` with `env` and returns its output.
pub async fn cli(
    store: &LocalStore,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Output> {
    let bin = binary_path("shardedstore")?;
    let endpoints = store.client_addrs(store.options.nodes).join(",");
    let mut cmd = Command::new(bin);
    cmd.args(["--endpoint", &endpoints]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
}

/// Waits until local mode wrote its restore-finished marker.
pub async fn wait_restored(store: &LocalStore, timeout: Duration) -> anyhow::Result<()> {
    let done = store.data_dir().join("restore.done");
    wait_until(timeout, "the restore to finish", || {
        let done = done.clone();
        async move { done.exists().then_some(()) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; operator log:\n{}", store.log_tail(30)))
}

/// An HTTP client for [`plain_read`].
pub fn probe_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?)
}

/// A client read with no restore token of key `restore-gate-probe` from the node at `addr`
/// (`host:port` of its client API): the status and body, `None` when it did not answer.
pub async fn plain_read(http: &reqwest::Client, addr: &str) -> Option<(u16, String)> {
    let r = http
        .get(format!("http://{addr}/v1/kv/restore-gate-probe"))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
}

/// Whether a [`plain_read`] answer is the restore gate's refusal (503 `restoring`).
pub fn refused_by_gate(answer: &Option<(u16, String)>) -> bool {
    matches!(answer, Some((503, body)) if body.contains("restoring"))
}

/// Whether a [`plain_read`] answer served the read (the key exists or not).
pub fn served(answer: &Option<(u16, String)>) -> bool {
    matches!(answer, Some((200 | 404, _)))
}

/// Copies every object of the backup at `from` to `to`, flipping one
/// byte in the middle of `damaged` (an object name such as `partition-00000.snap`).
pub async fn copy_damaged(
    from: &Destination,
    to: &Destination,
    damaged: &str,
) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let src = from.open()?;
    let dst = to.open()?;
    let listed: Vec<_> = src.store.list(Some(&src.prefix)).try_collect().await?;
    let mut flipped = false;
    for meta in listed {
        let name = meta
            .location
            .as_ref()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut bytes = src.store.get(&meta.location).await?.bytes().await?.to_vec();
        if name == damaged && !bytes.is_empty() {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            flipped = true;
        }
        dst.store.put(&dst.path(&name), bytes.into()).await?;
    }
    anyhow::ensure!(
        flipped,
        "the backup at {} has no object {damaged}",
        from.url
    );
    Ok(())
}

/// What the restore gate did while a local-mode restore ran.
#[derive(Debug, Default)]
pub struct GateWatch {
    /// Plain client reads refused with 503 `restoring` before the restore finished.
    pub refused: u32,
    /// How long after the restore finished the first plain read was served.
    pub opened_after: Duration,
}

/// Probes node 0 with plain client reads (no restore token) until the restore of `store`
/// finished and a read is served. Fails when a read is served before `restore.done`
/// exists (the gate opens only after it is written), or when none was ever refused.
pub async fn watch_restore_gate(
    store: &LocalStore,
    timeout: Duration,
) -> anyhow::Result<GateWatch> {
    let http = probe_client()?;
    let addr = store.client_addrs(1).remove(0);
    let done = store.data_dir().join("restore.done");
    let started = Instant::now();
    let mut watch = GateWatch::default();
    let mut done_at: Option<Instant> = None;
    while started.elapsed() < timeout {
        let answer = plain_read(&http, &addr).await;
        let finished = done.exists();
        if finished && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if refused_by_gate(&answer) {
            watch.refused += 1;
        } else if served(&answer) {
            anyhow::ensure!(
                finished,
                "a plain client read was served before the restore finished"
            );
            anyhow::ensure!(
                watch.refused > 0,
                "the restore finished before any read was refused: the gate was not seen"
            );
            watch.opened_after = done_at.map(|t| t.elapsed()).unwrap_or_default();
            return Ok(watch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "no plain read was served within {timeout:?} ({} refused, restore finished: {})",
        watch.refused,
        done.exists()
    )
}
