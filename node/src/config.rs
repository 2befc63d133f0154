//! Configuration of the `shardedstore-node` binary: every flag is also an environment variable.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// ShardedStore storage node.
#[derive(Parser, Debug, Clone)]
#[command(name = "shardedstore-node", version, about)]
pub struct NodeConfig {
    /// Node id: the pod name in Kubernetes, `node-<i>` in local mode. Must match the map.
    #[arg(long, env = "SHARDEDSTORE_NODE_ID")]
    pub node_id: String,

    /// Name of the store this node belongs to (maps of other stores are refused).
    #[arg(
        long = "store",
        env = "SHARDEDSTORE_STORE",
        default_value = "shardedstore"
    )]
    pub store: String,

    /// Directory holding the node's database.
    #[arg(
        long,
        env = "SHARDEDSTORE_DATA_DIR",
        default_value = "/var/lib/shardedstore"
    )]
    pub data_dir: PathBuf,

    /// The node's own address: when set, the client, peer and metrics listeners bind it
    /// (keeping the ports of --client-addr, --peer-addr and --metrics-addr) and connections to
    /// other nodes leave from it. Local mode gives each node its own 127.0.0.x, so that
    /// firewall rules by address can cut chosen links.
    #[arg(long, env = "SHARDEDSTORE_HOST")]
    pub host: Option<IpAddr>,

    /// Listen address of the client API.
    #[arg(long, env = "SHARDEDSTORE_CLIENT_ADDR", default_value = "0.0.0.0:7000")]
    pub client_addr: SocketAddr,

    /// Listen address of the peer port (replication and admin API).
    #[arg(long, env = "SHARDEDSTORE_PEER_ADDR", default_value = "0.0.0.0:7100")]
    pub peer_addr: SocketAddr,

    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "SHARDEDSTORE_METRICS_ADDR",
        default_value = "0.0.0.0:9100"
    )]
    pub metrics_addr: SocketAddr,

    /// Shared secret of the peer port (prefer --peer-token-file).
    #[arg(
        long,
        env = "SHARDEDSTORE_PEER_TOKEN",
        conflicts_with = "peer_token_file",
        hide_env_values = true
    )]
    pub peer_token: Option<String>,

    /// File holding the shared secret of the peer port (e.g. a mounted Secret).
    #[arg(long, env = "SHARDEDSTORE_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,

    /// Log entries kept behind the applied point even when every replica has them, so a
    /// restarted replica usually catches up without a snapshot.
    #[arg(long, env = "SHARDEDSTORE_LOG_WINDOW", default_value_t = 100_000)]
    pub log_window: u64,

    /// Most bytes of those entries kept per partition, and never more than the partition's
    /// data (at least 4 MiB): a replica further behind is caught up by a snapshot, which is
    /// then the smaller transfer.
    #[arg(
        long,
        env = "SHARDEDSTORE_LOG_WINDOW_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub log_window_bytes: u64,

    /// Snapshot streaming limit in bytes/second when the map sets none (0 = unlimited).
    #[arg(
        long,
        env = "SHARDEDSTORE_CATCHUP_BYTES_PER_SECOND",
        default_value_t = 0
    )]
    pub catchup_bytes_per_second: u64,

    /// Longest key accepted before a map (which carries the store's limits) is installed.
    #[arg(long, env = "SHARDEDSTORE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: u32,

    /// Largest value accepted before a map is installed.
    #[arg(long, env = "SHARDEDSTORE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: u32,

    /// How long a client write waits for its commit before answering 503.
    #[arg(long, env = "SHARDEDSTORE_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// How often the database is checkpointed (committed durably, so the write-ahead log's
    /// older records can be dropped), in milliseconds, 50–60000; also after 16 MiB of log
    /// records. Each checkpoint comes after a random 3/4 to all of the interval, so that
    /// nodes do not checkpoint in step. Shorter: smaller bursts of write-back, more commits;
    /// longer: fewer commits, larger bursts, and a longer log to replay after a crash.
    #[arg(
        long,
        env = "SHARDEDSTORE_CHECKPOINT_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(
            crate::storage::wal::CHECKPOINT_INTERVAL_RANGE.0.as_millis() as u64
                ..=crate::storage::wal::CHECKPOINT_INTERVAL_RANGE.1.as_millis() as u64
        )
    )]
    pub checkpoint_interval_ms: u64,

    /// Replication appends a primary keeps in flight per partition and member (1–4). Every
    /// node of this version takes appends that arrive out of order; raise it above 1 only
    /// once no node of an older version remains.
    #[arg(
        long,
        env = "SHARDEDSTORE_APPENDS_IN_FLIGHT",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=crate::replication::session::APPENDS_IN_FLIGHT as i64)
    )]
    pub appends_in_flight: u8,

    /// On SIGTERM, keep serving up to this many seconds while the node still leads partitions
    /// another in-sync replica could take over (the operator hands them off) and holds a lease
    /// (without one no operator is coordinating it, e.g. the store was deleted); 0 stops at
    /// once.
    #[arg(
        long,
        env = "SHARDEDSTORE_SHUTDOWN_HANDOFF_SECONDS",
        default_value_t = 0
    )]
    pub shutdown_handoff_seconds: u64,

    /// PEM certificate chain served on the client and peer ports. With --tls-key both ports
    /// speak TLS only (peer traffic then needs TLS and the peer token); `/metrics` stays HTTP.
    #[arg(long, env = "SHARDEDSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SHARDEDSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM) trusted when this node calls other nodes over TLS (replication,
    /// forwarded requests); default: the system's roots.
    #[arg(long, env = "SHARDEDSTORE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Verify other nodes' certificates for this name instead of the address dialled: on
    /// Kubernetes the map addresses nodes by pod IP while all of a store's nodes serve one
    /// certificate naming the store's client Service.
    #[arg(long, env = "SHARDEDSTORE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// CA bundle (PEM) whose client certificates authenticate clients on the client port
    /// (mutual TLS). Clients without one must then present a token from --client-token-file.
    #[arg(long, env = "SHARDEDSTORE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// File of bearer tokens accepted on the client port, one per line (blank lines and
    /// `#` comments ignored). Requests without a valid token get 401 (missing) or 403 (wrong).
    #[arg(long, env = "SHARDEDSTORE_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,

    /// Zone of this node (in Kubernetes the `topology.kubernetes.io/zone` label of its
    /// Kubernetes node). Local reads forwarded by this node prefer replicas in the same zone;
    /// without it, the zone recorded for this node in the map is used.
    #[arg(long, env = "SHARDEDSTORE_ZONE")]
    pub zone: Option<String>,

    /// Largest request body accepted on the peer port (replication frames, admin calls).
    #[arg(
        long,
        env = "SHARDEDSTORE_MAX_PEER_BODY_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub max_peer_body_bytes: usize,

    /// Memory for the database's page cache (pages read, and pages written but not yet
    /// checkpointed), in bytes, at least 16 MiB. Default: a quarter of the container's memory
    /// limit (its cgroup's), at most 128 MiB; 128 MiB without a limit. A larger cache keeps more
    /// of the data in memory for reads, and makes a new replica fill more slowly.
    #[arg(
        long,
        env = "SHARDEDSTORE_CACHE_BYTES",
        value_parser = parse_cache_bytes
    )]
    pub cache_bytes: Option<u64>,
}

