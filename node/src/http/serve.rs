//! Serving one port: accept TCP connections, complete the TLS handshake when the port serves
//! TLS, and run HTTP/1.1 or HTTP/2 on each connection with a warp service until shutdown
//! (in-flight requests finish; new connections are refused).
//!
//! warp 0.4's own `serve` speaks plain TCP only, so this is the same loop over hyper-util's
//! connection builder with a tokio-rustls acceptor in front. A client that speaks plain HTTP
//! to a TLS port gets a one-line `400` JSON error instead of a silent close.

use crate::tls::LiveServerConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the connection a request came on proved, as a request extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection is TLS.
    pub tls: bool,
    /// The client presented a certificate that the port's client CA verified.
    pub client_cert: bool,
}

const PLAINTEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 79\r\n\r\n{\"error\":{\"code\":\"tls_required\",\"message\":\"this port serves HTTPS, not HTTP\"}}\n";

/// Serves `svc` on `listener` (over TLS when `tls` is set; each connection with the
/// configuration current when it is accepted) until `shutdown` is cancelled, then waits for
/// open connections to finish their requests.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<LiveServerConfig>,
    svc: S,
    shutdown: CancellationToken,
) where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = svc.clone();
        let acceptor = tls
            .as_ref()
            .map(|live| tokio_rustls::TlsAcceptor::from(live.current()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    run_connection(TokioIo::new(tcp), svc, ConnInfo::default(), watcher).await;
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(&acceptor, tcp).await else {
                        return;
                    };
                    let info = ConnInfo {
                        tls: true,
                        client_cert: stream.get_ref().1.peer_certificates().is_some(),
                    };
                    run_connection(TokioIo::new(stream), svc, info, watcher).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs one HTTP/1.1-or-2 connection whose requests carry `info`, until it closes or the
/// graceful shutdown behind `watcher` ends it.
async fn run_connection<I, S>(io: I, svc: S, info: ConnInfo, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(info);
        let mut svc = svc.clone();
        tower_service::Service::call(&mut svc, req)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = watcher
        .watch(builder.serve_connection_with_upgrades(io, service))
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The TLS handshake, or `None` (logged) when it fails, times out, or the client spoke plain
/// HTTP (it is told so).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut tcp: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
            let _ = tcp.write_all(PLAINTEXT_REFUSAL).await;
            let _ = tcp.shutdown().await;
            tracing::debug!("refused a plain-HTTP connection to a TLS port");
            return None;
        }
        Ok(Ok(1)) => {}
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    // Most likely out of file descriptors: wait for some to be released.
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_refusal_is_a_complete_http_answer() {
        let text = std::str::from_utf8(PLAINTEXT_REFUSAL).unwrap_or("");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "tls_required");
    }
}
