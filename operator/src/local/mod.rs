//! Local mode: nodes as child processes on 127.0.0.1, a file-backed map store, the same
//! coordinator as on Kubernetes — the demo and test substrate (like `cockroach demo`).
//!
//! - [`supervisor`]: starts, watches, restarts and stops the `shardedstore-node` children.
//! - [`control`]: the local control endpoint (`GET /status`, `POST /scale`).
//! - [`restore`]: `--restore-from`, filling a new store from a backup.
//! - [`tls`]: certificates for `--tls-dir` (given, or generated for a demo).

pub mod control;
pub mod restore;
pub mod supervisor;
pub mod tls;

use crate::coordinator::{
    CoordinatorHandle, FileMapStore, MapStore, NodeClients, Settings, StoreIdentity,
};
use shardedstore_node::tls::ClientTls;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{Ports, Supervisor};

/// Arguments of `shardedstore-operator local` (see [`LOCAL_HELP`] for ports and control).
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = LOCAL_HELP)]
pub struct LocalArgs {
    /// Number of storage nodes.
    #[arg(long, default_value_t = 3, env = "SHARDEDSTORE_LOCAL_NODES")]
    pub nodes: u32,
    /// Partition count (fixed once the store exists).
    #[arg(long, default_value_t = 256, env = "SHARDEDSTORE_LOCAL_PARTITIONS")]
    pub partitions: u32,
    /// Replicas per partition.
    #[arg(
        long,
        default_value_t = 3,
        env = "SHARDEDSTORE_LOCAL_REPLICATION_FACTOR"
    )]
    pub replication_factor: u32,
    /// Writes are refused below this many in-sync replicas (default min(2, replication factor)).
    #[arg(long, env = "SHARDEDSTORE_LOCAL_MIN_IN_SYNC")]
    pub min_in_sync: Option<u32>,
    /// Directory for the map file, node data and node logs.
    #[arg(
        long,
        default_value = "shardedstore-data",
        env = "SHARDEDSTORE_LOCAL_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// Client API port of node 0.
    #[arg(long, default_value_t = 7000, env = "SHARDEDSTORE_LOCAL_PORT")]
    pub port: u16,
    /// Peer/admin API port of node 0.
    #[arg(long, default_value_t = 7100, env = "SHARDEDSTORE_LOCAL_PEER_PORT")]
    pub peer_port: u16,
    /// Metrics port of node 0.
    #[arg(long, default_value_t = 9100, env = "SHARDEDSTORE_LOCAL_METRICS_PORT")]
    pub metrics_port: u16,
    /// Port of the local control endpoint (GET /status, POST /scale).
    #[arg(long, default_value_t = 7090, env = "SHARDEDSTORE_LOCAL_CONTROL_PORT")]
    pub control_port: u16,
    /// The `shardedstore-node` binary (default: next to this executable).
    #[arg(long, env = "SHARDEDSTORE_NODE_BINARY")]
    pub node_binary: Option<PathBuf>,
    /// Shared secret of the peer/admin API.
    #[arg(
        long,
        default_value = "local-peer-token",
        env = "SHARDEDSTORE_PEER_TOKEN",
        hide_env_values = true
    )]
    pub peer_token: String,
    /// Lease granted by each heartbeat, in milliseconds (at least twice --heartbeat-ms).
    #[arg(long, default_value_t = 4000, env = "SHARDEDSTORE_LOCAL_LEASE_MS")]
    pub lease_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 500, env = "SHARDEDSTORE_LOCAL_HEARTBEAT_MS")]
    pub heartbeat_ms: u64,
    /// Seconds a dead node may stay away before its replicas are re-created elsewhere.
    #[arg(
        long,
        default_value_t = 300,
        env = "SHARDEDSTORE_LOCAL_REPLACE_AFTER_SECS"
    )]
    pub replace_after_secs: u64,
    /// Delay before a node that exited is started again (like kubelet), in milliseconds.
    #[arg(
        long,
        default_value_t = 1000,
        env = "SHARDEDSTORE_LOCAL_RESTART_DELAY_MS"
    )]
    pub restart_delay_ms: u64,
    /// Follower lag bound in milliseconds: an in-sync follower with entries outstanding and
    /// no acknowledged progress for this long leaves the in-sync set (never below min-in-sync).
    #[arg(
        long,
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..),
        env = "SHARDEDSTORE_LOCAL_LAG_TIMEOUT_MS"
    )]
    pub lag_timeout_ms: u64,
    /// Moves a node may take part in at once (as source or destination).
    #[arg(
        long,
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..),
        env = "SHARDEDSTORE_LOCAL_MAX_MOVES_PER_NODE"
    )]
    pub max_concurrent_moves_per_node: u32,
    /// Total size in bytes of the partitions a node may be moving at once (by the sizes their
    /// replicas report); a node with no move in flight may always start one.
    #[arg(
        long,
        default_value_t = 512 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1..),
        env = "SHARDEDSTORE_LOCAL_MAX_MOVE_BYTES_PER_NODE"
    )]
    pub max_move_bytes_per_node: u64,
    /// Throttle of catch-up streams in bytes per second (default unthrottled).
    #[arg(long, env = "SHARDEDSTORE_LOCAL_BANDWIDTH")]
    pub bandwidth_bytes_per_second: Option<u64>,
    #[command(flatten)]
    pub restore: restore::RestoreFlags,
    /// Give node i its own loopback address, this one + i (e.g. 127.0.0.10 → node-2 on
    /// 127.0.0.12), for its listeners and its connections to other nodes (default: every
    /// node on 127.0.0.1).
    #[arg(long, env = "SHARDEDSTORE_LOCAL_NODE_HOST_BASE")]
    pub node_host_base: Option<std::net::Ipv4Addr>,
    /// Source address of the operator's connections to the nodes (heartbeats, maps, moves).
    #[arg(long, env = "SHARDEDSTORE_LOCAL_BIND")]
    pub bind: Option<std::net::IpAddr>,
    /// Serve the client and peer ports over TLS with `ca.pem`, `node.pem` and `node-key.pem`
    /// from this directory; when it holds none, a demo CA and certificates are generated
    /// there (plus `client.pem`/`client-key.pem` for mutual TLS).
    #[arg(long, env = "SHARDEDSTORE_LOCAL_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Require clients to present a certificate signed by the --tls-dir CA (or a token from
    /// --client-token-file).
    #[arg(long, requires = "tls_dir", env = "SHARDEDSTORE_LOCAL_MTLS")]
    pub mtls: bool,
    /// Bearer tokens accepted on the client ports, one per line (passed to every node).
    #[arg(long, env = "SHARDEDSTORE_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,
}

