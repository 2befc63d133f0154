//! Planner unit tests.
