//! The ShardedStoreBackup controller: decides with [`super::plan`], runs each backup as a
//! task of this process (the orchestration of `shardedstore_node::backup::run`), reports
//! progress in the status every few seconds, and applies retention for schedules.

use super::access::{self, AccessError};
use super::plan::{DEFAULT_KEEP, Decision, decide, next_time};
use crate::crd::backup::{
    BackupPhase, PartitionBackupStatus, ScheduledBackup, ShardedStoreBackup,
    ShardedStoreBackupStatus,
};
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use shardedstore_node::backup::peers::BackupPeers;
use shardedstore_node::backup::retention::{delete_backup, expired};
use shardedstore_node::backup::{BackupEvent, BackupSettings, Destination, Manifest, run_backup};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIELD_MANAGER: &str = "shardedstore-operator";
/// How often a running backup's progress is written to its status.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

/// Why a reconcile of a ShardedStoreBackup failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status of {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why one backup failed (reported in its status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("building the peer client")]
    Peers(#[source] shardedstore_node::backup::peers::PeerCallError),
    #[error(transparent)]
    Backup(#[from] shardedstore_node::backup::BackupError),
}

/// State of the controller.
pub struct BackupController {
    client: Client,
    /// Backups running in this process, by `namespace/name`.
    running: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl BackupController {
    fn is_running(&self, key: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|_, h| !h.is_finished());
        running.contains_key(key)
    }
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

async fn patch_status(
    client: &Client,
    obj: &ShardedStoreBackup,
    status: &ShardedStoreBackupStatus,
) -> Result<(), ReconcileError> {
    let api: Api<ShardedStoreBackup> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": ShardedStoreBackup::api_version(&()),
        "kind": ShardedStoreBackup::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::Status {
        name: obj.name_any(),
        source,
    })
}

/// Runs the controller until its watch ends. Returns at once (with a log line) when the
/// ShardedStoreBackup CRD is not installed.
pub async fn run(client: Client, namespace: Option<String>) {
    let api: Api<ShardedStoreBackup> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(e) = api.list(&kube::api::ListParams::default().limit(1)).await {
        tracing::warn!(error = %e, "ShardedStoreBackup is not served (CRD not installed?): backups and restores are off");
        return;
    }
    let restorer = tokio::spawn(super::restore::run(client.clone(), namespace));
    let ctx = Arc::new(BackupController {
        client,
        running: Mutex::new(HashMap::new()),
    });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "backup reconcile did not complete");
            }
        })
        .await;
    restorer.abort();
    for (_, h) in ctx
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
    {
        h.abort();
    }
}

fn error_policy(
    _: Arc<ShardedStoreBackup>,
    e: &ReconcileError,
    _: Arc<BackupController>,
) -> Action {
    tracing::warn!(error = %chain(e), "backup reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(
    obj: Arc<ShardedStoreBackup>,
    ctx: Arc<BackupController>,
) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let key = format!("{}/{name}", obj.namespace().unwrap_or_default());
    let running = ctx.is_running(&key);
    let now = Utc::now();
    match decide(&name, &obj.spec, obj.status.as_ref(), running, now) {
        Decision::Start { url } => {
            let task = tokio::spawn(run_one(ctx.client.clone(), obj.clone(), url));
            ctx.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, task);
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        Decision::Running => Ok(Action::requeue(Duration::from_secs(30))),
        Decision::WaitUntil(t) => {
            let mut status = obj.status.clone().unwrap_or_default();
            let next = Some(t.to_rfc3339());
            if status.next_schedule_time != next
                || status.observed_generation != obj.meta().generation
            {
                status.next_schedule_time = next;
                status.observed_generation = obj.meta().generation;
                if matches!(status.phase, BackupPhase::Pending) {
                    status.phase = BackupPhase::Scheduled;
                }
                patch_status(&ctx.client, &obj, &status).await?;
            }
            let wait = (t - now).to_std().unwrap_or_default();
            Ok(Action::requeue(
                wait.min(Duration::from_secs(300)) + Duration::from_secs(1),
            ))
        }
        Decision::Finished => Ok(Action::await_change()),
        Decision::Invalid(message) => {
            let mut status = obj.status.clone().unwrap_or_default();
            status.phase = BackupPhase::Failed;
            status.observed_generation = obj.meta().generation;
            status.conditions = vec![
                condition("Complete", false, "InvalidSpec", message.clone()),
                condition("Failed", true, "InvalidSpec", message),
            ];
            patch_status(&ctx.client, &obj, &status).await?;
            Ok(Action::await_change())
        }
    }
}

/// The status at the start of a backup into `url`.
fn starting(obj: &ShardedStoreBackup, url: &str) -> ShardedStoreBackupStatus {
    let prev = obj.status.clone().unwrap_or_default();
    ShardedStoreBackupStatus {
        observed_generation: obj.meta().generation,
        phase: BackupPhase::Running,
        url: Some(url.to_owned()),
        start_time: Some(Utc::now().to_rfc3339()),
        backups: prev.backups,
        next_schedule_time: prev.next_schedule_time,
        conditions: vec![condition(
            "Complete",
            false,
            "Running",
            format!("backing up store {} to {url}", obj.spec.store),
        )],
        ..ShardedStoreBackupStatus::default()
    }
}

