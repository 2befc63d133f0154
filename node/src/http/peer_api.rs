//! The peer port (7100): replication frames (`/peer/v1/...`) and the admin API
//! (`/admin/v1/...`, see [`crate::admin_api`]), both behind the peer token.

use super::common::{self, Answer, BodyError};
use crate::admin_api::{AdmitRequest, HandoffRequest, HeartbeatRequest};
use crate::map::{PartitionId, PartitionMap};
use crate::node::{DropError, HeartbeatError, InstallError, Node};
use crate::replication::frame::{
    Append, AppendBatch, BatchReply, Probe, Reply, SnapshotChunk, Status,
};
use crate::replication::primary::AdminRefusal;
use crate::replication::stream::{self, STREAM_PATH, STREAM_PROTOCOL};
use crate::storage::codec::CodecError;
use bytes::{Buf, Bytes};
use futures::Stream;
use http::{HeaderMap, Method, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply as _};

/// State of the peer server.
pub struct PeerApi {
    pub node: Arc<Node>,
    pub token: String,
    /// Largest replication frame or admin body accepted (`--max-peer-body-bytes`).
    pub max_body: usize,
    /// Ends the append streams when the node shuts down.
    pub shutdown: CancellationToken,
}

/// The peer port's service: `GET /peer/v1/stream` opens an append stream (an HTTP/1.1
/// upgrade, see [`crate::replication::stream`]); every other request goes to `routes`.
#[derive(Clone)]
pub struct PeerService<S> {
    api: Arc<PeerApi>,
    routes: S,
}

impl<S> PeerService<S> {
    pub fn new(api: Arc<PeerApi>, routes: S) -> Self {
        Self { api, routes }
    }
}

impl<S> tower_service::Service<http::Request<Incoming>> for PeerService<S>
where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = warp::reply::Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.routes.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        if req.uri().path() == STREAM_PATH {
            let answer = self.api.open_stream(req).into_response();
            return Box::pin(std::future::ready(Ok(answer)));
        }
        Box::pin(self.routes.call(req))
    }
}

/// The warp filter serving the peer port.
pub fn routes(
    api: Arc<PeerApi>,
) -> impl Filter<Extract = (Answer,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method, path: warp::path::FullPath, headers: HeaderMap, body| {
                let api = api.clone();
                async move { api.dispatch(method, path.as_str(), headers, body).await }
            },
        )
}

fn bad_json(e: serde_json::Error) -> Answer {
    common::error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}

fn refusal(e: AdminRefusal, map_version: u64) -> Answer {
    common::error_with_map(
        StatusCode::CONFLICT,
        e.code(),
        e.to_string(),
        Some(map_version),
    )
}

