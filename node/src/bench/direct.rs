//! The load generator's own connections to the nodes: kept-alive HTTP/1.1 connections shared
//! by the client tasks (a task takes an idle one to its key's primary, or opens one, and puts
//! it back once answered), each request sent straight to the primary of its key's partition
//! as the cached partition map names it.
//!
//! What a node does for such a request is exactly what it does for one from the client
//! library ([`KvClient`]): the same `PUT`/`GET /v1/kv/<key>`, the same durable, replicated
//! write. Only the client side is leaner: the library's request builder, URL parsing,
//! connection pool and retry layers cost about as much CPU per write as a node's whole share
//! of it on this 2-core machine, and the load generator shares the cores with the nodes (etcd's
//! own tool, which the bench compares with, is a lean gRPC client too). Any answer but a
//! success or a 404 — a moved primary, a refusal, a lost connection, a timeout — hands the
//! operation to the library, which retries, refreshes the map and reports the error by kind
//! as before; the next request uses the refreshed map.
//!
//! Not used with TLS (`https://` endpoints): such sessions go through the library.

use crate::client::kv::{Condition, KvClient, encode_key, primary_addr};
use crate::http::client_api::MAP_VERSION_HEADER;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take before the operation goes to the library (which has its
/// own timeouts and retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An answer's head larger than this is not one a node sends: the connection is dropped.
const MAX_HEAD: usize = 64 * 1024;
/// Headers read from an answer's head.
const MAX_HEADERS: usize = 32;

/// Idle connections by node address, shared by a run's client tasks, and how many
/// operations went to the library.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<String, Vec<Conn>>>>,
    handed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// Operations so far whose direct attempt did not succeed and that went to the library.
    pub fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    fn take(&self, addr: &str) -> Option<Conn> {
        self.idle.lock().ok()?.get_mut(addr)?.pop()
    }

    fn put(&self, addr: &str, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            match idle.get_mut(addr) {
                Some(conns) => conns.push(conn),
                None => {
                    idle.insert(addr.to_owned(), vec![conn]);
                }
            }
        }
    }
}

/// One client task's requests, on connections from the run's [`Pool`].
pub struct Direct {
    client: KvClient,
    pool: Pool,
    /// `Bearer <token>`, when the client has a token.
    auth: Option<String>,
}

impl Direct {
    /// Requests beside `client` on `pool`'s connections, or `None` when the client speaks
    /// TLS.
    pub fn new(client: &KvClient, pool: Pool) -> Option<Self> {
        if client.is_https() {
            return None;
        }
        Some(Self {
            client: client.clone(),
            pool,
            auth: client.token().map(|t| format!("Bearer {t}")),
        })
    }

    /// Writes `value` under `key`: directly when the primary answers with a success, else
    /// through the library.
    pub async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
        match self.send("PUT", key, &value).await {
            Some(status) if (200..300).contains(&status) => Ok(()),
            _ => self
                .handed()
                .client
                .put(key, value, Condition::Always)
                .await
                .map(|_| ())
                .map_err(|e| e.kind()),
        }
    }

    /// Reads `key` linearizably: `Ok(true)` when a value was found.
    pub async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
        match self.send("GET", key, &[]).await {
            Some(status) if (200..300).contains(&status) => Ok(true),
            Some(404) => Ok(false),
            _ => self
                .handed()
                .client
                .get(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.kind()),
        }
    }

    /// Counts an operation going to the library.
    fn handed(&self) -> &Self {
        self.pool.handed.fetch_add(1, Ordering::Relaxed);
        self
    }

    /// One request to the key's primary; its status once the whole answer is read, or
    /// `None` when there is no map yet, no primary, or no answer in time (the connection is
    /// then dropped).
    async fn send(&mut self, method: &str, key: &str, body: &[u8]) -> Option<u16> {
        let map = self.client.cached_map()?;
        let addr = primary_addr(&map, key.as_bytes()).ok()?;
        let pool = &self.pool;
        let auth = self.auth.as_deref();
        let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut conn = match pool.take(addr) {
                Some(c) => c,
                None => Conn::open(addr).await?,
            };
            let path = format!("/v1/kv/{}", encode_key(key.as_bytes()));
            let head = conn.request(method, &path, addr, auth, body).await?;
            if head.keep {
                pool.put(addr, conn);
            }
            Some(head)
        })
        .await
        .ok()
        .flatten()?;
        // A node on the way holds a newer map (the primary moved, and the old one forwarded
        // this request): fetch it, as the library does, so the next requests go straight to
        // the new primary.
        self.client.follow_newer_map(&map, head.map_version).await;
        Some(head.status)
    }
}

/// A kept-alive HTTP/1.1 connection to a node: one request at a time, answers with a
/// `Content-Length` (as nodes send them); anything else drops the connection.
pub struct Conn {
    tcp: TcpStream,
    /// Bytes read past the last answer (none, as requests are not pipelined).
    rx: BytesMut,
    tx: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Option<Self> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        tcp.set_nodelay(true).ok()?;
        Some(Self {
            tcp,
            rx: BytesMut::with_capacity(4096),
            tx: Vec::with_capacity(2048),
        })
    }

    /// Sends one request and reads its answer's head and body.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        host: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Option<Head> {
        self.tx.clear();
        write!(self.tx, "{method} {path} HTTP/1.1\r\nhost: {host}\r\n").ok()?;
        if !body.is_empty() || method == "PUT" {
            write!(self.tx, "content-length: {}\r\n", body.len()).ok()?;
        }
        if let Some(a) = auth {
            write!(self.tx, "authorization: {a}\r\n").ok()?;
        }
        self.tx.extend_from_slice(b"\r\n");
        // One write, so a request leaves in one segment when it fits.
        self.tx.extend_from_slice(body);
        self.tcp.write_all(&self.tx).await.ok()?;
        let head = loop {
            if let Some(parsed) = parse_head(&self.rx)? {
                break parsed;
            }
            if self.rx.len() > MAX_HEAD || self.tcp.read_buf(&mut self.rx).await.ok()? == 0 {
                return None;
            }
        };
        let end = head.len + head.body;
        while self.rx.len() < end {
            self.rx.reserve(end - self.rx.len());
            if self.tcp.read_buf(&mut self.rx).await.ok()? == 0 {
                return None;
            }
        }
        self.rx.advance(end);
        Some(head)
    }
}

