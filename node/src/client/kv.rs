//! Partition-aware client of the nodes' client API (docs/protocol.md): routes every key straight
//! to its partition's primary using a cached partition map, refreshes the map on 421 and on
//! connection errors, and retries retryable failures with backoff up to a deadline.
//!
//! A client is also a session: it remembers per partition the highest version it wrote or
//! read and sends it with `consistency=local` reads (`x-min-version`), so those reads never
//! go back in time (read-your-writes, monotonic reads). Clones share the session; [`Session`]
//! carries it to another client or process.
//!
//! - `route`: pure routing — endpoints, key encoding, which node serves a key.
//! - `retry`: the retry policy as pure functions ([`RetryPolicy`] documents what a retried
//!   write means).
//! - `response`: classification of an HTTP answer.
//! - `map_cache`: the cached partition map and its refreshes.
//! - `request`: the retry loop and one attempt.
//! - `unreachable`: addresses to route around (and ask last for the map) after they refused a
//!   connection or did not answer in time.
//! - `session`: the session as data.
//! - `error`: the error types.

mod error;
mod map_cache;
mod request;
mod response;
mod retry;
mod route;
mod session;
#[cfg(test)]
mod tests;
mod unreachable;

pub use error::{AttemptError, KvError, MapFetchError};
pub use retry::{Decision, OpKind, RetryPolicy, backoff, decide};
pub use route::{encode_key, parse_endpoints, primary_addr, wants_https};
pub use session::Session;

use crate::map::{PartitionId, PartitionMap};
use crate::tls::ClientTls;
use bytes::Bytes;
use map_cache::Staleness;
use request::{Op, Success};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use unreachable::Unreachable;

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// The answer of a `consistency=local` read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRead {
    pub value: Bytes,
    pub version: u64,
    /// Upper bound on how old the serving replica's state may be (`x-staleness-ms`).
    pub staleness: Option<Duration>,
    /// The node whose replica answered (`x-served-by`).
    pub served_by: Option<String>,
    /// The partition version the answer's state includes (`x-session-version`): pass it as
    /// `min_version` to another client to carry the session over.
    pub session_version: u64,
}

/// Options of a `consistency=local` read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalReadOptions {
    /// The answer must include this partition version, on top of what this client's session
    /// already requires (e.g. a version handed over from another process).
    pub min_version: Option<u64>,
    /// Largest acceptable staleness; a staler replica hands the read to the primary.
    pub max_staleness: Option<Duration>,
}

/// Condition of a put or delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    #[default]
    Always,
    /// `If-Match: <version>`: only if the key currently has this version.
    IfVersion(u64),
    /// `If-None-Match: *`: only if the key is absent (put only).
    IfAbsent,
    /// `If-Match: *`: only if the key exists, whatever its version.
    IfExists,
}

/// The answer of a successful put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The key's new version.
    pub version: u64,
    /// The node answered 201 (the key did not exist before).
    pub created: bool,
}

/// Builder of a [`KvClient`].
#[derive(Clone, Debug)]
pub struct KvClientBuilder {
    seeds: Vec<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    policy: RetryPolicy,
    zone: Option<String>,
    direct: bool,
    restore_token: Option<String>,
    tls: ClientTls,
    https: bool,
    token: Option<String>,
    session: Session,
}

