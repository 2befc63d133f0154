//! Tests of the KV client against an in-process test double of the client API (docs/protocol.md):
//! a few warp servers sharing one in-memory store and a partition map, with scripted faults.

use super::*;
use crate::map::{NodeInfo, NodeState, PartitionEntry};
use http::{HeaderMap, Method, Response, StatusCode};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use warp::Filter;

/// A fault the next request to a node answers with.
#[derive(Clone, Debug)]
enum Fault {
    Status(u16, &'static str, Option<u64>),
    Delay(Duration),
}

#[derive(Clone, Debug)]
struct Hit {
    node: String,
    method: Method,
    key: Vec<u8>,
    local: bool,
    /// `x-min-version` of the request.
    min_version: Option<u64>,
}

#[derive(Default)]
struct Cluster {
    map: Mutex<Option<PartitionMap>>,
    store: Mutex<BTreeMap<Vec<u8>, (Bytes, u64)>>,
    hits: Mutex<Vec<Hit>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    versions: AtomicU64,
    /// `GET /v1/map` requests served.
    map_fetches: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    fn map(&self) -> PartitionMap {
        lock(&self.map).clone().unwrap_or_else(|| panic!("no map"))
    }
    fn set_map(&self, m: PartitionMap) {
        *lock(&self.map) = Some(m);
    }
    fn fault(&self, node: &str, f: Fault) {
        lock(&self.faults)
            .entry(node.into())
            .or_default()
            .push_back(f);
    }
    fn hits(&self) -> Vec<Hit> {
        lock(&self.hits).clone()
    }
}

fn decode_segment(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn error(status: u16, code: &str, map_version: Option<u64>) -> Response<Bytes> {
    let mut detail =
        serde_json::json!({"code": code, "message": format!("test double says {code}")});
    if let Some(v) = map_version {
        detail["mapVersion"] = v.into();
    }
    let body = serde_json::json!({ "error": detail }).to_string();
    Response::builder()
        .status(status)
        .body(Bytes::from(body))
        .unwrap_or_default()
}

fn with_version(status: StatusCode, version: u64, body: Bytes) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("x-version", version.to_string())
        .body(body)
        .unwrap_or_default()
}

/// One node of the double. `strict`: answer 421 for keys whose primary is another node
/// (otherwise behave like a forwarding node and serve every key).
/// A request as the double sees it.
struct Req {
    method: Method,
    path: warp::path::FullPath,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

async fn handle(
    c: Arc<Cluster>,
    node: String,
    strict: bool,
    req: Req,
) -> Result<Response<Bytes>, std::convert::Infallible> {
    let Req {
        method,
        path,
        query,
        headers,
        body,
    } = req;
    let map = c.map();
    if path.as_str() == "/v1/map" {
        c.map_fetches.fetch_add(1, Ordering::SeqCst);
        let json = serde_json::to_vec(&map).unwrap_or_default();
        return Ok(Response::new(Bytes::from(json)));
    }
    let Some(seg) = path.as_str().strip_prefix("/v1/kv/") else {
        return Ok(error(404, "no_route", None));
    };
    let key = decode_segment(seg);
    let local = query == "consistency=local";
    lock(&c.hits).push(Hit {
        node: node.clone(),
        method: method.clone(),
        key: key.clone(),
        local,
        min_version: headers
            .get("x-min-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    });
    let fault = lock(&c.faults).get_mut(&node).and_then(VecDeque::pop_front);
    match fault {
        Some(Fault::Status(status, code, retry_after)) => {
            let mut resp = error(status, code, Some(map.version));
            if let Some(s) = retry_after
                && let Ok(v) = http::HeaderValue::from_str(&s.to_string())
            {
                resp.headers_mut().insert("retry-after", v);
            }
            return Ok(resp);
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let entry = map
        .entry(map.partition_of(&key))
        .cloned()
        .unwrap_or_default();
    let serves = if local {
        entry.is_in_sync(&node)
    } else {
        entry.primary.as_deref() == Some(node.as_str())
    };
    if strict && !serves {
        return Ok(error(421, "not_primary", Some(map.version)));
    }
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let if_absent = headers.get("if-none-match").is_some_and(|v| v == "*");
    let if_exists = headers.get("if-match").is_some_and(|v| v == "*");
    let mut store = lock(&c.store);
    let current = store.get(&key).map(|(_, v)| *v);
    let precondition_ok = match (if_match, if_absent) {
        (Some(v), _) => current == Some(v),
        (None, true) => current.is_none(),
        _ if if_exists => current.is_some(),
        _ => true,
    };
    let resp = match method {
        Method::GET => match store.get(&key) {
            Some((value, v)) => {
                let mut r = with_version(StatusCode::OK, *v, value.clone());
                if local {
                    r.headers_mut()
                        .insert("x-staleness-ms", http::HeaderValue::from_static("7"));
                }
                r
            }
            None => error(404, "not_found", None),
        },
        Method::PUT if !precondition_ok => error(412, "precondition_failed", None),
        Method::PUT => {
            let v = c.versions.fetch_add(1, Ordering::SeqCst) + 1;
            let created = store.insert(key, (body, v)).is_none();
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            with_version(status, v, Bytes::new())
        }
        // Like the node: 204 whether or not the key existed.
        Method::DELETE if !precondition_ok => error(412, "precondition_failed", None),
        Method::DELETE => {
            store.remove(&key);
            Response::builder()
                .status(204)
                .body(Bytes::new())
                .unwrap_or_default()
        }
        _ => error(405, "method_not_allowed", None),
    };
    let mut resp = resp;
    if let Ok(v) = http::HeaderValue::from_str(&map.version.to_string()) {
        resp.headers_mut().insert("x-map-version", v);
    }
    Ok(resp)
}

/// Aborts the server tasks when the test ends.
struct Servers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Start `n` nodes named `node-i`; returns their addresses. The map is set by the caller.
async fn start(c: &Arc<Cluster>, n: usize, strict: bool) -> (Vec<SocketAddr>, Servers) {
    let mut addrs = Vec::new();
    let mut handles = Vec::new();
    for i in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        addrs.push(listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let (c, node) = (c.clone(), format!("node-{i}"));
        let query = warp::query::raw().or(warp::any().map(String::new)).unify();
        let filter = warp::method()
            .and(warp::path::full())
            .and(query)
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(|method, path, query, headers, body| Req {
                method,
                path,
                query,
                headers,
                body,
            })
            .and_then(move |req| handle(c.clone(), node.clone(), strict, req));
        handles.push(tokio::spawn(warp::serve(filter).incoming(listener).run()));
    }
    (addrs, Servers(handles))
}

/// A map of `partitions` partitions over the nodes at `addrs`; `primary_of(p)` picks the
/// primary index; every node is an in-sync replica of every partition.
fn map_over(
    addrs: &[SocketAddr],
    partitions: u32,
    version: u64,
    primary_of: impl Fn(usize) -> usize,
) -> PartitionMap {
    let mut m = PartitionMap::empty("test", partitions, addrs.len() as u32, 1);
    m.version = version;
    let names: Vec<String> = (0..addrs.len()).map(|i| format!("node-{i}")).collect();
    for (name, addr) in names.iter().zip(addrs) {
        m.nodes.insert(
            name.clone(),
            NodeInfo {
                client_addr: addr.to_string(),
                peer_addr: addr.to_string(),
                zone: None,
                state: NodeState::Active,
            },
        );
    }
    for (p, e) in m.partitions.iter_mut().enumerate() {
        *e = PartitionEntry {
            epoch: 1,
            primary: Some(names[primary_of(p)].clone()),
            replicas: names.clone(),
            in_sync: names.clone(),
            learners: vec![],
        };
    }
    m
}

fn fast_policy(deadline_ms: u64) -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_millis(deadline_ms),
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
        retry_ambiguous_writes: true,
    }
}

fn client(seeds: &[SocketAddr], policy: RetryPolicy) -> KvClient {
    let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    KvClient::builder(&seeds)
        .retry_policy(policy)
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn put_get_delete_round_trip_with_versions_and_conditions() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 4, 1, |_| 0));
    let kv = client(&addrs, fast_policy(2000));
    let key = "dir/a b?é";
    assert_eq!(ok(kv.get(key).await), None);
    let first = ok(kv.put(key, "v1", Condition::IfAbsent).await);
    assert!(first.created);
    let got = ok(kv.get(key).await).unwrap_or_else(|| panic!("missing"));
    assert_eq!((&got.value[..], got.version), (&b"v1"[..], first.version));
    // The double decoded the percent-encoded segment back to the exact key bytes.
    assert!(c.hits().iter().all(|h| h.key == key.as_bytes()));

    let err = kv.put("other", "v", Condition::IfExists).await;
    assert!(
        matches!(err, Err(KvError::PreconditionFailed { .. })),
        "{err:?}"
    );
    let err = kv.put(key, "v2", Condition::IfAbsent).await;
    assert!(
        matches!(err, Err(KvError::PreconditionFailed { .. })),
        "{err:?}"
    );
    let second = ok(kv.put(key, "v2", Condition::IfVersion(first.version)).await);
    assert!(!second.created && second.version > first.version);
    let err = kv.delete(key, Condition::IfVersion(first.version)).await;
    assert!(
        matches!(err, Err(KvError::PreconditionFailed { .. })),
        "{err:?}"
    );
    assert!(ok(kv
        .delete(key, Condition::IfVersion(second.version))
        .await));
    // An absent key: an unconditional delete is applied (204) all the same; only a
    // conditional one tells that the key was not there.
    assert!(ok(kv.delete(key, Condition::Always).await));
    let err = kv.delete(key, Condition::IfExists).await;
    assert!(
        matches!(err, Err(KvError::PreconditionFailed { .. })),
        "{err:?}"
    );
    assert_eq!(ok(kv.get(key).await), None);
}

#[tokio::test]
async fn keys_go_straight_to_their_primary() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 3, true).await;
    c.set_map(map_over(&addrs, 16, 1, |p| p % 3));
    let kv = client(&addrs[..1], RetryPolicy::none());
    for i in 0..60 {
        ok(kv
            .put(format!("k{i}"), format!("v{i}"), Condition::Always)
            .await);
    }
    let map = c.map();
    let hits = c.hits();
    assert_eq!(hits.len(), 60, "no request was misdirected or retried");
    for h in hits {
        let primary = map.partitions[map.partition_of(&h.key) as usize]
            .primary
            .clone();
        assert_eq!(primary.as_deref(), Some(h.node.as_str()));
        assert_eq!(h.method, Method::PUT);
    }
}

#[tokio::test]
async fn misdirected_requests_refresh_the_map_and_retry() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 2, true).await;
    c.set_map(map_over(&addrs, 8, 1, |_| 0));
    let kv = client(&addrs, fast_policy(2000));
    assert_eq!(ok(kv.map().await).version, 1);
    // Every primary moves to node-1; the client still believes node-0 leads.
    c.set_map(map_over(&addrs, 8, 2, |_| 1));
    ok(kv.put("moved", "x", Condition::Always).await);
    let hits = c.hits();
    let nodes: Vec<&str> = hits.iter().map(|h| h.node.as_str()).collect();
    assert_eq!(nodes, ["node-0", "node-1"]);
    assert_eq!(kv.cached_map().map(|m| m.version), Some(2));
}

