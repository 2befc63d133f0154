//! The client API (port 7000, docs/protocol.md): `GET/PUT/DELETE /v1/kv/{key}` and `GET /v1/map`.
//! Requests for partitions this node does not lead are forwarded once to the primary;
//! `consistency=local` reads are served from an in-sync replica ([`local_read`]).
//! Every key answer names the node that served it (`x-served-by`) and the newest partition
//! map version a node on its way held (`x-map-version`), so a client routing with an older
//! map learns that it should refresh it.

mod forward;
pub mod local_read;

use super::auth::ClientAuth;
use super::common::{self, Answer, BodyError};
use super::keys::{KeyError, decode_key};
use super::serve::ConnInfo;
use crate::map::{Limits, PartitionMap, RESTORE_TOKEN_HEADER};
use crate::node::Node;
use crate::replication::primary::{Condition, ServeError};
use crate::tls::{ClientTls, TlsError};
use bytes::{Buf, Bytes};
use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use local_read::ReadOptions;

/// Marks a request forwarded by another node; such a request is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-shardedstore-forwarded";
pub const VERSION_HEADER: &str = "x-version";
pub const STALENESS_HEADER: &str = "x-staleness-ms";
/// Id of the node whose replica answered a key request.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Session token of a read: the partition's applied sequence number at the serving replica
/// when it read (never below `x-version`). Pass the largest seen back as `x-min-version`.
pub const SESSION_VERSION_HEADER: &str = "x-session-version";
/// A local read answers from a state that includes this partition sequence number.
pub const MIN_VERSION_HEADER: &str = "x-min-version";
/// The newest partition map version held by the nodes a key request passed through.
pub const MAP_VERSION_HEADER: &str = "x-map-version";

/// Why the client API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientApiError {
    #[error("loading the TLS settings of the forwarding client")]
    Tls(#[source] TlsError),
    #[error("building the forwarding client")]
    Build(#[source] reqwest::Error),
}

/// How the client API authenticates, forwards and places itself.
#[derive(Clone, Debug, Default)]
pub struct ClientApiSettings {
    /// Limits used before any map is installed.
    pub default_limits: Limits,
    pub auth: ClientAuth,
    /// Trust of the forwarding client (other nodes' client ports).
    pub tls: ClientTls,
    /// Other nodes' client ports serve TLS.
    pub https: bool,
    /// Sent as the bearer token of forwarded requests when authentication is on.
    pub peer_token: String,
    /// This node's zone (`--zone`); else the map's.
    pub zone: Option<String>,
    /// Source address of forwarded requests (the node's `--host`).
    pub local: Option<std::net::IpAddr>,
}

/// State of the client API server.
pub struct ClientApi {
    node: Arc<Node>,
    http: reqwest::Client,
    settings: ClientApiSettings,
}

impl ClientApi {
    /// Forwarded requests leave from `settings.local` (the node's `--host`) when given.
    pub fn new(node: Arc<Node>, settings: ClientApiSettings) -> Result<Arc<Self>, ClientApiError> {
        let http = crate::tls::http_client_builder(&settings.tls)
            .map_err(ClientApiError::Tls)?
            .local_address(settings.local)
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(ClientApiError::Build)?;
        Ok(Arc::new(Self {
            node,
            http,
            settings,
        }))
    }

    /// True when requests must authenticate (tokens or client certificates).
    pub fn auth_enabled(&self) -> bool {
        self.settings.auth.is_enabled()
    }
}

/// The client API as a hyper service. It is the hottest path of a node (one request per
/// client write), so it reads the request's parts directly instead of through warp's filters,
/// which cloned every request's headers and boxed its body and answer again.
#[derive(Clone)]
pub struct ClientService {
    api: Arc<ClientApi>,
}

impl ClientService {
    pub fn new(api: Arc<ClientApi>) -> Self {
        Self { api }
    }
}

impl tower_service::Service<http::Request<hyper::body::Incoming>> for ClientService {
    type Response = warp::reply::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let api = self.api.clone();
        Box::pin(async move { Ok(warp::Reply::into_response(api.serve(req).await)) })
    }
}

