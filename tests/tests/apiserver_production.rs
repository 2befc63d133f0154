//! Production readiness against a real kube-apiserver + etcd (hack/control-plane.sh): the
//! storage pod template passes Pod Security "restricted" admission; the NetworkPolicy, the
//! health-driven PodDisruptionBudget, the rollout status and the `Reconciled` condition; the
//! `storage` CEL rule; the rendered Helm chart accepted by `kubectl apply --dry-run=server`
//! in a namespace that enforces "restricted".
//!
//! Skipped, with a printed reason, only when the Kubernetes binaries (or helm) are missing.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_tests::apiserver_harness::{
    ControlPlane, InProcessOperator, condition, create_namespace, eventually, install_crd,
    operator_config, repo_root, store,
};
use shardedstore_tests::tools::require_tool;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(60);
const RESTRICTED: &str = "pod-security.kubernetes.io/enforce";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_pods_policies_status_and_the_chart_on_a_real_apiserver() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    create_namespace(&client, "prod", &[(RESTRICTED, "restricted")]).await?;

    let _operator = InProcessOperator::start(&client, operator_config("test"))?;

    storage_is_immutable_and_children_are_production_ready(&client).await?;
    reconcile_errors_reach_the_reconciled_condition(&client).await?;
    chart_passes_server_side_dry_run(&plane, &client).await?;
    Ok(())
}

async fn storage_is_immutable_and_children_are_production_ready(client: &Client) -> TestResult {
    let stores: Api<ShardedStore> = Api::namespaced(client.clone(), "prod");
    stores
        .create(
            &PostParams::default(),
            &store("kv", "nodes: 3\nimage: registry.example/node:1\n")?,
        )
        .await?;

    // CEL: storage cannot change after creation, with a message saying what to do instead.
    let patch = serde_json::json!({"spec": {"storage": {"size": "20Gi"}}});
    match stores
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message.contains("storage is immutable")
                    && s.message.contains("PersistentVolumeClaim"),
                "{}",
                s.message
            );
        }
        other => panic!("a storage change was not refused: {other:?}"),
    }

    // The StatefulSet's pod template is admitted as a Pod in the "restricted" namespace.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "prod");
    let sts = eventually(WAIT, "the StatefulSet", || {
        let api = sts_api.clone();
        async move { api.get_opt("kv").await.ok().flatten() }
    })
    .await?;
    let template = sts.spec.clone().unwrap_or_default().template;
    let mut pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    };
    pod.metadata.name = Some("kv-admission-check".into());
    // A StatefulSet pod gets its volume from the claim template; stand in with an emptyDir.
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes
            .get_or_insert_with(Vec::new)
            .push(serde_json::from_value(
                serde_json::json!({"name": "data", "emptyDir": {}}),
            )?);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "prod");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    if let Err(e) = pods.create(&dry, &pod).await {
        panic!("the storage pod template fails \"restricted\" admission: {e}");
    }
    // ...while a pod without the security context is refused there (the check has teeth).
    let mut bare = pod.clone();
    if let Some(spec) = bare.spec.as_mut() {
        spec.security_context = None;
        for c in &mut spec.containers {
            c.security_context = None;
        }
    }
    assert!(
        pods.create(&dry, &bare).await.is_err(),
        "a pod without securityContext was admitted: the namespace does not enforce"
    );

    // NetworkPolicy and PodDisruptionBudget (no pods run here: no map, so no disruption).
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "prod");
    let policy = eventually(WAIT, "the NetworkPolicy", || {
        let api = policies.clone();
        async move { api.get_opt("kv").await.ok().flatten() }
    })
    .await?;
    assert_eq!(
        policy.owner_references().first().map(|o| o.kind.as_str()),
        Some("ShardedStore")
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "prod");
    let pdb = pdbs.get("kv").await?.spec.unwrap_or_default();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(0)));

    // Status: the rollout (image) and Reconciled=True.
    let settled = eventually(WAIT, "Reconciled=True and the image in the status", || {
        let api = stores.clone();
        async move {
            let s = api.get("kv").await.ok()?;
            let (status, _, _) = condition(&s, "Reconciled")?;
            (status == "True" && s.status.as_ref()?.image.is_some()).then_some(s)
        }
    })
    .await?;
    assert_eq!(
        settled.status.and_then(|s| s.image).as_deref(),
        Some("registry.example/node:1")
    );

    // Turning the policy off removes it.
    let patch = serde_json::json!({"spec": {"network": {"policy": false}}});
    stores
        .patch("kv", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eventually(WAIT, "the NetworkPolicy to be deleted", || {
        let api = policies.clone();
        async move { api.get_opt("kv").await.ok()?.is_none().then_some(()) }
    })
    .await?;
    Ok(())
}