impl LocalArgs {
    /// TLS material and the node flags that use it (and client authentication).
    fn security(&self) -> Result<(Option<tls::TlsFiles>, Vec<std::ffi::OsString>), LocalError> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let files = match &self.tls_dir {
            Some(dir) => {
                let files = tls::prepare(dir).map_err(LocalError::Tls)?;
                // Nodes may run with another working directory: hand them absolute paths.
                let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_owned());
                Some(tls::TlsFiles {
                    ca: abs(&files.ca),
                    node_cert: abs(&files.node_cert),
                    node_key: abs(&files.node_key),
                    client_cert: files.client_cert.as_deref().map(abs),
                    client_key: files.client_key.as_deref().map(abs),
                })
            }
            None => None,
        };
        if let Some(f) = &files {
            args.extend(["--tls-cert".into(), f.node_cert.clone().into()]);
            args.extend(["--tls-key".into(), f.node_key.clone().into()]);
            args.extend(["--tls-ca".into(), f.ca.clone().into()]);
            if self.mtls {
                args.extend(["--tls-client-ca".into(), f.ca.clone().into()]);
            }
        }
        if let Some(t) = &self.client_token_file {
            let t = std::fs::canonicalize(t).map_err(|e| LocalError::DataDir(t.clone(), e))?;
            args.extend(["--client-token-file".into(), t.into()]);
        }
        Ok((files, args))
    }
}

impl LocalArgs {
    fn settings(&self) -> Settings {
        let rf = self.replication_factor.max(1);
        Settings {
            replication_factor: rf,
            min_in_sync: self.min_in_sync.unwrap_or(rf.min(2)),
            partitions: self.partitions.max(1),
            max_concurrent_moves_per_node: self.max_concurrent_moves_per_node,
            max_move_bytes_per_node: self.max_move_bytes_per_node,
            bandwidth_bytes_per_second: self.bandwidth_bytes_per_second,
            replace_after: Duration::from_secs(self.replace_after_secs),
            lease: Duration::from_millis(self.lease_ms),
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            lag_timeout: Duration::from_millis(self.lag_timeout_ms),
            ..Settings::default()
        }
    }
}

