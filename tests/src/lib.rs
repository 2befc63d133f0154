//! Helpers shared by the ShardedStore integration suites: process harness, waiting with deadlines.

pub mod apiserver_harness;
pub mod backup_support;
pub mod checker;
pub mod e2e_harness;
pub mod local_harness;
pub mod multinode_harness;
pub mod netfault;
pub mod node_harness;
pub mod partition_probes;
pub mod s3_server;
pub mod tools;
