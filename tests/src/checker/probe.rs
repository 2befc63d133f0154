//! Availability and durability probes of a run: one writer per partition puts a fresh key
//! of that partition every few hundred milliseconds (no retries; each attempt is one
//! probe), and a sampler records the map's replica sets. Afterwards every acknowledged
//! probe write is read back: one that is missing or wrong is a lost acknowledged write.

use super::availability::{ProbeOp, ReplicaSample};
use super::workload::build_client;
use shardedstore_node::client::KvClient;
use shardedstore_node::map::{PartitionMap, partition_of};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Pause between two probe writes of one partition.
const PERIOD: Duration = Duration::from_millis(200);
/// Each probe write gives up after this long (and counts as not acknowledged).
const TIMEOUT: Duration = Duration::from_millis(1000);

/// What the probe writers of one partition produced.
type WriterOut = (Vec<ProbeOp>, Vec<Acked>);

/// An acknowledged probe write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub key: String,
    pub value: String,
    pub partition: u32,
    /// When the acknowledgement arrived (ms since the run start).
    pub at_ms: u64,
}

/// The running probes of a run.
pub struct Probes {
    stop: watch::Sender<bool>,
    writers: Vec<JoinHandle<WriterOut>>,
    sampler: JoinHandle<Vec<ReplicaSample>>,
}

/// What the probes saw.
#[derive(Debug, Default)]
pub struct ProbeReport {
    pub ops: Vec<ProbeOp>,
    pub samples: Vec<ReplicaSample>,
    /// Acknowledged probe writes.
    pub acked: Vec<Acked>,
}

/// The `n`-th key (from `from`) that falls into `partition`.
fn next_key(seed: u64, partition: u32, partitions: u32, from: &mut u64) -> String {
    loop {
        *from += 1;
        let key = format!("probe-{seed}-{partition}-{from}");
        if partition_of(key.as_bytes(), partitions) == partition {
            return key;
        }
    }
}

fn ms_since(clock: Instant) -> u64 {
    clock.elapsed().as_millis() as u64
}

async fn writer(
    client: KvClient,
    seed: u64,
    partition: u32,
    partitions: u32,
    clock: Instant,
    mut stop: watch::Receiver<bool>,
) -> WriterOut {
    let mut ops = Vec::new();
    let mut acked = Vec::new();
    let mut n = 0;
    while !*stop.borrow() {
        let key = next_key(seed, partition, partitions, &mut n);
        let value = crate::test_value(&format!("p{n}"), n);
        let invoke_ms = ms_since(clock);
        let put = client.put(&key, value.clone().into_bytes(), Default::default());
        let ok = matches!(tokio::time::timeout(TIMEOUT, put).await, Ok(Ok(_)));
        let complete_ms = ms_since(clock);
        ops.push(ProbeOp {
            partition,
            invoke_ms,
            complete_ms,
            ok,
        });
        if ok {
            acked.push(Acked {
                key,
                value,
                partition,
                at_ms: complete_ms,
            });
        }
        let _ = tokio::time::timeout(PERIOD, stop.changed()).await;
    }
    (ops, acked)
}

async fn sampler(
    map_file: PathBuf,
    clock: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<ReplicaSample> {
    let mut samples: Vec<ReplicaSample> = Vec::new();
    while !*stop.borrow() {
        let map: Option<PartitionMap> = std::fs::read(&map_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(map) = map {
            let replicas: Vec<Vec<String>> =
                map.partitions.iter().map(|e| e.replicas.clone()).collect();
            if samples.last().is_none_or(|s| s.replicas != replicas) {
                samples.push(ReplicaSample {
                    at_ms: ms_since(clock),
                    replicas,
                });
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), stop.changed()).await;
    }
    samples
}

impl Probes {
    /// Starts one writer per partition against `addrs` and the map sampler on `map_file`.
    pub fn start(
        addrs: &[String],
        partitions: u32,
        seed: u64,
        map_file: PathBuf,
        clock: Instant,
    ) -> anyhow::Result<Self> {
        let (stop, rx) = watch::channel(false);
        let mut writers = Vec::new();
        for p in 0..partitions {
            let client = build_client(addrs, TIMEOUT)?;
            writers.push(tokio::spawn(writer(
                client,
                seed,
                p,
                partitions,
                clock,
                rx.clone(),
            )));
        }
        let sampler = tokio::spawn(sampler(map_file, clock, rx));
        Ok(Self {
            stop,
            writers,
            sampler,
        })
    }

    /// Stops the probes and collects what they saw.
    pub async fn stop(self) -> ProbeReport {
        self.stop.send_replace(true);
        let mut report = ProbeReport::default();
        for w in self.writers {
            if let Ok((ops, acked)) = w.await {
                report.ops.extend(ops);
                report.acked.extend(acked);
            }
        }
        report.samples = self.sampler.await.unwrap_or_default();
        report
    }
}

/// Reads back every acknowledged probe write after healing (a read that fails is retried for
/// up to 5 s) and describes each one that is not there: its key, partition and time of
/// acknowledgement, and whether it is absent, holds another value, or cannot be read.
pub async fn verify(client: &KvClient, acked: &[Acked]) -> Vec<String> {
    let mut lost = Vec::new();
    for a in acked {
        let mut last_error = String::new();
        let mut found = None;
        for _ in 0..20 {
            match client.get(&a.key).await {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(e) => {
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        let what = match found {
            Some(Some(v)) if v.value.as_ref() == a.value.as_bytes() => continue,
            Some(Some(v)) => format!(
                "holds {:?} @{}, acknowledged {:?}",
                String::from_utf8_lossy(&v.value),
                v.version,
                a.value
            ),
            Some(None) => "absent".to_owned(),
            None => format!("unreadable ({last_error})"),
        };
        lost.push(format!(
            "{} (partition {}, acknowledged at {} ms): {what}",
            a.key, a.partition, a.at_ms
        ));
    }
    lost
}
