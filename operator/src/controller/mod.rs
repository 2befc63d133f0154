//! The Kubernetes controller: reconciles each ShardedStore through a pipeline of
//! validate (pure) → build children (pure) → apply (server-side apply) → status.

pub mod apply;
pub mod build;
pub mod conditions;
pub mod members;
pub mod status;
pub mod validate;
