//! Helpers shared by the ShardedStore integration suites: process harness, waiting with deadlines.

pub mod node_harness;

pub mod apiserver_harness;
