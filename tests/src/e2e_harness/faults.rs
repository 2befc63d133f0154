//! Killing a storage node's process with SIGKILL from the host, as a crash would: the
//! container dies, kubelet restarts it in the same pod on the same volume. Pausing it with
//! SIGSTOP (a replica that falls behind: a stalled VM, a long GC pause) until SIGCONT.
//!
//! This needs the node's container runtime on this host, which the local cluster of
//! `hack/cluster-up.sh` is (containerd at `SHARDEDSTORE_E2E_CONTAINERD_SOCK`, default
//! `/run/shardedstore-cluster/containerd.sock`, driven with `ctr`). On other clusters (kind,
//! remote) [`ContainerRuntime::local`] is `None` and the suite skips this fault.

use super::{E2eError, run};
use k8s_openapi::api::core::v1::Pod;
use std::path::PathBuf;
use std::process::Command;

/// The local containerd, reachable with `ctr`.
#[derive(Clone, Debug)]
pub struct ContainerRuntime {
    socket: PathBuf,
}

impl ContainerRuntime {
    /// The local cluster's containerd, if its socket exists and `ctr` answers.
    pub fn local() -> Option<Self> {
        let socket = std::env::var_os("SHARDEDSTORE_E2E_CONTAINERD_SOCK").map_or_else(
            || PathBuf::from("/run/shardedstore-cluster/containerd.sock"),
            PathBuf::from,
        );
        Self::at(socket)
    }

    /// The containerd listening on `socket`, if it exists and `ctr` answers.
    pub fn at(socket: impl Into<PathBuf>) -> Option<Self> {
        let runtime = Self {
            socket: socket.into(),
        };
        (runtime.socket.exists() && runtime.ctr(&["version"]).is_ok()).then_some(runtime)
    }

    fn ctr(&self, args: &[&str]) -> Result<String, E2eError> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(args);
        run(cmd, &format!("ctr {}", args.join(" ")), None)
    }

    /// Digest of the image `reference` (e.g. `docker.io/shardedstore/operator:dev`) in the
    /// cluster's image store (`ctr -n k8s.io images ls`), `None` when it is not there.
    pub fn image_digest(&self, reference: &str) -> Result<Option<String>, E2eError> {
        let images = self.ctr(&["-n", "k8s.io", "images", "ls"])?;
        Ok(image_digest_in(&images, reference))
    }

    /// Host pid of the task of container `id` (`ctr -n k8s.io tasks ls`).
    fn task_pid(&self, id: &str) -> Result<u32, E2eError> {
        let tasks = self.ctr(&["-n", "k8s.io", "tasks", "ls"])?;
        task_pid_in(&tasks, id).ok_or_else(|| E2eError::NoTask(id.to_owned()))
    }
}

/// The digest column of `reference` in `ctr images ls` output (`REF TYPE DIGEST ...`).
fn image_digest_in(listing: &str, reference: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next()? == reference).then_some(())?;
        let digest = cols.nth(1)?;
        digest.starts_with("sha256:").then(|| digest.to_owned())
    })
}

/// The pid column of container `id` in `ctr tasks ls` output (`TASK PID STATUS`).
fn task_pid_in(listing: &str, id: &str) -> Option<u32> {
    listing.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next()? == id).then_some(())?;
        cols.next()?.parse().ok()
    })
}

/// Host pid of the storage process (container `node`, running) of `pod`.
pub fn node_process(runtime: &ContainerRuntime, pod: &Pod) -> Result<u32, E2eError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "node"))
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .ok_or_else(|| E2eError::NoContainer { pod: name.clone() })?
        .to_owned();
    runtime.task_pid(&id)
}

fn signal(pid: u32, sig: &str, what: &str) -> Result<(), E2eError> {
    let mut cmd = Command::new("kill");
    cmd.args([&format!("-{sig}"), &pid.to_string()]);
    run(cmd, &format!("kill -{sig} {pid} ({what})"), None).map(drop)
}

/// Sends SIGKILL to the storage process (container `node`) of `pod`; returns its host pid.
pub fn kill9_node_process(runtime: &ContainerRuntime, pod: &Pod) -> Result<u32, E2eError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pid = node_process(runtime, pod)?;
    signal(pid, "KILL", &format!("node of {name}"))?;
    Ok(pid)
}

/// Stops the storage process of `pod` with SIGSTOP: it keeps its connections and sockets
/// but answers nothing and applies nothing until [`PausedProcess::resume`] (or the guard's
/// drop, also when a test fails) sends SIGCONT.
pub fn pause_node_process(
    runtime: &ContainerRuntime,
    pod: &Pod,
) -> Result<PausedProcess, E2eError> {
    let what = format!(
        "node of {}",
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let pid = node_process(runtime, pod)?;
    signal(pid, "STOP", &what)?;
    Ok(PausedProcess {
        pid,
        what,
        resumed: false,
    })
}

/// A storage process stopped by [`pause_node_process`].
#[derive(Debug)]
pub struct PausedProcess {
    pid: u32,
    what: String,
    resumed: bool,
}

impl PausedProcess {
    /// Lets the process run again (SIGCONT).
    pub fn resume(mut self) -> Result<(), E2eError> {
        self.resumed = true;
        signal(self.pid, "CONT", &self.what)
    }
}

impl Drop for PausedProcess {
    fn drop(&mut self) {
        if !self.resumed
            && let Err(e) = signal(self.pid, "CONT", &self.what)
        {
            eprintln!("resuming {}: {e}", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{image_digest_in, task_pid_in};

    #[test]
    fn finds_the_digest_of_an_image() {
        let listing = "REF TYPE DIGEST SIZE PLATFORMS LABELS
\
docker.io/shardedstore/node:dev application/vnd.oci.image.manifest.v1+json sha256:aaa 40.1 MiB linux/amd64 io.cri-containerd.image=managed
\
docker.io/shardedstore/operator:dev application/vnd.oci.image.manifest.v1+json sha256:bbb 50.2 MiB linux/amd64 io.cri-containerd.image=managed
";
        let op = "docker.io/shardedstore/operator:dev";
        assert_eq!(image_digest_in(listing, op).as_deref(), Some("sha256:bbb"));
        assert_eq!(
            image_digest_in(listing, "docker.io/shardedstore/operator:v2"),
            None
        );
    }

    #[test]
    fn finds_the_pid_of_a_task() {
        let listing = "TASK    PID     STATUS\nabc     1234    RUNNING\ndef     99      RUNNING\n";
        assert_eq!(task_pid_in(listing, "def"), Some(99));
        assert_eq!(task_pid_in(listing, "abc"), Some(1234));
        assert_eq!(task_pid_in(listing, "xyz"), None);
    }
}
