//! A client's session as data: the highest version it wrote or read per partition, and the
//! store those versions belong to. A [`KvClient`](super::KvClient) keeps one and sends it with
//! `consistency=local` reads; [`Session`] lets a caller carry it beyond one client (the CLI
//! keeps it in a file between invocations with `--session`).
//!
//! Versions of one store mean nothing in another, so a session names its store and is
//! started afresh when used against a map of a different store. (A version that is too high
//! would cost a wait and a read at the primary, never a wrong answer; a fresh start avoids
//! the cost.)

use crate::map::PartitionId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The session a client carries: per partition the highest version written or read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The store the versions belong to; `None` until a client has seen the store's map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Highest version written or read, per partition.
    #[serde(default)]
    pub partitions: BTreeMap<PartitionId, u64>,
}

impl Session {
    /// The version `partition` must be read at (0: none), for a map of `store`.
    pub fn version(&self, store: &str, partition: PartitionId) -> u64 {
        if self.store.as_deref().is_some_and(|s| s != store) {
            return 0;
        }
        self.partitions.get(&partition).copied().unwrap_or(0)
    }

    /// Raises `partition` to `version` (never lowers it). A session of another store is
    /// replaced by a fresh one of `store` first.
    pub fn advance(&mut self, store: &str, partition: PartitionId, version: u64) {
        if self.store.as_deref() != Some(store) {
            if self.store.is_some() {
                self.partitions.clear();
            }
            self.store = Some(store.to_owned());
        }
        let v = self.partitions.entry(partition).or_insert(0);
        *v = (*v).max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::Session;

    #[test]
    fn versions_only_grow() {
        let mut s = Session::default();
        s.advance("orders", 3, 10);
        s.advance("orders", 3, 7);
        assert_eq!(s.version("orders", 3), 10);
        assert_eq!(s.version("orders", 4), 0);
    }

    #[test]
    fn a_session_of_another_store_counts_for_nothing_and_is_replaced() {
        let mut s = Session::default();
        s.advance("orders", 3, 10);
        assert_eq!(s.version("users", 3), 0);
        s.advance("users", 1, 5);
        assert_eq!(s.store.as_deref(), Some("users"));
        assert_eq!(
            s.version("users", 3),
            0,
            "the old store's versions are gone"
        );
        assert_eq!(s.version("users", 1), 5);
    }

    #[test]
    fn a_session_without_a_store_applies_to_the_first_one_seen() {
        let mut s = Session::default();
        s.partitions.insert(2, 9);
        assert_eq!(s.version("orders", 2), 9);
        s.advance("orders", 2, 11);
        assert_eq!(s.version("orders", 2), 11);
        assert_eq!(s.store.as_deref(), Some("orders"));
    }

    #[test]
    fn round_trips_through_json() -> Result<(), serde_json::Error> {
        let mut s = Session::default();
        s.advance("orders", 0, 1);
        s.advance("orders", 31, 42);
        let text = serde_json::to_string(&s)?;
        assert_eq!(text, r#"{"store":"orders","partitions":{"0":1,"31":42}}"#);
        assert_eq!(serde_json::from_str::<Session>(&text)?, s);
        Ok(())
    }
}
