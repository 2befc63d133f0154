//! One fault-injection run end to end: start a local-mode store, run the workload while the
//! nemesis plays the seed's schedule, heal everything, wait until every partition is in
//! sync, read every key, and check the history key by key.

use super::availability::{Window, worst_by_kind, worst_window};
use super::check::{CheckLimits, KeyReport, KeyVerdict, check};
use super::history::{Op, Outcome};
use super::nemesis::disks::Disks;
use super::nemesis::inject::{Env, Record};
use super::nemesis::{Kind, NemesisConfig, schedule};
use super::probe::{Probes, verify};
use super::workload::{WorkloadConfig, build_client, client_loop, final_read, key_name};
use crate::local_harness::{LocalOptions, LocalStore, MAX_NODES};
use crate::netfault::NetFaults;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// Give every process its own address and draw partitions (needs nftables and root).
    pub network: bool,
    /// Put every node's data directory on its own faultfs mount and draw disk faults and
    /// power losses (needs FUSE and root).
    pub disk: bool,
    /// Where failing runs save their history (default: the system temp directory).
    pub history_dir: Option<PathBuf>,
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
            network: false,
            disk: false,
            history_dir: None,
        }
    }

    /// Like [`RunConfig::for_seed`], with partitions when `nft` is installed and disk
    /// faults when FUSE can be mounted.
    pub fn for_seed_with_tools(seed: u64) -> Self {
        Self {
            network: crate::tools::find_tool("nft").is_some(),
            disk: shardedstore_faultfs::fuse_unavailable().is_none(),
            ..Self::for_seed(seed)
        }
    }

    /// The nemesis bounds of this run.
    pub fn nemesis(&self) -> NemesisConfig {
        NemesisConfig {
            keys: self.workload.keys,
            base_nodes: self.nodes,
            max_nodes: (self.nodes + 1).min(u32::from(MAX_NODES)),
            lease: Duration::from_millis(self.lease_ms),
            duration: self.duration,
            min_gap: self.min_gap,
            max_gap: self.max_gap,
            network: self.network,
            disk: self.disk,
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
    /// Injected faults by kind (an overlap counts as itself and as both of its parts).
    pub kinds: BTreeMap<Kind, usize>,
    /// Steps whose fault could not be injected (e.g. no in-sync follower at that moment).
    pub not_injected: usize,
    pub keys: Vec<KeyReport>,
    /// Acknowledged probe writes.
    pub probe_acked: usize,
    /// Acknowledged probe writes missing, wrong or unreadable after healing (described).
    pub lost: Vec<String>,
    /// The longest time a partition took no write while a majority of its replicas were
    /// healthy, and the faults around it.
    pub worst: Option<Window>,
    /// Per fault kind injected, the longest such unavailability it was active around (ms).
    pub worst_by_kind: BTreeMap<Kind, u64>,
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

    /// Whether the run found anything wrong: a key not proven linearizable or a lost write.
    pub fn failed(&self) -> bool {
        !self.failures().is_empty() || !self.lost.is_empty()
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
        let _ = writeln!(
            s,
            "  probe writes acknowledged: {}, lost: {}{}",
            self.probe_acked,
            self.lost.len(),
            if self.lost.is_empty() {
                String::new()
            } else {
                format!(
                    " (LOST, seed {}):\n    {}",
                    self.seed,
                    self.lost.join("\n    ")
                )
            }
        );
        if let Some(w) = &self.worst {
            let _ = writeln!(
                s,
                "  worst unavailability: partition {} for {} ms ({}..{} ms) around [{}]",
                w.partition,
                w.unavailable_ms,
                w.from_ms,
                w.to_ms,
                w.causes.join("; ")
            );
        }
        if !self.worst_by_kind.is_empty() {
            let by_kind: Vec<String> = self
                .worst_by_kind
                .iter()
                .map(|(k, ms)| format!("{} {ms} ms", k.name()))
                .collect();
            let _ = writeln!(s, "  worst unavailability by kind: {}", by_kind.join(", "));
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
fn save(history: &[Op], seed: u64, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("shardedstore-fault-seed-{seed}.jsonl"));
    let mut text = String::new();
    for op in history {
        text.push_str(&serde_json::to_string(op)?);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Copies the store's logs (operator and nodes) and its map next to a failing run's
/// history, into `shardedstore-fault-seed-<seed>-logs/`.
fn save_logs(data_dir: &Path, seed: u64, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let to = dir.join(format!("shardedstore-fault-seed-{seed}-logs"));
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(data_dir)? {
        let path = entry?.path();
        let keep = path.extension().is_some_and(|e| e == "log" || e == "json");
        if keep
            && path.is_file()
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(to)
}

/// The store and the disks its nodes write to, dropped in this order: the processes die
/// before their file systems are unmounted.
struct Rig {
    store: LocalStore,
    disks: Option<Disks>,
}

/// Runs the workload under the seed's faults and checks the history.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    // The partition harness first: it sweeps rules left by dead runs before the store starts.
    let net = if cfg.network {
        Some(NetFaults::new()?)
    } else {
        None
    };
    let options = LocalOptions {
        nodes: cfg.nodes,
        partitions: cfg.partitions,
        replication_factor: cfg.replication_factor,
        lease_ms: cfg.lease_ms,
        restart_delay_ms: cfg.restart_delay_ms,
        ..LocalOptions::default()
    };
    let options = if cfg.network {
        options.with_own_addresses()
    } else {
        options
    };
    // The nodes' disks are mounted inside the store's data directory before it starts;
    // `Rig` drops (kills) the store before it unmounts the disks.
    let mut rig = Rig {
        store: LocalStore::create(options)?,
        disks: None,
    };
    if cfg.disk {
        let disks = Disks::mount(rig.store.data_dir(), cfg.nemesis().max_nodes)?;
        rig.disks = Some(disks);
    }
    rig.store.launch().await?;
    let Rig { store, disks } = &mut rig;
    let disks = disks.as_ref();
    let addrs = store.client_addrs(u32::from(MAX_NODES));
    let keys: Vec<String> = (0..cfg.workload.keys).map(key_name).collect();
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
    let probes = Probes::start(
        &addrs,
        cfg.partitions,
        cfg.seed,
        store.data_dir().join("map.json"),
        clock,
    )?;

    let mut faults = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut not_injected = 0;
    let steps = if cfg.faults {
        schedule(cfg.seed, &cfg.nemesis())
    } else {
        Vec::new()
    };
    for step in steps {
        tokio::time::sleep(step.after).await;
        let at = clock.elapsed().as_millis() as u64;
        let mut env = Env {
            store: &mut *store,
            keys: &keys,
            net: net.as_ref(),
            disks,
            clock,
        };
        match env.step(&step.fault).await {
            Ok(r) => {
                faults.push((at, r.what.clone()));
                records.push(r);
            }
            Err(e) => {
                not_injected += 1;
                faults.push((at, format!("{:?} not injected: {e}", step.fault)));
            }
        }
    }
    if let Some(rest) = cfg.duration.checked_sub(clock.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop.send_replace(true);
    let span_end = clock.elapsed().as_millis() as u64;
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await?);
    }
    let probe = probes.stop().await;

    // Heal: links back, the operator running, scaling undone; wait for every partition to
    // be fully in sync on the original nodes.
    let healed = async {
        if let Some(disks) = disks {
            disks.heal_all();
        }
        if let Some(net) = &net {
            net.heal_all()?;
        }
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
    let lost = verify(&store.client()?, &probe.acked).await;

    let keys_report = check(&history, cfg.limits);
    let failed = !lost.is_empty()
        || keys_report
            .iter()
            .any(|k| !matches!(k.verdict, KeyVerdict::Linearizable));
    // CHAOS_KEEP_LOGS=1 keeps the nodes' and the operator's logs of passing seeds too
    // (to study a long unavailability window, which does not fail a seed).
    let keep = failed || std::env::var_os("CHAOS_KEEP_LOGS").is_some_and(|v| v == "1");
    let history_file = if keep {
        let logs = save_logs(store.data_dir(), cfg.seed, cfg.history_dir.as_deref())?;
        eprintln!("seed {}: logs saved to {}", cfg.seed, logs.display());
        Some(save(&history, cfg.seed, cfg.history_dir.as_deref())?)
    } else {
        None
    };
    let mut kinds = BTreeMap::new();
    for k in records.iter().flat_map(|r| &r.kinds) {
        *kinds.entry(*k).or_insert(0) += 1;
    }
    let span = (0, span_end);
    let worst = worst_window(cfg.partitions, &probe.ops, &probe.samples, &records, span);
    let worst_by_kind = worst_by_kind(cfg.partitions, &probe.ops, &probe.samples, &records, span);
    Ok(RunReport {
        seed: cfg.seed,
        counts: count(&history),
        faults,
        kinds,
        not_injected,
        keys: keys_report,
        probe_acked: probe.acked.len(),
        lost,
        worst,
        worst_by_kind,
        history_file,
    })
}