/// `--cache-bytes`: a whole number of bytes, at least [`crate::storage::cache::MIN_BYTES`].
fn parse_cache_bytes(s: &str) -> Result<u64, String> {
    let min = crate::storage::cache::MIN_BYTES;
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes (e.g. 134217728 for 128 MiB)"))?;
    if n < min {
        return Err(format!(
            "{n} bytes is below the smallest cache, {min} bytes ({} MiB)",
            min >> 20
        ));
    }
    Ok(n)
}

impl NodeConfig {
    /// The configuration with `--host` applied to the three listen addresses.
    pub fn with_host(mut self) -> Self {
        if let Some(ip) = self.host {
            for addr in [
                &mut self.client_addr,
                &mut self.peer_addr,
                &mut self.metrics_addr,
            ] {
                addr.set_ip(ip);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::NodeConfig;
    use clap::Parser;

    fn parse(args: &[&str]) -> NodeConfig {
        NodeConfig::try_parse_from([&["shardedstore-node", "--node-id", "n"], args].concat())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn host_replaces_the_address_of_every_listener_and_keeps_the_ports() {
        let cfg = parse(&["--host", "127.0.0.12", "--peer-addr", "0.0.0.0:7301"]).with_host();
        assert_eq!(cfg.client_addr.to_string(), "127.0.0.12:7000");
        assert_eq!(cfg.peer_addr.to_string(), "127.0.0.12:7301");
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.12:9100");
    }

    #[test]
    fn without_host_the_listen_addresses_stay_as_given() {
        let cfg = parse(&["--client-addr", "127.0.0.1:7005"]).with_host();
        assert_eq!(cfg.client_addr.to_string(), "127.0.0.1:7005");
        assert_eq!(cfg.peer_addr.to_string(), "0.0.0.0:7100");
    }

    #[test]
    fn a_cache_below_the_minimum_or_not_in_bytes_is_refused() {
        assert_eq!(
            parse(&["--cache-bytes", "67108864"]).cache_bytes,
            Some(64 << 20)
        );
        assert_eq!(parse(&[]).cache_bytes, None);
        for bad in ["1048576", "-1", "64MiB"] {
            let arg = format!("--cache-bytes={bad}");
            let r = NodeConfig::try_parse_from(["shardedstore-node", "--node-id", "n", &arg]);
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            assert!(e.contains("bytes"), "{e}");
        }
    }

    #[test]
    fn a_host_that_is_not_an_ip_address_is_refused() {
        let r =
            NodeConfig::try_parse_from(["shardedstore-node", "--node-id", "n", "--host", "node-1"]);
        assert!(r.is_err());
    }
}
