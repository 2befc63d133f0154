//! One reconciliation of a ShardedStore: validate → build → apply → status, plus the error
//! policy that tells invalid specs (wait for a change) from transient failures (back off).

use super::apply::{self, ApplyError};
use super::build::{self, BuildError, Owner, STORE_LABEL, selector_string};
use super::conditions::{self, PROGRESSING, READY};
use super::context::Context;
use super::coordinators::Start;
use super::disruption;
use super::events::Note;
use super::members;
use super::rollout;
use super::status::{self, Observation, RolloutView};
use super::tls::{self, TlsSecretError, TlsSecretProblem};
use super::validate::{self, CapacityProblem};
use crate::coordinator::{Membership, Settings};
use crate::crd::ShardedStore;
use crate::metrics::StoreLabels;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use shardedstore_node::map::PartitionMap;
use std::sync::Arc;
use std::time::Duration;

/// Requeue interval while something is in progress (the coordinator's view changes without
/// any Kubernetes event).
const REQUEUE_BUSY: Duration = Duration::from_secs(5);
/// Requeue interval of a settled store.
const REQUEUE_IDLE: Duration = Duration::from_secs(60);
/// Requeue interval while the TLS Secrets are missing or malformed (Secrets are not
/// watched: the store picks a fixed Secret up within this interval).
const REQUEUE_TLS: Duration = Duration::from_secs(10);

/// Why a reconciliation failed (transiently: it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("building the children")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("listing the pods of {store}")]
    ListPods {
        store: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the partition map {name}")]
    ReadMap {
        name: String,
        #[source]
        source: crate::coordinator::MapStoreError,
    },
    #[error("deleting pod {pod} for the rolling restart")]
    RestartPod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    TlsSecret(#[from] TlsSecretError),
    #[error("starting the coordinator of {store}")]
    StartCoordinator {
        store: String,
        #[source]
        source: shardedstore_node::client::AdminError,
    },
}

impl ReconcileError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Build(e) => e.category(),
            Self::Apply(e) => e.category(),
            Self::ListPods { .. } => "ListPodsFailed",
            Self::StartCoordinator { .. } => "CoordinatorFailed",
            Self::RestartPod { .. } => "RestartPodFailed",
            Self::ReadMap { .. } => "ReadMapFailed",
            Self::TlsSecret(_) => "ReadTLSSecretFailed",
        }
    }
}

/// Key of a store in the backoff table and the coordinator registry.
pub fn key_of(store: &ShardedStore) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

fn labels_of(store: &ShardedStore) -> StoreLabels {
    StoreLabels {
        namespace: store.namespace().unwrap_or_default(),
        store: store.name_any(),
    }
}

#[tracing::instrument(skip_all, fields(store = %key_of(&store)))]
pub async fn reconcile(
    store: Arc<ShardedStore>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.reconcile_timer();
    ctx.sweep_coordinators().await;
    if store.metadata.deletion_timestamp.is_some() {
        // Owner references garbage-collect the children; only the coordinator is ours to stop.
        let labels = labels_of(&store);
        ctx.coordinators.retain(|k| *k != labels).await;
        return Ok(Action::await_change());
    }
    let action = run(&store, &ctx).await?;
    ctx.backoff.succeeded(&key_of(&store));
    Ok(action)
}

