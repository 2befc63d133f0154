//! Backup endpoints of the peer port, behind the peer token like the rest of it:
//! - `GET  /admin/v1/backup/partitions/{p}/point`: the primary's backup point of partition p;
//! - `POST /admin/v1/backup/partitions/{p}/export`: write this replica's snapshot of p to a
//!   destination ([`crate::backup::export::ExportRequest`]) and answer the object's
//!   [`crate::backup::manifest::PartitionObject`].

use super::common::{self, Answer};
use crate::backup::export::{self, ExportError, ExportRequest};
use crate::backup::manifest::object_name;
use crate::map::PartitionId;
use crate::node::Node;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::sync::Arc;

/// Serves `rest`, the path segments after `/admin/v1/backup/`.
pub async fn dispatch(node: &Arc<Node>, method: Method, rest: &[&str], body: &Bytes) -> Answer {
    let (p, action) = match rest {
        ["partitions", p, action] => match p.parse::<PartitionId>() {
            Ok(p) => (p, *action),
            Err(_) => {
                return common::error(
                    StatusCode::BAD_REQUEST,
                    "bad_partition",
                    "partition must be a number",
                );
            }
        },
        _ => return common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    match (method, action) {
        (Method::GET, "point") => match export::backup_point(node, p) {
            Ok(point) => common::json(StatusCode::OK, &point),
            Err(e) => refused(&e),
        },
        (Method::POST, "export") => {
            let req: ExportRequest = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => {
                    return common::error(StatusCode::BAD_REQUEST, "bad_request", e.to_string());
                }
            };
            match export::export_partition(node, p, object_name(p), &req).await {
                Ok(object) => common::json(StatusCode::OK, &object),
                Err(e) => {
                    tracing::warn!(partition = p, error = %error_chain(&e), "backup export failed");
                    refused(&e)
                }
            }
        }
        _ => common::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

fn refused(e: &ExportError) -> Answer {
    let status = match e {
        ExportError::NoReplica(_) | ExportError::NotPrimary(_) | ExportError::NotInSync(_) => {
            StatusCode::CONFLICT
        }
        ExportError::Behind { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ExportError::Destination(_) | ExportError::Upload { .. } => StatusCode::BAD_GATEWAY,
        ExportError::Storage(_) | ExportError::Decode(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    common::error(status, e.code(), error_chain(e))
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
