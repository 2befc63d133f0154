//! End-to-end harness: drives a real Kubernetes cluster (any kubeconfig) with `kubectl` and
//! `helm`, the way a user would, and reads what it needs back as typed objects.
//!
//! - this file: finding the cluster and the tools, running them, the namespace guard.
//! - `operator`: installing the operator with its Helm chart.
//! - `store`: the ShardedStore manifest and the pure checks of its status.
//! - `faults`: killing a node's process inside its container (local cluster only).
//!
//! The kubeconfig is `SHARDEDSTORE_E2E_KUBECONFIG`, by default the local cluster's
//! (`${SHARDEDSTORE_CLUSTER_DIR:-/tmp/shardedstore-cluster}/kubeconfig`, see
//! `docs/local-kubernetes.md`). Everything a test creates lives in its own namespace, deleted
//! when the [`TestNamespace`] guard drops (also on panic) unless `SHARDEDSTORE_E2E_KEEP=1`.

mod faults;
mod operator;
mod store;
mod tls;

pub use faults::{
    ContainerRuntime, PausedProcess, kill9_node_process, node_process, pause_node_process,
};
pub use operator::{OPERATOR_NAMESPACE, OPERATOR_RELEASE, install_operator};
pub use store::{
    StoreManifest, node_pods, partition_map, placement_on_removed_nodes, replica_spread,
    store_problems,
};
pub use tls::{StoreCerts, apply_tls_secret, apply_tokens_secret, store_certs};

use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why an end-to-end step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("no kubeconfig at {0} (set SHARDEDSTORE_E2E_KUBECONFIG or run `make cluster-up`)")]
    NoKubeconfig(PathBuf),
    #[error("{0} not found (set SHARDEDSTORE_{1}, put it on PATH or run `{2}`)")]
    MissingTool(&'static str, &'static str, &'static str),
    #[error("running {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{what}` failed ({status}):\n{stderr}")]
    CommandFailed {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("decoding the output of `{what}`")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("timed out after {after:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("pod {pod} has no running container `node`")]
    NoContainer { pod: String },
    #[error("containerd has no task for container {0}")]
    NoTask(String),
}

/// The cluster under test and the tools that drive it.
#[derive(Clone, Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
}

impl Cluster {
    /// The cluster named by the environment (see the module docs).
    pub fn from_env() -> Result<Self, E2eError> {
        let kubeconfig = std::env::var_os("SHARDEDSTORE_E2E_KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| local_cluster_dir().join("kubeconfig"));
        if !kubeconfig.is_file() {
            return Err(E2eError::NoKubeconfig(kubeconfig));
        }
        let kubectl = crate::tools::find_tool("kubectl")
            .or_else(|| crate::apiserver_harness::k8s_bin_dir().map(|d| d.join("kubectl")))
            .filter(|p| p.is_file())
            .ok_or(E2eError::MissingTool("kubectl", "KUBECTL", "make k8s-bins"))?;
        let helm = crate::tools::find_tool("helm").ok_or(E2eError::MissingTool(
            "helm",
            "HELM",
            "bash hack/install-tools.sh helm",
        ))?;
        Ok(Self {
            kubeconfig,
            kubectl,
            helm,
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl ARGS`; stdout on success.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, E2eError> {
        self.kubectl_with_input(args, None)
    }

    /// `kubectl ARGS` with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_with_input(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, E2eError> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args);
        run(cmd, &format!("kubectl {}", args.join(" ")), input)
    }

    /// `helm ARGS` against the same kubeconfig.
    pub fn helm(&self, args: &[&str]) -> Result<String, E2eError> {
        let mut cmd = Command::new(&self.helm);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, &format!("helm {}", args.join(" ")), None)
    }

    /// `kubectl get ARGS -o json`, decoded.
    pub fn get<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T, E2eError> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&full)?;
        serde_json::from_str(&out).map_err(|source| E2eError::Decode {
            what: format!("kubectl {}", full.join(" ")),
            source,
        })
    }

    /// A fresh namespace named `prefix-<random>`, deleted when the guard drops.
    pub fn namespace(&self, prefix: &str) -> Result<TestNamespace, E2eError> {
        let name = format!("{prefix}-{:04x}", rand::random::<u16>());
        self.kubectl(&["create", "namespace", &name])?;
        // Stores must run where Pod Security "restricted" is enforced.
        self.kubectl(&[
            "label",
            "namespace",
            &name,
            "pod-security.kubernetes.io/enforce=restricted",
        ])?;
        Ok(TestNamespace {
            cluster: self.clone(),
            name,
            passed: std::cell::Cell::new(false),
        })
    }
}

/// The local cluster's state directory (`hack/cluster-up.sh`).
pub fn local_cluster_dir() -> PathBuf {
    std::env::var_os("SHARDEDSTORE_CLUSTER_DIR")
        .map_or_else(|| PathBuf::from("/tmp/shardedstore-cluster"), PathBuf::from)
}

/// Runs `cmd` (fed `input` on stdin, if any) and returns its stdout; a failure to start or a
/// non-zero exit is an error naming `what` with the command's stderr.
pub fn run(mut cmd: Command, what: &str, input: Option<&str>) -> Result<String, E2eError> {
    let spawn_error = |source| E2eError::Spawn {
        what: what.to_owned(),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let output: Output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(E2eError::CommandFailed {
            what: what.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A namespace that is deleted (waiting up to two minutes) when the guard drops. Unless the
/// test called [`TestNamespace::passed`] (a panic or an early `Err` return), it first prints
/// the store's state, events and the operator's log tail, to diagnose the failure.
pub struct TestNamespace {
    cluster: Cluster,
    name: String,
    passed: std::cell::Cell<bool>,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks the test as passed: no diagnostics when the guard drops.
    pub fn passed(&self) {
        self.passed.set(true);
    }

    fn dump_diagnostics(&self) {
        let ns = self.name.as_str();
        let dumps: [&[&str]; 4] = [
            &["-n", ns, "get", "sst,sts,pods,pvc", "-o", "wide"],
            &["-n", ns, "get", "sst", "-o", "yaml"],
            &["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
            &[
                "-n",
                OPERATOR_NAMESPACE,
                "logs",
                "-l",
                "app.kubernetes.io/name=shardedstore-operator",
                "--tail=60",
                "--prefix",
            ],
        ];
        for args in dumps {
            match self.cluster.kubectl(args) {
                Ok(out) => eprintln!("--- kubectl {}\n{out}", args.join(" ")),
                Err(e) => eprintln!("--- kubectl {}: {e}", args.join(" ")),
            }
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() || !self.passed.get() {
            self.dump_diagnostics();
        }
        if std::env::var("SHARDEDSTORE_E2E_KEEP").as_deref() == Ok("1") {
            eprintln!("SHARDEDSTORE_E2E_KEEP=1: leaving namespace {}", self.name);
            return;
        }
        if let Err(e) = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--ignore-not-found",
            "--timeout=120s",
        ]) {
            eprintln!("deleting namespace {}: {e}", self.name);
        }
    }
}

/// Polls `check` every `interval` until it returns `Ok(value)`; `Err(state)` describes what
/// is still missing and ends up in the timeout error.
pub async fn wait_for<T, F>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T, E2eError>
where
    F: FnMut() -> Result<T, String>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(E2eError::Timeout {
                what: what.to_owned(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Ready and not being deleted.
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The partition-map version the store's status reports (0 before the first).
pub fn map_version(store: &shardedstore_operator::crd::ShardedStore) -> i64 {
    store.status.as_ref().map_or(0, |s| s.map_version)
}
