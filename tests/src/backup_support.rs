//! Helpers of the backup suites: a write load that records when each write was acknowledged,
//! running the `shardedstore` CLI, and waiting for a local-mode restore to finish.

use crate::local_harness::LocalStore;
use crate::node_harness::{binary_path, wait_until};
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
