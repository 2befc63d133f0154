//! The Kubernetes controller: reconciles each ShardedStore through a pipeline of
//! validate (pure) → build children (pure) → apply (server-side apply) → status.
//!
//! - [`validate`], [`build`], [`status`], [`conditions`], [`members`], [`rollout`],
//!   [`disruption`]: pure steps.
//! - [`apply`]: server-side apply of children and status.
//! - [`reconcile`]: the pipeline and its error policy; [`backoff`]: per-object retry delays.
//! - [`coordinators`]: one coordinator per store; [`events`]: Kubernetes Events.
//! - [`tls`]: a store's TLS Secrets, checked, and the trust of the operator's clients.
//! - [`context`], [`runtime`]: shared state, watches, leader election and the process.

pub mod apply;
pub mod backoff;
pub mod build;
pub mod conditions;
pub mod context;
pub mod coordinators;
pub mod disruption;
pub mod events;
pub mod members;
pub mod reconcile;
pub mod rollout;
pub mod runtime;
pub mod status;
pub mod tls;
pub mod validate;

pub use context::Context;
pub use runtime::{RunError, run_controller, serve, serve_with};
