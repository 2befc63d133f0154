//! Installing the operator with its Helm chart, as the README tells users to.
//!
//! Image tags and pull policy come from `SHARDEDSTORE_E2E_IMAGE_TAG` (default `dev`) and
//! `SHARDEDSTORE_E2E_PULL_POLICY` (default `IfNotPresent`: the images are loaded into the
//! cluster by `hack/images.sh` or `kind load docker-image`, never pulled).
//!
//! A reused release must run the operator image loaded last, not one loaded before (the
//! tag stays `dev`, so Helm alone would see no change). On the local cluster the harness
//! reads the digest of the loaded image from containerd and puts it in the operator pods'
//! annotation [`IMAGE_ANNOTATION`]: a release whose pods carry another digest (or none) is
//! upgraded, which rolls the pods onto the loaded image. Where containerd is not reachable
//! (kind, remote clusters), the first installation of a test process reinstalls the release.

use super::{Cluster, ContainerRuntime, E2eError, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Namespace the suite installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "shardedstore-e2e-system";
/// Helm release name (the chart's resources are named `<release>-shardedstore-operator`).
pub const OPERATOR_RELEASE: &str = "e2e";
const CHART_NAME: &str = "shardedstore-operator";
/// Pod annotation naming the digest of the operator image the pods were created for.
pub const IMAGE_ANNOTATION: &str = "e2e-operator-image";

/// This process has installed (or verified) the operator already.
static INSTALLED_HERE: AtomicBool = AtomicBool::new(false);

/// The image the release's pods should run: the digest of `shardedstore/operator:<tag>` in
/// the local cluster's containerd, when there is one to ask.
fn loaded_operator_image(tag: &str) -> Result<Option<String>, E2eError> {
    match ContainerRuntime::local() {
        Some(runtime) => runtime.image_digest(&format!("docker.io/shardedstore/operator:{tag}")),
        None => Ok(None),
    }
}

/// The image digest every pod of the release's Deployment was created for, when they all
/// agree (and are the Deployment's current template).
fn running_operator_image(cluster: &Cluster) -> Option<String> {
    let name = format!("{OPERATOR_RELEASE}-{CHART_NAME}");
    let d: Deployment = cluster
        .get(&["deployment", &name, "-n", OPERATOR_NAMESPACE])
        .ok()?;
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(IMAGE_ANNOTATION))
        .cloned()?;
    // Only the items: `kubectl get` answers a `kind: List` that `k8s_openapi::List` refuses.
    #[derive(serde::Deserialize)]
    struct Items {
        items: Vec<Pod>,
    }
    let pods: Items = cluster
        .get(&[
            "pods",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            &format!(
                "app.kubernetes.io/instance={OPERATOR_RELEASE},shardedstore.io/component=operator"
            ),
        ])
        .ok()?;
    let all_current = !pods.items.is_empty()
        && pods.items.iter().all(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IMAGE_ANNOTATION))
                == Some(&template)
        });
    all_current.then_some(template)
}

/// `helm upgrade --install --wait` of `charts/shardedstore-operator`, then waits until the
/// operator Deployment reports every replica available. With `fresh`, an existing release is
/// uninstalled first. Without, an existing release is kept only when its pods run the
/// operator image loaded most recently (see the module comment); otherwise it is upgraded.
pub async fn install_operator(cluster: &Cluster, fresh: bool) -> Result<Deployment, E2eError> {
    let chart = crate::apiserver_harness::repo_root()
        .join("charts")
        .join(CHART_NAME);
    let chart = chart.to_string_lossy().into_owned();
    let tag = std::env::var("SHARDEDSTORE_E2E_IMAGE_TAG").unwrap_or_else(|_| "dev".to_owned());
    let pull =
        std::env::var("SHARDEDSTORE_E2E_PULL_POLICY").unwrap_or_else(|_| "IfNotPresent".to_owned());
    let loaded = loaded_operator_image(&tag)?;
    let installed = cluster
        .helm(&["status", OPERATOR_RELEASE, "-n", OPERATOR_NAMESPACE])
        .is_ok();
    // Without a digest to compare, only a release this process installed is known current.
    let reinstall = fresh || (loaded.is_none() && !INSTALLED_HERE.load(Ordering::SeqCst));
    if installed && !reinstall {
        let running = running_operator_image(cluster);
        if loaded.is_none() || running == loaded {
            return wait_available(cluster).await;
        }
        eprintln!(
            "the installed operator runs image {} but {} is loaded: upgrading the release",
            running.as_deref().unwrap_or("(unknown)"),
            loaded.as_deref().unwrap_or("(unknown)")
        );
    }
    if installed && reinstall {
        cluster.helm(&[
            "uninstall",
            OPERATOR_RELEASE,
            "-n",
            OPERATOR_NAMESPACE,
            "--wait",
            "--timeout",
            "120s",
        ])?;
    }
    // Helm installs `crds/` only on first install and never upgrades it; apply the chart's
    // CRD first so the cluster always has the schema this checkout expects.
    let crd = format!("{chart}/crds");
    cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crd])?;
    let mut sets = vec![
        format!("image.tag={tag}"),
        format!("image.pullPolicy={pull}"),
        format!("nodeImage.tag={tag}"),
        "logFormat=text".to_owned(),
        "logLevel=info".to_owned(),
        "resources.requests.cpu=20m".to_owned(),
    ];
    if let Some(digest) = &loaded {
        sets.push(format!("podAnnotations.{IMAGE_ANNOTATION}={digest}"));
    }
    let mut args = vec![
        "upgrade",
        "--install",
        OPERATOR_RELEASE,
        chart.as_str(),
        "-n",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ];
    for s in &sets {
        args.extend_from_slice(&["--set", s.as_str()]);
    }
    cluster.helm(&args)?;
    let deployment = wait_available(cluster).await?;
    if let Some(digest) = &loaded {
        wait_for(
            "every operator pod to be created for the loaded image",
            Duration::from_secs(180),
            Duration::from_secs(1),
            || match running_operator_image(cluster) {
                Some(running) if &running == digest => Ok(()),
                other => Err(format!("pods annotated with {other:?}, want {digest}")),
            },
        )
        .await?;
    }
    INSTALLED_HERE.store(true, Ordering::SeqCst);
    Ok(deployment)
}

/// The operator Deployment once every desired replica is updated and available.
async fn wait_available(cluster: &Cluster) -> Result<Deployment, E2eError> {
    let name = format!("{OPERATOR_RELEASE}-{CHART_NAME}");
    wait_for(
        "the operator Deployment to be available",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            let d: Deployment = cluster
                .get(&["deployment", &name, "-n", OPERATOR_NAMESPACE])
                .map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = d.status.clone().unwrap_or_default();
            let available = status.available_replicas.unwrap_or(0);
            let updated = status.updated_replicas.unwrap_or(0);
            if want > 0 && available >= want && updated >= want {
                Ok(d)
            } else {
                Err(format!("{available}/{want} available, {updated} updated"))
            }
        },
    )
    .await
}
