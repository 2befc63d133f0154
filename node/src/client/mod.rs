//! Client library: typed clients of the node's client API (KV, partition-aware) and admin API.

pub mod admin;
pub mod kv;

pub use admin::{AdminClient, AdminError};
pub use kv::{Condition, KvClient, KvClientBuilder, KvError, RetryPolicy, Versioned};
