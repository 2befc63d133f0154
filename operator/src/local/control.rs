//! The local control endpoint: `GET /status` (coordinator status and node endpoints as JSON),
//! `POST /scale` with `{"nodes": N}`.

use super::supervisor::NodeEndpoint;
use crate::coordinator::CoordinatorStatus;
use serde::{Deserialize, Serialize};
use shardedstore_node::admin_api::{ErrorBody, ErrorDetail};
use tokio::sync::watch;
use warp::{Filter, Reply};

/// Body of `POST /scale`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleRequest {
    pub nodes: u32,
}

/// Answer of `GET /status`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LocalStatus {
    pub desired_nodes: u32,
    pub endpoints: Vec<NodeEndpoint>,
    #[serde(flatten)]
    pub coordinator: CoordinatorStatus,
}

/// Serves the control endpoint on 127.0.0.1:`port` in a background task. Scaling below
/// `min_nodes` (the replication factor) is refused with 422.
pub async fn serve(
    port: u16,
    status: watch::Receiver<CoordinatorStatus>,
    endpoints: watch::Receiver<Vec<NodeEndpoint>>,
    scale: watch::Sender<u32>,
    min_nodes: u32,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let scale = std::sync::Arc::new(scale);
    let scale_for_status = scale.clone();
    let status_route = warp::path("status")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let body = LocalStatus {
                desired_nodes: *scale_for_status.borrow(),
                endpoints: endpoints.borrow().clone(),
                coordinator: status.borrow().clone(),
            };
            warp::reply::json(&body).into_response()
        });
    let scale_route = warp::path("scale")
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::body::json())
        .map(move |req: ScaleRequest| {
            if req.nodes < min_nodes {
                // The same rule as the custom resource's `nodes >= replicationFactor`.
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: "too_few_nodes".to_owned(),
                        message: format!(
                            "{} nodes cannot hold {min_nodes} replicas per partition",
                            req.nodes
                        ),
                        map_version: None,
                    },
                };
                return warp::reply::with_status(
                    warp::reply::json(&body),
                    warp::http::StatusCode::UNPROCESSABLE_ENTITY,
                )
                .into_response();
            }
            scale.send_replace(req.nodes);
            warp::reply::with_status(warp::reply::json(&req), warp::http::StatusCode::ACCEPTED)
                .into_response()
        });
    // Boxed so that the server future is `Send` for any caller.
    let routes: warp::filters::BoxedFilter<(warp::reply::Response,)> =
        status_route.or(scale_route).unify().boxed();
    Ok(tokio::spawn(async move {
        warp::serve(routes).incoming(listener).run().await;
    }))
}
