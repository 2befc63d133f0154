//! Partition-aware client of the nodes' client API (DESIGN.md §5): routes every key straight
//! to its partition's primary using a cached partition map, refreshes the map on 421 and on
//! connection errors, and retries retryable failures with backoff up to a deadline.
//!
//! - [`route`]: pure routing — endpoints, key encoding, which node serves a key.
//! - [`retry`]: the retry policy as pure functions (and the idempotency rules of writes).
//! - [`response`]: classification of an HTTP answer.
//! - [`error`]: the error types.

mod error;
mod response;
mod retry;
mod route;
#[cfg(test)]
mod tests;

pub use error::{AttemptError, KvError, MapFetchError};
pub use retry::{Decision, OpKind, RetryPolicy, backoff, decide};
pub use route::{encode_key, parse_endpoints};

use crate::map::PartitionMap;
use bytes::Bytes;
use response::{Answer, Context};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
}

/// The answer of a successful put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The key's new version.
    pub version: u64,
    /// The node answered 201 (the key did not exist before).
    pub created: bool,
}

/// What one request does.
#[derive(Clone, Debug)]
enum Op {
    Get { local: bool },
    Put { value: Bytes, condition: Condition },
    Delete { condition: Condition },
}

impl Op {
    fn kind(&self) -> OpKind {
        match self {
            Op::Get { .. } => OpKind::Read,
            _ => OpKind::Write,
        }
    }
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
}

impl KvClientBuilder {
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