#[tokio::test]
async fn unavailable_is_retried_honoring_retry_after() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    c.fault("node-0", Fault::Status(503, "below_min_in_sync", Some(1)));
    let kv = client(&addrs, fast_policy(5000));
    let start = Instant::now();
    ok(kv.put("k", "v", Condition::Always).await);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.hits().len(), 2);
}

#[tokio::test]
async fn persistent_unavailability_ends_at_the_deadline() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    for _ in 0..1000 {
        c.fault("node-0", Fault::Status(503, "partition_unavailable", None));
    }
    // Retries 2 ms, 4 ms, … apart fit many attempts into the deadline even on a loaded
    // machine; the bound below only shows the retries stop near it.
    let kv = client(&addrs, fast_policy(600));
    let start = Instant::now();
    let err = kv.get("k").await;
    let elapsed = start.elapsed();
    match err {
        Err(KvError::Unavailable { attempts, last, .. }) => {
            assert!(attempts > 2, "{attempts}");
            assert!(matches!(last, AttemptError::Unavailable { .. }));
        }
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    c.fault("node-0", Fault::Status(400, "malformed_key", None));
    c.fault("node-0", Fault::Status(413, "value_too_large", None));
    let kv = client(&addrs, fast_policy(2000));
    let err = kv.get("k").await;
    assert!(
        matches!(err, Err(KvError::BadRequest { ref code, .. }) if code == "malformed_key"),
        "{err:?}"
    );
    let err = kv.put("k", "v", Condition::Always).await;
    assert!(
        matches!(err, Err(KvError::ValueTooLarge { len: 1, .. })),
        "{err:?}"
    );
    assert_eq!(c.hits().len(), 2);
}

