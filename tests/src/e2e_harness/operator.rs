//! Installing the operator with its Helm chart, as the README tells users to.
//!
//! Image tags and pull policy come from `SHARDEDSTORE_E2E_IMAGE_TAG` (default `dev`) and
//! `SHARDEDSTORE_E2E_PULL_POLICY` (default `IfNotPresent`: the images are loaded into the
//! cluster by `hack/images.sh` or `kind load docker-image`, never pulled).

use super::{Cluster, E2eError, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use std::time::Duration;

/// Namespace the suite installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "shardedstore-e2e-system";
/// Helm release name (the chart's resources are named `<release>-shardedstore-operator`).
pub const OPERATOR_RELEASE: &str = "e2e";
const CHART_NAME: &str = "shardedstore-operator";

/// `helm upgrade --install --wait` of `charts/shardedstore-operator`, then waits until the
/// operator Deployment reports every replica available. With `fresh`, an existing release is
/// uninstalled first, so the operator pods run the images loaded most recently.
pub async fn install_operator(cluster: &Cluster, fresh: bool) -> Result<Deployment, E2eError> {
    let chart = crate::apiserver_harness::repo_root()
        .join("charts")
        .join(CHART_NAME);
    let chart = chart.to_string_lossy().into_owned();
    let tag = std::env::var("SHARDEDSTORE_E2E_IMAGE_TAG").unwrap_or_else(|_| "dev".to_owned());
    let pull =
        std::env::var("SHARDEDSTORE_E2E_PULL_POLICY").unwrap_or_else(|_| "IfNotPresent".to_owned());
    let installed = cluster
        .helm(&["status", OPERATOR_RELEASE, "-n", OPERATOR_NAMESPACE])
        .is_ok();
    if installed && !fresh {
        return wait_available(cluster).await;
    }
    if installed {
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
    let sets = [
        format!("image.tag={tag}"),
        format!("image.pullPolicy={pull}"),
        format!("nodeImage.tag={tag}"),
        "logFormat=text".to_owned(),
        "logLevel=info".to_owned(),
        "resources.requests.cpu=20m".to_owned(),
    ];
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
    wait_available(cluster).await
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
