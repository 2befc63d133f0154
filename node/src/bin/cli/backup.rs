//! `shardedstore backup` and `shardedstore restore`: back up the store the endpoints reach to
//! object storage, and verify or restore a backup into it.

use clap::Args;
use shardedstore_node::backup::restore::{self, RestoreError, RestoreEvent};
use shardedstore_node::backup::{
    BackupError, BackupEvent, BackupSettings, Destination, S3Args, peers::BackupPeers,
    peers::PeerCallError, run_backup,
};
use shardedstore_node::client::KvClient;
use shardedstore_node::tls::ClientTls;
use std::time::{Duration, Instant};

/// Arguments of `shardedstore backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the backup: s3://bucket/prefix or file:///path (must not hold a backup yet).
    #[arg(long, env = "SHARDEDSTORE_BACKUP_TO")]
    pub to: String,
    /// Shared secret of the nodes' peer/admin API (the `<store>-peer-token` Secret on Kubernetes).
    #[arg(long, env = "SHARDEDSTORE_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: String,
    /// Partitions exported at once.
    #[arg(long, env = "SHARDEDSTORE_BACKUP_PARALLELISM", default_value_t = 4)]
    pub parallelism: usize,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Arguments of `shardedstore restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup to restore: s3://bucket/prefix or file:///path.
    #[arg(long, env = "SHARDEDSTORE_RESTORE_FROM")]
    pub from: String,
    /// Only check the manifest and every object's size and checksum; write nothing.
    #[arg(long)]
    pub verify_only: bool,
    /// Concurrent writes into the store.
    #[arg(long, env = "SHARDEDSTORE_RESTORE_PARALLELISM", default_value_t = 64)]
    pub parallelism: usize,
    #[command(flatten)]
    pub s3: S3Args,
}

/// How the CLI reaches the nodes' peer ports: over TLS, with the CLI's TLS options, when it
/// speaks HTTPS to the store (an `https://` endpoint, `--ca` or `--cert`).
#[derive(Clone, Debug, Default)]
pub struct PeerTls {
    pub https: bool,
    pub tls: ClientTls,
}

/// Why a backup or restore command failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupCliError {
    #[error(
        "the store serves TLS (an https:// endpoint), so the backup calls the nodes' peer ports \
         over TLS and needs the store's CA: give --ca FILE (SHARDEDSTORE_CA; on Kubernetes the \
         ca.crt of the store's TLS Secret, with --tls-server-name <store>.<namespace>.svc)"
    )]
    NoCa,
    #[error("building the peer client")]
    Peers(#[source] PeerCallError),
    #[error("backup failed")]
    Backup(#[source] BackupError),
    #[error("restore refused or failed")]
    Restore(#[source] RestoreError),
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-3)
}

pub async fn backup(
    kv: &KvClient,
    args: &BackupArgs,
    peer_tls: &PeerTls,
) -> Result<(), BackupCliError> {
    // The nodes' backup endpoints: plain HTTP, or TLS with the store's CA.
    let tls = if peer_tls.https {
        // Peer ports have a store's own certificate; the system's roots never sign it.
        if peer_tls.tls.ca.is_none() && peer_tls.tls.ca_pem.is_none() {
            return Err(BackupCliError::NoCa);
        }
        Some(&peer_tls.tls)
    } else {
        None
    };
    let export_timeout = Duration::from_secs(6 * 3600);
    let peers = BackupPeers::with_tls(args.peer_token.clone(), export_timeout, tls)
        .map_err(BackupCliError::Peers)?;
    let mut settings = BackupSettings::new(Destination::new(args.to.clone(), args.s3.options()));
    settings.parallelism = args.parallelism;
    let started = Instant::now();
    let on_event = |e: BackupEvent| match e {
        BackupEvent::Started {
            partitions,
            map_version,
        } => eprintln!("backing up {partitions} partitions (map version {map_version})"),
        BackupEvent::PartitionDone(o) => eprintln!(
            "  partition {} from {}: seq {} {} keys {} bytes",
            o.partition, o.replica, o.seq, o.keys, o.size
        ),
        BackupEvent::Retrying {
            partition,
            replica,
            error,
        } => eprintln!("  partition {partition}: {replica} failed ({error}); retrying"),
    };
    let m = run_backup(kv, &peers, &settings, &on_event)
        .await
        .map_err(BackupCliError::Backup)?;
    let elapsed = started.elapsed();
    println!(
        "backup complete: store {} | {} partitions | {} keys | {} bytes | {:.1} s | {:.1} MB/s | {}",
        m.store,
        m.partitions,
        m.total_keys,
        m.total_bytes,
        elapsed.as_secs_f64(),
        mb_per_s(m.total_bytes, elapsed),
        args.to
    );
    Ok(())
}

pub async fn restore(kv: &KvClient, args: &RestoreArgs) -> Result<(), BackupCliError> {
    let dest = Destination::new(args.from.clone(), args.s3.options());
    let started = Instant::now();
    if args.verify_only {
        let m = restore::verify(&dest)
            .await
            .map_err(BackupCliError::Restore)?;
        println!(
            "backup verified: store {} | {} partitions | {} keys | {} bytes | taken {} .. {}",
            m.store, m.partitions, m.total_keys, m.total_bytes, m.started_at, m.finished_at
        );
        return Ok(());
    }
    let on_event = |e: RestoreEvent| match e {
        RestoreEvent::Verified(m) => eprintln!(
            "verified {} objects ({} keys, {} bytes); writing",
            m.objects.len(),
            m.total_keys,
            m.total_bytes
        ),
        RestoreEvent::PartitionRestored { partition, keys } => {
            eprintln!("  backed-up partition {partition}: {keys} keys written")
        }
    };
    let m = restore::restore(&dest, kv, args.parallelism, &on_event)
        .await
        .map_err(BackupCliError::Restore)?;
    let elapsed = started.elapsed();
    println!(
        "restore complete: {} keys | {} bytes | {:.1} s | {:.1} MB/s | from {}",
        m.total_keys,
        m.total_bytes,
        elapsed.as_secs_f64(),
        mb_per_s(m.total_bytes, elapsed),
        args.from
    );
    Ok(())
}
