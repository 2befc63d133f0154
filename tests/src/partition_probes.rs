//! Per-partition write probes: after a fault, one writer per partition retries a write of a
//! key of that partition until it is acknowledged, so a test can check that *every*
//! partition takes writes again within a bound (a store-wide write load can make progress
//! while some partitions stay stalled).

use shardedstore_node::client::KvClient;
use shardedstore_node::map::{PartitionMap, partition_of};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Pause between attempts of one probe.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A probe's acknowledged write: (key, value, when it was acknowledged).
type Acked = (String, String, Instant);

/// Probe writers started at one instant.
pub struct PartitionProbes {
    started: Instant,
    /// Per partition: the probe task, retrying until acknowledged.
    tasks: Vec<(u32, JoinHandle<Acked>)>,
}

/// The first key `<prefix>-<p>-<i>` that falls into partition `p`.
fn key_of(prefix: &str, p: u32, partitions: u32) -> String {
    (0u64..)
        .map(|i| format!("{prefix}-probe-{p}-{i}"))
        .find(|k| partition_of(k.as_bytes(), partitions) == p)
        .unwrap_or_default()
}

impl PartitionProbes {
    /// Starts one probe per partition of `map` now.
    pub fn start(client: &KvClient, map: &PartitionMap, prefix: &str) -> Self {
        Self::start_since(client, map, prefix, Instant::now())
    }

    /// Starts one probe per partition of `map` now; their times count from `since` (the
    /// moment the fault began, when injecting it took a while).
    pub fn start_since(
        client: &KvClient,
        map: &PartitionMap,
        prefix: &str,
        since: Instant,
    ) -> Self {
        let partitions = map.partitions.len() as u32;
        let started = since;
        let tasks = (0..partitions)
            .map(|p| {
                let key = key_of(prefix, p, partitions);
                let value = format!("probe-{p}");
                let client = client.clone();
                let task = tokio::spawn(async move {
                    loop {
                        let put = client.put(&key, value.clone().into_bytes(), Default::default());
                        if put.await.is_ok() {
                            return (key, value, Instant::now());
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                });
                (p, task)
            })
            .collect();
        Self { started, tasks }
    }

    /// Waits until every partition acknowledged its probe, and fails unless each did so
    /// within `bound` of the start. Returns the acknowledged (key, value) pairs (for a
    /// nothing-lost check) and prints the slowest partition's time.
    pub async fn within(self, bound: Duration) -> anyhow::Result<Vec<(String, String)>> {
        let deadline = tokio::time::Instant::from_std(self.started + bound);
        let mut acked = Vec::new();
        let mut slowest = Duration::ZERO;
        let mut late = Vec::new();
        // Probes still retrying when this returns (late, or after an error) are stopped.
        let _stop = StopOnDrop(self.tasks.iter().map(|(_, t)| t.abort_handle()).collect());
        for (p, task) in self.tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok((key, value, at))) => {
                    let took = at.duration_since(self.started);
                    slowest = slowest.max(took);
                    if took > bound {
                        late.push(p);
                    }
                    acked.push((key, value));
                }
                Ok(Err(e)) => anyhow::bail!("probe of partition {p} failed: {e}"),
                Err(_) => late.push(p),
            }
        }
        println!("slowest partition took writes again after {slowest:?} (bound {bound:?})");
        anyhow::ensure!(
            late.is_empty(),
            "partitions {late:?} took no write within {bound:?} of the fault"
        );
        Ok(acked)
    }
}

impl PartitionProbes {
    /// Waits until every partition acknowledged its probe (failing after `limit`), and
    /// returns the acknowledged (key, value) pairs with each partition's time since the
    /// start — for a test that reports the times before judging them.
    pub async fn times(
        self,
        limit: Duration,
    ) -> anyhow::Result<(Vec<(String, String)>, Vec<(u32, Duration)>)> {
        let deadline = tokio::time::Instant::from_std(self.started + limit);
        let _stop = StopOnDrop(self.tasks.iter().map(|(_, t)| t.abort_handle()).collect());
        let mut acked = Vec::new();
        let mut times = Vec::new();
        for (p, task) in self.tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok((key, value, at))) => {
                    times.push((p, at.duration_since(self.started)));
                    acked.push((key, value));
                }
                Ok(Err(e)) => anyhow::bail!("probe of partition {p} failed: {e}"),
                Err(_) => anyhow::bail!("partition {p} took no write within {limit:?}"),
            }
        }
        Ok((acked, times))
    }
}

/// Aborts the probe tasks when dropped.
struct StopOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