    pub fn build(self) -> Result<KvClient, KvError> {
        if self.seeds.is_empty() {
            return Err(KvError::NoEndpoints);
        }
        let http = reqwest::Client::builder()
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
                map: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(None),
                next_seed: AtomicUsize::new(0),
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
    map: RwLock<Option<Arc<PartitionMap>>>,
    /// Serializes map refreshes; holds when the last one finished.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    next_seed: AtomicUsize,
}

/// Why a caller wants a fresh map.
#[derive(Clone, Copy, Debug, Default)]
struct Staleness {
    /// Version of the map the failed attempt was routed with.
    version: Option<u64>,
    /// When the attempt failed; `None` forces a fetch.
    failed_at: Option<Instant>,
    /// Map version the answering node reported (on 421).
    hint: Option<u64>,
}

impl KvClient {
    /// A builder from seed endpoints (`host:port` of client APIs; comma lists are split).
    pub fn builder<S: AsRef<str>>(seeds: &[S]) -> KvClientBuilder {
        KvClientBuilder {
            seeds: parse_endpoints(seeds),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            policy: RetryPolicy::default(),
            zone: None,
            direct: true,
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
        let answer = self
            .execute(key.as_ref(), &Op::Get { local: false })
            .await?;
        Ok(answer.map(|a| Versioned {
            value: a.body,
            version: a.version,
        }))
    }

    /// Read from an in-sync replica's applied state (`consistency=local`): possibly stale,
    /// by at most the returned staleness, but answered without going to the primary.
    pub async fn get_local(&self, key: impl AsRef<[u8]>) -> Result<Option<LocalRead>, KvError> {
        let answer = self.execute(key.as_ref(), &Op::Get { local: true }).await?;
        Ok(answer.map(|a| LocalRead {
            value: a.body,
            version: a.version,
            staleness: a.staleness,
        }))
    }

    /// Write `value` under `key`, optionally conditional. See [`retry`] for what a retried
    /// put means.
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
            body: Bytes::new(),
        });
        Ok(PutResult {
            version: a.version,
            created: a.status == 201,
        })
    }

    /// Delete `key` (`Condition::IfVersion` makes it conditional). `Ok(false)` when the key
    /// was absent — which a retried delete whose first attempt was applied also reports.
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
    pub async fn map(&self) -> Result<Arc<PartitionMap>, KvError> {
        let start = Instant::now();
        self.refresh_map(&Staleness::default())
            .await
            .map_err(|last| KvError::Unavailable {
                attempts: 1,
                elapsed: start.elapsed(),
                last,
            })
    }

    /// The cached partition map, if one was fetched.
    pub fn cached_map(&self) -> Option<Arc<PartitionMap>> {
        self.inner.map.read().ok().and_then(|m| m.clone())
    }

    /// Fetch the map from one node's client API (`status` uses it to probe every node).
    pub async fn map_from(&self, addr: &str) -> Result<PartitionMap, MapFetchError> {
        let url = format!("http://{addr}/v1/map");
        let send_err = |source| MapFetchError::Send {
            addr: addr.to_owned(),
            source,
        };
        let resp = self
            .inner
            .http
            .get(url)
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(send_err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MapFetchError::Status {
                addr: addr.to_owned(),
                status: status.as_u16(),
            });
        }
        let body = resp.bytes().await.map_err(send_err)?;
        let map: PartitionMap =
            serde_json::from_slice(&body).map_err(|source| MapFetchError::Decode {
                addr: addr.to_owned(),
                source,
            })?;
        map.validate().map_err(|source| MapFetchError::Invalid {
            addr: addr.to_owned(),
            source,
        })?;
        Ok(map)
    }

    /// Refresh the cached map, trying sources until one serves a map newer than
    /// `why.version` (and at least `why.hint`). A refresh that completed after the caller's
    /// failure is reused instead, so a burst of failing requests costs one fetch.
    async fn refresh_map(&self, why: &Staleness) -> Result<Arc<PartitionMap>, AttemptError> {
        let mut last_refresh = self.inner.refresh.lock().await;
        let cached = self.cached_map();
        if let (Some(cur), Some(failed_at)) = (&cached, why.failed_at) {
            let newer = why.version.is_some_and(|s| cur.version > s);
            let refreshed_since = last_refresh.is_some_and(|t| t > failed_at);
            let enough = why.hint.is_none_or(|h| cur.version >= h);
            if (newer || refreshed_since) && enough {
                return Ok(cur.clone());
            }
        }
        let mut sources = self.rotated_seeds();
        if let Some(cur) = &cached {
            for n in cur.nodes.values() {
                if !sources.contains(&n.client_addr) {
                    sources.push(n.client_addr.clone());
                }
            }
        }
        let mut best: Option<PartitionMap> = None;
        let mut last_err = None;
        for addr in &sources {
            match self.map_from(addr).await {
                Ok(m) => {
                    let wanted = why.version.is_none_or(|s| m.version > s)
                        && why.hint.is_none_or(|h| m.version >= h);
                    if best.as_ref().is_none_or(|b| m.version > b.version) {
                        best = Some(m);
                    }
                    if wanted {
                        break;
                    }
                }
                Err(e) => last_err = Some(Box::new(e)),
            }
        }
        *last_refresh = Some(Instant::now());
        let Some(best) = best else {
            return Err(AttemptError::MapUnavailable {
                tried: sources.join(", "),
                last: last_err,
            });
        };
        let mut slot = self
            .inner
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let installed = match slot.as_ref() {
            // Never go back to an older map served by a lagging node.
            Some(cur) if cur.version > best.version => cur.clone(),
            _ => Arc::new(best),
        };
        *slot = Some(installed.clone());
        Ok(installed)
    }

    /// The seeds, starting at a rotating index so load and failures spread.
    fn rotated_seeds(&self) -> Vec<String> {
        let seeds = &self.inner.seeds;
        let start = self.inner.next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len();
        seeds[start..]
            .iter()
            .chain(&seeds[..start])
            .cloned()
            .collect()
    }

    /// Run `op` with retries. `Ok(None)` is a 404.
    async fn execute(&self, key: &[u8], op: &Op) -> Result<Option<Success>, KvError> {
        route::check_key(key, None)?;
        let policy = &self.inner.policy;
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut via_seed = !self.inner.direct;
        let mut refresh = false;
        let mut staleness = Staleness::default();
        let mut ambiguous = false;
        loop {
            attempts += 1;
            let budget = if attempts == 1 {
                self.inner.request_timeout
            } else {
                self.inner
                    .request_timeout
                    .min(policy.deadline.saturating_sub(start.elapsed()))
            };
            let answer = match self.map_for_attempt(refresh, &staleness).await {
                Ok(map) => {
                    staleness.version = Some(map.version);
                    self.attempt(&map, key, op, via_seed, budget).await
                }
                Err(e) => Answer::Retry(e),
            };
            let err = match answer {
                Answer::Success {
                    status,
                    version,
                    staleness,
                    body,
                } => {
                    // `attempt` made sure every answer but a delete's carries a version.
                    return Ok(Some(Success {
                        status,
                        version: version.unwrap_or(0),
                        staleness,
                        body,
                    }));
                }
                Answer::NotFound => return Ok(None),
                Answer::Fail(e) => return Err(e),
                Answer::Retry(e) => e,
            };
            ambiguous |= err.is_ambiguous();
            staleness.failed_at = Some(Instant::now());
            staleness.hint = match &err {
                AttemptError::Misdirected { map_version, .. } => *map_version,
                _ => None,
            };
            let decision = decide(
                policy,
                op.kind(),
                &err,
                attempts,
                start.elapsed(),
                rand::random::<f64>(),
            );
            match decision {
                Decision::GiveUp => {
                    let elapsed = start.elapsed();
                    return Err(if ambiguous && op.kind() == OpKind::Write {
                        KvError::Indeterminate {
                            attempts,
                            elapsed,
                            last: err,
                        }
                    } else {
                        KvError::Unavailable {
                            attempts,
                            elapsed,
                            last: err,
                        }
                    });
                }
                Decision::Retry {
                    delay,
                    refresh_map,
                    via_seed: seed,
                } => {
                    tracing::debug!(attempt = attempts, ?delay, error = %err, "retrying");
                    refresh = refresh_map;
                    via_seed = seed || !self.inner.direct;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn map_for_attempt(
        &self,
        refresh: bool,
        why: &Staleness,
    ) -> Result<Arc<PartitionMap>, AttemptError> {
        match self.cached_map() {
            Some(m) if !refresh => Ok(m),
            Some(_) => self.refresh_map(why).await,
            // First use: concurrent callers share the first fetch.
            None => {
                let first = Staleness {
                    failed_at: Some(Instant::now()),
                    ..Staleness::default()
                };
                self.refresh_map(&first).await
            }
        }
    }

    /// One attempt: route, send, classify.
    async fn attempt(
        &self,
        map: &PartitionMap,
        key: &[u8],
        op: &Op,
        via_seed: bool,
        budget: Duration,
    ) -> Answer {
        if let Err(e) = route::check_key(key, Some(&map.limits)) {
            return Answer::Fail(e);
        }
        if let Op::Put { value, .. } = op
            && let Err(e) = route::check_value(value, &map.limits)
        {
            return Answer::Fail(e);
        }
        let routed = match op {
            Op::Get { local: true } => route::local_read_addr(
                map,
                key,
                self.inner.zone.as_deref(),
                rand::random::<u32>() as usize,
            ),
            _ => route::primary_addr(map, key),
        };
        let addr = match (via_seed, routed) {
            (false, Ok(addr)) => addr.to_owned(),
            (false, Err(e)) => return Answer::Retry(e),
            // Any node accepts any key and forwards it.
            (true, _) => self.rotated_seeds().swap_remove(0),
        };
        let local = matches!(op, Op::Get { local: true });
        let url = route::kv_url(&addr, key, local);
        let http = &self.inner.http;
        let mut req = match op {
            Op::Get { .. } => http.get(url),
            Op::Put { value, .. } => http.put(url).body(value.clone()),
            Op::Delete { .. } => http.delete(url),
        };
        match op {
            Op::Put {
                condition: Condition::IfVersion(v),
                ..
            }
            | Op::Delete {
                condition: Condition::IfVersion(v),
            } => req = req.header(http::header::IF_MATCH, v.to_string()),
            Op::Put {
                condition: Condition::IfAbsent,
                ..
            }
            | Op::Delete {
                condition: Condition::IfAbsent,
            } => req = req.header(http::header::IF_NONE_MATCH, "*"),
            _ => {}
        }
        let ctx = Context {
            addr: &addr,
            key_len: key.len(),
            value_len: match op {
                Op::Put { value, .. } => value.len(),
                _ => 0,
            },
            limits: map.limits,
        };
        let resp = match req.timeout(budget).send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(&addr, e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let answer = match resp.bytes().await {
            Ok(body) => response::classify(&ctx, status, &headers, body),
            Err(e) => return transport_failure(&addr, e),
        };
        match (op, answer) {
            (
                Op::Get { .. } | Op::Put { .. },
                Answer::Success {
                    version: None,
                    status,
                    ..
                },
            ) => Answer::Fail(KvError::MissingVersion { addr, status }),
            (Op::Put { .. }, Answer::NotFound) => Answer::Fail(KvError::Rejected {
                addr,
                status: 404,
                code: "not_found".into(),
                message: "a put cannot answer 404".into(),
            }),
            (_, answer) => answer,
        }
    }
}

/// A successful answer with its version resolved.
#[derive(Debug)]
struct Success {
    status: u16,
    version: u64,
    staleness: Option<Duration>,
    body: Bytes,
}

fn transport_failure(addr: &str, source: reqwest::Error) -> Answer {
    let addr = addr.to_owned();
    if source.is_builder() {
        Answer::Fail(KvError::Transport { addr, source })
    } else if source.is_connect() {
        Answer::Retry(AttemptError::Connect { addr, source })
    } else if source.is_timeout() {
        Answer::Retry(AttemptError::Timeout { addr, source })
    } else {
        Answer::Retry(AttemptError::Interrupted { addr, source })
    }
}
