//! The metrics port (9100): `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use super::common::{self, Answer};
use crate::node::Node;
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use warp::Filter;

pub fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (Answer,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    warp::path::full().map(move |path: warp::path::FullPath| match path.as_str() {
        "/metrics" => {
            let mut r = http::Response::new(Bytes::from(node.ctx.metrics.render()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" => common::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        // Ready once storage is open and the servers run; the map comes from the operator
        // after the pod is Ready, so it is reported but not required.
        "/readyz" => common::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready", "mapVersion": node.ctx.map_version()}),
        ),
        _ => common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    })
}
