//! One fault-injection run end to end: start a local-mode store, run the workload while the
//! nemesis plays the seed's schedule, heal everything, wait until every partition is in
//! sync, read every key, and check the history key by key.

use super::check::{CheckLimits, KeyReport, KeyVerdict, check};
use super::history::{Op, Outcome};
use super::nemesis::{NemesisConfig, inject, schedule};
use super::workload::{WorkloadConfig, build_client, client_loop, final_read, key_name};
use crate::local_harness::{LocalOptions, LocalStore, MAX_NODES};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything a run depends on besides timing.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: u32,
    pub partitions: u32,
    pub replication_factor: u32,
    pub lease_ms: u64,
    pub restart_delay_ms: u64,
    pub workload: WorkloadConfig,
    /// How long the workload runs (under faults when `faults`).
    pub duration: Duration,
    /// Play the seed's fault schedule (without it the run checks the fault-free store).
    pub faults: bool,
    pub min_gap: Duration,
    pub max_gap: Duration,
    pub limits: CheckLimits,
}

impl RunConfig {
    /// The defaults of the test suite: 3 nodes (scaling to 4), 16 partitions, RF 3,
    /// 4 clients over 5 keys for 20 s, blind and conditional writes.
    pub fn for_seed(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            partitions: 16,
            replication_factor: 3,
            lease_ms: 2000,
            restart_delay_ms: 500,
            workload: WorkloadConfig {
                clients: 4,
                keys: 5,
                request_timeout: Duration::from_millis(1500),
                conditional: true,
            },
            duration: Duration::from_secs(20),
            faults: true,
            min_gap: Duration::from_millis(500),
            max_gap: Duration::from_millis(2500),
            limits: CheckLimits::default(),
        }
    }

    fn nemesis(&self) -> NemesisConfig {
        NemesisConfig {
            keys: self.workload.keys,
            base_nodes: self.nodes,
            max_nodes: (self.nodes + 1).min(u32::from(MAX_NODES)),
            lease: Duration::from_millis(self.lease_ms),
            duration: self.duration,
            min_gap: self.min_gap,
            max_gap: self.max_gap,
        }
    }
}

/// Counts of outcomes in a history.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub ok: usize,
    pub precondition_failed: usize,
    pub failed: usize,
    pub indeterminate: usize,
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub counts: Counts,
    /// Faults injected, with the time (ms into the run) each began; failed injections are
    /// listed with their error.
    pub faults: Vec<(u64, String)>,
    pub keys: Vec<KeyReport>,
    /// Where the full history was saved (only when a key failed the check).
    pub history_file: Option<PathBuf>,
}

impl RunReport {
    /// Keys that are not proven linearizable (violations, anomalies, and unknowns).
    pub fn failures(&self) -> Vec<&KeyReport> {
        self.keys
            .iter()
            .filter(|k| !matches!(k.verdict, KeyVerdict::Linearizable))
            .collect()
    }

    /// A human-readable summary; on failure the seed, the key and its witness.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(
            s,
            "seed {}: {} ok, {} precondition failed, {} failed, {} indeterminate; {} faults",
            self.seed,
            c.ok,
            c.precondition_failed,
            c.failed,
            c.indeterminate,
            self.faults.len()
        );
        for (at, f) in &self.faults {
            let _ = writeln!(s, "  {at:>6} ms  {f}");
        }
        for k in &self.keys {
            let _ = match &k.verdict {
                KeyVerdict::Linearizable => {
                    writeln!(s, "  key {}: linearizable ({} ops)", k.key, k.relevant)
                }
                KeyVerdict::Unknown { steps, from } => writeln!(
                    s,
                    "  key {}: UNKNOWN (seed {}), search budget exhausted after {steps} steps; hard from about {} ms",
                    k.key,
                    self.seed,
                    from / 1_000_000
                ),
                KeyVerdict::Anomaly(a) => {
                    writeln!(s, "  key {}: ANOMALY (seed {}): {a}", k.key, self.seed)
                }
                KeyVerdict::Violation { witness, blocking } => {
                    let _ = writeln!(
                        s,
                        "  key {}: NOT LINEARIZABLE (seed {}); could not place {blocking}\n  minimal failing sub-history ({} ops):",
                        k.key,
                        self.seed,
                        witness.len()
                    );
                    for op in witness {
                        let _ = writeln!(s, "    {op}");
                    }
                    Ok(())
                }
            };
        }
        if let Some(p) = &self.history_file {
            let _ = writeln!(s, "  full history: {}", p.display());
        }
        s
    }
}