impl ClientApi {
    /// One request: authenticate, dispatch, answer, count.
    async fn serve(&self, req: http::Request<hyper::body::Incoming>) -> Answer {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .copied()
            .unwrap_or_default();
        let headers = &parts.headers;
        let mut body = Box::pin(http_body_util::BodyDataStream::new(body));
        let (op, answer) = match self.settings.auth.check(conn, headers) {
            Ok(()) => {
                self.dispatch(
                    parts.method.clone(),
                    parts.uri.path(),
                    parts.uri.query().unwrap_or(""),
                    headers,
                    &mut body,
                )
                .await
            }
            Err(e) => ("auth", e.answer()),
        };
        // An answer given before the body was read (refusal, oversized value) drains it, so
        // the client receives the answer and not a reset.
        let answer = if answer.status().is_client_error() {
            common::answer_early(answer, headers, &mut body).await
        } else {
            answer
        };
        let code = answer.extensions().get::<common::ErrorCode>();
        self.node.ctx.metrics.observe_request(
            op,
            answer.status().as_u16(),
            code.map(|c| c.0.as_str()),
            started,
        );
        answer
    }
}

/// Parsed conditional headers; the error is the message of a 400 answer.
pub fn condition(headers: &HeaderMap) -> Result<Condition, &'static str> {
    let if_match = headers.get(http::header::IF_MATCH).map(|v| v.to_str());
    let if_none = headers.get(http::header::IF_NONE_MATCH).map(|v| v.to_str());
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err("use either If-Match or If-None-Match"),
        (None, None) => Ok(Condition::Always),
        (None, Some(Ok(v))) if v.trim() == "*" => Ok(Condition::IfAbsent),
        (None, Some(_)) => Err("If-None-Match supports only *"),
        (Some(Ok(v)), None) => {
            let v = v.trim().trim_matches('"');
            if v == "*" {
                return Ok(Condition::IfExists);
            }
            v.parse()
                .map(Condition::IfVersion)
                .map_err(|_| "If-Match takes a version number or *")
        }
        (Some(Err(_)), None) => Err("unreadable If-Match"),
    }
}

fn with_header(mut a: Answer, name: &'static str, value: u64) -> Answer {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        a.headers_mut().insert(name, v);
    }
    a
}

/// The answer refusing a client request while the store is being restored, or `None`
/// when the request may be served: the map does not say `restoring`, or the request is
/// the restore's own (it carries the peer token in [`RESTORE_TOKEN_HEADER`]).
fn restore_gate(map: &PartitionMap, headers: &HeaderMap, peer_token: &str) -> Option<Answer> {
    if !map.restoring {
        return None;
    }
    let restorer = headers
        .get(RESTORE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| common::equal_in_constant_time(given, peer_token));
    (!restorer).then(|| {
        common::unavailable(
            "restoring",
            "the store is being restored from a backup and serves once the restore is complete",
        )
    })
}