fn record(status: &mut ShardedStoreBackupStatus, event: BackupEvent) {
    match event {
        BackupEvent::Started {
            partitions,
            map_version,
        } => {
            status.partitions_total = partitions as i32;
            status.map_version = Some(map_version as i64);
        }
        BackupEvent::PartitionDone(o) => {
            status.partitions_done += 1;
            status.size_bytes += o.size as i64;
            status.keys += o.keys as i64;
            status.partitions.push(PartitionBackupStatus {
                partition: o.partition as i32,
                replica: o.replica,
                seq: o.seq as i64,
                keys: o.keys as i64,
                bytes: o.size as i64,
            });
            status.partitions.sort_by_key(|p| p.partition);
        }
        BackupEvent::Retrying { .. } => {}
    }
}

async fn execute(
    client: &Client,
    obj: &ShardedStoreBackup,
    url: &str,
    progress: &Arc<Mutex<ShardedStoreBackupStatus>>,
) -> Result<Manifest, RunError> {
    let ns = obj.namespace().unwrap_or_default();
    let store = &obj.spec.store;
    let map = access::store_map(client, &ns, store).await?;
    let token = access::peer_token(client, &ns, store).await?;
    let s3 = access::s3_options(client, &ns, obj.spec.destination.s3.as_ref()).await?;
    let store_obj = access::store(client, &ns, store).await?;
    let tls = access::store_tls(client, &ns, &store_obj).await?;
    let kv = access::store_client(&map, tls.as_ref(), &token)?;
    let peers = BackupPeers::with_tls(token, Duration::from_secs(6 * 3600), tls.as_ref())
        .map_err(RunError::Peers)?;
    let mut settings = BackupSettings::new(Destination::new(url, s3));
    settings.parallelism = obj.spec.parallelism.unwrap_or(4).max(1) as usize;
    let on_event = |e: BackupEvent| {
        if let BackupEvent::Retrying {
            partition,
            replica,
            error,
        } = &e
        {
            tracing::warn!(partition, %replica, %error, "backup export retried");
        }
        record(&mut progress.lock().unwrap_or_else(|e| e.into_inner()), e);
    };
    Ok(run_backup(&kv, &peers, &settings, &on_event).await?)
}

/// Takes one backup into `url`, then records the outcome (and applies retention).
async fn run_one(client: Client, obj: Arc<ShardedStoreBackup>, url: String) {
    let name = obj.name_any();
    let progress = Arc::new(Mutex::new(starting(&obj, &url)));
    let snapshot = |p: &Arc<Mutex<ShardedStoreBackupStatus>>| {
        p.lock().unwrap_or_else(|e| e.into_inner()).clone()
    };
    if let Err(e) = patch_status(&client, &obj, &snapshot(&progress)).await {
        tracing::warn!(backup = %name, error = %chain(&e), "writing the status");
    }
    tracing::info!(backup = %name, store = %obj.spec.store, %url, "backup started");
    let work = execute(&client, &obj, &url, &progress);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                if let Err(e) = patch_status(&client, &obj, &snapshot(&progress)).await {
                    tracing::warn!(backup = %name, error = %chain(&e), "writing progress");
                }
            }
        }
    };
    let mut status = snapshot(&progress);
    let now = Utc::now();
    status.completion_time = Some(now.to_rfc3339());
    match outcome {
        Ok(m) => {
            tracing::info!(backup = %name, keys = m.total_keys, bytes = m.total_bytes, "backup completed");
            status.phase = BackupPhase::Completed;
            status.conditions = vec![
                condition(
                    "Complete",
                    true,
                    "Completed",
                    format!(
                        "{} partitions, {} keys, {} bytes in {url}",
                        m.partitions, m.total_keys, m.total_bytes
                    ),
                ),
                condition("Failed", false, "Completed", String::new()),
            ];
            if obj.spec.schedule.is_some() {
                status.backups.push(ScheduledBackup {
                    url: url.clone(),
                    start_time: m.started_at.to_rfc3339(),
                    completion_time: m.finished_at.to_rfc3339(),
                    size_bytes: m.total_bytes as i64,
                });
            }
        }
        Err(e) => {
            let message = chain(&e);
            tracing::warn!(backup = %name, error = %message, "backup failed");
            status.phase = BackupPhase::Failed;
            status.conditions = vec![
                condition("Complete", false, "BackupFailed", message.clone()),
                condition("Failed", true, "BackupFailed", message),
            ];
        }
    }
    if obj.spec.schedule.is_some() {
        status.next_schedule_time = next_time(&obj.spec, now);
        let keep = obj.spec.keep.map_or(DEFAULT_KEEP, |k| k.max(1) as usize);
        let ns = obj.namespace().unwrap_or_default();
        let s3 = access::s3_options(&client, &ns, obj.spec.destination.s3.as_ref()).await;
        for old in expired(&status.backups, keep) {
            let Ok(s3) = &s3 else { break };
            match delete_backup(&Destination::new(old.url.clone(), s3.clone())).await {
                Ok(n) => {
                    tracing::info!(backup = %name, url = %old.url, objects = n, "deleted an expired backup");
                    status.backups.retain(|b| b.url != old.url);
                }
                Err(e) => {
                    tracing::warn!(backup = %name, url = %old.url, error = %chain(&e), "deleting an expired backup")
                }
            }
        }
    }
    if let Err(e) = patch_status(&client, &obj, &status).await {
        tracing::warn!(backup = %name, error = %chain(&e), "writing the final status");
    }
}