fn count(history: &[Op]) -> Counts {
    let mut c = Counts::default();
    for op in history {
        match op.outcome {
            Outcome::Ok(_) => c.ok += 1,
            Outcome::PreconditionFailed { .. } => c.precondition_failed += 1,
            Outcome::Failed => c.failed += 1,
            Outcome::Indeterminate => c.indeterminate += 1,
        }
    }
    c
}

/// Saves the history as JSON lines, one operation per line.
fn save(history: &[Op], seed: u64) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("shardedstore-fault-seed-{seed}.jsonl"));
    let mut text = String::new();
    for op in history {
        text.push_str(&serde_json::to_string(op)?);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs the workload under the seed's faults and checks the history.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let mut store = LocalStore::start(LocalOptions {
        nodes: cfg.nodes,
        partitions: cfg.partitions,
        replication_factor: cfg.replication_factor,
        lease_ms: cfg.lease_ms,
        restart_delay_ms: cfg.restart_delay_ms,
        ..LocalOptions::default()
    })
    .await?;
    let addrs = store.client_addrs(u32::from(MAX_NODES));
    let keys: Vec<String> = (0..cfg.workload.keys).map(key_name).collect();
    let control = store.client()?;
    let clock = Instant::now();
    let until = clock + cfg.duration + Duration::from_secs(30);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for id in 0..cfg.workload.clients {
        let client = build_client(&addrs, cfg.workload.request_timeout)?;
        clients.push(tokio::spawn(client_loop(
            id,
            cfg.workload.conditional,
            client,
            keys.clone(),
            clock,
            cfg.seed,
            until,
            stopped.clone(),
        )));
    }

    let mut faults = Vec::new();
    let steps = if cfg.faults {
        schedule(cfg.seed, &cfg.nemesis())
    } else {
        Vec::new()
    };
    for step in steps {
        tokio::time::sleep(step.after).await;
        let at = clock.elapsed().as_millis() as u64;
        let what = match inject(&mut store, &control, &keys, &step.fault).await {
            Ok(what) => what,
            Err(e) => format!("{:?} not injected: {e}", step.fault),
        };
        faults.push((at, what));
    }
    if let Some(rest) = cfg.duration.checked_sub(clock.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop.send_replace(true);
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await?);
    }

    // Heal: the operator is running after every fault; undo scaling and wait for every
    // partition to be fully in sync on the original nodes.
    let healed = async {
        if store.status().await.is_none() {
            store.start_operator()?;
        }
        store.scale(cfg.nodes).await?;
        store.options.nodes = cfg.nodes;
        store
            .wait_settled_at(Some(cfg.nodes as usize), Duration::from_secs(120))
            .await
    }
    .await;
    if let Err(e) = healed {
        let list: Vec<String> = faults
            .iter()
            .map(|(at, f)| format!("{at} ms {f}"))
            .collect();
        anyhow::bail!(
            "seed {}: the store did not heal after the faults [{}]: {e}",
            cfg.seed,
            list.join("; ")
        );
    }
    let reader = build_client(&addrs, Duration::from_secs(3))?;
    for key in &keys {
        let (ops, ok) = final_read(&reader, key, clock, Duration::from_secs(30)).await;
        history.extend(ops);
        anyhow::ensure!(
            ok,
            "seed {}: the final read of {key} never succeeded after healing\n{}",
            cfg.seed,
            store.log_tail(40)
        );
    }

    let keys_report = check(&history, cfg.limits);
    let failed = keys_report
        .iter()
        .any(|k| !matches!(k.verdict, KeyVerdict::Linearizable));
    let history_file = if failed {
        Some(save(&history, cfg.seed)?)
    } else {
        None
    };
    Ok(RunReport {
        seed: cfg.seed,
        counts: count(&history),
        faults,
        keys: keys_report,
        history_file,
    })
}
