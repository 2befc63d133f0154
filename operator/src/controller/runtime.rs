//! The operator process: metrics endpoint, leader election, and (while leader) the
//! ShardedStore controller with its watches.

use super::context::Context;
use super::reconcile::{error_policy, reconcile, store_of_pod};
use crate::config::RunConfig;
use crate::crd::ShardedStore;
use crate::leader::{LeaderElector, LeaderError};
use crate::metrics::{self, Metrics, MetricsError};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use tokio::sync::watch;

/// Quiet period before a burst of watch events triggers one reconcile.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);

/// How often coordinators of deleted stores are looked for.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to the Kubernetes API server")]
    Connect(#[source] kube::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("lost the leader Lease; stopping so that only one operator coordinates")]
    LostLeadership,
    #[error("--heartbeat-interval-ms and --node-lease-ms")]
    Timing(#[source] crate::coordinator::TimingError),
}

/// `shardedstore-operator run`: serves metrics, waits to be leader, then reconciles until
/// Ctrl-C / SIGTERM (Ok) or until leadership is lost (Err: the process must restart).
pub async fn serve(config: RunConfig) -> Result<(), RunError> {
    crate::coordinator::check_lease_timing(config.heartbeat_interval(), config.node_lease())
        .map_err(RunError::Timing)?;
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    serve_with(client, config, shutdown_signal()).await
}

/// [`serve`] with a given client and shutdown trigger (tests run two replicas in-process).
pub async fn serve_with(
    client: Client,
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new()?);
    let identity = config.identity();
    let addr = config.metrics_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let metrics_task = tokio::spawn(metrics::serve_on(metrics.clone(), listener));

    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        identity.clone(),
        config.leader_lease(),
        config.leader_renew(),
    );
    let elector_task = tokio::spawn(elector.clone().run(leader_tx));
    tracing::info!(%identity, lease = %config.lease_name, "waiting for the leader Lease");

    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => None,
        became = leader_rx.wait_for(|leader| *leader) => Some(became.is_ok()),
    };
    let result = match result {
        None => Ok(()),
        Some(false) => Err(RunError::LostLeadership),
        Some(true) => {
            metrics.leader.set(1);
            tracing::info!(%identity, "became leader; starting the controller");
            let ctx = Arc::new(Context::new(
                client.clone(),
                config,
                metrics.clone(),
                identity,
            ));
            let controller = run_controller(ctx.clone());
            tokio::pin!(controller);
            let outcome = tokio::select! {
                () = &mut shutdown => Ok(()),
                () = &mut controller => Ok(()),
                _ = leader_rx.wait_for(|leader| !*leader) => Err(RunError::LostLeadership),
            };
            ctx.coordinators.stop_all().await;
            outcome
        }
    };
    metrics.leader.set(0);
    elector_task.abort();
    if result.is_ok() {
        elector.release().await;
    }
    metrics_task.abort();
    result
}

/// Runs the ShardedStore controller until its watches end. Used by `serve` (while leader)
/// and by the real-apiserver tests.
pub async fn run_controller(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (stores, pods): (Api<ShardedStore>, Api<Pod>) = match &ctx.config.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    macro_rules! owned {
        ($kind:ty) => {
            match &ctx.config.watch_namespace {
                Some(ns) => Api::<$kind>::namespaced(client.clone(), ns),
                None => Api::<$kind>::all(client.clone()),
            }
        };
    }
    let children =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=shardedstore-operator");
    // Map writes (owned ConfigMap) and pod changes come in bursts during moves and failovers;
    // one reconcile per burst is enough.
    let controller = Controller::new(stores, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().debounce(DEBOUNCE))
        .owns(owned!(StatefulSet), children.clone())
        .owns(owned!(Service), children.clone())
        .owns(owned!(PodDisruptionBudget), children.clone())
        .owns(owned!(ConfigMap), children.clone())
        .owns(owned!(Secret), children)
        .watches(
            pods,
            watcher::Config::default().labels(super::build::STORE_LABEL),
            |pod| store_of_pod(&pod),
        );
    ctx.set_store_cache(controller.store());
    // Stores deleted while no other store reconciles still get their coordinator stopped.
    let _sweeper = AbortOnDrop({
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                ctx.sweep_coordinators().await;
            }
        })
    });
    let backups = crate::backup::run(client.clone(), ctx.config.watch_namespace.clone());
    let stores = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(store = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        });
    futures::future::join(stores, backups).await;
}

/// Aborts a helper task when the future owning it completes or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
