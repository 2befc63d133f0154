//! ShardedStore operator: the `ShardedStore` resource, its reconcile pipeline on Kubernetes,
//! and the coordinator that owns each store's partition map; [`backup`]: ShardedStoreBackup
//! and restores on Kubernetes.

pub mod backup;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod crd;
pub mod k8s_map_store;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod placement;
pub mod telemetry;
