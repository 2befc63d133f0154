//! `make chaos`: the fault-injection run over many seeds, summed up in one table.
//!
//! - `CHAOS_SEEDS` seeds (default 100) from `CHAOS_FIRST_SEED` (default 1), or as many as fit
//!   in `CHAOS_DURATION` (`90s`, `30m`, `2h`) when that is set;
//! - `CHAOS_BUDGET`: search steps per key before a verdict is *unknown* (default 20 M);
//! - `CHAOS_OUT` (default `target/chaos`): `summary.md` (rewritten after every seed, so a
//!   stopped run still leaves its table), `runs/seed-<n>.txt` with every seed's report (its
//!   faults, what they did, the verdicts) and `histories/` with the failing seeds' histories.
//!
//! Partitions are drawn when `nft` is installed, disk faults and power losses when FUSE can
//! be mounted (both need root); with `SHARDEDSTORE_REQUIRE_TOOLS=1` a missing `nft` or FUSE
//! is an error.

use shardedstore_tests::checker::RunConfig;
use shardedstore_tests::checker::runner::run;
use shardedstore_tests::checker::summary::{Summary, parse_duration};
use std::path::PathBuf;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: make chaos"]
async fn chaos() -> anyhow::Result<()> {
    let seeds = env_u64("CHAOS_SEEDS", 100)?;
    let first = env_u64("CHAOS_FIRST_SEED", 1)?;
    let budget = match std::env::var("CHAOS_DURATION") {
        Ok(v) => Some(parse_duration(&v).map_err(anyhow::Error::msg)?),
        Err(_) => None,
    };
    let out = std::env::var("CHAOS_OUT").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/chaos"),
        PathBuf::from,
    );
    let budget_steps = match std::env::var("CHAOS_BUDGET") {
        Ok(_) => Some(env_u64("CHAOS_BUDGET", 0)?),
        Err(_) => None,
    };
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs)?;
    let network = shardedstore_tests::tools::require_tool("nft").is_some();
    let disk = shardedstore_tests::tools::require_fuse();
    let commit = commit();
    println!(
        "chaos on {commit}: {} from seed {first}; partitions {}; disk faults {}; output {}",
        budget.map_or(format!("{seeds} seeds"), |b| format!("seeds for {b:?}")),
        if network { "on" } else { "off (no nft)" },
        if disk { "on" } else { "off (no FUSE)" },
        out.display()
    );
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut seed = first;
    loop {
        let done = match budget {
            Some(b) => started.elapsed() >= b,
            None => seed >= first + seeds,
        };
        if done {
            break;
        }
        let mut cfg = RunConfig::for_seed(seed);
        cfg.network = network;
        cfg.disk = disk;
        cfg.history_dir = Some(out.join("histories"));
        if let Some(budget) = budget_steps {
            cfg.limits.budget = budget;
        }
        let t = Instant::now();
        let result = run(&cfg).await.map_err(|e| format!("{e:#}"));
        let text = match &result {
            Ok(r) => r.render(),
            Err(e) => format!("seed {seed}: DID NOT COMPLETE: {e}\n"),
        };
        std::fs::write(runs.join(format!("seed-{seed}.txt")), text)?;
        match &result {
            Ok(r) if r.failed() => println!("{}", r.render()),
            Ok(r) => println!(
                "seed {seed}: ok in {:.0} s, {} faults, worst unavailability {} ms",
                t.elapsed().as_secs_f64(),
                r.faults.len(),
                r.worst.as_ref().map_or(0, |w| w.unavailable_ms)
            ),
            Err(e) => println!("seed {seed}: DID NOT COMPLETE: {e}"),
        }
        summary.add(seed, &result);
        let table = format!(
            "Commit {commit}, seeds {first}..={seed}, {:.0} min\n\n{}",
            started.elapsed().as_secs_f64() / 60.0,
            summary.render()
        );
        std::fs::write(out.join("summary.md"), &table)?;
        seed += 1;
    }
    println!("\n{}", summary.render());
    anyhow::ensure!(
        summary.failing.is_empty() && summary.errors.is_empty(),
        "failing seeds {:?}, runs not completed {:?}; histories in {}",
        summary.failing,
        summary.errors.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        out.join("histories").display()
    );
    Ok(())
}