#[tokio::test]
async fn oversized_requests_are_refused_before_sending() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    let mut m = map_over(&addrs, 1, 1, |_| 0);
    m.limits.max_key_bytes = 8;
    m.limits.max_value_bytes = 16;
    c.set_map(m);
    let kv = client(&addrs, fast_policy(2000));
    let err = kv.get("123456789").await;
    assert!(
        matches!(err, Err(KvError::KeyTooLarge { len: 9, max: 8 })),
        "{err:?}"
    );
    let err = kv.put("k", vec![0u8; 17], Condition::Always).await;
    assert!(
        matches!(err, Err(KvError::ValueTooLarge { len: 17, max: 16 })),
        "{err:?}"
    );
    assert!(matches!(kv.get("").await, Err(KvError::EmptyKey)));
    assert!(c.hits().is_empty());
}

/// One forwarding node (`node-0`) and a map (version 1) whose primary of every partition,
/// `node-1`, is at an address nothing listens on; `k` was written through the seed.
struct DeadPrimary {
    c: Arc<Cluster>,
    addrs: Vec<SocketAddr>,
    _servers: Servers,
    dead: SocketAddr,
    kv: KvClient,
}

async fn dead_primary() -> DeadPrimary {
    let c = Arc::new(Cluster::default());
    let (addrs, servers) = start(&c, 1, false).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    c.set_map(map_over(&[addrs[0], dead], 4, 1, |_| 1));
    let kv = client(&addrs, fast_policy(2000));
    ok(kv.put("k", "v", Condition::Always).await);
    DeadPrimary {
        c,
        addrs,
        _servers: servers,
        dead,
        kv,
    }
}

