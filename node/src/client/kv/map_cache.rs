//! The client's cached partition map: fetching it from the seeds (or any known node),
//! refreshing it when routing proved stale, never going back to an older version, and
//! coalescing the refreshes of concurrent failing requests into one fetch.

use super::{AttemptError, KvClient, MapFetchError};
use crate::map::PartitionMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Why a caller wants a fresh map.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Staleness {
    /// Version of the map the failed attempt was routed with.
    pub(super) version: Option<u64>,
    /// When the attempt failed; `None` forces a fetch.
    pub(super) failed_at: Option<Instant>,
    /// Map version the answering node reported (on 421).
    pub(super) hint: Option<u64>,
}

impl KvClient {
    /// Fetch the map from one node's client API (`status` uses it to probe every node).
    pub async fn map_from(&self, addr: &str) -> Result<PartitionMap, MapFetchError> {
        let url = format!("{}://{addr}/v1/map", self.inner.scheme);
        let send_err = |source| MapFetchError::Send {
            addr: addr.to_owned(),
            source,
        };
        let resp = self
            .authorized(self.inner.http.get(url))
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(send_err)?;
        let status = resp.status();
        if matches!(status.as_u16(), 400 | 401 | 403) {
            let body = resp.bytes().await.unwrap_or_default();
            let (code, message) = match serde_json::from_slice::<crate::admin_api::ErrorBody>(&body)
            {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => ("unknown".to_owned(), String::from_utf8_lossy(&body).into()),
            };
            return Err(MapFetchError::Refused {
                addr: addr.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
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
    pub(super) async fn refresh_map(
        &self,
        why: &Staleness,
    ) -> Result<Arc<PartitionMap>, AttemptError> {
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
        // Sources that failed to answer lately are asked last, and only while no other
        // source has served a map: a dead node (its timeout) must not hold up every refresh
        // of a failover, while the others say the map has not changed yet.
        let (answering, avoided) = self.inner.unreachable.split(sources, Instant::now());
        let avoided_from = answering.len();
        let sources: Vec<String> = answering.into_iter().chain(avoided).collect();
        let mut best: Option<PartitionMap> = None;
        let mut last_err = None;
        for (i, addr) in sources.iter().enumerate() {
            if i >= avoided_from && best.is_some() {
                break;
            }
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
                Err(e) => {
                    if e.is_unanswered() {
                        self.inner.unreachable.mark(addr, Instant::now());
                    }
                    last_err = Some(Box::new(e));
                }
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
            Some(cur) if cur.version >= best.version => cur.clone(),
            _ => {
                self.inner.unreachable.clear();
                Arc::new(best)
            }
        };
        *slot = Some(installed.clone());
        Ok(installed)
    }

    /// After an answer that a node with a newer map than `routed_with` gave (`x-map-version`;
    /// typically a seed answering for a primary this client routes around), fetch that map:
    /// otherwise the client keeps routing by the old one for as long as its requests succeed
    /// through a seed. Concurrent callers share one fetch; a failed fetch is left to the next
    /// failing request, since this answer succeeded.
    pub async fn follow_newer_map(&self, routed_with: &PartitionMap, seen: Option<u64>) {
        let Some(seen) = seen.filter(|&v| v > routed_with.version) else {
            return;
        };
        if self.cached_map().is_some_and(|m| m.version >= seen) {
            return;
        }
        let why = Staleness {
            version: Some(routed_with.version),
            failed_at: Some(Instant::now()),
            hint: Some(seen),
        };
        if let Err(e) = self.refresh_map(&why).await {
            tracing::debug!(error = %e, "fetching the newer map an answer reported");
        }
    }

    /// The seeds, starting at a rotating index so load and failures spread.
    pub(super) fn rotated_seeds(&self) -> Vec<String> {
        let seeds = &self.inner.seeds;
        let start = self.inner.next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len();
        seeds[start..]
            .iter()
            .chain(&seeds[..start])
            .cloned()
            .collect()
    }

    /// The seed for an attempt sent through a seed: the next in rotation that has not
    /// failed to answer lately (the next in rotation if all have).
    pub(super) fn seed_for_attempt(&self) -> String {
        let (mut answering, mut avoided) = self
            .inner
            .unreachable
            .split(self.rotated_seeds(), Instant::now());
        if answering.is_empty() {
            avoided.swap_remove(0)
        } else {
            answering.swap_remove(0)
        }
    }

    pub(super) async fn map_for_attempt(
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
}
