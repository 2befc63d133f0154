//! Helpers shared by the ShardedStore integration suites: process harness, waiting with deadlines.