#[tokio::test]
async fn an_unreachable_primary_falls_back_to_a_seed_that_forwards() {
    let t = dead_primary().await;
    let (c, addrs, dead, kv) = (&t.c, &t.addrs, t.dead, &t.kv);
    let got = ok(kv.get("k").await).map(|v| v.value);
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    assert!(c.hits().iter().all(|h| h.node == "node-0"));
    // The refused address is routed around for a while, and forgotten with a newer map.
    let dead = dead.to_string();
    assert!(kv.inner.unreachable.is_avoided(&dead, Instant::now()));
    c.set_map(map_over(
        &[addrs[0], dead.parse().unwrap_or(addrs[0])],
        4,
        2,
        |_| 0,
    ));
    ok(kv.map().await);
    assert!(!kv.inner.unreachable.is_avoided(&dead, Instant::now()));
}

#[tokio::test]
async fn an_answer_from_a_node_with_a_newer_map_makes_the_client_fetch_it() {
    let t = dead_primary().await;
    let (c, addrs, dead, kv) = (&t.c, &t.addrs, t.dead, &t.kv);
    assert_eq!(kv.cached_map().map(|m| m.version), Some(1));
    // The seed installs a map without the dead primary. The client routes around the dead
    // address without a failed attempt, so only the answer's `x-map-version` tells it.
    c.set_map(map_over(&[addrs[0], dead], 4, 2, |_| 0));
    let got = ok(kv.get("k").await).map(|v| v.value);
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    assert_eq!(kv.cached_map().map(|m| m.version), Some(2));
    assert!(
        !kv.inner
            .unreachable
            .is_avoided(&dead.to_string(), Instant::now())
    );
    // An answer naming the version the client holds costs no map fetch.
    let maps_before = c.map_fetches.load(Ordering::SeqCst);
    ok(kv.get("k").await);
    assert_eq!(c.map_fetches.load(Ordering::SeqCst), maps_before);
}

