//! What a benchmark runs against: a [`Target`] opens one [`Session`] per client task.
//! ShardedStore through [`KvClient`]; Redis in [`super::redis`].

use super::BenchError;
use crate::client::kv::{Condition, KvClient};
use bytes::Bytes;
use std::future::Future;

/// One closed-loop client's connection to the system under test.
pub trait Session: Send + 'static {
    /// Read `key`: `Ok(true)` when a value was found. Errors are stable kind labels.
    fn read(&mut self, key: &str) -> impl Future<Output = Result<bool, &'static str>> + Send;
    /// Overwrite `key` with `value`.
    fn write(
        &mut self,
        key: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<(), &'static str>> + Send;
}

/// A system under test.
pub trait Target: Send + Sync {
    type Session: Session;
    /// Name in reports, e.g. `shardedstore` or `redis`.
    fn name(&self) -> String;
    /// Open a session; fails when the system is unreachable.
    fn session(&self) -> impl Future<Output = Result<Self::Session, BenchError>> + Send;
}

/// ShardedStore through the partition-aware client.
#[derive(Clone, Debug)]
pub struct ShardedStoreTarget {
    pub client: KvClient,
    /// Read with `consistency=local` instead of linearizable reads at the primary.
    pub local_reads: bool,
}

impl Target for ShardedStoreTarget {
    type Session = ShardedStoreTarget;

    fn name(&self) -> String {
        if self.local_reads {
            "shardedstore (local reads)".into()
        } else {
            "shardedstore".into()
        }
    }

    async fn session(&self) -> Result<Self::Session, BenchError> {
        // Fetch the map up front: an unreachable store fails here, readably, not per op.
        self.client
            .map()
            .await
            .map_err(BenchError::ConnectShardedStore)?;
        Ok(self.clone())
    }
}

impl Session for ShardedStoreTarget {
    async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
        if self.local_reads {
            self.client.get_local(key).await.map(|v| v.is_some())
        } else {
            self.client.get(key).await.map(|v| v.is_some())
        }
        .map_err(|e| e.kind())
    }

    async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
        self.client
            .put(key, value, Condition::Always)
            .await
            .map(|_| ())
            .map_err(|e| e.kind())
    }
}
