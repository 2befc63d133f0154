//! `shardedstore bench-failover`: how long a partition is without a primary that acknowledges
//! writes after its primary's process is killed with SIGKILL, in local mode under write load.
//!
//! Each run: wait until the store is settled (every node running, every partition fully in
//! sync), write continuously to every partition (one writer per partition), kill -9 the node
//! leading the most partitions (its pid from the local control endpoint), and measure, for
//! each partition it led, the time from the kill to the acknowledgement of the first write
//! sent after the kill. A write already in flight at the kill is not counted, so the figure
//! never credits an acknowledgement the dead primary may have sent before it died; it is
//! conservative by at most one write's latency. The supervisor restarts the killed node
//! (after its restart delay) and the next run waits until it is back in sync.

use crate::client::kv::{Condition, KvClient};
use crate::map::{PartitionId, PartitionMap};
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Why the failover benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("asking the local control endpoint {addr}")]
    Control {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the store did not settle (all nodes running, all partitions in sync) within {0:?}")]
    NotSettled(Duration),
    #[error("fetching the partition map")]
    Map(#[source] crate::client::kv::KvError),
    #[error("no node leads a partition")]
    NoPrimary,
    #[error("the control endpoint shows no pid for {0} (was it started by this operator?)")]
    NoPid(String),
    #[error("killing {node} (pid {pid})")]
    Kill {
        node: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the writers did not get an acknowledgement on every partition within {0:?}")]
    NoLoad(Duration),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct FailoverConfig {
    /// The local control endpoint (`host:port`).
    pub control: String,
    pub runs: u32,
    pub value_size: usize,
    /// How long a run waits for every affected partition to acknowledge a write.
    pub run_timeout: Duration,
    /// How long to wait for the store to settle before a run.
    pub settle_timeout: Duration,
}

/// One kill.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRun {
    pub victim: String,
    /// Partitions the victim led.
    pub partitions: usize,
    /// Kill → first acknowledged write, per partition that got one within the timeout (ms).
    pub recovered_ms: Vec<f64>,
    /// Partitions without an acknowledged write within the timeout.
    pub timed_out: usize,
}

/// Every run and the distribution over all affected partitions of all runs.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    pub runs: Vec<FailoverRun>,
    pub samples: usize,
    pub timed_out: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The `q` quantile (nearest rank) of `sorted` ascending samples; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Summarizes the runs.
pub fn summarize(runs: Vec<FailoverRun>) -> FailoverReport {
    let mut all: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.recovered_ms.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    FailoverReport {
        samples: all.len(),
        timed_out: runs.iter().map(|r| r.timed_out).sum(),
        p50_ms: quantile(&all, 0.5),
        p99_ms: quantile(&all, 0.99),
        max_ms: all.last().copied().unwrap_or(0.0),
        runs,
    }
}

/// The node leading the most partitions, and those partitions.
pub fn pick_victim(map: &PartitionMap) -> Option<(String, Vec<PartitionId>)> {
    let mut led: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
    for (p, e) in map.partitions.iter().enumerate() {
        if let Some(primary) = &e.primary {
            led.entry(primary).or_default().push(p as PartitionId);
        }
    }
    led.into_iter()
        .max_by_key(|(_, ps)| ps.len())
        .map(|(n, ps)| (n.to_owned(), ps))
}

/// A key of every partition: `failover-<p>-<i>` for the first `i` that lands in `p`.
pub fn keys_per_partition(map: &PartitionMap) -> Vec<String> {
    (0..map.partition_count())
        .map(|p| {
            (0u64..)
                .map(|i| format!("failover-{p}-{i}"))
                .find(|k| map.partition_of(k.as_bytes()) == p)
                .unwrap_or_default()
        })
        .collect()
}

/// What a writer learned: acks seen, and (after the kill) the first ack of a write sent
/// after it.
#[derive(Default)]
struct Slot {
    acks: u64,
    recovered: Option<Duration>,
}

struct Control {
    http: reqwest::Client,
    addr: String,
}

impl Control {
    async fn status(&self) -> Result<serde_json::Value, FailoverError> {
        let err = |source| FailoverError::Control {
            addr: self.addr.clone(),
            source,
        };
        self.http
            .get(format!("http://{}/status", self.addr))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(err)?
            .json()
            .await
            .map_err(err)
    }

    /// Waits until every node runs and every partition is fully in sync.
    async fn settled(&self, timeout: Duration) -> Result<serde_json::Value, FailoverError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status().await {
                let running = s["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().all(|n| n["running"] == true));
                if running && s["allInSync"] == true {
                    return Ok(s);
                }
            }
            if Instant::now() >= deadline {
                return Err(FailoverError::NotSettled(timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn pid_of(status: &serde_json::Value, node: &str) -> Option<u32> {
    status["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == node)?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

/// Runs the benchmark; prints nothing (the caller renders the report).
pub async fn run(kv: &KvClient, cfg: &FailoverConfig) -> Result<FailoverReport, FailoverError> {
    let control = Control {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| FailoverError::Control {
                addr: cfg.control.clone(),
                source,
            })?,
        addr: cfg.control.clone(),
    };
    let mut runs = Vec::new();
    for i in 0..cfg.runs {
        let r = one_run(kv, &control, cfg).await?;
        tracing::info!(run = i + 1, victim = %r.victim, partitions = r.partitions, "failover run done");
        runs.push(r);
    }
    Ok(summarize(runs))
}

async fn one_run(
    kv: &KvClient,
    control: &Control,
    cfg: &FailoverConfig,
) -> Result<FailoverRun, FailoverError> {
    control.settled(cfg.settle_timeout).await?;
    let map = kv.map().await.map_err(FailoverError::Map)?;
    let (victim, affected) = pick_victim(&map).ok_or(FailoverError::NoPrimary)?;
    let keys = keys_per_partition(&map);
    let slots: Arc<Vec<Mutex<Slot>>> = Arc::new(
        (0..keys.len())
            .map(|_| Mutex::new(Slot::default()))
            .collect(),
    );
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = CancellationToken::new();
    let value = Bytes::from(vec![b'f'; cfg.value_size]);
    let mut writers = Vec::new();
    for (p, key) in keys.into_iter().enumerate() {
        let (kv, slots, killed_at, stop, value) = (
            kv.clone(),
            slots.clone(),
            killed_at.clone(),
            stop.clone(),
            value.clone(),
        );
        writers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let sent = Instant::now();
                let ok = tokio::select! {
                    r = kv.put(&key, value.clone(), Condition::Always) => r.is_ok(),
                    _ = stop.cancelled() => return,
                };
                let kill = *killed_at.lock().unwrap_or_else(|e| e.into_inner());
                let mut slot = slots[p].lock().unwrap_or_else(|e| e.into_inner());
                if ok {
                    slot.acks += 1;
                    if let Some(k) = kill
                        && sent >= k
                        && slot.recovered.is_none()
                    {
                        slot.recovered = Some(k.elapsed());
                    }
                }
            }
        }));
    }
    let _stop_writers = StopOnDrop(stop.clone());
    // The load runs on every partition before the kill.
    let load_deadline = Instant::now() + cfg.run_timeout;
    while slots
        .iter()
        .any(|s| s.lock().unwrap_or_else(|e| e.into_inner()).acks == 0)
    {
        if Instant::now() >= load_deadline {
            return Err(FailoverError::NoLoad(cfg.run_timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = control.status().await?;
    let pid = pid_of(&status, &victim).ok_or_else(|| FailoverError::NoPid(victim.clone()))?;
    let out = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .and_then(|s| {
            s.success()
                .then_some(())
                .ok_or_else(|| std::io::Error::other(format!("kill exited with {s}")))
        });
    *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    out.map_err(|source| FailoverError::Kill {
        node: victim.clone(),
        pid,
        source,
    })?;

    let deadline = Instant::now() + cfg.run_timeout;
    let recovered = |slots: &[Mutex<Slot>]| -> Vec<Option<Duration>> {
        affected
            .iter()
            .map(|&p| {
                slots
                    .get(p as usize)
                    .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).recovered)
            })
            .collect()
    };
    let got = loop {
        let got = recovered(&slots);
        if got.iter().all(Option::is_some) || Instant::now() >= deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.cancel();
    for w in writers {
        let _ = w.await;
    }
    Ok(FailoverRun {
        victim,
        partitions: affected.len(),
        recovered_ms: got
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect(),
        timed_out: got.iter().filter(|g| g.is_none()).count(),
    })
}

/// Stops the writers however the run ends.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The report as text.
pub fn render(report: &FailoverReport) -> String {
    let mut out = String::from("run  victim      partitions  p50 ms    max ms  timed out\n");
    for (i, r) in report.runs.iter().enumerate() {
        let mut s = r.recovered_ms.clone();
        s.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "{:>3}  {:<10} {:>11} {:>7.0} {:>9.0} {:>10}\n",
            i + 1,
            r.victim,
            r.partitions,
            quantile(&s, 0.5),
            s.last().copied().unwrap_or(0.0),
            r.timed_out
        ));
    }
    out.push_str(&format!(
        "failover (kill -9 → first acknowledged write sent after it), {} partitions over {} runs: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {} timed out\n",
        report.samples,
        report.runs.len(),
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        report.timed_out
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::PartitionEntry;

    fn map(primaries: &[&str]) -> PartitionMap {
        let mut m = PartitionMap::empty("s", primaries.len() as u32, 1, 1);
        for (e, p) in m.partitions.iter_mut().zip(primaries) {
            *e = PartitionEntry {
                epoch: 1,
                primary: Some((*p).to_owned()),
                replicas: vec![(*p).to_owned()],
                in_sync: vec![(*p).to_owned()],
                learners: Vec::new(),
            };
        }
        m
    }

    #[test]
    fn the_victim_leads_the_most_partitions() {
        let m = map(&["a", "b", "b", "c"]);
        assert_eq!(pick_victim(&m), Some(("b".to_owned(), vec![1, 2])));
    }

    #[test]
    fn every_partition_gets_a_key_of_its_own() {
        let m = map(&["a"; 8]);
        let keys = keys_per_partition(&m);
        assert_eq!(keys.len(), 8);
        for (p, k) in keys.iter().enumerate() {
            assert_eq!(m.partition_of(k.as_bytes()), p as u32);
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn the_summary_pools_every_partition_of_every_run() {
        let run = |ms: &[f64], timed_out| FailoverRun {
            victim: "n".into(),
            partitions: ms.len() + timed_out,
            recovered_ms: ms.to_vec(),
            timed_out,
        };
        let r = summarize(vec![run(&[300.0, 100.0], 0), run(&[200.0], 1)]);
        assert_eq!(r.samples, 3);
        assert_eq!(r.timed_out, 1);
        assert_eq!(r.p50_ms, 200.0);
        assert_eq!(r.max_ms, 300.0);
    }
}
