//! Placement: the pure, deterministic assignment of partition replicas and primaries to nodes.
