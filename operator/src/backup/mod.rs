//! Backups on Kubernetes: the `ShardedStoreBackup` controller (one-off and scheduled
//! backups with retention) and restores of stores created with `spec.restore.from`. The
//! orchestration itself is `shardedstore_node::backup`, shared with the CLI and local mode.
//!
//! - [`schedule`]: five-field cron schedules (pure).
//! - [`plan`]: what a ShardedStoreBackup needs now (pure).
//! - [`access`]: the store's map, peer token and S3 credentials from Secrets.
//! - [`controller`]: the controller and the backup tasks.
//! - [`restore`]: filling stores with `spec.restore.from`.

pub mod access;
pub mod controller;
pub mod plan;
pub mod restore;
pub mod schedule;

pub use controller::run;
