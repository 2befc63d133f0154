//! The operator against a real kube-apiserver + etcd (hack/control-plane.sh): the CRD's schema,
//! CEL rules, printer columns and scale subresource; reconcile creating the children with
//! server-side apply and owner references; status and conditions; the ConfigMap map store's
//! compare-and-swap; leader election on a Lease.
//!
//! Skipped, with a printed reason, only when the Kubernetes binaries have not been built.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use shardedstore_node::map::PartitionMap;
use shardedstore_operator::coordinator::{MapStore, MapStoreError};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_tests::apiserver_harness::{
    ControlPlane, InProcessOperator, create_namespace, eventually, install_crd, operator_config,
    store,
};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(60);

/// The message of an API rejection, failing the test if the call succeeded.
fn rejection<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Ok(v) => panic!("the API server accepted what it must reject: {v:?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schema_cel_rules_printer_columns_scale_and_leader_election() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    create_namespace(&client, "crd", &[]).await?;
    let api: Api<ShardedStore> = Api::namespaced(client.clone(), "crd");
    let pp = PostParams::default();

    // Defaults are applied by the API server.
    let created = api
        .create(&pp, &store("kv", "nodes: 3\nimage: node:1\n")?)
        .await?;
    assert_eq!(created.spec.partitions, 256);
    assert_eq!(created.spec.replication_factor, 3);
    assert_eq!(
        created.spec.placement.zone_label,
        "topology.kubernetes.io/zone"
    );
    assert_eq!(created.spec.failover.replace_after, "5m");

    // CEL: nodes >= replicationFactor, minInSync <= replicationFactor.
    let msg = rejection(
        api.create(&pp, &store("small", "nodes: 2\nimage: node:1\n")?)
            .await,
    );
    assert!(
        msg.contains("nodes must be at least replicationFactor"),
        "{msg}"
    );
    let msg = rejection(
        api.create(
            &pp,
            &store(
                "mis",
                "nodes: 3\nimage: node:1\nminInSync: 3\nreplicationFactor: 2\n",
            )?,
        )
        .await,
    );
    assert!(
        msg.contains("minInSync must not exceed replicationFactor"),
        "{msg}"
    );
    // Ranges from the schema.
    let msg = rejection(
        api.create(
            &pp,
            &store("big", "nodes: 3\nimage: node:1\npartitions: 5000\n")?,
        )
        .await,
    );
    assert!(msg.contains("spec.partitions"), "{msg}");

    // CEL transition rule: partitions is immutable.
    let patch = serde_json::json!({"spec": {"partitions": 512}});
    let msg = rejection(
        api.patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert!(msg.contains("partitions is immutable"), "{msg}");
    // Other fields stay mutable.
    let patch = serde_json::json!({"spec": {"rebalance": {"paused": true}}});
    let patched = api
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    assert!(patched.spec.rebalance.paused);

    // Tuning: within the node's bounds it is accepted, outside them refused at admission.
    let patch = serde_json::json!({"spec": {"tuning": {
        "checkpointInterval": "250ms", "appendsInFlight": 2, "logWindowBytes": 16777216}}});
    let patched = api
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    assert_eq!(
        patched.spec.tuning.checkpoint_interval.as_deref(),
        Some("250ms")
    );
    for (tuning, refusal) in [
        (
            serde_json::json!({"checkpointInterval": "2m"}),
            "checkpointInterval must be from 50ms to 60s",
        ),
        (
            serde_json::json!({"checkpointInterval": "10ms"}),
            "checkpointInterval must be from 50ms to 60s",
        ),
        (
            serde_json::json!({"checkpointInterval": "soon"}),
            "spec.tuning.checkpointInterval",
        ),
        (
            serde_json::json!({"appendsInFlight": 5}),
            "spec.tuning.appendsInFlight",
        ),
        (
            serde_json::json!({"logWindowBytes": 4096}),
            "spec.tuning.logWindowBytes",
        ),
    ] {
        let patch = serde_json::json!({"spec": {"tuning": tuning}});
        let msg = rejection(
            api.patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert!(msg.contains(refusal), "{tuning}: {msg}");
    }

    // The scale subresource drives spec.nodes.
    stdout_of(&plane.kubectl(&["-n", "crd", "scale", "sst/kv", "--replicas=5"])?);
    assert_eq!(api.get("kv").await?.spec.nodes, 5);
    // ...and the CEL rule holds through it too.
    let out = plane.kubectl(&["-n", "crd", "scale", "sst/kv", "--replicas=2"])?;
    assert!(
        !out.status.success(),
        "scaling below replicationFactor was accepted"
    );
    assert_eq!(api.get("kv").await?.spec.nodes, 5);

    // Printer columns and the short name.
    let table = stdout_of(&plane.kubectl(&["-n", "crd", "get", "sst"])?);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "NODES",
        "READY",
        "PARTITIONS",
        "RF",
        "UNDER-REPLICATED",
        "MOVING",
        "STATUS",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "missing column {column} in {header:?}"
        );
    }
    assert!(table.contains("kv"), "{table}");

    // Field docs reach `kubectl explain`.
    let explain = stdout_of(&plane.kubectl(&["explain", "shardedstore.spec.partitions"])?);
    assert!(explain.contains("Fixed at creation"), "{explain}");

    leader_election(&client).await?;
    Ok(())
}

