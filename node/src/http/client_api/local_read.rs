//! `consistency=local` reads. The receiving node answers from its own in-sync replica when
//! that replica's applied state is fresh enough (`max-staleness-ms`) and includes the
//! caller's session version (`x-min-version`, waited for up to [`SESSION_WAIT`]); when it
//! cannot, the read goes to the primary (linearizable, so never older than the session).
//! A node without an in-sync replica forwards the read to one that has one, preferring its
//! own zone.
//!
//! Versions are partition sequence numbers: a write's `x-version` is the sequence number
//! the primary gave it, and a replica whose applied point has reached that number holds
//! the write. So a client that sends the largest version it wrote or read in a partition
//! gets read-your-writes and monotonic reads from any replica.

use super::{
    ClientApi, MIN_VERSION_HEADER, Request, STALENESS_HEADER, misdirected, serve_error,
    value_answer, with_header,
};
use crate::http::common::{self, Answer};
use crate::map::{NodeState, PartitionMap};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// Longest a local read waits for its replica to apply the session version before it asks
/// the primary instead.
pub const SESSION_WAIT: Duration = Duration::from_secs(1);

/// How a `GET` wants to be served, from its query (`consistency`, `max-staleness-ms`) and
/// its `x-min-version` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// `consistency=local`.
    pub local: bool,
    /// Largest acceptable staleness of a local answer.
    pub max_staleness_ms: Option<u64>,
    /// The answer's state must include this partition sequence number (0: any).
    pub min_version: u64,
}

impl ReadOptions {
    /// Parses the options; the error is the message of a 400 answer.
    pub fn parse(query: &str, headers: &HeaderMap) -> Result<Self, String> {
        let mut o = ReadOptions::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "consistency" => {
                    o.local = match v {
                        "local" => true,
                        "linearizable" => false,
                        other => {
                            return Err(format!(
                                "consistency is `local` or `linearizable`, not {other:?}"
                            ));
                        }
                    }
                }
                "max-staleness-ms" => {
                    o.max_staleness_ms =
                        Some(v.parse().map_err(|_| {
                            format!("max-staleness-ms takes milliseconds, not {v:?}")
                        })?);
                }
                _ => {}
            }
        }
        if let Some(v) = headers.get(MIN_VERSION_HEADER) {
            let text = v.to_str().unwrap_or("").trim();
            o.min_version = text.parse().map_err(|_| {
                format!("{MIN_VERSION_HEADER} takes a version number, not {text:?}")
            })?;
        }
        Ok(o)
    }

    /// Whether a replica with this applied point and staleness may answer.
    pub fn satisfied_by(&self, applied: u64, staleness_ms: u64) -> bool {
        applied >= self.min_version && self.max_staleness_ms.is_none_or(|m| staleness_ms <= m)
    }
}

impl ClientApi {
    pub(super) async fn get_local(
        &self,
        map: &PartitionMap,
        key: Vec<u8>,
        req: &Request<'_>,
        opts: &ReadOptions,
    ) -> Answer {
        let p = map.partition_of(&key);
        if let Some(r) = self.node.replica(p)
            && r.local_read_staleness().is_some()
        {
            if *r.applied_tx.borrow() < opts.min_version {
                let mut applied = r.applied_tx.subscribe();
                let wanted = opts.min_version;
                let _ =
                    tokio::time::timeout(SESSION_WAIT, applied.wait_for(|a| *a >= wanted)).await;
            }
            // A primary acknowledges writes at commit, before their apply: its applied state
            // holds every acknowledged write (zero staleness) only once the apply caught up
            // with the commit point. If it cannot, the linearizable read below decides.
            if !r.settle_primary(SESSION_WAIT).await {
                return self.read_at_primary(map, key, req).await;
            }
            // Read the applied point before the data: the data is at least that new.
            let applied = *r.applied_tx.borrow();
            return match r.local_read_staleness() {
                Some(staleness) if opts.satisfied_by(applied, staleness) => {
                    let answer = match r.read_applied(&key) {
                        Ok(Some(v)) => value_answer(v.version, v.value),
                        Ok(None) => {
                            common::error(StatusCode::NOT_FOUND, "not_found", "no such key")
                        }
                        Err(e) => return serve_error(e),
                    };
                    with_header(
                        self.served_here(answer, applied),
                        STALENESS_HEADER,
                        staleness,
                    )
                }
                _ => self.read_at_primary(map, key, req).await,
            };
        }
        if req.forwarded {
            return misdirected(map);
        }
        match self.nearest_in_sync(map, p) {
            Some(addr) => self.forward(&addr, req, Bytes::new()).await,
            None => common::unavailable("no_replica", "no in-sync replica of the partition"),
        }
    }