/// Marks an answer with this node's map version, unless a forwarded answer already names
/// a newer one (the node it was forwarded to had installed a newer map).
fn with_map_version(a: Answer, version: u64) -> Answer {
    let forwarded = a
        .headers()
        .get(MAP_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    with_header(a, MAP_VERSION_HEADER, forwarded.unwrap_or(0).max(version))
}

fn with_served_by(mut a: Answer, node: &str) -> Answer {
    if let Ok(v) = HeaderValue::from_str(node) {
        a.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    a
}

impl ClientApi {
    fn limits(&self, map: Option<&PartitionMap>) -> Limits {
        map.map_or(self.settings.default_limits, |m| m.limits)
    }

    async fn dispatch<S, B, E>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &mut Pin<Box<S>>,
    ) -> (&'static str, Answer)
    where
        S: Stream<Item = Result<B, E>> + ?Sized,
        B: Buf,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if path == "/v1/map" {
            let answer = match (method, self.node.ctx.map()) {
                (Method::GET, Some(map)) => common::json(StatusCode::OK, &*map),
                (Method::GET, None) => {
                    common::unavailable("no_map", "no partition map installed yet")
                }
                _ => common::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "GET only",
                ),
            };
            return ("map", answer);
        }
        let Some(raw_key) = path.strip_prefix("/v1/kv/") else {
            return (
                "other",
                common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            );
        };
        let op = match method {
            Method::GET => "get",
            Method::PUT => "put",
            Method::DELETE => "delete",
            _ => {
                return (
                    "other",
                    common::error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "GET, PUT or DELETE",
                    ),
                );
            }
        };
        let map = self.node.ctx.map();
        let limits = self.limits(map.as_deref());
        let key = match decode_key(raw_key, limits.max_key_bytes as usize) {
            Ok(k) => k,
            Err(e @ KeyError::TooLarge { .. }) => {
                return (
                    op,
                    common::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "key_too_large",
                        e.to_string(),
                    ),
                );
            }
            Err(e) => {
                return (
                    op,
                    common::error(StatusCode::BAD_REQUEST, "malformed_key", e.to_string()),
                );
            }
        };
        let cond = match condition(headers) {
            Ok(c) => c,
            Err(m) => {
                return (
                    op,
                    common::error(StatusCode::BAD_REQUEST, "bad_precondition", m),
                );
            }
        };
        let value = if method == Method::PUT {
            let max = limits.max_value_bytes as usize;
            if common::content_length(headers).is_some_and(|n| n > max as u64) {
                return (op, value_too_large(max));
            }
            match common::read_body(body, max).await {
                Ok(b) => Some(b),
                Err(BodyError::TooLarge(_)) => return (op, value_too_large(max)),
                Err(e) => {
                    return (
                        op,
                        common::error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
                    );
                }
            }
        } else {
            None
        };
        let Some(map) = map else {
            return (
                op,
                common::unavailable("no_map", "no partition map installed yet"),
            );
        };
        if let Some(refused) = restore_gate(&map, headers, &self.settings.peer_token) {
            return (op, refused);
        }
        let forwarded = headers.contains_key(FORWARDED_HEADER);
        let req = Request {
            method,
            path,
            query,
            headers,
            forwarded,
        };
        let answer = match op {
            "get" => match ReadOptions::parse(query, headers) {
                Ok(o) if o.local => self.get_local(&map, key, &req, &o).await,
                Ok(_) => self.get(&map, key, &req).await,
                Err(m) => common::error(StatusCode::BAD_REQUEST, "bad_read_options", m),
            },
            _ => self.write(&map, key, value, cond, &req).await,
        };
        (op, with_map_version(answer, map.version))
    }

    async fn get(&self, map: &PartitionMap, key: Vec<u8>, req: &Request<'_>) -> Answer {
        let p = map.partition_of(&key);
        let result = match self.node.replica(p) {
            Some(r) => r.read(&key).await,
            None => Err(not_primary(map, p)),
        };
        let (answer, applied) = match result {
            // The state read holds the value's version: the session version is never below it.
            Ok((Some(v), applied)) => (value_answer(v.version, v.value), applied.max(v.version)),
            Ok((None, applied)) => (
                common::error(StatusCode::NOT_FOUND, "not_found", "no such key"),
                applied,
            ),
            Err(ServeError::NotPrimary { .. }) => {
                return self.to_primary(map, p, req, Bytes::new()).await;
            }
            Err(e) => return serve_error(e),
        };
        self.served_here(answer, applied)
    }

    /// Marks an answer of this node's replica: served-by and the session version.
    fn served_here(&self, answer: Answer, applied: u64) -> Answer {
        let answer = with_served_by(answer, &self.node.ctx.node_id);
        with_header(answer, SESSION_VERSION_HEADER, applied)
    }

    async fn write(
        &self,
        map: &PartitionMap,
        key: Vec<u8>,
        value: Option<Bytes>,
        cond: Condition,
        req: &Request<'_>,
    ) -> Answer {
        let p = map.partition_of(&key);
        let is_put = value.is_some();
        let result = match self.node.replica(p) {
            Some(r) => {
                let v = value.clone().map(|v| v.to_vec());
                common::detached(async move { r.write(key, v, cond).await })
                    .await
                    .unwrap_or(Err(ServeError::Unavailable("internal")))
            }
            None => Err(not_primary(map, p)),
        };
        match result {
            Ok(o) => {
                let status = match (is_put, o.existed) {
                    (true, true) => StatusCode::OK,
                    (true, false) => StatusCode::CREATED,
                    (false, _) => StatusCode::NO_CONTENT,
                };
                let a = with_header(common::empty(status), VERSION_HEADER, o.version);
                self.served_here(a, o.version)
            }
            Err(ServeError::NotPrimary { .. }) => {
                self.to_primary(map, p, req, value.unwrap_or_default())
                    .await
            }
            Err(e) => serve_error(e),
        }
    }

    /// Forwards to the partition's primary (one hop only).
    async fn to_primary(
        &self,
        map: &PartitionMap,
        p: u32,
        req: &Request<'_>,
        body: Bytes,
    ) -> Answer {
        let primary = map.entry(p).and_then(|e| e.primary.clone());
        let Some(primary) = primary else {
            return common::unavailable("no_primary", "the partition has no primary");
        };
        if primary == self.node.ctx.node_id {
            return common::unavailable(
                "primary_not_ready",
                "this node is taking the primary role",
            );
        }
        if req.forwarded {
            return misdirected(map);
        }
        match map.nodes.get(&primary) {
            Some(info) => self.forward(&info.client_addr, req, body).await,
            None => misdirected(map),
        }
    }
}