async fn run(store: &ShardedStore, ctx: &Context) -> Result<Action, ReconcileError> {
    let owner = Owner::of(store)?;
    let spec = store
        .spec
        .with_default_image(ctx.config.default_node_image.as_deref());
    let previous = store.status.clone().unwrap_or_default();
    let regarding = store.object_ref(&());
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    // 1. Validate. An invalid spec is reported and waits for the user to change it.
    let problems = validate::validate(&spec);
    if !problems.is_empty() {
        let obs = Observation {
            store_name: &owner.name,
            generation: store.metadata.generation,
            spec: &spec,
            problems: &problems,
            capacity: None,
            statefulset_replicas: 0,
            ready_pods: 0,
            partitions: None,
            restarts_pending: 0,
            rollout: RolloutView::default(),
            refused_storage_change: None,
            blocked: None,
        };
        let status = status::compute(&obs, &previous.conditions, &now);
        apply::patch_status(&ctx.client, store, &status).await?;
        let message = conditions::find(&status.conditions, READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.events
            .publish(
                &regarding,
                Note {
                    warning: true,
                    reason: "InvalidSpec",
                    action: "Validate",
                    message,
                },
            )
            .await;
        return Ok(Action::await_change());
    }
    let capacity = validate::check_capacity(&spec);

    // The TLS Secrets: a missing or malformed one stops the reconcile, named in the
    // conditions, until it is fixed (pods could not start with it anyway).
    let tls = match tls::ensure_store_tls(&ctx.client, &owner, spec.tls.as_ref()).await {
        Ok(tls) => tls,
        Err(TlsSecretError::Invalid(problem)) => {
            return blocked_by_tls(store, ctx, &spec, &owner.name, &problem).await;
        }
        Err(e) => return Err(e.into()),
    };

    // 2. Observe what exists: the StatefulSet, the pods, the peer token.
    let current: Option<StatefulSet> = apply::get_opt(
        &ctx.client,
        &owner.namespace,
        &build::statefulset_name(&owner.name),
    )
    .await?;
    let current_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let token = apply::ensure_peer_token(&ctx.client, &owner).await?;
    let pods = list_pods(ctx, &owner).await?;
    let mut members_now = Vec::new();
    // Pods terminating for a drain or eviction: alive until their container exits, and
    // cordoned so their primaries are handed off first.
    let mut terminating = std::collections::BTreeSet::new();
    for pod in &pods {
        let zone = ctx.zone_of(pod, &spec.placement.zone_label).await;
        if let Some(mut m) = members::member_of(&owner.name, pod, zone) {
            if disruption::handing_off(pod) {
                m.confirmed_dead = false;
                terminating.insert(m.id.clone());
            }
            members_now.push(m);
        }
    }
    let ready_pods = members::ready_count(&members_now);
    let labels = labels_of(store);

    // Rolling restart (OnDelete): plan from the coordinator's last report.
    let update_revision = current
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.update_revision.clone());
    let stored_map = read_stored_map(ctx, &owner).await?;
    let last_report = ctx.coordinators.status(&labels).unwrap_or_default();
    let restart = rollout::plan(
        &pods
            .iter()
            .filter_map(|p| pod_revision(&owner.name, p))
            .collect::<Vec<_>>(),
        update_revision.as_deref(),
        current_replicas.unwrap_or(0),
        stored_map.as_ref(),
        &last_report,
    );

    // 3. The coordinator: drains pods above the desired count (not while refused).
    let desired_nodes = match (&capacity, current_replicas) {
        (Some(_), Some(current)) => current.max(spec.nodes),
        _ => spec.nodes,
    };
    let coordinator = ctx
        .coordinators
        .ensure(Start {
            labels: labels.clone(),
            regarding: regarding.clone(),
            owner: owner.owner_ref.clone(),
            token,
            tls,
            settings: Settings {
                restoring: crate::backup::restore::gates_clients(store),
                ..members::settings_for(&spec, &ctx.config)
            },
            membership: Membership {
                nodes: members_now,
                desired_nodes: u32::try_from(desired_nodes).unwrap_or(0),
                cordoned: restart
                    .cordoned()
                    .map(str::to_owned)
                    .into_iter()
                    .chain(terminating)
                    .collect(),
            },
        })
        .map_err(|source| ReconcileError::StartCoordinator {
            store: key_of(store),
            source,
        })?;

    // 4. Build and apply the children.
    let replicas = replicas_for(
        &owner.name,
        desired_nodes,
        current_replicas,
        stored_map.as_ref(),
    );
    let view = members::view_of(&coordinator);
    let children_ns = owner.namespace.clone();
    apply::apply(&ctx.client, &children_ns, &build::partition_map(&owner)).await?;
    apply::apply(&ctx.client, &children_ns, &build::peer_service(&owner)).await?;
    apply::apply(&ctx.client, &children_ns, &build::client_service(&owner)).await?;
    apply::apply(
        &ctx.client,
        &children_ns,
        &build::pod_disruption_budget(&owner, disruption::max_unavailable(&spec, Some(&view))),
    )
    .await?;
    match build::network_policy(&owner, &spec) {
        Some(policy) => {
            apply::apply(&ctx.client, &children_ns, &policy).await?;
        }
        None => {
            apply::delete_opt::<NetworkPolicy>(&ctx.client, &children_ns, &owner.name).await?;
        }
    }
    let mut desired_sts = build::statefulset(&owner, &spec, replicas);
    let refused_storage_change = build::keep_volume_claims(&mut desired_sts, current.as_ref());
    let applied_sts = apply::apply(&ctx.client, &children_ns, &desired_sts).await?;
    publish_scale_events(
        ctx,
        &regarding,
        &previous.conditions,
        spec.nodes,
        current_replicas,
        replicas,
        capacity.as_ref(),
    )
    .await;

    if let rollout::Rollout::Delete { pod, uid, pending } = &restart {
        restart_pod(ctx, &owner, &regarding, pod, uid.clone(), *pending).await?;
    }

    // 5. Status.
    let rollout_view = rollout_view(&owner.name, &applied_sts, &pods, replicas);
    let view = Some(view);
    let obs = Observation {
        store_name: &owner.name,
        generation: store.metadata.generation,
        spec: &spec,
        problems: &[],
        capacity: capacity.as_ref(),
        statefulset_replicas: replicas,
        ready_pods,
        partitions: view.as_ref(),
        restarts_pending: restart.pending(),
        rollout: rollout_view,
        refused_storage_change,
        blocked: None,
    };
    let status = status::compute(&obs, &previous.conditions, &now);
    apply::patch_status(&ctx.client, store, &status).await?;
    // The coordinator's progress (followers back in sync) reaches the status only through a
    // reconcile, so keep polling while any partition is not yet healthy.
    let all_healthy = status.partition_summary.healthy == status.partition_summary.total
        && status.moves.is_empty();
    let settled = conditions::find(&status.conditions, READY).is_some_and(|c| c.status == "True")
        && conditions::find(&status.conditions, PROGRESSING).is_some_and(|c| c.status == "False")
        && all_healthy;
    Ok(Action::requeue(if settled {
        REQUEUE_IDLE
    } else {
        REQUEUE_BUSY
    }))
}

