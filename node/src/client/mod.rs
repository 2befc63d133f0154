//! Client library: typed clients of the node's client API (KV, partition-aware) and admin API.

pub mod admin;

pub use admin::{AdminClient, AdminError};
