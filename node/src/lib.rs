//! ShardedStore storage node: durable, partitioned, replicated key-value server.
//!
//! - [`map`]: the partition map and the key → partition function (shared with the operator).
//! - [`backup`]: backup to and restore from object storage (S3-compatible or a directory).
//! - [`admin_api`]: wire types of the admin API the operator drives nodes with.
//! - [`client`]: client library for the client API and the admin API.
//! - [`bench`]: the `shardedstore bench` load generator.
//! - [`storage`]: the redb database and its group-commit writer.
//! - [`replication`]: epochs, peer frames, commit rule, primary and follower logic.
//! - [`node`]: the partitions a node holds, map installs, heartbeats, upkeep.
//! - [`lease`]: the lease rule (heartbeats confirmed by the operator grant the lease).
//! - [`http`]: the client, peer/admin and metrics HTTP servers.
//! - [`tls`]: certificates and keys, rustls server and client configurations, the
//!   process-wide rustls crypto provider.
//! - [`config`], [`server`], [`shutdown`]: configuration, start-up and shutdown of the
//!   `shardedstore-node` binary.

pub mod admin_api;
pub mod backup;
pub mod bench;
pub mod client;
pub mod config;
pub mod context;
pub mod http;
pub mod lease;
pub mod map;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod tls;