/// What an answer's head says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head itself.
    len: usize,
    status: u16,
    /// Bytes of the body (`Content-Length`).
    body: usize,
    /// The connection may carry another request.
    keep: bool,
    /// `x-map-version`: the newest partition map a node on the way held.
    map_version: Option<u64>,
}

/// An answer's head, once all of it is in `buf`. `None` for an answer this client does not
/// read (no `Content-Length`, a chunked body, a malformed head).
fn parse_head(buf: &[u8]) -> Option<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Some(None),
    };
    let status = resp.code?;
    let mut length = None;
    let mut keep = resp.version == Some(1);
    let mut map_version = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = std::str::from_utf8(h.value).ok()?;
            keep = !v.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case(MAP_VERSION_HEADER) {
            map_version = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
    }
    Some(Some(Head {
        len: head,
        status,
        body: length?,
        keep,
        map_version,
    }))
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
mod tests {
    use super::*;

    #[test]
    fn answer_heads_are_read_only_with_a_length() {
        let ok = b"HTTP/1.1 201 Created\r\ncontent-length: 13\r\nx-map-version: 7\r\n\r\n{\"version\":3}";
        let head = Head {
            len: ok.len() - 13,
            status: 201,
            body: 13,
            keep: true,
            map_version: Some(7),
        };
        assert_eq!(parse_head(ok), Some(Some(head)));
        // Not all of the head yet.
        assert_eq!(parse_head(&ok[..20]), Some(None));
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
        let closing = Head {
            len: close.len(),
            status: 503,
            body: 0,
            keep: false,
            map_version: None,
        };
        assert_eq!(parse_head(close), Some(Some(closing)));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked), None);
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parse_head(no_length), None);
        assert_eq!(parse_head(b"garbage\r\n\r\n"), None);
    }

    /// Against the null store (warp on hyper): requests on kept-alive
    /// connections, answered directly; a node that is gone gives no answer.
    #[tokio::test]
    async fn requests_go_to_the_primary_on_kept_alive_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(crate::bench::echo::serve(listener, 7));
        let client = KvClient::builder(&[addr.to_string()])
            .retry_policy(crate::client::kv::RetryPolicy::none())
            .build()
            .expect("client");
        client.map().await.expect("map");
        let pool = Pool::default();
        let mut direct = Direct::new(&client, pool.clone()).expect("plain client");
        for i in 0..5 {
            let key = format!("key-{i}");
            assert_eq!(direct.send("PUT", &key, &[b'v'; 1024]).await, Some(200));
            assert_eq!(direct.send("GET", &key, &[]).await, Some(200));
        }
        // One connection carried all of it.
        assert_eq!(
            pool.idle
                .lock()
                .expect("pool")
                .get(&addr.to_string())
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(direct.write("k", Bytes::from_static(b"v")).await, Ok(()));
        assert_eq!(direct.read("k").await, Ok(true));
        assert_eq!(pool.handed(), 0);

        server.abort();
        let _ = server.await;
        pool.idle.lock().expect("pool").clear();
        assert_eq!(direct.send("PUT", "key-0", b"v").await, None);
        // The operation goes to the library (whose pooled connection may still reach the
        // server's connection task), and is counted.
        let _ = direct.write("key-0", Bytes::from_static(b"v")).await;
        assert_eq!(pool.handed(), 1);
    }

    /// An answer naming a newer map (the old primary forwarded the request) makes the
    /// client fetch it, so the next requests go to the new primary directly.
    #[tokio::test]
    async fn an_answer_naming_a_newer_map_fetches_it() {
        use std::sync::atomic::AtomicU64;
        use warp::Filter;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicU64::new(1));
        let version = served.clone();
        let map = warp::path!("v1" / "map").map(move || {
            let mut m = crate::bench::echo::echo_map(addr);
            m.version = version.load(Ordering::Relaxed);
            warp::reply::json(&m)
        });
        let moved = served.clone();
        let put = warp::path!("v1" / "kv" / String)
            .and(warp::put())
            .and(warp::body::bytes())
            .map(move |_: String, _: Bytes| {
                moved.store(2, Ordering::Relaxed);
                warp::reply::with_header(warp::reply(), MAP_VERSION_HEADER, "2")
            });
        let server = tokio::spawn(warp::serve(map.or(put)).incoming(listener).run());
        let client = KvClient::new(&[addr.to_string()]).expect("client");
        assert_eq!(client.map().await.expect("map").version, 1);
        let mut direct = Direct::new(&client, Pool::default()).expect("plain client");
        assert_eq!(direct.send("PUT", "k", b"v").await, Some(200));
        assert_eq!(client.cached_map().map(|m| m.version), Some(2));
        server.abort();
    }

    #[test]
    fn a_tls_client_gets_no_direct_connections() {
        let tls = KvClient::new(&["https://127.0.0.1:1"]).expect("client");
        assert!(Direct::new(&tls, Pool::default()).is_none());
        let plain = KvClient::new(&["127.0.0.1:1"]).expect("client");
        assert!(Direct::new(&plain, Pool::default()).is_some());
    }
}
