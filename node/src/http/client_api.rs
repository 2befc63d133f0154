//! The client API (port 7000, docs/protocol.md): `GET/PUT/DELETE /v1/kv/{key}` and `GET /v1/map`.
//! Requests for partitions this node does not lead are forwarded once to the primary.

use super::common::{self, Answer, BodyError};
use super::keys::{KeyError, decode_key};
use crate::map::{Limits, PartitionMap, RESTORE_TOKEN_HEADER};
use crate::node::Node;
use crate::replication::primary::{Condition, ServeError};
use bytes::{Buf, Bytes};
use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::Filter;

/// Marks a request forwarded by another node; such a request is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-shardedstore-forwarded";
pub const VERSION_HEADER: &str = "x-version";
pub const STALENESS_HEADER: &str = "x-staleness-ms";

/// State of the client API server.
pub struct ClientApi {
    node: Arc<Node>,
    http: reqwest::Client,
    /// Limits used before any map is installed.
    default_limits: Limits,
    /// The store's peer token: a restore's client requests carry it while the map says
    /// `restoring`.
    peer_token: String,
}

impl ClientApi {
    /// Forwarded requests leave from `local` (the node's `--host`) when given.
    pub fn new(
        node: Arc<Node>,
        default_limits: Limits,
        local: Option<std::net::IpAddr>,
        peer_token: String,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .local_address(local)
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()?;
        Ok(Arc::new(Self {
            node,
            http,
            default_limits,
            peer_token,
        }))
    }
}

/// The warp filter serving the client API.
pub fn routes(
    api: Arc<ClientApi>,
) -> impl Filter<Extract = (Answer,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let api = api.clone();
                async move {
                    let started = Instant::now();
                    let (op, answer) = api
                        .dispatch(method, path.as_str(), &query, headers, body)
                        .await;
                    api.node
                        .ctx
                        .metrics
                        .observe_request(op, answer.status().as_u16(), started);
                    answer
                }
            },
        )
}

/// Parsed conditional headers; the error is the message of a 400 answer.
fn condition(headers: &HeaderMap) -> Result<Condition, &'static str> {
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
        .is_some_and(|given| common::token_matches(given, peer_token));
    (!restorer).then(|| {
        common::unavailable(
            "restoring",
            "the store is being restored from a backup and serves once the restore is complete",
        )
    })
}

fn wants_local(query: &str) -> bool {
    query.split('&').any(|kv| kv == "consistency=local")
}

impl ClientApi {
    fn limits(&self, map: Option<&PartitionMap>) -> Limits {
        map.map_or(self.default_limits, |m| m.limits)
    }

    async fn dispatch<S, B>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: HeaderMap,
        body: S,
    ) -> (&'static str, Answer)
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
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
        let cond = match condition(&headers) {
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
            if common::content_length(&headers).is_some_and(|n| n > max as u64) {
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
        if let Some(refused) = restore_gate(&map, &headers, &self.peer_token) {
            return (op, refused);
        }
        let forwarded = headers.contains_key(FORWARDED_HEADER);
        let req = Request {
            method,
            path,
            query,
            headers: &headers,
            forwarded,
        };
        let answer = match op {
            "get" if wants_local(query) => self.get_local(&map, key, &req).await,
            "get" => self.get(&map, key, &req).await,
            _ => self.write(&map, key, value, cond, &req).await,
        };
        (op, answer)
    }

    async fn get(&self, map: &PartitionMap, key: Vec<u8>, req: &Request<'_>) -> Answer {
        let p = map.partition_of(&key);
        let result = match self.node.replica(p) {
            Some(r) => r.read(&key).await,
            None => Err(not_primary(map, p)),
        };
        match result {
            Ok(Some(v)) => value_answer(v.version, v.value),
            Ok(None) => common::error(StatusCode::NOT_FOUND, "not_found", "no such key"),
            Err(ServeError::NotPrimary { .. }) => self.to_primary(map, p, req, Bytes::new()).await,
            Err(e) => serve_error(e),
        }
    }

    async fn get_local(&self, map: &PartitionMap, key: Vec<u8>, req: &Request<'_>) -> Answer {
        let p = map.partition_of(&key);
        if let Some(r) = self.node.replica(p)
            && let Some(staleness) = r.local_read_staleness()
        {
            let answer = match r.read_applied(&key) {
                Ok(Some(v)) => value_answer(v.version, v.value),
                Ok(None) => common::error(StatusCode::NOT_FOUND, "not_found", "no such key"),
                Err(e) => serve_error(e),
            };
            return with_header(answer, STALENESS_HEADER, staleness);
        }
        if req.forwarded {
            return misdirected(map);
        }
        let Some(entry) = map.entry(p) else {
            return misdirected(map);
        };
        let me = &self.node.ctx.node_id;
        let my_zone = map.nodes.get(me).and_then(|n| n.zone.clone());
        let candidates: Vec<&String> = entry.in_sync.iter().filter(|n| *n != me).collect();
        let nearest = candidates
            .iter()
            .find(|n| {
                my_zone.is_some() && map.nodes.get(**n).and_then(|i| i.zone.clone()) == my_zone
            })
            .or_else(|| {
                candidates
                    .iter()
                    .find(|n| entry.primary.as_ref() == Some(**n))
            })
            .or_else(|| candidates.first());
        match nearest.and_then(|n| map.nodes.get(*n)) {
            Some(info) => self.forward(&info.client_addr, req, Bytes::new()).await,
            None => common::unavailable("no_replica", "no in-sync replica of the partition"),
        }
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
                with_header(common::empty(status), VERSION_HEADER, o.version)
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

    async fn forward(&self, addr: &str, req: &Request<'_>, body: Bytes) -> Answer {
        self.node.ctx.metrics.forwarded_requests.inc();
        let mut url = format!("http://{addr}{}", req.path);
        if !req.query.is_empty() {
            url.push('?');
            url.push_str(req.query);
        }
        let mut out = self
            .http
            .request(req.method.clone(), url)
            .header(FORWARDED_HEADER, self.node.ctx.node_id.as_str())
            .body(body);
        for h in [
            http::header::IF_MATCH,
            http::header::IF_NONE_MATCH,
            http::header::CONTENT_TYPE,
            http::HeaderName::from_static(RESTORE_TOKEN_HEADER),
        ] {
            if let Some(v) = req.headers.get(&h) {
                out = out.header(h, v.clone());
            }
        }
        let resp = match out.send().await {
            Ok(r) => r,
            Err(e) => {
                return common::unavailable("forward_failed", format!("forwarding to {addr}: {e}"));
            }
        };
        let status = resp.status();
        let mut headers = HeaderMap::new();
        for h in [
            VERSION_HEADER,
            STALENESS_HEADER,
            "retry-after",
            "content-type",
        ] {
            if let Some(v) = resp.headers().get(h) {
                headers.insert(h, v.clone());
            }
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return common::unavailable("forward_failed", format!("reading from {addr}: {e}"));
            }
        };
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        answer
    }
}

/// The parts of a request needed to forward it.
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