impl KvClientBuilder {
    /// TLS trust (`ca`) and identity (`cert`/`key`, for mutual TLS). Any of them makes the
    /// client speak HTTPS, as do `https://` endpoints.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.https |= tls.is_configured();
        self.tls = tls;
        self
    }

    /// Bearer token sent with every request (`--client-token-file` on the nodes).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Timeout of one attempt (default 5 s); the retry deadline bounds the whole operation.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Timeout of opening a connection (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Zone of the caller: `consistency=local` reads prefer an in-sync replica there.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// With `false`, every request goes to the seed endpoints (which forward to the primary)
    /// instead of the node addresses in the map — for callers outside the cluster network.
    pub fn direct_routing(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }

    /// Starts from `session` (e.g. saved by [`KvClient::session`] of an earlier client) instead
    /// of an empty one.
    pub fn session(mut self, session: Session) -> Self {
        self.session = session;
        self
    }

    /// Marks every request as the restore's own with the store's peer token: nodes serve
    /// such requests while the map says `restoring` (and refuse all others).
    pub fn restore_token(mut self, peer_token: impl Into<String>) -> Self {
        self.restore_token = Some(peer_token.into());
        self
    }

    pub fn build(self) -> Result<KvClient, KvError> {
        if self.seeds.is_empty() {
            return Err(KvError::NoEndpoints);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.restore_token {
            let mut value = reqwest::header::HeaderValue::from_str(token)
                .map_err(|_| KvError::BadRestoreToken)?;
            value.set_sensitive(true);
            headers.insert(crate::map::RESTORE_TOKEN_HEADER, value);
        }
        let http = crate::tls::http_client_builder(&self.tls)
            .map_err(KvError::TlsConfig)?
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(KvError::BuildClient)?;
        Ok(KvClient {
            inner: Arc::new(Inner {
                http,
                seeds: self.seeds,
                request_timeout: self.request_timeout,
                policy: self.policy,
                zone: self.zone,
                direct: self.direct,
                scheme: crate::tls::scheme(self.https),
                token: self.token,
                session: Mutex::new(self.session),
                map: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(None),
                next_seed: AtomicUsize::new(0),
                unreachable: Unreachable::default(),
            }),
        })
    }
}

/// Partition-aware KV client. Cheap to clone; clones share the connection pool and the map.
#[derive(Clone, Debug)]
pub struct KvClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    seeds: Vec<String>,
    request_timeout: Duration,
    policy: RetryPolicy,
    zone: Option<String>,
    direct: bool,
    /// `http` or `https`.
    scheme: &'static str,
    token: Option<String>,
    /// Highest version written or read per partition: the session.
    session: Mutex<Session>,
    map: RwLock<Option<Arc<PartitionMap>>>,
    /// Serializes map refreshes; holds when the last one finished.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    next_seed: AtomicUsize,
    unreachable: Unreachable,
}

impl KvClient {
    /// A builder from seed endpoints (`host:port` of client APIs; comma lists are split).
    pub fn builder<S: AsRef<str>>(seeds: &[S]) -> KvClientBuilder {
        KvClientBuilder {
            https: wants_https(seeds),
            tls: ClientTls::default(),
            token: None,
            seeds: parse_endpoints(seeds),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            policy: RetryPolicy::default(),
            zone: None,
            direct: true,
            restore_token: None,
            session: Session::default(),
        }
    }

    /// A client with default timeouts and retry policy.
    pub fn new<S: AsRef<str>>(seeds: &[S]) -> Result<Self, KvError> {
        Self::builder(seeds).build()
    }

    /// The seed endpoints.
    pub fn seeds(&self) -> &[String] {
        &self.inner.seeds
    }

