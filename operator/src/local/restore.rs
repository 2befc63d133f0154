//! `--restore-from`: fill a new local store from a backup before it is announced.
//!
//! The backup is verified before any node starts (a corrupt or partial backup is refused and
//! nothing is created). A marker file in the data directory makes an interrupted restore
//! resume on the next start and a finished one never run twice; a data directory that
//! already holds a store without the marker is refused.

use shardedstore_node::backup::restore::{self, RestoreError, RestoreEvent};
use shardedstore_node::backup::{Destination, S3Args};
use shardedstore_node::client::{KvClient, KvError, RetryPolicy};
use shardedstore_node::tls::ClientTls;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Flags of local mode's restore.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RestoreFlags {
    /// Fill the new store from this backup (s3://bucket/prefix or file:///path) before it
    /// is announced; the partition count may differ from the backed-up store's.
    #[arg(long, env = "SHARDEDSTORE_LOCAL_RESTORE_FROM")]
    pub restore_from: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Why a restore in local mode failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalRestoreError {
    #[error("--restore-from needs a new data directory: {0} already holds a store")]
    NotEmpty(PathBuf),
    #[error("the backup was refused")]
    Refused(#[source] RestoreError),
    #[error("building the client")]
    Client(#[source] KvError),
    #[error("the store did not get a primary for every partition within {0:?}")]
    NotServing(Duration),
    #[error("the nodes still refused clients {0:?} after the restore")]
    StillGated(Duration),
    #[error("writing the restore marker {0}")]
    Marker(PathBuf, #[source] std::io::Error),
}

/// What to do with `--restore-from` on this data directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing (no flag, or restored already).
    Skip,
    /// Restore (a new store, or resuming an interrupted restore).
    Restore(Destination),
}

fn marker(data_dir: &Path, state: &str) -> PathBuf {
    data_dir.join(format!("restore.{state}"))
}

/// Decides, and for a restore verifies the backup, before anything starts.
pub async fn prepare(flags: &RestoreFlags, data_dir: &Path) -> Result<Step, LocalRestoreError> {
    let Some(from) = &flags.restore_from else {
        return Ok(Step::Skip);
    };
    if marker(data_dir, "done").exists() {
        tracing::info!(from, "the store was restored already");
        return Ok(Step::Skip);
    }
    let pending = marker(data_dir, "pending");
    if data_dir.join("map.json").exists() && !pending.exists() {
        return Err(LocalRestoreError::NotEmpty(data_dir.to_owned()));
    }
    let dest = Destination::new(from.clone(), flags.s3.options());
    let m = restore::verify(&dest)
        .await
        .map_err(LocalRestoreError::Refused)?;
    tracing::info!(from, store = %m.store, partitions = m.partitions, keys = m.total_keys, bytes = m.total_bytes, "backup verified");
    std::fs::write(&pending, from).map_err(|e| LocalRestoreError::Marker(pending.clone(), e))?;
    Ok(Step::Restore(dest))
}

/// Waits until every partition has a primary, then writes the backup into the store (its
/// requests carry the peer token: the nodes serve nothing else while the map says
/// `restoring`), then calls `open_gate` and waits until the nodes serve every client. With
/// `tls` (the store serves TLS), over HTTPS trusting its CA.
pub async fn run(
    dest: &Destination,
    data_dir: &Path,
    client_addrs: &[String],
    peer_token: &str,
    tls: Option<ClientTls>,
    open_gate: impl FnOnce(),
) -> Result<(), LocalRestoreError> {
    let kv = KvClient::builder(client_addrs)
        .tls(tls.unwrap_or_default())
        .retry_policy(RetryPolicy {
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .restore_token(peer_token)
        .build()
        .map_err(LocalRestoreError::Client)?;
    let wait = Duration::from_secs(120);
    let started = Instant::now();
    loop {
        if let Ok(map) = kv.map().await
            && !map.partitions.is_empty()
            && map.partitions.iter().all(|e| e.primary.is_some())
        {
            break;
        }
        if started.elapsed() > wait {
            return Err(LocalRestoreError::NotServing(wait));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_event = |e: RestoreEvent| {
        if let RestoreEvent::PartitionRestored { partition, keys } = e {
            tracing::info!(partition, keys, "restored a backed-up partition");
        }
    };
    let m = restore::restore(dest, &kv, 64, &on_event)
        .await
        .map_err(LocalRestoreError::Refused)?;
    let done = marker(data_dir, "done");
    std::fs::write(&done, &dest.url).map_err(|e| LocalRestoreError::Marker(done.clone(), e))?;
    let _ = std::fs::remove_file(marker(data_dir, "pending"));
    open_gate();
    let opened = Instant::now();
    while !kv.map().await.is_ok_and(|m| !m.restoring) {
        if opened.elapsed() > wait {
            return Err(LocalRestoreError::StillGated(wait));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "restored {} keys ({} bytes) from {} in {:.1} s",
        m.total_keys,
        m.total_bytes,
        dest.url,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
