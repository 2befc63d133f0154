//! Start-up and shutdown of a node: open storage, start the writer, load the map, serve the
//! three ports until SIGTERM/Ctrl-C, then stop gracefully. A fatal storage error (a failed
//! write or fsync) aborts the process at once instead: its in-memory state may be ahead of
//! the disk, and a graceful drain would keep answering probes and heartbeats with positions
//! that were never persisted. The restart recovers from the database alone.

use crate::config::NodeConfig;
use crate::context::{Ctx, ReplicationConfig};
use crate::http::auth::ClientAuth;
use crate::http::{client_api, metrics_api, peer_api, serve};
use crate::map::Limits;
use crate::metrics::{MetricsError, NodeMetrics, WriterMetrics};
use crate::node::Node;
use crate::replication::peer_client::{PeerClient, PeerError};
use crate::storage::writer::WriterHandle;
use crate::storage::{StorageError, Store};
use crate::tls::{ClientTls, ServerTls, ServerTlsReloader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("no peer token: set --peer-token or --peer-token-file")]
    NoPeerToken,
    #[error("reading the peer token file {path}")]
    ReadToken {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening storage")]
    Storage(#[from] StorageError),
    #[error("setting up metrics")]
    Metrics(#[from] MetricsError),
    #[error("building the peer client")]
    Peer(#[from] PeerError),
    #[error("setting up the client API")]
    ClientApi(#[from] client_api::ClientApiError),
    #[error("loading the TLS certificate and key")]
    Tls(#[from] crate::tls::TlsError),
    #[error("setting up client authentication")]
    Auth(#[from] crate::http::auth::AuthConfigError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

fn peer_token(cfg: &NodeConfig) -> Result<String, ServerError> {
    if let Some(t) = &cfg.peer_token {
        return Ok(t.clone());
    }
    let path = cfg
        .peer_token_file
        .as_ref()
        .ok_or(ServerError::NoPeerToken)?;
    let t = std::fs::read_to_string(path).map_err(|source| ServerError::ReadToken {
        path: path.display().to_string(),
        source,
    })?;
    Ok(t.trim().to_owned())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Resolves when SIGTERM or Ctrl-C arrives.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a node until it is told to stop.
pub async fn run(cfg: NodeConfig) -> Result<(), ServerError> {
    let cfg = cfg.with_host();
    let token = peer_token(&cfg)?;
    let cache_bytes = crate::storage::cache::cache_bytes(cfg.cache_bytes);
    tracing::info!(
        cache_mib = cache_bytes >> 20,
        configured = cfg.cache_bytes.is_some(),
        "database page cache"
    );
    let store = Store::open_with_cache(&cfg.data_dir, &cfg.node_id, cache_bytes)?;
    store.set_checkpoint_interval(Duration::from_millis(cfg.checkpoint_interval_ms));
    let metrics = Arc::new(NodeMetrics::new()?);
    let writer = WriterHandle::start(
        store.clone(),
        WriterMetrics {
            batch: metrics.commit_batch_commands.clone(),
            fsync: metrics.fsync_seconds.clone(),
            checkpoint: metrics.checkpoint_seconds.clone(),
        },
        |e| {
            tracing::error!(error = %e, "fatal storage error: aborting the process");
            eprintln!("fatal storage error: {e}; aborting");
            std::process::abort();
        },
    );
    let map = store.load_map()?;
    let config = ReplicationConfig {
        log_window: cfg.log_window,
        log_window_bytes: cfg.log_window_bytes,
        catchup_bytes_per_second: cfg.catchup_bytes_per_second,
        write_timeout: Duration::from_millis(cfg.write_timeout_ms),
        appends_in_flight: usize::from(cfg.appends_in_flight),
        ..ReplicationConfig::default()
    };
    let tls = cfg.tls_cert.clone().zip(cfg.tls_key.clone());
    let https = tls.is_some();
    let outgoing = ClientTls {
        ca: cfg.tls_ca.clone(),
        server_name: cfg.tls_server_name.clone(),
        ..ClientTls::default()
    };
    let reloader = match &tls {
        Some((cert, key)) => {
            let client = ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.tls_client_ca.clone(),
                // Forwarding nodes and token holders connect without a client certificate;
                // the client API checks who they are.
                client_cert_optional: true,
            };
            let peer = ServerTls {
                client_ca: None,
                ..client.clone()
            };
            Some(ServerTlsReloader::load(vec![client, peer])?)
        }
        None => None,
    };
    let (client_tls, peer_tls) = match &reloader {
        Some(r) => (r.live(0), r.live(1)),
        None => (None, None),
    };
    let auth = ClientAuth::load(
        cfg.client_token_file.as_deref(),
        cfg.tls_client_ca.is_some(),
        &token,
    )?;
    let peers = PeerClient::with_tls(
        token.clone(),
        Duration::from_secs(30),
        &outgoing,
        https,
        cfg.host,
    )?
    .counting_streams_in(metrics.append_streams.with_label_values(&["outgoing"]));
    let ctx = Arc::new(Ctx::new(
        cfg.node_id.clone(),
        cfg.store.clone(),
        store,
        writer,
        peers,
        metrics,
        config,
        map,
    ));
    let node = Node::start(ctx).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(node.clone().upkeep(shutdown.clone()));
    if let Some(r) = reloader {
        // Rotated certificate files (a renewed Secret) are served without a restart.
        tokio::spawn(r.run(crate::tls::RELOAD_INTERVAL, shutdown.clone()));
    }

    let settings = client_api::ClientApiSettings {
        default_limits: Limits {
            max_key_bytes: cfg.max_key_bytes,
            max_value_bytes: cfg.max_value_bytes,
        },
        auth,
        tls: outgoing,
        https,
        peer_token: token.clone(),
        zone: cfg.zone.clone(),
        local: cfg.host,
    };
    let client = client_api::ClientApi::new(node.clone(), settings)?;
    let peer = Arc::new(peer_api::PeerApi {
        node: node.clone(),
        token,
        max_body: cfg.max_peer_body_bytes,
        shutdown: shutdown.clone(),
    });
    let client_listener = bind(cfg.client_addr).await?;
    let peer_listener = bind(cfg.peer_addr).await?;
    let metrics_listener = bind(cfg.metrics_addr).await?;
    tracing::info!(
        node = %cfg.node_id,
        client = %cfg.client_addr,
        peer = %cfg.peer_addr,
        metrics = %cfg.metrics_addr,
        tls = https,
        client_auth = client.auth_enabled(),
        map_version = node.ctx.map_version(),
        "node serving"
    );
    // `/metrics` stays plain HTTP so Prometheus scrapes it without client credentials.
    let servers = [
        tokio::spawn(serve::serve(
            client_listener,
            client_tls,
            client_api::ClientService::new(client),
            shutdown.clone(),
        )),
        tokio::spawn(serve::serve(
            peer_listener,
            peer_tls,
            peer_api::PeerService::new(peer.clone(), warp::service(peer_api::routes(peer))),
            shutdown.clone(),
        )),
        tokio::spawn(serve::serve(
            metrics_listener,
            None,
            warp::service(metrics_api::routes(node.clone())),
            shutdown.clone(),
        )),
    ];
    termination().await;
    if cfg.shutdown_handoff_seconds > 0 {
        let timeout = Duration::from_secs(cfg.shutdown_handoff_seconds);
        tracing::info!(
            ?timeout,
            "terminating: waiting for primaries to be handed off"
        );
        let (left, end) = crate::shutdown::await_handoff(&node.ctx, timeout).await;
        tracing::info!(primaries_left = left, ?end, "hand-off wait over");
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    Ok(())
}
