//! etcd as a side-by-side peer, driven by the same load generator as ShardedStore: etcd's
//! HTTP/JSON gateway (`POST /v3/kv/put`, `POST /v3/kv/range`, keys and values base64) over the
//! same HTTP client stack. Ranges are etcd's default, linearizable; a put is acknowledged once
//! a majority of the members has it in its fsynced raft log.
//!
//! The gateway translates JSON to gRPC inside etcd, which costs etcd some throughput, so
//! `make bench` also measures etcd with its own gRPC benchmark tool and reports that figure
//! as etcd's peak (docs/benchmarks.md).

use super::BenchError;
use super::target::{Session, Target};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A running etcd cluster: its client URLs (`http://host:port`), used round-robin by sessions.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    pub endpoints: Vec<String>,
    next: Arc<AtomicUsize>,
}

/// One benchmark client: its own HTTP client (own connection) to one member.
#[derive(Debug)]
pub struct EtcdSession {
    http: reqwest::Client,
    put_url: String,
    range_url: String,
}

/// The part of a range answer the benchmark looks at: etcd omits `kvs` when nothing matched.
#[derive(Deserialize)]
struct RangeAnswer {
    #[serde(default)]
    kvs: Vec<serde_json::Value>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl EtcdTarget {
    /// `endpoints` like `127.0.0.1:2379` or `http://127.0.0.1:2379`, comma-separated.
    pub fn new(endpoints: &str) -> Self {
        let endpoints = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.trim_end_matches('/').to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        Self {
            endpoints,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// JSON body of a put or a point range.
pub fn request_body(key: &str, value: Option<&[u8]>) -> serde_json::Value {
    let mut body = serde_json::json!({ "key": STANDARD.encode(key.as_bytes()) });
    if let Some(v) = value {
        body["value"] = STANDARD.encode(v).into();
    }
    body
}

impl Target for EtcdTarget {
    type Session = EtcdSession;

    fn name(&self) -> String {
        "etcd (json gateway)".into()
    }

    async fn session(&self) -> Result<EtcdSession, BenchError> {
        if self.endpoints.is_empty() {
            return Err(BenchError::ConnectEtcd {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let base =
            &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()];
        let http = {
            crate::tls::install_crypto_provider();
            reqwest::Client::builder()
        }
        .timeout(TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|e| BenchError::ConnectEtcd {
            endpoint: base.clone(),
            reason: e.to_string(),
        })?;
        let session = EtcdSession {
            http,
            put_url: format!("{base}/v3/kv/put"),
            range_url: format!("{base}/v3/kv/range"),
        };
        // Reach the member once up front: an unreachable cluster fails here, readably.
        session
            .post(
                &session.range_url,
                &request_body("shardedstore-bench-probe", None),
            )
            .await
            .map_err(|kind| BenchError::ConnectEtcd {
                endpoint: base.clone(),
                reason: kind.to_owned(),
            })?;
        Ok(session)
    }
}

impl EtcdSession {
    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<Bytes, &'static str> {
        let resp = self.http.post(url).json(body).send().await.map_err(|e| {
            if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            }
        })?;
        if !resp.status().is_success() {
            return Err(if resp.status().is_server_error() {
                "unavailable"
            } else {
                "rejected"
            });
        }
        resp.bytes().await.map_err(|_| "transport")
    }
}

impl Session for EtcdSession {
    async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
        let body = self.post(&self.range_url, &request_body(key, None)).await?;
        let answer: RangeAnswer = serde_json::from_slice(&body).map_err(|_| "malformed")?;
        Ok(!answer.kvs.is_empty())
    }

    async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
        self.post(&self.put_url, &request_body(key, Some(&value)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_bodies_are_base64() {
        let t = EtcdTarget::new("127.0.0.1:2379, http://127.0.0.1:2380/,");
        assert_eq!(
            t.endpoints,
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:2380"]
        );
        assert_eq!(
            request_body("k1", Some(b"v")),
            serde_json::json!({"key": "azE=", "value": "dg=="})
        );
        assert_eq!(request_body("k1", None), serde_json::json!({"key": "azE="}));
    }

    #[test]
    fn a_range_without_kvs_is_a_miss() {
        let miss: RangeAnswer = serde_json::from_str(r#"{"header":{"revision":"3"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(miss.kvs.is_empty());
        let hit: RangeAnswer = serde_json::from_str(
            r#"{"header":{},"kvs":[{"key":"azE=","value":"dg=="}],"count":"1"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hit.kvs.len(), 1);
    }
}
