//! A real kube-apiserver + etcd (+ kube-controller-manager) on loopback for tests, started
//! with `hack/control-plane.sh` and stopped when the guard drops.
//!
//! The upstream binaries are built once by `hack/k8s-bins.sh` into a cache; tests never
//! build them (a cold build takes far longer than a test should). When they are missing,
//! [`ControlPlane::start`] returns `None` and the caller prints why it skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Why the control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("creating the control plane's directory")]
    TempDir(#[source] std::io::Error),
    #[error("running {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`hack/control-plane.sh up` failed ({status}):\n{stderr}")]
    Up { status: String, stderr: String },
    #[error("reading the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a client from the kubeconfig")]
    Client(#[source] kube::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Directory of the cached upstream binaries: `$SHARDEDSTORE_K8S_BIN`, else the most recently
/// completed build in `${SHARDEDSTORE_CACHE:-~/.cache/shardedstore}/k8s/*/bin`.
pub fn k8s_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SHARDEDSTORE_K8S_BIN") {
        return Some(PathBuf::from(dir));
    }
    let cache = std::env::var_os("SHARDEDSTORE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/shardedstore")))?
        .join("k8s");
    let mut builds: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let marker = e.path().join(".complete");
            let modified = std::fs::metadata(&marker).and_then(|m| m.modified()).ok()?;
            let bin = e.path().join("bin");
            bin.join("kube-apiserver")
                .is_file()
                .then_some((modified, bin))
        })
        .collect();
    builds.sort();
    builds.pop().map(|(_, bin)| bin)
}

/// A running control plane; dropping it runs `hack/control-plane.sh down`.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane, or returns `None` (after printing why) when the Kubernetes
    /// binaries have not been built.
    pub fn start() -> Result<Option<Self>, HarnessError> {
        let Some(bin) = k8s_bin_dir() else {
            assert!(
                std::env::var("SHARDEDSTORE_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "no Kubernetes binaries but SHARDEDSTORE_REQUIRE_TOOLS=1; run hack/k8s-bins.sh"
            );
            eprintln!(
                "SKIPPED: no Kubernetes binaries (run hack/k8s-bins.sh or set SHARDEDSTORE_K8S_BIN); \
                 the real-apiserver tests did not run"
            );
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("sst-apiserver-")
            .tempdir()
            .map_err(HarnessError::TempDir)?;
        let plane = Self { dir, bin };
        let out = plane.script("up")?;
        if !out.status.success() {
            return Err(HarnessError::Up {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(Some(plane))
    }

    fn script(&self, action: &str) -> Result<Output, HarnessError> {
        Command::new(repo_root().join("hack/control-plane.sh"))
            .arg(action)
            .arg(self.dir.path())
            .env("SHARDEDSTORE_K8S_BIN", &self.bin)
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: format!("hack/control-plane.sh {action}"),
                source,
            })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A client authenticated as cluster admin.
    pub async fn client(&self) -> Result<kube::Client, HarnessError> {
        let path = self.kubeconfig();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|source| {
            HarnessError::Kubeconfig {
                path: path.clone(),
                source,
            }
        })?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|source| HarnessError::Kubeconfig { path, source })?;
        shardedstore_node::tls::install_crypto_provider();
        kube::Client::try_from(config).map_err(HarnessError::Client)
    }

    /// Runs the pinned `kubectl` against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, HarnessError> {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: format!("kubectl {}", args.join(" ")),
                source,
            })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        match self.script("down") {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "control-plane.sh down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("control-plane.sh down failed: {e}"),
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The error type of the API-server test helpers below.
pub type TestError = Box<dyn std::error::Error + Send + Sync>;

/// How long the helpers below wait for the API server to act.
const API_WAIT: Duration = Duration::from_secs(60);

/// Applies `crd` (server-side) and waits until the API server reports it Established.
pub async fn install_crd(
    client: &kube::Client,
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Result<(), TestError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let name = crd.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("shardedstore-tests").force(),
        &Patch::Apply(crd),
    )
    .await?;
    crd_established(client, &name).await
}

/// Waits until the API server reports the CRD `name` (e.g. `issuers.cert-manager.io`)
/// Established, however it was applied.
pub async fn crd_established(client: &kube::Client, name: &str) -> Result<(), TestError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::Api;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually(
        API_WAIT,
        &format!("the CRD {name} to be Established"),
        || {
            let crds = crds.clone();
            async move {
                crds.get(name)
                    .await
                    .ok()?
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await?;
    Ok(())
}

/// Creates the namespace `name` with `labels` (e.g. a Pod Security enforcement level).
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<(), TestError> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// A ShardedStore named `name` with the spec given as YAML.
pub fn store(
    name: &str,
    yaml_spec: &str,
) -> Result<shardedstore_operator::crd::ShardedStore, serde_yaml::Error> {
    let spec: shardedstore_operator::crd::ShardedStoreSpec = serde_yaml::from_str(yaml_spec)?;
    Ok(shardedstore_operator::crd::ShardedStore::new(name, spec))
}

/// The status, reason and message of `store`'s condition `type_`.
pub fn condition(
    store: &shardedstore_operator::crd::ShardedStore,
    type_: &str,
) -> Option<(String, String, String)> {
    store
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The operator's settings for a test: quick heartbeats (500 ms) and node leases (4 s), a
/// leader lease the test does not contend for.
pub fn operator_config(identity: &str) -> shardedstore_operator::config::RunConfig {
    shardedstore_operator::config::RunConfig {
        metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        lease_name: "unused".into(),
        lease_namespace: "default".into(),
        identity: Some(identity.into()),
        leader_lease_seconds: 15,
        leader_renew_seconds: 5,
        heartbeat_interval_ms: 500,
        node_lease_ms: 4000,
        default_node_image: None,
        watch_namespace: None,
    }
}

/// The operator's store controller running in this test's process, aborted when dropped
/// (however the test ends).
pub struct InProcessOperator {
    task: tokio::task::JoinHandle<()>,
    pub metrics: std::sync::Arc<shardedstore_operator::metrics::Metrics>,
}

impl InProcessOperator {
    pub fn start(
        client: &kube::Client,
        config: shardedstore_operator::config::RunConfig,
    ) -> Result<Self, TestError> {
        let metrics = std::sync::Arc::new(shardedstore_operator::metrics::Metrics::new()?);
        let ctx = std::sync::Arc::new(shardedstore_operator::controller::Context::new(
            client.clone(),
            config,
            metrics.clone(),
            "test".into(),
        ));
        let task = tokio::spawn(shardedstore_operator::controller::run_controller(ctx));
        Ok(Self { task, metrics })
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
