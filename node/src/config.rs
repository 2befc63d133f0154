//! Configuration of the `shardedstore-node` binary: every flag is also an environment variable.

use clap::Parser;
use std::net::SocketAddr;
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
}
