//! Forwarding a client request to another node's client port (one hop): the request's
//! method, path, query and conditional headers go along; the answer's status, body and
//! protocol headers come back unchanged.

use super::{
    ClientApi, FORWARDED_HEADER, MAP_VERSION_HEADER, MIN_VERSION_HEADER, Request, SERVED_BY_HEADER,
    SESSION_VERSION_HEADER, STALENESS_HEADER, VERSION_HEADER,
};
use crate::admin_api::ErrorBody;
use crate::http::common::{self, Answer};
use bytes::Bytes;
use http::HeaderMap;

/// Request headers a forward carries.
const REQUEST_HEADERS: [&str; 5] = [
    "if-match",
    "if-none-match",
    "content-type",
    MIN_VERSION_HEADER,
    crate::map::RESTORE_TOKEN_HEADER,
];
/// Answer headers a forward passes back.
const ANSWER_HEADERS: [&str; 7] = [
    VERSION_HEADER,
    MAP_VERSION_HEADER,
    STALENESS_HEADER,
    SERVED_BY_HEADER,
    SESSION_VERSION_HEADER,
    "retry-after",
    "content-type",
];

impl ClientApi {
    pub(super) async fn forward(&self, addr: &str, req: &Request<'_>, body: Bytes) -> Answer {
        self.node.ctx.metrics.forwarded_requests.inc();
        let scheme = crate::tls::scheme(self.settings.https);
        let mut url = format!("{scheme}://{addr}{}", req.path);
        if !req.query.is_empty() {
            url.push('?');
            url.push_str(req.query);
        }
        let mut out = self
            .http
            .request(req.method.clone(), url)
            .header(FORWARDED_HEADER, self.node.ctx.node_id.as_str())
            .body(body);
        if self.settings.auth.is_enabled() {
            // This node authenticated the client; the target accepts the peer token.
            out = out.bearer_auth(&self.settings.peer_token);
        }
        for h in REQUEST_HEADERS {
            if let Some(v) = req.headers.get(h) {
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
        for h in ANSWER_HEADERS {
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
        // A relayed error keeps its code for this node's metrics too.
        let code = (status.is_client_error() || status.is_server_error())
            .then(|| serde_json::from_slice::<ErrorBody>(&body).ok())
            .flatten()
            .map(|b| common::ErrorCode(b.error.code));
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        if let Some(code) = code {
            answer.extensions_mut().insert(code);
        }
        answer
    }
}