#[tokio::test]
async fn local_reads_go_to_an_in_sync_replica_and_report_staleness() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 2, true).await;
    let mut m = map_over(&addrs, 2, 1, |_| 0);
    for e in &mut m.partitions {
        e.in_sync = vec!["node-1".into(), "node-0".into()];
    }
    c.set_map(m);
    let kv = client(&addrs, fast_policy(2000));
    ok(kv.put("k", "v", Condition::Always).await);
    let got = ok(kv.get_local("k").await).unwrap_or_else(|| panic!("missing"));
    assert_eq!(got.staleness, Some(Duration::from_millis(7)));
    let hit = c.hits().pop().unwrap_or_else(|| panic!("no hit"));
    assert!(hit.local);
}

#[tokio::test]
async fn local_reads_carry_the_session_version_of_the_partition() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 2, true).await;
    let mut m = map_over(&addrs, 2, 1, |_| 0);
    for e in &mut m.partitions {
        e.in_sync = vec!["node-1".into(), "node-0".into()];
    }
    c.set_map(m);
    let kv = client(&addrs, fast_policy(2000));
    let w1 = ok(kv.put("k", "v1", Condition::Always).await).version;
    ok(kv.get_local("k").await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), Some(w1));
    let w2 = ok(kv.put("k", "v2", Condition::Always).await).version;
    assert!(w2 > w1);
    assert_eq!(kv.session_version("k"), w2);
    // An explicit minimum above the session wins; clones share the session.
    let other = kv.clone();
    let opts = LocalReadOptions {
        min_version: Some(w2 + 10),
        ..LocalReadOptions::default()
    };
    ok(other.get_local_with("k", opts).await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), Some(w2 + 10));
    ok(other.get_local("k").await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), Some(w2));
    // A fresh client has no session: its first local read carries no minimum.
    let fresh = client(&addrs, fast_policy(2000));
    ok(fresh.get_local("k").await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), None);
}

#[tokio::test]
async fn a_session_handed_to_a_new_client_carries_on() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 2, true).await;
    let mut m = map_over(&addrs, 2, 1, |_| 0);
    for e in &mut m.partitions {
        e.in_sync = vec!["node-1".into(), "node-0".into()];
    }
    c.set_map(m);
    let kv = client(&addrs, fast_policy(2000));
    let w = ok(kv.put("k", "v1", Condition::Always).await).version;
    let saved = kv.session();
    assert!(saved.store.is_some(), "the session names its store");
    let seeds: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let next = KvClient::builder(&seeds)
        .retry_policy(fast_policy(2000))
        .session(saved.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    ok(next.get_local("k").await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), Some(w));
    // The same versions saved for another store count for nothing here.
    let foreign = Session {
        store: Some("another-store".into()),
        ..saved
    };
    let stranger = KvClient::builder(&seeds)
        .retry_policy(fast_policy(2000))
        .session(foreign)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    ok(stranger.get_local("k").await);
    assert_eq!(c.hits().pop().and_then(|h| h.min_version), None);
}