/// The parts of a request needed to forward it.
#[derive(Clone)]
struct Request<'a> {
    method: Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    forwarded: bool,
}

fn not_primary(map: &PartitionMap, p: u32) -> ServeError {
    ServeError::NotPrimary {
        primary: map.entry(p).and_then(|e| e.primary.clone()),
    }
}

fn value_answer(version: u64, value: Vec<u8>) -> Answer {
    let mut a = http::Response::new(Bytes::from(value));
    a.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    with_header(a, VERSION_HEADER, version)
}

fn value_too_large(max: usize) -> Answer {
    common::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
        format!("the value exceeds {max} bytes"),
    )
}

fn misdirected(map: &PartitionMap) -> Answer {
    common::error_with_map(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected",
        "this node cannot serve the key; refresh the partition map",
        Some(map.version),
    )
}

fn serve_error(e: ServeError) -> Answer {
    match e {
        ServeError::PreconditionFailed { current } => {
            let mut r = common::error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the condition does not hold",
            );
            if let Some(v) = current {
                r.headers_mut().insert(VERSION_HEADER, HeaderValue::from(v));
            }
            r
        }
        ServeError::Unavailable(reason) => {
            common::unavailable(reason, format!("partition unavailable: {reason}"))
        }
        ServeError::NotPrimary { .. } => common::unavailable("not_primary", "not the primary"),
        ServeError::Storage(e) => {
            tracing::error!(error = %e, "storage error serving a client request");
            common::error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_current_version_when_the_key_exists() {
        let r = serve_error(ServeError::PreconditionFailed { current: Some(7) });
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        let version = r
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok());
        assert_eq!(version, Some("7"));
        let r = serve_error(ServeError::PreconditionFailed { current: None });
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert!(r.headers().get(VERSION_HEADER).is_none());
    }

    #[test]
    fn a_restoring_store_serves_only_the_restore() {
        let mut map = PartitionMap::empty("s", 1, 1, 1);
        let mut headers = HeaderMap::new();
        assert!(restore_gate(&map, &headers, "tok").is_none());
        map.restoring = true;
        let refused = restore_gate(&map, &headers, "tok").map(|a| a.status());
        assert_eq!(refused, Some(StatusCode::SERVICE_UNAVAILABLE));
        headers.insert(RESTORE_TOKEN_HEADER, HeaderValue::from_static("wrong"));
        assert!(restore_gate(&map, &headers, "tok").is_some());
        headers.insert(RESTORE_TOKEN_HEADER, HeaderValue::from_static("tok"));
        assert!(restore_gate(&map, &headers, "tok").is_none());
    }
}
