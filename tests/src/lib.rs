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

/// The value a test writes as its `n`-th: `tag` itself for even `n`, and `tag` padded past
/// 64 bytes for odd `n`. A node keeps a value of up to 64 bytes in its database row and a
/// larger one in a value file beside it, so every suite that writes through this exercises
/// both (a crash, a power loss or a snapshot must keep either).
pub fn test_value(tag: &str, n: u64) -> String {
    if n.is_multiple_of(2) {
        tag.to_owned()
    } else {
        format!("{tag}:{}", ".".repeat(96))
    }
}
