//! One operation end to end: the retry loop around attempts, and one attempt — route the
//! key, build the HTTP request, send it, classify the answer.

use super::map_cache::Staleness;
use super::response::MIN_VERSION_HEADER;
use super::response::{self, Answer, Context};
use super::retry::{Decision, OpKind, decide};
use super::{AttemptError, Condition, KvClient, KvError, LocalReadOptions, route};
use crate::map::PartitionMap;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What one request does.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// A read: linearizable, or `consistency=local` with these options.
    Get {
        local: Option<LocalReadOptions>,
    },
    Put {
        value: Bytes,
        condition: Condition,
    },
    Delete {
        condition: Condition,
    },
}

impl Op {
    pub(super) fn kind(&self) -> OpKind {
        match self {
            Op::Get { .. } => OpKind::Read,
            _ => OpKind::Write,
        }
    }
}

impl KvClient {
    /// Run `op` with retries. `Ok(None)` is a 404.
    pub(super) async fn execute(&self, key: &[u8], op: &Op) -> Result<Option<Success>, KvError> {
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
                    session_version,
                    served_by,
                    body,
                } => {
                    // `attempt` made sure every answer but a delete's carries a version.
                    return Ok(Some(Success {
                        status,
                        version: version.unwrap_or(0),
                        staleness,
                        session_version,
                        served_by,
                        body,
                    }));
                }
                Answer::NotFound => return Ok(None),
                Answer::Fail(e) => return Err(e),
                Answer::Retry(e) => match e.into_fatal() {
                    Ok(fatal) => return Err(fatal),
                    Err(e) => e,
                },
            };
            ambiguous |= err.is_ambiguous();
            // No connection, or no answer in time: route around the address for a while
            // (a seed that timed out may only have been forwarding to a dead primary; it is
            // merely asked after the others).
            if let AttemptError::Connect { addr, .. } | AttemptError::Timeout { addr, .. } = &err {
                self.inner.unreachable.mark(addr, Instant::now());
            }
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
            Op::Get { local: Some(_) } => route::local_read_addr(
                map,
                key,
                self.inner.zone.as_deref(),
                rand::random::<u32>() as usize,
            ),
            _ => route::primary_addr(map, key),
        };
        let addr = match (via_seed, routed) {
            (false, Ok(addr)) if !self.inner.unreachable.is_avoided(addr, Instant::now()) => {
                addr.to_owned()
            }
            (false, Err(e)) => return Answer::Retry(e),
            // Any node accepts any key and forwards it; one that answered lately first.
            _ => self.seed_for_attempt(),
        };
        let local = match op {
            Op::Get { local } => local.as_ref(),
            _ => None,
        };
        let partition = map.partition_of(key);
        let url = route::kv_url(self.inner.scheme, &addr, key, local);
        let http = &self.inner.http;
        let mut req = match op {
            Op::Get { .. } => http.get(url),
            Op::Put { value, .. } => http.put(url).body(value.clone()),
            Op::Delete { .. } => http.delete(url),
        };
        req = self.authorized(req);
        if let Some(o) = local {
            let min = o
                .min_version
                .unwrap_or(0)
                .max(self.session_of(&map.store, partition));
            if min > 0 {
                req = req.header(MIN_VERSION_HEADER, min.to_string());
            }
        }
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
            Op::Put {
                condition: Condition::IfExists,
                ..
            }
            | Op::Delete {
                condition: Condition::IfExists,
            } => req = req.header(http::header::IF_MATCH, "*"),
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
        if matches!(answer, Answer::Success { .. } | Answer::NotFound) {
            self.follow_newer_map(map, response::map_version(&headers))
                .await;
        }
        if let Answer::Success {
            version,
            session_version,
            ..
        } = &answer
        {
            let seen = version.unwrap_or(0).max(session_version.unwrap_or(0));
            self.advance_session(&map.store, partition, seen);
        }
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
pub(super) struct Success {
    pub(super) status: u16,
    pub(super) version: u64,
    pub(super) staleness: Option<Duration>,
    pub(super) session_version: Option<u64>,
    pub(super) served_by: Option<String>,
    pub(super) body: Bytes,
}

fn transport_failure(addr: &str, source: reqwest::Error) -> Answer {
    let addr = addr.to_owned();
    if crate::tls::handshake_error(&source).is_some() {
        // An unknown CA or a refused client certificate: retrying cannot help.
        Answer::Fail(KvError::Tls { addr, source })
    } else if source.is_builder() {
        Answer::Fail(KvError::Transport { addr, source })
    } else if source.is_connect() {
        Answer::Retry(AttemptError::Connect { addr, source })
    } else if source.is_timeout() {
        Answer::Retry(AttemptError::Timeout { addr, source })
    } else {
        Answer::Retry(AttemptError::Interrupted { addr, source })
    }
}
