//! ShardedStore storage node: durable, partitioned, replicated key-value server.
//!
//! - [`map`]: the partition map and the key → partition function (shared with the operator).
//! - [`admin_api`]: wire types of the admin API the operator drives nodes with.
//! - [`client`]: client library for the client API and the admin API.
//! - [`bench`]: the `shardedstore bench` load generator.
//! - [`storage`]: the redb database and its group-commit writer.
//! - [`replication`]: epochs, peer frames, commit rule, primary and follower logic.

pub mod admin_api;
pub mod bench;
pub mod client;
pub mod context;
pub mod map;
pub mod metrics;
pub mod replication;
pub mod storage;