impl PeerApi {
    async fn dispatch<S, B>(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: S,
    ) -> Answer
    where
        S: Stream<Item = Result<B, warp::Error>>,
        B: Buf,
    {
        let mut body = Box::pin(body);
        if let Err(e) = common::check_token(&headers, &self.token) {
            tracing::warn!(path, error = %e, "peer request refused");
            return common::answer_early(e.answer(), &headers, &mut body).await;
        }
        let too_large = || {
            common::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {} bytes", self.max_body),
            )
        };
        if common::content_length(&headers).is_some_and(|n| n > self.max_body as u64) {
            return common::answer_early(too_large(), &headers, &mut body).await;
        }
        let body = match common::read_body(&mut body, self.max_body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(_)) => {
                return common::answer_early(too_large(), &headers, &mut body).await;
            }
            Err(e) => {
                return common::error(StatusCode::BAD_REQUEST, "bad_body", e.to_string());
            }
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (Method::POST, ["peer", "v1", "partitions", p, kind]) => match p.parse() {
                Ok(p) => self.replication(p, kind, &body).await,
                Err(_) => common::error(
                    StatusCode::BAD_REQUEST,
                    "bad_partition",
                    "partition must be a number",
                ),
            },
            (Method::POST, ["peer", "v1", "appends"]) => self.append_batch(&body).await,
            (Method::POST, ["admin", "v1", "map"]) => self.install_map(&body).await,
            (Method::GET, ["admin", "v1", "map"]) => match self.node.ctx.map() {
                Some(map) => common::json(StatusCode::OK, &*map),
                None => common::error(StatusCode::NOT_FOUND, "no_map", "no map installed"),
            },
            (Method::POST, ["admin", "v1", "heartbeat"]) => self.heartbeat(&body),
            (method, ["admin", "v1", "backup", rest @ ..]) => {
                super::backup_api::dispatch(&self.node, method, rest, &body).await
            }
            (method, ["admin", "v1", "partitions", p, rest @ ..]) => {
                let Ok(p) = p.parse::<PartitionId>() else {
                    return common::error(
                        StatusCode::BAD_REQUEST,
                        "bad_partition",
                        "partition must be a number",
                    );
                };
                match (method, rest) {
                    (Method::GET, ["position"]) => match self.node.position(p) {
                        Some(pos) => common::json(StatusCode::OK, &pos),
                        None => common::error(
                            StatusCode::NOT_FOUND,
                            "no_replica",
                            "this node holds no copy",
                        ),
                    },
                    (Method::POST, ["admit"]) => self.admit(p, &body).await,
                    (Method::POST, ["handoff"]) => self.handoff(p, &body).await,
                    (Method::DELETE, []) => self.drop_partition(p).await,
                    _ => common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
                }
            }
            _ => common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    async fn replication(&self, p: PartitionId, kind: &str, body: &Bytes) -> Answer {
        let frame_error = |e: CodecError| {
            self.node.ctx.metrics.rejected_frames.inc();
            tracing::warn!(partition = p, kind, error = %e, "rejected a malformed replication frame");
            common::error(StatusCode::BAD_REQUEST, "bad_frame", e.to_string())
        };
        let not_member = |epoch: u64| {
            let r = Reply {
                status: Status::NotMember,
                epoch,
                last: Default::default(),
            };
            octets(r.encode())
        };
        match kind {
            "probe" => {
                let msg = match Probe::decode(body) {
                    Ok(m) => m,
                    Err(e) => return frame_error(e),
                };
                match self.node.replica_for_peer(p) {
                    Some(r) => {
                        match common::detached(async move { r.handle_probe(msg).await }).await {
                            Some(reply) => octets(reply.encode()),
                            None => common::internal(),
                        }
                    }
                    None => {
                        let reply = crate::replication::frame::ProbeReply {
                            status: Status::NotMember,
                            epoch: 0,
                            base: Default::default(),
                            last: Default::default(),
                            applied_seq: 0,
                            history: Default::default(),
                        };
                        octets(reply.encode())
                    }
                }
            }
            "append" => match handle_append(self.node.clone(), p, body, Detach::Yes).await {
                Ok(reply) => octets(reply.encode()),
                Err(Refused::Frame(e)) => frame_error(e),
                Err(Refused::Storage(e)) => {
                    common::error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
                }
            },
            "snapshot" => {
                let msg = match SnapshotChunk::decode(body) {
                    Ok(m) => m,
                    Err(e) => return frame_error(e),
                };
                match self.node.replica_for_peer(p) {
                    Some(r) => stored_reply(
                        common::detached(async move { r.handle_snapshot(msg).await }).await,
                    ),
                    None => not_member(0),
                }
            }
            _ => common::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such replication message",
            ),
        }
    }

    /// `GET /peer/v1/stream`: checks the peer token once and upgrades the connection to an
    /// append stream, whose batches are each handled as [`Self::append_batch`] handles one.
    fn open_stream(self: &Arc<Self>, mut req: http::Request<Incoming>) -> Answer {
        if let Err(e) = common::check_token(req.headers(), &self.token) {
            tracing::warn!(path = STREAM_PATH, error = %e, "peer request refused");
            return e.answer();
        }
        let asks = req
            .headers()
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
        if req.method() != Method::GET || req.version() != http::Version::HTTP_11 || !asks {
            return common::error(
                StatusCode::BAD_REQUEST,
                "bad_upgrade",
                format!("{STREAM_PATH} takes an HTTP/1.1 GET with `upgrade: {STREAM_PROTOCOL}`"),
            );
        }
        let upgrade = hyper::upgrade::on(&mut req);
        let api = self.clone();
        tokio::spawn(async move {
            let io = match upgrade.await {
                Ok(io) => hyper_util::rt::TokioIo::new(io),
                Err(e) => {
                    tracing::debug!(error = %e, "append stream upgrade failed");
                    return;
                }
            };
            let _open = stream::Counted::new(
                api.node
                    .ctx
                    .metrics
                    .append_streams
                    .with_label_values(&["incoming"]),
            );
            let handler = api.clone();
            stream::serve(io, api.max_body, api.shutdown.clone(), move |payload| {
                let api = handler.clone();
                async move {
                    // The stream runs each batch in a task of its own that nothing cancels.
                    match api.handle_batch(&payload, Detach::No).await {
                        Ok(reply) => (stream::STATUS_OK, reply.encode()),
                        Err(e) => (stream::STATUS_BAD_FRAME, e.to_string().into_bytes()),
                    }
                }
            })
            .await;
        });
        let mut r = http::Response::new(Bytes::new());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = r.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static(STREAM_PROTOCOL),
        );
        r
    }

    /// `POST /peer/v1/appends`: the appends of several partitions, each handled as if it had
    /// come alone, all at once (their durable writes share the writer's group commit).
    async fn append_batch(&self, body: &Bytes) -> Answer {
        match self.handle_batch(body, Detach::Yes).await {
            Ok(reply) => octets(reply.encode()),
            Err(e) => common::error(StatusCode::BAD_REQUEST, "bad_frame", e.to_string()),
        }
    }

    /// Handles every append of an encoded [`AppendBatch`]; the error when it is malformed
    /// (counted and logged).
    async fn handle_batch(&self, body: &[u8], detach: Detach) -> Result<BatchReply, CodecError> {
        let batch = AppendBatch::decode(body).inspect_err(|e| {
            self.node.ctx.metrics.rejected_frames.inc();
            tracing::warn!(error = %e, "rejected a malformed batch of appends");
        })?;
        let handled = batch.items.into_iter().map(|(p, frame)| {
            let node = self.node.clone();
            async move {
                match handle_append(node.clone(), p, &frame, detach).await {
                    Ok(reply) => Ok(reply),
                    Err(Refused::Frame(e)) => {
                        node.ctx.metrics.rejected_frames.inc();
                        tracing::warn!(partition = p, error = %e, "rejected a malformed batched append");
                        Err(StatusCode::BAD_REQUEST.as_u16())
                    }
                    Err(Refused::Storage(e)) => {
                        tracing::warn!(partition = p, error = %e, "batched append failed");
                        Err(StatusCode::INTERNAL_SERVER_ERROR.as_u16())
                    }
                }
            }
        });
        let items = futures::future::join_all(handled).await;
        Ok(BatchReply { items })
    }

    async fn install_map(&self, body: &Bytes) -> Answer {
        let map: PartitionMap = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => return bad_json(e),
        };
        let node = self.node.clone();
        let Some(result) = common::detached(async move { node.install_map(map).await }).await
        else {
            return common::internal();
        };
        match result {
            Ok(version) => common::json(
                StatusCode::OK,
                &crate::admin_api::InstallMapResponse { version },
            ),
            Err(e @ InstallError::Invalid(_)) => {
                common::error(StatusCode::BAD_REQUEST, "invalid_map", e.to_string())
            }
            Err(e @ InstallError::WrongStore { .. }) => {
                common::error(StatusCode::CONFLICT, "wrong_store", e.to_string())
            }
            Err(e @ InstallError::PartitionCount { .. }) => {
                common::error(StatusCode::CONFLICT, "partition_count", e.to_string())
            }
            Err(e @ InstallError::Older { installed, .. }) => common::error_with_map(
                StatusCode::CONFLICT,
                "stale_map",
                e.to_string(),
                Some(installed),
            ),
            Err(e) => common::error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
        }
    }

    fn heartbeat(&self, body: &Bytes) -> Answer {
        let req: HeartbeatRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_json(e),
        };
        match self.node.heartbeat(&req) {
            Ok(resp) => common::json(StatusCode::OK, &resp),
            Err(e @ HeartbeatError::WrongStore { .. }) => {
                common::error(StatusCode::CONFLICT, "wrong_store", e.to_string())
            }
            Err(e @ HeartbeatError::WrongNode { .. }) => {
                common::error(StatusCode::CONFLICT, "wrong_node", e.to_string())
            }
        }
    }

    async fn admit(&self, p: PartitionId, body: &Bytes) -> Answer {
        let req: AdmitRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_json(e),
        };
        let version = self.node.ctx.map_version();
        match self.node.replica(p) {
            Some(r) => match r.admit(&req).await {
                Ok(resp) => common::json(StatusCode::OK, &resp),
                Err(e) => refusal(e, version),
            },
            None => refusal(AdminRefusal::NotPrimary, version),
        }
    }

    async fn handoff(&self, p: PartitionId, body: &Bytes) -> Answer {
        let req: HandoffRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_json(e),
        };
        let version = self.node.ctx.map_version();
        match self.node.replica(p) {
            Some(r) => match r.handoff(&req).await {
                Ok(resp) => common::json(StatusCode::OK, &resp),
                Err(e) => refusal(e, version),
            },
            None => refusal(AdminRefusal::NotPrimary, version),
        }
    }

    async fn drop_partition(&self, p: PartitionId) -> Answer {
        let node = self.node.clone();
        let Some(result) = common::detached(async move { node.drop_partition(p).await }).await
        else {
            return common::internal();
        };
        match result {
            Ok(()) => common::empty(StatusCode::NO_CONTENT),
            Err(e @ DropError::StillMember(_)) => common::error_with_map(
                StatusCode::CONFLICT,
                "still_member",
                e.to_string(),
                Some(self.node.ctx.map_version()),
            ),
            Err(e) => common::error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
        }
    }
}

