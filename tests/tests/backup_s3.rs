//! Backup to a real S3-compatible server (moto's server mode, started by the test) with the
//! real CLI, under write load, then restore into new local-mode stores with the same and a
//! different partition count: every write acknowledged before the backup began must be there.
//! Also: a replica killed while it exports a partition is replaced by another replica, and
//! the store restored from that backup refuses plain clients until the restore is complete.

use shardedstore_node::backup::Destination;
use shardedstore_node::backup::manifest::Manifest;
use shardedstore_node::backup::restore::read_manifest;
use shardedstore_tests::backup_support::{Ack, TimedLoad, cli, wait_restored, watch_restore_gate};
use shardedstore_tests::local_harness::{LocalOptions, LocalStore, lost_writes};
use shardedstore_tests::s3_server::S3Server;
use std::time::{Duration, Instant};

async fn fetch_manifest(s3: &S3Server, bucket: &str, prefix: &str) -> anyhow::Result<Manifest> {
    let dest = Destination::new(format!("s3://{bucket}/{prefix}"), s3.options());
    Ok(read_manifest(&dest.open()?).await?)
}

fn check(acked_before: &[(String, String)], lost: &[String], what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        lost.is_empty(),
        "{what}: {} of {} writes acknowledged before the backup began are missing, e.g. {:?}",
        lost.len(),
        acked_before.len(),
        &lost[..lost.len().min(5)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_with_same_and_different_partition_counts() -> anyhow::Result<()>
{
    let Some(s3) = S3Server::start().await? else {
        return Ok(());
    };
    s3.create_bucket("backups").await?;
    let store = LocalStore::start(LocalOptions {
        partitions: 8,
        ..LocalOptions::default()
    })
    .await?;
    let client = store.client()?;
    let load = TimedLoad::start(&client, "bk", 6, 200);
    load.wait_for(1500, Duration::from_secs(60)).await?;

    let began = Instant::now();
    let out = cli(
        &store,
        &[
            "backup",
            "--to",
            "s3://backups/run1",
            "--peer-token",
            "local-peer-token",
        ],
        &s3.env(),
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && stdout.contains("backup complete"),
        "backup failed: {stdout}\n{stderr}"
    );
    println!("{stdout}");
    // Writes go on during the backup (never blocked) and after it.
    let during = load.wait_for(1, Duration::from_secs(10)).await;
    let acks: Vec<Ack> = load.stop().await;
    during?;
    let before: Vec<(String, String)> = acks
        .iter()
        .filter(|a| a.acked_at < began)
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    let after = acks.len() - before.len();
    println!(
        "{} writes acknowledged before the backup began, {after} during or after it",
        before.len()
    );
    anyhow::ensure!(before.len() >= 1500, "too little load before the backup");
    anyhow::ensure!(after > 0, "no write was acknowledged while the backup ran");

    let manifest = fetch_manifest(&s3, "backups", "run1").await?;
    manifest.validate()?;
    anyhow::ensure!(manifest.partitions == 8 && manifest.objects.len() == 8);
    anyhow::ensure!(manifest.total_keys as usize >= before.len());
    drop(client);
    drop(store); // the store is deleted: processes killed, data directory removed

    for partitions in [8, 5] {
        let restored = LocalStore::start(LocalOptions {
            partitions,
            extra_args: vec!["--restore-from".into(), "s3://backups/run1".into()],
            extra_env: s3
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..LocalOptions::default()
        })
        .await?;
        wait_restored(&restored, Duration::from_secs(180)).await?;
        let client = restored.client()?;
        let map = client.map().await?;
        anyhow::ensure!(map.partitions.len() == partitions as usize);
        let lost = lost_writes(&client, &before).await;
        check(
            &before,
            &lost,
            &format!("restore into {partitions} partitions"),
        )?;
        println!(
            "restore into {partitions} partitions: all {} writes present",
            before.len()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_during_its_export_is_replaced_by_another() -> anyhow::Result<()> {
    let Some(s3) = S3Server::start().await? else {
        return Ok(());
    };
    s3.create_bucket("backups").await?;
    // Throttled exports (the store's rebalance bandwidth) take seconds per partition.
    let store = LocalStore::start(LocalOptions {
        partitions: 4,
        restart_delay_ms: 5000,
        extra_args: vec!["--bandwidth-bytes-per-second".into(), "400000".into()],
        ..LocalOptions::default()
    })
    .await?;
    let client = store.client()?;
    let load = TimedLoad::start(&client, "kill", 8, 1000);
    load.wait_for(4000, Duration::from_secs(120)).await?;
    let acks = load.stop().await;
    let written: Vec<(String, String)> = acks.into_iter().map(|a| (a.key, a.value)).collect();

    let endpoints = store.client_addrs(3).join(",");
    let mut backup = std::process::Command::new(shardedstore_tests::node_harness::binary_path(
        "shardedstore",
    )?);
    backup
        .args([
            "--endpoint",
            &endpoints,
            "backup",
            "--to",
            "s3://backups/kill",
        ])
        .args(["--peer-token", "local-peer-token", "--parallelism", "2"])
        .envs(s3.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = backup.spawn()?;
    // Kill the first node seen exporting a partition, while it streams.
    let victim = shardedstore_tests::node_harness::wait_until(
        Duration::from_secs(60),
        "a node to start exporting",
        || {
            let dir = store.data_dir().to_owned();
            async move {
                (0..3).find_map(|i| {
                    let log = std::fs::read_to_string(dir.join(format!("node-{i}.log"))).ok()?;
                    log.contains("exporting a partition snapshot")
                        .then(|| format!("node-{i}"))
                })
            }
        },
    )
    .await?;
    store.kill9_node(&victim).await?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("killed {victim}\n{stdout}\n{stderr}");
    anyhow::ensure!(
        out.status.success(),
        "the backup did not survive the replica's death: {stderr}"
    );
    anyhow::ensure!(
        stderr.contains("retrying"),
        "no export was retried on another replica: {stderr}"
    );
    let manifest = fetch_manifest(&s3, "backups", "kill").await?;
    manifest.validate()?;
    drop(client);
    drop(store);

    let restored = LocalStore::start(LocalOptions {
        partitions: 4,
        extra_args: vec!["--restore-from".into(), "s3://backups/kill".into()],
        extra_env: s3
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..LocalOptions::default()
    })
    .await?;
    // The new store refuses plain clients until every key is in (503 `restoring`).
    let gate = watch_restore_gate(&restored, Duration::from_secs(180)).await?;
    println!(
        "restore gate: {} plain reads refused while restoring, served {:?} after it finished",
        gate.refused, gate.opened_after
    );
    wait_restored(&restored, Duration::from_secs(180)).await?;
    let lost = lost_writes(&restored.client()?, &written).await;
    check(&written, &lost, "restore after a replica died mid-backup")
}
