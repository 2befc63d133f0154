//! Local mode: nodes as child processes on 127.0.0.1, a file-backed map store, the same coordinator.
