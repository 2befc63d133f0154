//! The coordinator: one long-lived task per store that heartbeats nodes, detects failures,
//! fails over primaries, changes in-sync sets and executes moves — the only writer of the map.
//!
//! Decisions are pure functions of (map, observations, time) in [`planner`]; [`runner`] is the
//! thin loop that gathers observations, executes the planned actions and writes the map with
//! compare-and-swap through a [`MapStore`]. Nodes are reached through a [`NodeTransport`].
//!
//! - [`store`]: the `MapStore` trait and the file-backed store of local mode.
//! - [`transport`]: the `NodeTransport` trait over the admin API.
//! - [`input`]: membership and settings fed in by the controller or local mode.
//! - [`status`]: status snapshot and events reported out.
//! - [`handle`]: spawning and driving the task.
//! - [`liveness`]: failure detection (alive / suspected / dead) from heartbeats.
//! - [`planner`]: the pure decisions.
//! - [`summary`]: the pure status computation.

mod calls;
pub mod handle;
pub mod input;
pub mod liveness;
pub mod planner;
mod runner;
pub mod status;
pub mod store;
pub mod summary;
pub mod transport;

pub use handle::CoordinatorHandle;
pub use input::{MemberNode, Membership, Settings, StoreIdentity, TimingError, check_lease_timing};
pub use status::{
    CoordinatorEvent, CoordinatorStatus, MoveState, MoveStatus, NodeStatus, PartitionSummary,
};
pub use store::{FileMapStore, MapStore, MapStoreError, Revision};
pub use transport::{NodeClients, NodeTransport};
