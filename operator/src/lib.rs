//! ShardedStore operator.