async fn leader_election(client: &Client) -> TestResult {
    use shardedstore_operator::leader::LeaderElector;
    let lease = Duration::from_secs(2);
    let renew = Duration::from_millis(500);
    let a = LeaderElector::new(
        client.clone(),
        "default",
        "sst-test-leader",
        "a".into(),
        lease,
        renew,
    );
    let b = LeaderElector::new(
        client.clone(),
        "default",
        "sst-test-leader",
        "b".into(),
        lease,
        renew,
    );
    assert!(
        a.try_acquire_or_renew().await?,
        "a should acquire a free lease"
    );
    assert!(
        !b.try_acquire_or_renew().await?,
        "b must not take a live lease"
    );
    assert!(a.try_acquire_or_renew().await?, "a renews");
    // b takes over only after observing the lease unchanged for its duration.
    let took_over = eventually(
        Duration::from_secs(10),
        "b to take over the expired lease",
        || {
            let b = b.clone();
            async move { b.try_acquire_or_renew().await.ok()?.then_some(()) }
        },
    )
    .await;
    assert!(took_over.is_ok(), "{took_over:?}");
    assert!(!a.try_acquire_or_renew().await?, "a lost the lease to b");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "default");
    let held = leases.get("sst-test-leader").await?;
    let spec = held.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // A clean release lets a take over at once.
    b.release().await;
    assert!(
        a.try_acquire_or_renew().await?,
        "a acquires a released lease"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_applies_children_status_scale_and_map_store() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    create_namespace(&client, "apps", &[]).await?;

    let _operator = InProcessOperator::start(&client, operator_config("test"))?;

    let stores: Api<ShardedStore> = Api::namespaced(client.clone(), "apps");
    let created = stores
        .create(
            &PostParams::default(),
            &store(
                "kv",
                "nodes: 3\nimage: registry.example/node:1\nstorage: {size: 1Gi}\n",
            )?,
        )
        .await?;
    let uid = created.uid().unwrap_or_default();

    // Children appear, each with a controller owner reference to the store, applied by our manager.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "apps");
    let sts = eventually(WAIT, "the StatefulSet", || {
        let api = sts_api.clone();
        async move { api.get_opt("kv").await.ok().flatten() }
    })
    .await?;
    let svc: Api<Service> = Api::namespaced(client.clone(), "apps");
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "apps");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "apps");
    let peers = eventually(WAIT, "the headless Service", || {
        let api = svc.clone();
        async move { api.get_opt("kv-peers").await.ok().flatten() }
    })
    .await?;
    let client_svc = svc.get("kv").await?;
    let budget = eventually(WAIT, "the PodDisruptionBudget", || {
        let api = pdb.clone();
        async move { api.get_opt("kv").await.ok().flatten() }
    })
    .await?;
    let map_cm = cms.get("kv-partition-map").await?;
    let token = secrets.get("kv-peer-token").await?;
    let metas = [
        ("StatefulSet", sts.meta().clone()),
        ("peer Service", peers.meta().clone()),
        ("client Service", client_svc.meta().clone()),
        ("PDB", budget.meta().clone()),
        ("ConfigMap", map_cm.meta().clone()),
        ("Secret", token.meta().clone()),
    ];
    for (what, meta) in &metas {
        let refs = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(refs.len(), 1, "{what}");
        assert_eq!(refs[0].uid, uid, "{what}");
        assert_eq!(refs[0].controller, Some(true), "{what}");
        assert_eq!(refs[0].kind, "ShardedStore", "{what}");
    }
    for (what, meta) in &metas[..5] {
        let managers = meta.managed_fields.clone().unwrap_or_default();
        assert!(
            managers
                .iter()
                .any(|m| m.manager.as_deref() == Some("shardedstore-operator")
                    && m.operation.as_deref() == Some("Apply")),
            "{what} was not server-side applied by shardedstore-operator: {managers:?}"
        );
    }
    let sts_spec = sts.spec.clone().unwrap_or_default();
    assert_eq!(sts_spec.replicas, Some(3));
    assert_eq!(sts_spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        sts_spec.update_strategy.and_then(|u| u.type_).as_deref(),
        Some("OnDelete")
    );
    assert_eq!(
        peers.spec.clone().and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    assert_eq!(
        client_svc
            .spec
            .clone()
            .and_then(|s| s.traffic_distribution)
            .as_deref(),
        Some("PreferClose")
    );
    assert!(
        map_cm.data.unwrap_or_default().is_empty(),
        "reconcile must not write map.json"
    );
    let token_value = token
        .data
        .clone()
        .unwrap_or_default()
        .get("token")
        .map(|b| b.0.len());
    assert_eq!(token_value, Some(64));

    // Status: observedGeneration, selector and the five conditions (no kubelet: pods never Ready).
    let status = eventually(WAIT, "the status", || {
        let api = stores.clone();
        async move {
            let s = api.get("kv").await.ok()?;
            let status = s.status?;
            (status.observed_generation == s.metadata.generation && status.conditions.len() == 5)
                .then_some(status)
        }
    })
    .await?;
    assert_eq!(
        status.selector,
        "app.kubernetes.io/name=shardedstore-node,shardedstore.io/store=kv"
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
        .unwrap_or_else(|| panic!("no Ready"));
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PodsNotReady")
    );
    for t in ["Available", "Progressing", "Degraded"] {
        assert!(
            status.conditions.iter().any(|c| c.type_ == t),
            "no {t} condition"
        );
    }

    // The token is created once: a later reconcile keeps it.
    let patch = serde_json::json!({"spec": {"rebalance": {"paused": true}}});
    stores
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eventually(WAIT, "the status of generation 2", || {
        let api = stores.clone();
        async move { (api.get("kv").await.ok()?.status?.observed_generation == Some(2)).then_some(()) }
    })
    .await?;
    assert_eq!(secrets.get("kv-peer-token").await?.data, token.data);
    // The Ready transition time did not move: its status did not flip.
    let again = stores.get("kv").await?.status.unwrap_or_default();
    let ready_again = again
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
        .unwrap_or_else(|| panic!("no Ready"));
    assert_eq!(ready_again.last_transition_time, ready.last_transition_time);

    // kubectl scale → spec.nodes → StatefulSet replicas, with a scale Event.
    stdout_of(&plane.kubectl(&["-n", "apps", "scale", "sst/kv", "--replicas=5"])?);
    eventually(WAIT, "the StatefulSet to scale to 5", || {
        let api = sts_api.clone();
        async move { (api.get("kv").await.ok()?.spec?.replicas == Some(5)).then_some(()) }
    })
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), "apps");
    eventually(WAIT, "a ScaledOut Event", || {
        let api = events.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("ScaledOut"))
                .then_some(())
        }
    })
    .await?;
    // Scale-in: with no partition map yet no pod holds data, so the StatefulSet shrinks.
    stdout_of(&plane.kubectl(&["-n", "apps", "scale", "sst/kv", "--replicas=3"])?);
    eventually(WAIT, "the StatefulSet to scale back to 3", || {
        let api = sts_api.clone();
        async move { (api.get("kv").await.ok()?.spec?.replicas == Some(3)).then_some(()) }
    })
    .await?;
    let scale = stdout_of(&plane.kubectl(&[
        "-n",
        "apps",
        "get",
        "sst",
        "kv",
        "-o",
        "jsonpath={.status.selector}",
    ])?);
    assert!(scale.contains("shardedstore.io/store=kv"), "{scale}");

    map_store_compare_and_swap(&client, &stores).await?;
    scale_in_waits_until_pods_hold_no_replica(&client, &plane, &stores, &sts_api).await?;

    // Deleting the store garbage-collects every child through the owner references.
    stores.delete("kv", &Default::default()).await?;
    eventually(WAIT, "the children to be garbage-collected", || {
        let (sts, svc, cms, secrets) = (sts_api.clone(), svc.clone(), cms.clone(), secrets.clone());
        async move {
            let gone = sts.get_opt("kv").await.ok()?.is_none()
                && svc.get_opt("kv").await.ok()?.is_none()
                && svc.get_opt("kv-peers").await.ok()?.is_none()
                && cms.get_opt("kv-partition-map").await.ok()?.is_none()
                && secrets.get_opt("kv-peer-token").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await?;
    Ok(())
}

/// The ConfigMap map store against the real API server, alongside the controller's SSA.
async fn map_store_compare_and_swap(client: &Client, stores: &Api<ShardedStore>) -> TestResult {
    use shardedstore_operator::k8s_map_store::ConfigMapMapStore;
    let map_store = ConfigMapMapStore::new(client.clone(), "apps", "kv", None);
    assert!(
        map_store.load().await?.is_none(),
        "no map before the first write"
    );
    let mut map = PartitionMap::empty("kv", 8, 3, 2);
    map.version = 1;
    let r1 = map_store.compare_and_swap(None, &map).await?;
    assert!(matches!(
        map_store.compare_and_swap(None, &map).await,
        Err(MapStoreError::Conflict)
    ));
    map.version = 2;
    let r2 = map_store.compare_and_swap(Some(&r1), &map).await?;
    map.version = 3;
    assert!(
        matches!(
            map_store.compare_and_swap(Some(&r1), &map).await,
            Err(MapStoreError::Conflict)
        ),
        "a stale revision must lose"
    );
    let (loaded, rev) = map_store
        .load()
        .await?
        .unwrap_or_else(|| panic!("map missing"));
    assert_eq!(loaded.version, 2);
    assert_eq!(rev, r2);

    // A reconcile (spec change) re-applies the ConfigMap's metadata and keeps map.json.
    let patch = serde_json::json!({"spec": {"rebalance": {"paused": false}}});
    let generation = stores
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await?
        .metadata
        .generation;
    eventually(WAIT, "the reconcile of the new generation", || {
        let api = stores.clone();
        async move {
            (api.get("kv").await.ok()?.status?.observed_generation == generation).then_some(())
        }
    })
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let cm = cms.get("kv-partition-map").await?;
    assert!(
        cm.labels().contains_key("shardedstore.io/store"),
        "labels lost"
    );
    assert_eq!(cm.owner_references().len(), 1, "owner reference lost");
    let (after, _) = map_store
        .load()
        .await?
        .unwrap_or_else(|| panic!("map.json was wiped by reconcile"));
    assert_eq!(after.version, 2);
    Ok(())
}

/// A stored map (`version`) in which `holder` holds the only replica of partition 0.
fn map_with_replica_on(holder: &str, version: u64) -> PartitionMap {
    use shardedstore_node::map::{NodeInfo, NodeState, PartitionEntry};
    let mut map = PartitionMap::empty("kv", 8, 1, 1);
    map.version = version;
    map.nodes.insert(
        holder.to_owned(),
        NodeInfo {
            client_addr: "10.0.0.9:7000".into(),
            peer_addr: "10.0.0.9:7100".into(),
            zone: None,
            state: NodeState::Draining,
        },
    );
    map.partitions[0] = PartitionEntry {
        epoch: 1,
        primary: Some(holder.to_owned()),
        replicas: vec![holder.to_owned()],
        in_sync: vec![holder.to_owned()],
        learners: vec![],
    };
    map
}

/// Scale-in removes pods from the top only once the stored map shows they hold nothing.
async fn scale_in_waits_until_pods_hold_no_replica(
    client: &Client,
    plane: &ControlPlane,
    stores: &Api<ShardedStore>,
    sts_api: &Api<StatefulSet>,
) -> TestResult {
    use shardedstore_operator::k8s_map_store::ConfigMapMapStore;
    let map_store = ConfigMapMapStore::new(client.clone(), "apps", "kv", None);
    let (current, rev) = map_store
        .load()
        .await?
        .unwrap_or_else(|| panic!("map missing"));
    let rev = map_store
        .compare_and_swap(
            Some(&rev),
            &map_with_replica_on("kv-3", current.version + 1),
        )
        .await?;
    stdout_of(&plane.kubectl(&["-n", "apps", "scale", "sst/kv", "--replicas=5"])?);
    let replicas_are = |n: i32| {
        let api = sts_api.clone();
        async move { (api.get("kv").await.ok()?.spec?.replicas == Some(n)).then_some(()) }
    };
    eventually(WAIT, "the StatefulSet to scale out to 5", || {
        replicas_are(5)
    })
    .await?;
    stdout_of(&plane.kubectl(&["-n", "apps", "scale", "sst/kv", "--replicas=3"])?);
    // kv-4 holds nothing and goes; kv-3 still holds a replica and stays.
    eventually(WAIT, "the StatefulSet to drop the empty kv-4", || {
        replicas_are(4)
    })
    .await?;
    let draining = eventually(WAIT, "Progressing=Draining", || {
        let api = stores.clone();
        async move {
            let s = api.get("kv").await.ok()?;
            let status = s.status?;
            (status.observed_generation == s.metadata.generation).then_some(())?;
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .filter(|c| c.reason == "Draining")
                .cloned()
        }
    })
    .await?;
    assert_eq!(draining.status, "True");
    for _ in 0..10 {
        assert_eq!(
            sts_api.get("kv").await?.spec.and_then(|s| s.replicas),
            Some(4),
            "a pod holding a replica was removed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Once the map no longer lists kv-3 (its replica moved), the StatefulSet shrinks.
    let mut moved = map_with_replica_on("kv-0", current.version + 2);
    moved.nodes.clear();
    moved.partitions[0] = Default::default();
    map_store.compare_and_swap(Some(&rev), &moved).await?;
    eventually(WAIT, "the StatefulSet to shrink to 3", || replicas_are(3)).await?;
    Ok(())
}

fn replica_config(identity: &str) -> shardedstore_operator::config::RunConfig {
    shardedstore_operator::config::RunConfig {
        metrics_addr: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        lease_name: "shardedstore-operator-leader".into(),
        lease_namespace: "default".into(),
        identity: Some(identity.into()),
        leader_lease_seconds: 4,
        leader_renew_seconds: 1,
        heartbeat_interval_ms: 500,
        node_lease_ms: 4000,
        default_node_image: Some("registry.example/node:default".into()),
        watch_namespace: None,
    }
}

/// Runs `serve_with` for one operator replica until its stop trigger fires.
struct Replica {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), shardedstore_operator::controller::RunError>>,
}

impl Replica {
    fn start(client: &Client, identity: &str) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shardedstore_operator::controller::serve_with(
            client.clone(),
            replica_config(identity),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> Result<(), shardedstore_operator::controller::RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => panic!("replica task failed: {e}"),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "default");
    leases
        .get_opt("shardedstore-operator-leader")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_only_the_leader_reconciles_and_it_hands_over() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    create_namespace(&client, "ha", &[]).await?;

    let a = Replica::start(&client, "replica-a");
    eventually(WAIT, "replica-a to hold the Lease", || {
        let client = client.clone();
        async move { (lease_holder(&client).await? == "replica-a").then_some(()) }
    })
    .await?;
    let b = Replica::start(&client, "replica-b");

    // The leader reconciles; the store sets no image, so the operator's default applies.
    let stores: Api<ShardedStore> = Api::namespaced(client.clone(), "ha");
    stores
        .create(&PostParams::default(), &store("kv", "nodes: 3\n")?)
        .await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "ha");
    let sts = eventually(WAIT, "the StatefulSet", || {
        let api = sts_api.clone();
        async move { api.get_opt("kv").await.ok().flatten() }
    })
    .await?;
    let image = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image);
    assert_eq!(image.as_deref(), Some("registry.example/node:default"));

    // The follower does not take a live Lease: several of its rounds (1 s each) pass.
    for _ in 0..6 {
        assert_eq!(lease_holder(&client).await.as_deref(), Some("replica-a"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A clean stop releases the Lease; the follower takes over and reconciles new changes.
    a.stop().await?;
    eventually(WAIT, "replica-b to take the Lease over", || {
        let client = client.clone();
        async move { (lease_holder(&client).await? == "replica-b").then_some(()) }
    })
    .await?;
    stdout_of(&plane.kubectl(&["-n", "ha", "scale", "sst/kv", "--replicas=4"])?);
    eventually(WAIT, "replica-b to scale the StatefulSet", || {
        let api = sts_api.clone();
        async move { (api.get("kv").await.ok()?.spec?.replicas == Some(4)).then_some(()) }
    })
    .await?;
    b.stop().await?;
    Ok(())
}
