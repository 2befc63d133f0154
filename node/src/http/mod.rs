//! The node's HTTP servers: client API, peer/admin API, metrics.

pub mod backup_api;
pub mod client_api;
pub mod common;
pub mod keys;
pub mod metrics_api;
pub mod peer_api;