/// The status of a store whose TLS Secrets are unusable: nothing is applied, the reason is
/// in the conditions (and in a Warning Event when it first appears or changes), and the
/// store is looked at again soon.
async fn blocked_by_tls(
    store: &ShardedStore,
    ctx: &Context,
    spec: &crate::crd::ShardedStoreSpec,
    name: &str,
    problem: &TlsSecretProblem,
) -> Result<Action, ReconcileError> {
    let previous = store.status.clone().unwrap_or_default();
    let message = problem.to_string();
    let obs = Observation {
        store_name: name,
        generation: store.metadata.generation,
        spec,
        problems: &[],
        capacity: None,
        statefulset_replicas: 0,
        ready_pods: 0,
        partitions: None,
        restarts_pending: 0,
        rollout: RolloutView::default(),
        refused_storage_change: None,
        blocked: Some((problem.reason(), message.clone())),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::compute(&obs, &previous.conditions, &now);
    apply::patch_status(&ctx.client, store, &status).await?;
    let already = conditions::find(&previous.conditions, READY)
        .is_some_and(|c| c.reason == problem.reason() && c.message == message);
    if !already {
        ctx.events
            .publish(
                &store.object_ref(&()),
                Note {
                    // Waiting for cert-manager is expected for a new store.
                    warning: problem.reason() != tls::CERTIFICATE_PENDING,
                    reason: problem.reason(),
                    action: "Validate",
                    message,
                },
            )
            .await;
    }
    Ok(Action::requeue(REQUEUE_TLS))
}

/// StatefulSet replicas: shrink only past pods the coordinator reports as holding nothing.
fn replicas_for(
    store: &str,
    desired: i32,
    current: Option<i32>,
    map: Option<&PartitionMap>,
) -> i32 {
    build::statefulset_replicas(desired, current, |ordinal| {
        members::is_drained(store, map, ordinal)
    })
}

/// The pod template as applied (image, update revision) and how many pods of the StatefulSet
/// run it.
fn rollout_view(store: &str, sts: &StatefulSet, pods: &[Pod], replicas: i32) -> RolloutView {
    let image = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone());
    let update_revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    let updated = pods
        .iter()
        .filter_map(|p| pod_revision(store, p))
        .filter(|p| i64::from(p.ordinal) < i64::from(replicas) && !p.deleting)
        .filter(|p| p.revision.is_some() && p.revision == update_revision)
        .count();
    RolloutView {
        image,
        update_revision,
        updated_pods: i32::try_from(updated).unwrap_or(i32::MAX),
    }
}

/// The partition map as stored in its ConfigMap (the source of truth on who holds data).
async fn read_stored_map(
    ctx: &Context,
    owner: &Owner,
) -> Result<Option<PartitionMap>, ReconcileError> {
    let name = build::partition_map_name(&owner.name);
    let cm: Option<ConfigMap> = apply::get_opt(&ctx.client, &owner.namespace, &name).await?;
    match cm {
        None => Ok(None),
        Some(cm) => crate::k8s_map_store::decode(&cm)
            .map_err(|source| ReconcileError::ReadMap { name, source }),
    }
}

