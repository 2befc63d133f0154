//! `shardedstore bench`: a closed-loop load generator with YCSB-style workloads, HDR latency
//! percentiles per operation and errors by kind, against ShardedStore and side by side
//! against Redis.
//!
//! - [`workload`] and [`zipf`]: what to run (pure).
//! - [`runner`]: the preload phase and the closed loop.
//! - [`stats`], [`timeline`] and [`report`]: measurements and their presentation.
//! - [`target`]: the system-under-test abstraction and the ShardedStore target, whose
//!   sessions send on [`direct`] connections to the primaries;
//!   [`redis`]: the Redis target; [`etcd`]: the etcd target (HTTP/JSON gateway).
//! - [`echo`]: a null store (HTTP stack only) that measures the request path's ceiling.
//! - [`failover`]: kill -9 a primary in local mode under write load, time until writes are
//!   acknowledged again.

pub mod direct;
pub mod echo;
pub mod etcd;
pub mod failover;
pub mod redis;
pub mod report;
pub mod runner;
pub mod stats;
pub mod target;
pub mod timeline;
pub mod workload;
pub mod zipf;

pub use etcd::EtcdTarget;
pub use redis::RedisTarget;
pub use report::{RunReport, render_comparison, render_text};
pub use runner::{BenchConfig, Stop, run};
pub use target::{Session, ShardedStoreTarget, Target};
pub use workload::{Distribution, OpType, Preset};

use crate::client::kv::KvError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("creating a latency histogram")]
    Histogram(#[source] hdrhistogram::CreationError),
    #[error("merging latency histograms")]
    Merge(#[source] hdrhistogram::AdditionError),
    #[error("reaching the store")]
    ConnectShardedStore(#[source] KvError),
    #[error("connecting to redis at {addr}")]
    ConnectRedis {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reaching etcd at {endpoint}: {reason}")]
    ConnectEtcd { endpoint: String, reason: String },
    #[error("redis at {addr} did not answer PING")]
    RedisHandshake { addr: String },
    #[error("a benchmark client task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error(
        "preload of {keys} keys stopped: {failed} of the {tried} writes tried failed ({errors})"
    )]
    Preload {
        failed: u64,
        tried: u64,
        keys: u64,
        errors: String,
    },
}