#[tokio::test]
async fn a_write_timing_out_without_retries_is_indeterminate() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    c.fault("node-0", Fault::Delay(Duration::from_secs(2)));
    let policy = RetryPolicy {
        retry_ambiguous_writes: false,
        ..fast_policy(5000)
    };
    let seeds = [addrs[0].to_string()];
    let kv = KvClient::builder(&seeds)
        .retry_policy(policy)
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = kv.put("k", "v", Condition::Always).await;
    assert!(
        matches!(
            err,
            Err(KvError::Indeterminate {
                attempts: 1,
                last: AttemptError::Timeout { .. },
                ..
            })
        ),
        "{err:?}"
    );
}

/// A client whose budgets do not depend on the machine's speed: an attempt never times out (a
/// timeout is itself ambiguous and would blur what is tested) and the retry deadline is far
/// away; the test ends the retries itself with a `Retry-After` beyond the deadline, which
/// makes the client give up at once.
fn patient_client(seeds: &[SocketAddr]) -> KvClient {
    let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    KvClient::builder(&seeds)
        .retry_policy(fast_policy(60_000))
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A `Retry-After` (seconds) longer than [`patient_client`]'s deadline: no retry follows.
const GIVE_UP: Option<u64> = Some(600);

/// With a 300 ms retry budget this failed once under load: the first attempt (map fetch,
/// connection set-up) used the whole budget, so no retry followed. The retries now end on
/// the double's say (`GIVE_UP`), not on the clock; the claims are unchanged.
#[tokio::test]
async fn a_write_refused_after_its_append_ends_indeterminate_not_unavailable() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    // First attempt: appended, then the primary is deposed; every retry is refused before
    // the append. The first attempt may still commit, so the outcome is unknown.
    c.fault("node-0", Fault::Status(503, "deposed", None));
    c.fault("node-0", Fault::Status(503, "below_min_in_sync", None));
    c.fault("node-0", Fault::Status(503, "below_min_in_sync", GIVE_UP));
    let kv = patient_client(&addrs);
    let err = kv.put("k", "v", Condition::Always).await;
    assert!(
        matches!(&err, Err(KvError::Indeterminate { attempts: 3, last: AttemptError::Unavailable { code, .. }, .. })
            if code == "below_min_in_sync"),
        "{err:?}"
    );
    // Only pre-append refusals: nothing was applied.
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    c.fault("node-0", Fault::Status(503, "lease_expired", None));
    c.fault("node-0", Fault::Status(503, "lease_expired", GIVE_UP));
    let kv = patient_client(&addrs);
    let err = kv.put("k", "v", Condition::Always).await;
    assert!(
        matches!(&err, Err(KvError::Unavailable { attempts: 2, .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_read_timing_out_is_retried() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 1, true).await;
    c.set_map(map_over(&addrs, 1, 1, |_| 0));
    let kv = KvClient::builder(&[addrs[0].to_string()])
        .retry_policy(fast_policy(5000))
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    ok(kv.put("k", "v", Condition::Always).await);
    c.fault("node-0", Fault::Delay(Duration::from_secs(2)));
    let got = ok(kv.get("k").await).map(|v| v.value);
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn no_reachable_endpoint_is_unavailable() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let kv = client(&[dead], fast_policy(200));
    let err = kv.get("k").await;
    assert!(
        matches!(
            err,
            Err(KvError::Unavailable {
                last: AttemptError::MapUnavailable { .. },
                ..
            })
        ),
        "{err:?}"
    );
    let err = kv.map().await;
    assert!(
        matches!(err, Err(KvError::Unavailable { attempts, .. }) if attempts > 1),
        "{err:?}"
    );
    assert!(matches!(
        KvClient::new::<&str>(&[]),
        Err(KvError::NoEndpoints)
    ));
}

/// A TCP relay in front of one node of the double that can go silent, as a powered-off host
/// or a black-holed link does: from then on nothing is answered and nothing refused — open
/// connections stay open without a byte relayed, new ones are accepted and held.
struct Relay {
    addr: SocketAddr,
    silent: tokio::sync::watch::Sender<bool>,
    /// Connections accepted since the relay went silent.
    accepted_silent: Arc<AtomicU64>,
    _task: Servers,
}

async fn relay(to: SocketAddr) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (silent, rx) = tokio::sync::watch::channel(false);
    let accepted_silent = Arc::new(AtomicU64::new(0));
    let count = accepted_silent.clone();
    let task = tokio::spawn(async move {
        let held = Arc::new(Mutex::new(Vec::new()));
        while let Ok((mut inbound, _)) = listener.accept().await {
            if *rx.borrow() {
                count.fetch_add(1, Ordering::SeqCst);
                lock(&held).push(inbound);
                continue;
            }
            let (mut rx, held) = (rx.clone(), held.clone());
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let silenced = tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                    _ = rx.wait_for(|s| *s) => true,
                };
                if silenced {
                    lock(&held).push(inbound);
                }
            });
        }
    });
    Relay {
        addr,
        silent,
        accepted_silent,
        _task: Servers(vec![task]),
    }
}

