//! The node's HTTP servers: client API, peer/admin API, metrics; serving (plain or TLS) and
//! client authentication.

pub mod auth;
pub mod backup_api;
pub mod client_api;
pub mod common;
pub mod keys;
pub mod metrics_api;
pub mod peer_api;
pub mod serve;