    /// A linearizable read instead of a local one (at most one more hop, to the primary,
    /// which never forwards it further).
    async fn read_at_primary(&self, map: &PartitionMap, key: Vec<u8>, req: &Request<'_>) -> Answer {
        let plain = Request {
            query: "",
            forwarded: false,
            ..req.clone()
        };
        let answer = self.get(map, key, &plain).await;
        if answer.status().is_success() || answer.status() == StatusCode::NOT_FOUND {
            return with_header(answer, STALENESS_HEADER, 0);
        }
        answer
    }

    /// Client address of the in-sync replica a local read is forwarded to: one in this
    /// node's zone if any, else the primary, else any live one.
    fn nearest_in_sync(&self, map: &PartitionMap, p: u32) -> Option<String> {
        let entry = map.entry(p)?;
        let me = &self.node.ctx.node_id;
        let my_zone = self
            .settings
            .zone
            .clone()
            .or_else(|| map.nodes.get(me).and_then(|n| n.zone.clone()));
        let live: Vec<&String> = entry
            .in_sync
            .iter()
            .filter(|n| *n != me)
            .filter(|n| {
                map.nodes
                    .get(*n)
                    .is_some_and(|i| !matches!(i.state, NodeState::Down | NodeState::Replaced))
            })
            .collect();
        let zone_of = |n: &String| map.nodes.get(n).and_then(|i| i.zone.clone());
        let chosen = live
            .iter()
            .find(|n| my_zone.is_some() && zone_of(n) == my_zone)
            .or_else(|| live.iter().find(|n| entry.primary.as_ref() == Some(**n)))
            .or_else(|| live.first())?;
        map.nodes.get(*chosen).map(|i| i.client_addr.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(min: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = min {
            h.insert(MIN_VERSION_HEADER, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn options_come_from_query_and_header() {
        let o = ReadOptions::parse(
            "consistency=local&max-staleness-ms=250",
            &headers(Some("42")),
        );
        assert_eq!(
            o,
            Ok(ReadOptions {
                local: true,
                max_staleness_ms: Some(250),
                min_version: 42
            })
        );
        assert_eq!(
            ReadOptions::parse("", &headers(None)),
            Ok(ReadOptions::default())
        );
        assert!(ReadOptions::parse("consistency=eventual", &headers(None)).is_err());
        assert!(ReadOptions::parse("max-staleness-ms=soon", &headers(None)).is_err());
        assert!(ReadOptions::parse("consistency=local", &headers(Some("v1"))).is_err());
    }

    #[test]
    fn a_replica_answers_only_when_it_holds_the_session_and_is_fresh() {
        let o = ReadOptions {
            local: true,
            max_staleness_ms: Some(100),
            min_version: 10,
        };
        assert!(o.satisfied_by(10, 100));
        assert!(!o.satisfied_by(9, 0), "behind the session");
        assert!(!o.satisfied_by(11, 101), "too stale");
        let any = ReadOptions {
            local: true,
            ..ReadOptions::default()
        };
        assert!(any.satisfied_by(0, u64::MAX));
    }
}