/// A peer-token Secret without a token makes every reconcile fail: the status says so in
/// `Reconciled` (reason = the failure's category), and the other conditions stay.
async fn reconcile_errors_reach_the_reconciled_condition(client: &Client) -> TestResult {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "prod");
    let broken: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad-peer-token"},
        "stringData": {"other": "x"}
    }))?;
    secrets.create(&PostParams::default(), &broken).await?;
    let stores: Api<ShardedStore> = Api::namespaced(client.clone(), "prod");
    stores
        .create(
            &PostParams::default(),
            &store("bad", "nodes: 3\nimage: registry.example/node:1\n")?,
        )
        .await?;
    let (_, reason, message) = eventually(WAIT, "Reconciled=False", || {
        let api = stores.clone();
        async move {
            let s = api.get("bad").await.ok()?;
            condition(&s, "Reconciled").filter(|(status, _, _)| status == "False")
        }
    })
    .await?;
    assert_eq!(reason, "PeerTokenFailed");
    assert!(message.contains("bad-peer-token"), "{message}");

    // Fixing the Secret lets the next reconcile through, and Reconciled flips back.
    let fixed = serde_json::json!({"stringData": {"token": "0123456789abcdef"}});
    secrets
        .patch(
            "bad-peer-token",
            &PatchParams::default(),
            &Patch::Merge(&fixed),
        )
        .await?;
    eventually(
        Duration::from_secs(120),
        "Reconciled=True after the fix",
        || {
            let api = stores.clone();
            async move {
                let s = api.get("bad").await.ok()?;
                condition(&s, "Reconciled").filter(|(status, _, _)| status == "True")
            }
        },
    )
    .await?;
    Ok(())
}

/// `helm template` of the chart (with a store and the `helm test` Pod) applied with
/// `kubectl apply --dry-run=server` into a namespace that enforces "restricted".
async fn chart_passes_server_side_dry_run(plane: &ControlPlane, client: &Client) -> TestResult {
    let Some(helm) = require_tool("helm") else {
        return Ok(());
    };
    create_namespace(client, "ops", &[(RESTRICTED, "restricted")]).await?;
    let rendered = Command::new(helm)
        .args([
            "template",
            "rel",
            "--namespace",
            "ops",
            "--kube-version",
            "1.34.0",
            "--set",
            "store.create=true",
        ])
        .arg(repo_root().join("charts/shardedstore-operator"))
        .output()?;
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let kubeconfig = plane.kubeconfig();
    let kubectl = shardedstore_tests::apiserver_harness::k8s_bin_dir()
        .map(|b| b.join("kubectl"))
        .unwrap_or_else(|| panic!("no kubectl"));
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "apply",
            "--dry-run=server",
            "--server-side",
            "--field-manager=chart-test",
            "-n",
            "ops",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&rendered.stdout)?;
    }
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the rendered chart was refused: {stderr}"
    );
    // Workloads are only warned about: no warning may mention Pod Security.
    assert!(
        !stderr.contains("PodSecurity"),
        "the chart's pods violate \"restricted\": {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "deployment.apps",
        "shardedstore.shardedstore.io",
        "pod/",
        "networkpolicy",
    ] {
        assert!(stdout.contains(kind), "{kind} not applied: {stdout}");
    }
    Ok(())
}
