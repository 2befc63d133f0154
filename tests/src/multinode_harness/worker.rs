//! The workers of the local multi-node cluster (`hack/multinode-up.sh`), driven through
//! `hack/multinode-worker.sh`: powering one off as a power cut would and back on, running
//! a command inside one (its network namespace: what a client on that machine would see),
//! and its containerd.

use super::MultinodeError;
use crate::e2e_harness::ContainerRuntime;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where `hack/multinode-lib.sh` puts the workers' containerd sockets (`MN_RUN`).
const RUN_DIR: &str = "/run/shardedstore-multinode";

/// Worker `index` of the local multi-node cluster (node `mn-worker-<index>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker(pub u32);

impl Worker {
    /// The worker behind a node name of the local cluster (`mn-worker-3` → 3).
    pub fn of_node(node: &str) -> Option<Self> {
        node.strip_prefix("mn-worker-")?.parse().ok().map(Self)
    }

    pub fn node_name(self) -> String {
        format!("mn-worker-{}", self.0)
    }

    /// The worker's containerd, if it is running.
    pub fn containerd(self) -> Option<ContainerRuntime> {
        ContainerRuntime::at(format!("{RUN_DIR}/w{}/containerd.sock", self.0))
    }

    /// Runs `program ARGS` inside the worker (its network and UTS namespaces and cgroup), as
    /// a process on that machine would; its exit status and output, whatever the status.
    pub fn run(self, program: &str, args: &[&str]) -> Result<Output, MultinodeError> {
        let index = self.0.to_string();
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(["exec", &index, program]).args(args);
        cmd.output().map_err(|e| {
            MultinodeError::Cluster(crate::e2e_harness::E2eError::Spawn {
                what: format!("{program} in worker {index}"),
                source: e,
            })
        })
    }

    /// Kills the worker's kubelet, containerd, kube-proxy, volume provisioner and every
    /// container at once and takes its network link down. Powered on again when the guard
    /// drops (also when the test fails), unless [`PoweredOff::power_on`] did it first.
    pub fn power_off(self) -> Result<PoweredOff, MultinodeError> {
        worker_script(&["poweroff", &self.0.to_string()])?;
        Ok(PoweredOff {
            worker: self,
            on: false,
        })
    }
}

/// A worker that is off; see [`Worker::power_off`].
#[derive(Debug)]
pub struct PoweredOff {
    worker: Worker,
    on: bool,
}

impl PoweredOff {
    /// Restarts the worker's daemons on its old state and waits until its node is Ready.
    pub fn power_on(mut self) -> Result<(), MultinodeError> {
        self.on = true;
        worker_script(&["start", &self.worker.0.to_string()]).map(drop)
    }
}

impl Drop for PoweredOff {
    fn drop(&mut self) {
        if !self.on
            && let Err(e) = worker_script(&["start", &self.worker.0.to_string()])
        {
            eprintln!("powering worker {} back on: {e}", self.worker.0);
        }
    }
}

/// `curl ARGS` run inside `worker`'s network namespace; curl's stdout.
pub fn worker_curl(worker: Worker, args: &[&str]) -> Result<String, MultinodeError> {
    let mut full = vec!["exec", "", "curl"];
    let index = worker.0.to_string();
    full[1] = &index;
    full.extend_from_slice(args);
    worker_script(&full)
}

fn script() -> PathBuf {
    crate::apiserver_harness::repo_root()
        .join("hack")
        .join("multinode-worker.sh")
}

fn worker_script(args: &[&str]) -> Result<String, MultinodeError> {
    let script = script();
    let what = format!("hack/multinode-worker.sh {}", args.join(" "));
    let mut cmd = Command::new("bash");
    cmd.arg(&script).args(args);
    Ok(crate::e2e_harness::run(cmd, &what, None)?)
}

#[cfg(test)]
mod tests {
    use super::Worker;

    #[test]
    fn node_names_map_to_workers() {
        assert_eq!(Worker::of_node("mn-worker-3"), Some(Worker(3)));
        assert_eq!(Worker(2).node_name(), "mn-worker-2");
        assert_eq!(Worker::of_node("shardedstore-local"), None);
        assert_eq!(Worker::of_node("mn-worker-x"), None);
    }
}
