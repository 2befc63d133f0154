//! Placement: the pure, deterministic assignment of partition replicas and primaries to nodes.
//!
//! [`place`] turns the previous map and the node population into a [`Target`]: it keeps every
//! still-valid (partition, node) pair, spreads replicas over distinct nodes and (as far as the
//! zone count allows) distinct zones, and balances replicas and primaries per Active node
//! within ±1. [`check`] validates every invariant. Node states decide eligibility: Active nodes
//! take replicas; Down nodes keep the ones they hold (until the coordinator marks them
//! Replaced) but take no new ones; Draining and Replaced nodes are emptied.

mod assign;
pub mod bench;
mod capacity;
mod check;
mod primaries;
#[cfg(test)]
mod tests;

pub use assign::place;
pub use check::{Violation, check, lower_bound_moves, moves};

use shardedstore_node::map::{NodeId, NodeState};

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementNode {
    pub id: NodeId,
    pub state: NodeState,
    /// Failure zone; nodes without one share a single anonymous zone.
    pub zone: Option<String>,
}

/// Where one partition should live.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TargetPartition {
    /// Nodes that should hold a replica, sorted by id.
    pub replicas: Vec<NodeId>,
    /// Preferred primary (an Active replica); `None` when no Active node holds the partition.
    pub primary: Option<NodeId>,
}

/// The target assignment of every partition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Target {
    pub partitions: Vec<TargetPartition>,
}

impl Target {
    pub fn partition(&self, p: u32) -> Option<&TargetPartition> {
        self.partitions.get(p as usize)
    }
}