/// The rollout facts of a pod of `store`.
fn pod_revision(store: &str, pod: &Pod) -> Option<rollout::PodRevision> {
    let name = pod.name_any();
    Some(rollout::PodRevision {
        ordinal: build::pod_ordinal(store, &name)?,
        revision: pod.labels().get("controller-revision-hash").cloned(),
        ready: pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        uid: pod.metadata.uid.clone(),
        name,
    })
}

/// Deletes a pod for the rolling restart, only if it is still the same pod (uid precondition).
async fn restart_pod(
    ctx: &Context,
    owner: &Owner,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    pod: &str,
    uid: Option<String>,
    pending: usize,
) -> Result<(), ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => {}
        // Already gone or replaced: the next reconcile sees the new pod.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
        Err(source) => {
            return Err(ReconcileError::RestartPod {
                pod: pod.to_owned(),
                source,
            });
        }
    }
    let message =
        format!("restarting {pod} with the new pod template ({pending} pods on the old one)");
    ctx.events
        .publish(
            regarding,
            Note {
                warning: false,
                reason: "PodRestarted",
                action: "RollingRestart",
                message,
            },
        )
        .await;
    Ok(())
}

async fn list_pods(ctx: &Context, owner: &Owner) -> Result<Vec<Pod>, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let params = ListParams::default().labels(&selector_string(&owner.name));
    api.list(&params)
        .await
        .map(|l| l.items)
        .map_err(|source| ReconcileError::ListPods {
            store: owner.name.clone(),
            source,
        })
}

async fn publish_scale_events(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    nodes: i32,
    current: Option<i32>,
    replicas: i32,
    capacity: Option<&CapacityProblem>,
) {
    let was = |type_: &str, reason: &str| {
        conditions::find(previous, type_).is_some_and(|c| c.reason == reason)
    };
    let mut notes = Vec::new();
    if let Some(problem) = capacity {
        if !was(PROGRESSING, "InsufficientCapacity") {
            notes.push(Note {
                warning: true,
                reason: "InsufficientCapacity",
                action: "Scale",
                message: problem.to_string(),
            });
        }
    } else if let Some(current) = current {
        if replicas > current {
            notes.push(Note {
                warning: false,
                reason: "ScaledOut",
                action: "Scale",
                message: format!("StatefulSet scaled out from {current} to {replicas} pods"),
            });
        } else if replicas < current {
            notes.push(Note { warning: false, reason: "ScaledIn", action: "Scale", message: format!("StatefulSet scaled in from {current} to {replicas} pods after their replicas moved away") });
        }
        if nodes < replicas && !was(PROGRESSING, "Draining") {
            notes.push(Note {
                warning: false,
                reason: "ScaleInStarted",
                action: "Scale",
                message: format!("draining pods with ordinal >= {nodes} before removing them"),
            });
        }
    }
    for note in notes {
        ctx.events.publish(regarding, note).await;
    }
}

/// Transient failures back off exponentially per store; every failure is counted and
/// reported as a Warning Event under its category.
pub fn error_policy(store: Arc<ShardedStore>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let category = error.category();
    ctx.metrics.reconcile_failed(category);
    let delay = ctx.backoff.failed(&key_of(&store));
    tracing::warn!(store = %key_of(&store), category, error = %error_chain(error), retry_in = ?delay, "reconcile failed");
    let regarding = store.object_ref(&());
    let note = Note {
        warning: true,
        reason: category,
        action: "Reconcile",
        message: error_chain(error),
    };
    let events = ctx.events.clone();
    let client = ctx.client.clone();
    let previous = store
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = status::reconcile_failed(
        &previous,
        category,
        error_chain(error),
        store.metadata.generation,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    );
    tokio::spawn(async move {
        events.publish(&regarding, note).await;
        if let Err(e) = apply::patch_condition(&client, &store, &condition).await {
            tracing::warn!(error = %error_chain(&e), "recording the reconcile failure in the status failed");
        }
    });
    Action::requeue(delay)
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps a pod event to the store it belongs to (its store label).
pub fn store_of_pod(pod: &Pod) -> Option<kube::runtime::reflector::ObjectRef<ShardedStore>> {
    let store = pod.labels().get(STORE_LABEL)?;
    let namespace = pod.namespace()?;
    Some(kube::runtime::reflector::ObjectRef::new(store).within(&namespace))
}