/// Why local mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--nodes ({nodes}) must be at least --replication-factor ({replication_factor})")]
    TooFewNodes { nodes: u32, replication_factor: u32 },
    #[error(
        "--min-in-sync ({min_in_sync}) must be between 1 and --replication-factor ({replication_factor})"
    )]
    BadMinInSync {
        min_in_sync: u32,
        replication_factor: u32,
    },
    #[error("--heartbeat-ms and --lease-ms")]
    Timing(#[source] crate::coordinator::TimingError),
    #[error("--node-host-base {0} must be a loopback address at most 127.255.255.0")]
    BadNodeHostBase(std::net::Ipv4Addr),
    #[error("creating the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("finding the shardedstore-node binary (pass --node-binary)")]
    NodeBinary(#[source] std::io::Error),
    #[error("building the admin client")]
    AdminClient(#[source] shardedstore_node::client::AdminError),
    #[error("starting the control endpoint")]
    Control(#[source] std::io::Error),
    #[error("waiting for a shutdown signal")]
    Signal(#[source] std::io::Error),
    #[error("restoring the store")]
    Restore(#[source] Box<restore::LocalRestoreError>),
    #[error("preparing the TLS certificates")]
    Tls(#[source] tls::LocalTlsError),
}

/// Extra `--help` text: ports, the control endpoint, restarts.
const LOCAL_HELP: &str = "\
Node i listens on 127.0.0.1 (or --node-host-base + i): client API on --port + i, peer/admin
API on --peer-port + i, metrics on --metrics-port + i. The partition map is kept in <data-dir>/map.json, node data
in <data-dir>/node-i/ and node logs in <data-dir>/node-i.log.

Control endpoint (127.0.0.1:--control-port):
  GET  /status   coordinator status as JSON (map version, partition summary, moves,
                 per-node replicas and primaries, empty nodes) plus node endpoints and pids
  POST /scale    body {\"nodes\": N}: start nodes up to N, or drain nodes with ordinal >= N
                 and stop them once they hold no replica

A node process that exits counts as confirmed dead (its primaries fail over at once) and is
started again after --restart-delay-ms. Restarting the operator with the same --data-dir
resumes from the stored map and adopts nodes that are still running.
Ctrl-C or SIGTERM stops the coordinator and every node.";

/// The store name used in local mode.
pub const LOCAL_STORE: &str = "local";

fn node_binary(args: &LocalArgs) -> Result<PathBuf, LocalError> {
    if let Some(path) = &args.node_binary {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(LocalError::NodeBinary)?;
    let path = me.with_file_name("shardedstore-node");
    if path.exists() {
        Ok(path)
    } else {
        Err(LocalError::NodeBinary(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        )))
    }
}

/// A node host base leaves room for 255 ordinals inside 127.0.0.0/8.
fn node_host_base_ok(base: std::net::Ipv4Addr) -> bool {
    base.is_loopback() && u32::from(base) <= u32::from(std::net::Ipv4Addr::new(127, 255, 255, 0))
}

/// Runs local mode until Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> Result<(), LocalError> {
    let mut settings = args.settings();
    if args.nodes < settings.replication_factor {
        return Err(LocalError::TooFewNodes {
            nodes: args.nodes,
            replication_factor: settings.replication_factor,
        });
    }
    if settings.min_in_sync == 0 || settings.min_in_sync > settings.replication_factor {
        return Err(LocalError::BadMinInSync {
            min_in_sync: settings.min_in_sync,
            replication_factor: settings.replication_factor,
        });
    }
    crate::coordinator::check_lease_timing(settings.heartbeat_interval, settings.lease)
        .map_err(LocalError::Timing)?;
    if let Some(base) = args.node_host_base
        && !node_host_base_ok(base)
    {
        return Err(LocalError::BadNodeHostBase(base));
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| LocalError::DataDir(args.data_dir.clone(), e))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .map_err(|e| LocalError::DataDir(args.data_dir.clone(), e))?;
    let binary = node_binary(&args)?;
    let restore_step = restore::prepare(&args.restore, &data_dir)
        .await
        .map_err(|e| LocalError::Restore(Box::new(e)))?;
    // Until the restore is complete the nodes serve only its writes.
    settings.restoring = matches!(restore_step, restore::Step::Restore(_));
    let (tls_files, node_args) = args.security()?;
    let heartbeat_timeout = settings.heartbeat_interval.max(Duration::from_millis(300)) * 2;
    let trust = ClientTls {
        ca: tls_files.as_ref().map(|f| f.ca.clone()),
        ..ClientTls::default()
    };
    let transport = NodeClients::new(
        args.peer_token.clone(),
        heartbeat_timeout,
        tls_files.is_some().then_some(trust),
        args.bind,
    )
    .map_err(LocalError::AdminClient)?;
    let map_store = Arc::new(FileMapStore::new(data_dir.join("map.json")));
    let ports = Ports {
        client: args.port,
        peer: args.peer_port,
        metrics: args.metrics_port,
        host_base: args.node_host_base,
    };
    let mut supervisor = Supervisor::new(
        binary,
        data_dir.clone(),
        ports,
        args.peer_token.clone(),
        Duration::from_millis(args.restart_delay_ms),
    );
    supervisor.set_node_args(node_args);
    supervisor.scale(args.nodes);
    // A restart during a drain (or with fewer --nodes than before) must keep draining the
    // nodes beyond the count that still hold replicas, not take them for dead.
    if let Ok(Some((map, _))) = map_store.load().await {
        for ordinal in Supervisor::holding_beyond(&map, args.nodes) {
            tracing::info!(node = %Supervisor::node_id(ordinal), "still holds replicas: draining it");
            supervisor.keep_for_drain(ordinal);
        }
    }
    supervisor.reconcile();
    let coordinator = CoordinatorHandle::spawn(
        StoreIdentity {
            name: LOCAL_STORE.to_owned(),
        },
        settings.clone(),
        supervisor.membership(),
        map_store,
        Arc::new(transport),
    );
    let (scale_tx, scale_rx) = tokio::sync::watch::channel(args.nodes);
    let control = control::serve(
        args.control_port,
        coordinator.watch_status(),
        supervisor.endpoints_handle(),
        scale_tx,
        settings.replication_factor,
    )
    .await
    .map_err(LocalError::Control)?;

    if let restore::Step::Restore(dest) = &restore_step {
        let addrs: Vec<String> = (0..args.nodes)
            .map(|i| format!("127.0.0.1:{}", u32::from(args.port) + i))
            .collect();
        let tls = tls_files.as_ref().map(|f| ClientTls {
            ca: Some(f.ca.clone()),
            ..ClientTls::default()
        });
        let restored = restore::run(dest, &data_dir, &addrs, &args.peer_token, tls, || {
            coordinator.update_settings(Settings {
                restoring: false,
                ..settings.clone()
            })
        })
        .await;
        if let Err(e) = restored {
            control.abort();
            coordinator.stop().await;
            supervisor.stop_all().await;
            return Err(LocalError::Restore(Box::new(e)));
        }
    }
    println!("ShardedStore local mode: data in {}", data_dir.display());
    for line in supervisor.describe() {
        println!("  {line}");
    }
    if let Some(f) = &tls_files {
        println!(
            "  TLS: client and peer ports speak HTTPS; CA {} (shardedstore --ca {} -e https://127.0.0.1:{})",
            f.ca.display(),
            f.ca.display(),
            args.port
        );
    }
    println!("  control: http://127.0.0.1:{}/status", args.control_port);
    println!("Ctrl-C stops everything.");

    let result = supervise(&mut supervisor, &coordinator, scale_rx).await;
    control.abort();
    coordinator.stop().await;
    supervisor.stop_all().await;
    result
}

/// Keeps children and membership in line until a shutdown signal arrives.
async fn supervise(
    supervisor: &mut Supervisor,
    coordinator: &CoordinatorHandle,
    mut scale: tokio::sync::watch::Receiver<u32>,
) -> Result<(), LocalError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(LocalError::Signal)?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut sent = supervisor.membership();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            changed = scale.changed() => {
                if changed.is_ok() {
                    let n = *scale.borrow();
                    supervisor.scale(n);
                }
            }
            _ = tick.tick() => {}
        }
        supervisor.retire(&coordinator.status().empty_nodes);
        supervisor.reconcile();
        let membership = supervisor.membership();
        if membership != sent {
            coordinator.update_membership(membership.clone());
            sent = membership;
        }
    }
}

/// Logs to stderr, level from `RUST_LOG` (default info), JSON when `LOG_FORMAT=json`.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::node_host_base_ok;

    #[test]
    fn a_node_host_base_must_be_loopback_with_room_for_the_ordinals() {
        assert!(node_host_base_ok([127, 0, 0, 10].into()));
        assert!(node_host_base_ok([127, 255, 255, 0].into()));
        assert!(!node_host_base_ok([127, 255, 255, 1].into()));
        assert!(!node_host_base_ok([10, 0, 0, 1].into()));
    }
}