/// A primary whose host stops answering (the multi-node suite's power cut): the client pays
/// one attempt timeout for it, then neither sends requests nor map fetches there (seeds and
/// map refreshes included) until the map moves its partitions — which the client then finds
/// with its next refresh. Before, every retry went to the silent primary again and every
/// map refresh waited for it as a source, so a write could take several timeouts past the
/// failover.
#[tokio::test]
async fn a_primary_that_stops_answering_costs_one_timeout_not_one_per_retry() {
    let c = Arc::new(Cluster::default());
    let (addrs, _servers) = start(&c, 3, true).await;
    let r = relay(addrs[2]).await;
    let nodes = [addrs[0], addrs[1], r.addr];
    c.set_map(map_over(&nodes, 4, 1, |_| 2));
    // The silent host is a seed too, as pod addresses are.
    let seeds = [
        r.addr.to_string(),
        addrs[0].to_string(),
        addrs[1].to_string(),
    ];
    let timeout = Duration::from_millis(300);
    let kv = KvClient::builder(&seeds)
        .retry_policy(fast_policy(20_000))
        .request_timeout(timeout)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Warm: the client holds the map and a connection to the primary.
    ok(kv.put("warm", "w", Condition::Always).await);
    assert_eq!(ok(kv.map().await).version, 1);

    r.silent.send_replace(true);
    let started = Instant::now();
    let put = tokio::spawn({
        let kv = kv.clone();
        async move { kv.put("k", "v", Condition::Always).await }
    });
    // Failover after a few attempt timeouts: the map moves every partition to node-0.
    tokio::time::sleep(timeout * 4).await;
    let moved = Instant::now();
    c.set_map(map_over(&nodes, 4, 2, |_| 0));
    let put = tokio::time::timeout(Duration::from_secs(10), put)
        .await
        .unwrap_or_else(|_| panic!("the put did not end within 10 s of the failover"))
        .unwrap_or_else(|e| panic!("{e}"));
    ok(put);
    let done = Instant::now();
    assert_eq!(
        r.accepted_silent.load(Ordering::SeqCst),
        0,
        "the client connected to the silent host again"
    );
    let hits: Vec<Hit> = c
        .hits()
        .into_iter()
        .filter(|h| h.key == b"k" && h.node == "node-2")
        .collect();
    assert!(
        hits.is_empty(),
        "requests reached the silent primary: {hits:?}"
    );
    eprintln!(
        "put acknowledged {:?} after the host went silent, {:?} after the map moved",
        done - started,
        done - moved
    );
    assert!(
        done < moved + timeout * 3,
        "acknowledged {:?} after the map moved",
        done - moved
    );
}