    /// Linearizable read (served by the primary). `None` when the key is absent.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, KvError> {
        let answer = self.execute(key.as_ref(), &Op::Get { local: None }).await?;
        Ok(answer.map(|a| Versioned {
            value: a.body,
            version: a.version,
        }))
    }

    /// Read from an in-sync replica's applied state (`consistency=local`): possibly stale,
    /// by at most the returned staleness, but answered without going to the primary.
    /// The read includes everything this client wrote or read before in the key's partition.
    pub async fn get_local(&self, key: impl AsRef<[u8]>) -> Result<Option<LocalRead>, KvError> {
        self.get_local_with(key, LocalReadOptions::default()).await
    }

    /// A `consistency=local` read with a staleness bound or an extra minimum version.
    pub async fn get_local_with(
        &self,
        key: impl AsRef<[u8]>,
        options: LocalReadOptions,
    ) -> Result<Option<LocalRead>, KvError> {
        let op = Op::Get {
            local: Some(options),
        };
        let answer = self.execute(key.as_ref(), &op).await?;
        Ok(answer.map(|a| LocalRead {
            value: a.body,
            version: a.version,
            staleness: a.staleness,
            served_by: a.served_by,
            session_version: a.session_version.unwrap_or(a.version).max(a.version),
        }))
    }

    /// This client's session version for `key`'s partition (0 before any answer, or before
    /// the map is known).
    pub fn session_version(&self, key: impl AsRef<[u8]>) -> u64 {
        self.cached_map().map_or(0, |m| {
            self.session_of(&m.store, m.partition_of(key.as_ref()))
        })
    }

    /// A copy of this client's session, to hand to [`KvClientBuilder::session`] of another
    /// client (or to save, as the CLI's `--session` does).
    pub fn session(&self) -> Session {
        self.inner
            .session
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub(crate) fn session_of(&self, store: &str, partition: PartitionId) -> u64 {
        self.inner
            .session
            .lock()
            .map_or(0, |s| s.version(store, partition))
    }

    /// Raises the session version of `partition` to `version` (never lowers it).
    pub(crate) fn advance_session(&self, store: &str, partition: PartitionId, version: u64) {
        if let Ok(mut s) = self.inner.session.lock() {
            s.advance(store, partition, version);
        }
    }

    /// Adds the bearer token, when the client has one.
    pub(crate) fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.inner.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Write `value` under `key`, optionally conditional. See [`RetryPolicy`] for what a
    /// retried put means.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        condition: Condition,
    ) -> Result<PutResult, KvError> {
        let op = Op::Put {
            value: value.into(),
            condition,
        };
        let answer = self.execute(key.as_ref(), &op).await?;
        // `attempt` turns a 404 to a put into an error, so `None` cannot occur here.
        let a = answer.unwrap_or(Success {
            status: 0,
            version: 0,
            staleness: None,
            session_version: None,
            served_by: None,
            body: Bytes::new(),
        });
        Ok(PutResult {
            version: a.version,
            created: a.status == 201,
        })
    }

    /// Delete `key` (`Condition::IfVersion` / `Condition::IfExists` make it conditional).
    /// `Ok(true)` once the delete is applied. The node answers 204 whether or not the key
    /// existed (docs/protocol.md), so `true` does not say the key was there; `Ok(false)` comes
    /// only from a 404, which nodes do not send to a delete. To learn whether the key
    /// existed, delete with `Condition::IfExists`: 412 when it was absent (or, after a retry
    /// whose first attempt was applied, already deleted).
    pub async fn delete(
        &self,
        key: impl AsRef<[u8]>,
        condition: Condition,
    ) -> Result<bool, KvError> {
        let answer = self
            .execute(key.as_ref(), &Op::Delete { condition })
            .await?;
        Ok(answer.is_some())
    }

    /// Fetch the current partition map from the endpoints (and cache it).
    /// Retried like a read while no endpoint serves a valid map.
    pub async fn map(&self) -> Result<Arc<PartitionMap>, KvError> {
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.refresh_map(&Staleness::default()).await {
                Ok(map) => return Ok(map),
                Err(e) => match e.into_fatal() {
                    Ok(fatal) => return Err(fatal),
                    Err(e) => e,
                },
            };
            let jitter = rand::random::<f64>();
            match decide(
                &self.inner.policy,
                OpKind::Read,
                &last,
                attempts,
                start.elapsed(),
                jitter,
            ) {
                Decision::Retry { delay, .. } => tokio::time::sleep(delay).await,
                Decision::GiveUp => {
                    return Err(KvError::Unavailable {
                        attempts,
                        elapsed: start.elapsed(),
                        last,
                    });
                }
            }
        }
    }

    /// True when the client speaks TLS (`https://` endpoints).
    pub fn is_https(&self) -> bool {
        self.inner.scheme == "https"
    }

    /// The bearer token requests carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    /// The cached partition map, if one was fetched.
    pub fn cached_map(&self) -> Option<Arc<PartitionMap>> {
        self.inner.map.read().ok().and_then(|m| m.clone())
    }
}
