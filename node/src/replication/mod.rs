//! Replication of partitions: epochs and the leader-epoch rule, peer wire frames, the commit
//! rule, and the primary and follower sides of the protocol (docs/protocol.md).

pub mod commit;
pub mod epochs;
pub mod follower;
pub mod frame;
pub mod log_bytes;
pub mod peer_client;
pub mod primary;
pub mod replica;
pub mod roles;
pub mod sender;
pub mod session;
pub mod stream;

#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;
