//! Configuration of `shardedstore-operator run`: every flag also reads an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of the Kubernetes operator process.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints.
    #[arg(
        long,
        env = "SHARDEDSTORE_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_addr: SocketAddr,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(
        long,
        env = "SHARDEDSTORE_LEASE_NAME",
        default_value = "shardedstore-operator-leader"
    )]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(
        long,
        env = "SHARDEDSTORE_LEADER_ELECTION_NAMESPACE",
        default_value = "default"
    )]
    pub lease_namespace: String,

    /// Identity recorded as the Lease holder; defaults to `$POD_NAME`, then the host name.
    #[arg(long, env = "SHARDEDSTORE_IDENTITY")]
    pub identity: Option<String>,

    /// Seconds a leader-election Lease stays valid without renewal.
    #[arg(long, env = "SHARDEDSTORE_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u32,

    /// Seconds between renewals of the leader-election Lease (well below its duration).
    #[arg(long, env = "SHARDEDSTORE_LEADER_RENEW_SECONDS", default_value_t = 5)]
    pub leader_renew_seconds: u32,

    /// Milliseconds between heartbeats the coordinator sends to every storage node. It also
    /// paces failover: a node that stopped answering is failed over at worst lease + drift
    /// margin + 4 intervals + one map write after its last answer (docs/e2e.md, the power
    /// cut), so with the 4 s lease 500 ms keeps that within lease + 5 s, 1000 ms did not.
    #[arg(
        long,
        env = "SHARDEDSTORE_HEARTBEAT_INTERVAL_MS",
        default_value_t = 500
    )]
    pub heartbeat_interval_ms: u64,

    /// Milliseconds of the lease each heartbeat grants a storage node (at least twice the
    /// heartbeat interval).
    #[arg(long, env = "SHARDEDSTORE_NODE_LEASE_MS", default_value_t = 4000)]
    pub node_lease_ms: u64,

    /// Storage-node image for stores whose spec sets no `image`.
    #[arg(long, env = "SHARDEDSTORE_DEFAULT_NODE_IMAGE")]
    pub default_node_image: Option<String>,

    /// Restrict the operator to one namespace; all namespaces when unset.
    #[arg(long, env = "SHARDEDSTORE_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
}

impl RunConfig {
    pub fn leader_lease(&self) -> Duration {
        Duration::from_secs(u64::from(self.leader_lease_seconds))
    }

    pub fn leader_renew(&self) -> Duration {
        Duration::from_secs(u64::from(self.leader_renew_seconds))
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn node_lease(&self) -> Duration {
        Duration::from_millis(self.node_lease_ms)
    }

    /// The Lease holder identity: the flag, else `$HOSTNAME`, else a random one.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("shardedstore-operator-{:08x}", rand::random::<u32>()))
    }
}
