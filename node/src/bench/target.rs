//! What a benchmark runs against: a [`Target`] opens one [`Session`] per client task.
//! ShardedStore through [`KvClient`] and [`Direct`] connections; Redis in [`super::redis`].

use super::BenchError;
use super::direct::{Direct, Pool};
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
    /// Operations so far whose first attempt failed and that another client took over
    /// (ShardedStore's direct connections and the client library); `None` for targets
    /// without such a fallback.
    fn handed_over(&self) -> Option<u64> {
        None
    }
}

/// ShardedStore: writes and linearizable reads on the load generator's own connections to
/// the primaries ([`Direct`]), or all through the partition-aware client library.
#[derive(Clone, Debug)]
pub struct ShardedStoreTarget {
    pub client: KvClient,
    /// Read with `consistency=local` instead of linearizable reads at the primary (always
    /// through the library, which picks the replica).
    pub local_reads: bool,
    /// Every operation through the client library ([`KvClient`]), none on [`Direct`]
    /// connections.
    pub via_library: bool,
    /// The direct connections, shared by the run's sessions.
    pub pool: Pool,
}

/// One client task of a ShardedStore run.
pub struct ShardedStoreSession {
    client: KvClient,
    local_reads: bool,
    direct: Option<Direct>,
}

impl Target for ShardedStoreTarget {
    type Session = ShardedStoreSession;

    fn name(&self) -> String {
        if self.local_reads {
            "shardedstore (local reads)".into()
        } else {
            "shardedstore".into()
        }
    }

    fn handed_over(&self) -> Option<u64> {
        // Sessions over TLS have no direct connections ([`Direct::new`]).
        (!self.via_library && !self.client.is_https()).then(|| self.pool.handed())
    }

    async fn session(&self) -> Result<Self::Session, BenchError> {
        // Fetch the map up front: an unreachable store fails here, readably, not per op.
        self.client
            .map()
            .await
            .map_err(BenchError::ConnectShardedStore)?;
        Ok(ShardedStoreSession {
            client: self.client.clone(),
            local_reads: self.local_reads,
            direct: if self.via_library {
                None
            } else {
                Direct::new(&self.client, self.pool.clone())
            },
        })
    }
}

impl Session for ShardedStoreSession {
    async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
        if self.local_reads {
            return self
                .client
                .get_local(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.kind());
        }
        match &mut self.direct {
            Some(d) => d.read(key).await,
            None => self
                .client
                .get(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.kind()),
        }
    }

    async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
        match &mut self.direct {
            Some(d) => d.write(key, value).await,
            None => self
                .client
                .put(key, value, Condition::Always)
                .await
                .map(|_| ())
                .map_err(|e| e.kind()),
        }
    }
}