/// Why an append got no [`Reply`].
enum Refused {
    Frame(CodecError),
    Storage(crate::storage::StorageError),
}

/// Whether an append is handled in a task of its own, so that it completes even when the
/// request that brought it is dropped half-way (a client that hung up).
#[derive(Clone, Copy)]
enum Detach {
    Yes,
    /// The caller is a task nothing cancels (an append stream's batch).
    No,
}

/// Decodes and handles one append of partition `p`. A node that holds no copy answers
/// `NotMember`.
async fn handle_append(
    node: Arc<Node>,
    p: PartitionId,
    frame: &[u8],
    detach: Detach,
) -> Result<Reply, Refused> {
    let msg = Append::decode(frame).map_err(Refused::Frame)?;
    let Some(r) = node.replica_for_peer(p) else {
        return Ok(Reply {
            status: Status::NotMember,
            epoch: 0,
            last: Default::default(),
        });
    };
    let handled = match detach {
        Detach::Yes => common::detached(async move { r.handle_append(msg).await })
            .await
            .unwrap_or(Err(crate::storage::StorageError::WriterGone)),
        Detach::No => r.handle_append(msg).await,
    };
    handled.map_err(Refused::Storage)
}

/// The answer to a replication message a replica handled (detached from the request):
/// its reply, or a storage error (also when the writer task is gone).
fn stored_reply(outcome: Option<Result<Reply, crate::storage::StorageError>>) -> Answer {
    match outcome.unwrap_or(Err(crate::storage::StorageError::WriterGone)) {
        Ok(reply) => octets(reply.encode()),
        Err(e) => common::error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    }
}

fn octets(b: Vec<u8>) -> Answer {
    let mut r = http::Response::new(Bytes::from(b));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    r
}
