//! Client of other nodes' peer ports for replication frames.
//!
//! Appends travel in batches per destination node ([`PeerClient::append`]): every
//! partition's replication task to that node queues its append, and one task per node takes
//! whatever is queued as one batch whenever fewer than [`BATCH_WINDOW`] batches are in flight,
//! and writes it as one frame on the node pair's append stream ([`super::stream`]: one
//! long-lived connection, the peer token checked once when it opens). Under load the appends
//! of many partitions share a frame and the member's group commit; at low load an append
//! leaves at once, alone. A destination that does not know streams (an older node) gets one
//! `POST /peer/v1/appends` per batch instead. A partition keeps up to
//! [`super::session::APPENDS_IN_FLIGHT`] appends in flight per member; they may reach it in
//! different batches, and the member takes them in log order. Probes and snapshot chunks are
//! requests on keep-alive connections.

use super::frame::{AppendBatch, BatchReply, Reply};
use super::stream::{STATUS_OK, STATUS_TOO_LARGE, STREAM_PATH, STREAM_PROTOCOL, StreamConn};
use crate::map::PartitionId;
use crate::storage::codec::CodecError;
use crate::tls::ClientTls;
use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Batched append requests in flight per destination node.
pub const BATCH_WINDOW: usize = 4;
/// A batch takes no more appends once its frames reach this many bytes (the size of one
/// append at the most), nor more than [`BATCH_MAX_ITEMS`] appends.
const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
const BATCH_MAX_ITEMS: usize = 1024;
/// A destination's batching task ends after this long without an append (its node may be
/// gone for good, e.g. a pod that came back under another address).
const BATCH_IDLE: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a batching task reaches its destination node.
enum Route {
    /// Over an append stream (opened when the first batch needs it, again after it ended).
    Stream(Option<StreamConn>),
    /// One `POST /peer/v1/appends` per batch: the destination does not know streams.
    Requests,
}

/// Why a stream was not opened.
enum OpenError {
    /// The destination does not know streams (a node of an older version).
    Unsupported,
    Failed(PeerError),
}

/// Why a replication call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("building the peer HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("loading the TLS settings of the peer client")]
    Tls(#[source] crate::tls::TlsError),
    #[error("sending {kind} to {addr}")]
    Send {
        addr: String,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{addr} answered {status} to {kind}")]
    Status {
        addr: String,
        kind: &'static str,
        status: u16,
    },
    #[error("decoding the answer to {kind} from {addr}")]
    Decode {
        addr: String,
        kind: &'static str,
        #[source]
        source: CodecError,
    },
    #[error("creating the peer client's stream gauge")]
    Metric(#[source] prometheus::Error),
    #[error("sending a batch of appends to {addr}: {reason}")]
    Batch { addr: String, reason: String },
}

/// An append waiting for its batch.
struct Queued {
    partition: PartitionId,
    frame: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, PeerError>>,
}

/// The batching task of each destination address, by address.
#[derive(Default)]
struct Batchers {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
}

/// Sends replication frames to other nodes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// HTTP/1.1 only and without a total timeout: opens append streams (an upgrade).
    streams: reqwest::Client,
    token: String,
    /// How long a request, or a batch on a stream, may wait for its answer.
    timeout: Duration,
    /// Counts the append streams open to other nodes.
    open_streams: IntGauge,
    /// `https` when the store's peer ports serve TLS.
    scheme: &'static str,
    batchers: Arc<Batchers>,
}

/// Header marking replication requests (and their protocol version).
pub const PEER_PROTOCOL_HEADER: &str = "x-shardedstore-protocol";

impl PeerClient {
    /// A plain-HTTP peer client.
    pub fn new(token: String, timeout: Duration) -> Result<Self, PeerError> {
        Self::with_tls(token, timeout, &ClientTls::default(), false, None)
    }

    /// A peer client speaking HTTPS (when `https`) and trusting what `tls` says; connections
    /// leave from `local` (the node's `--host`) when given.
    pub fn with_tls(
        token: String,
        timeout: Duration,
        tls: &ClientTls,
        https: bool,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, PeerError> {
        let http = crate::tls::http_client_builder(tls)
            .map_err(PeerError::Tls)?
            .local_address(local)
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(PeerError::Build)?;
        let streams = crate::tls::http_client_builder(tls)
            .map_err(PeerError::Tls)?
            .local_address(local)
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(0)
            .tcp_nodelay(true)
            .build()
            .map_err(PeerError::Build)?;
        Ok(Self {
            http,
            streams,
            token,
            timeout,
            open_streams: IntGauge::new("append_streams", "open append streams")
                .map_err(PeerError::Metric)?,
            scheme: crate::tls::scheme(https),
            batchers: Arc::default(),
        })
    }

    /// Counts the append streams this client opens in `gauge` (it counts in a gauge of its
    /// own otherwise).
    pub fn counting_streams_in(mut self, gauge: IntGauge) -> Self {
        self.open_streams = gauge;
        self
    }

    /// Queues one encoded [`super::frame::Append`] of `partition` for the node at `addr` now,
    /// to go in a batch with the other appends queued for that node, and returns the future
    /// of the member's reply. Appends queued for a node leave in queue order.
    pub fn append(
        &self,
        addr: &str,
        partition: PartitionId,
        frame: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, PeerError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        self.queue(
            addr,
            Queued {
                partition,
                frame,
                reply,
            },
        );
        let addr = addr.to_owned();
        async move {
            answer.await.unwrap_or_else(|_| {
                Err(PeerError::Batch {
                    addr,
                    reason: "the batching task ended".into(),
                })
            })
        }
    }

    /// Queues `item` for `addr`'s batching task, starting the task when there is none.
    fn queue(&self, addr: &str, item: Queued) {
        // Sent under the lock: a task that ends when idle removes itself under it too, after
        // checking that nothing is queued, so nothing is queued to a task that has ended.
        let mut queues = self
            .batchers
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let item = match queues.get(addr) {
            Some(tx) => match tx.send(item) {
                Ok(()) => return,
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        queues.insert(addr.to_owned(), tx);
        tokio::spawn(self.clone().run_batches(addr.to_owned(), rx));
    }

    /// The batching task of one destination: takes the first queued append, waits for a free
    /// slot in the window (appends queued meanwhile join the batch), sends the batch.
    async fn run_batches(self, addr: String, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let window = Arc::new(Semaphore::new(BATCH_WINDOW));
        // Set when the destination does not know batches (a node of an older version during
        // a rolling upgrade): its appends then go one per request.
        let single = Arc::new(AtomicBool::new(false));
        let mut route = Route::Stream(None);
        loop {
            let first = match tokio::time::timeout(BATCH_IDLE, rx.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_) => {
                    let mut queues = self
                        .batchers
                        .queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    match rx.try_recv() {
                        Ok(item) => item,
                        Err(_) => {
                            queues.remove(&addr);
                            return;
                        }
                    }
                }
            };
            let Ok(slot) = window.clone().acquire_owned().await else {
                return;
            };
            let mut bytes = first.frame.len();
            let mut batch = vec![first];
            while bytes < BATCH_MAX_BYTES && batch.len() < BATCH_MAX_ITEMS {
                match rx.try_recv() {
                    Ok(item) => {
                        bytes += item.frame.len();
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            let (batch, slot) = match &mut route {
                Route::Stream(conn) => match self.stream_batch(&addr, conn, batch, slot).await {
                    None => continue,
                    Some(unsent) => {
                        tracing::info!(
                            to = addr,
                            "peer does not take append streams: sending batches as requests"
                        );
                        route = Route::Requests;
                        unsent
                    }
                },
                Route::Requests => (batch, slot),
            };
            let client = self.clone();
            let addr = addr.clone();
            let single = single.clone();
            tokio::spawn(async move {
                client.send_batch(&addr, batch, &single).await;
                drop(slot);
            });
        }
    }

    /// Sends `batch` on the stream to `addr` (opening one when there is none or it ended)
    /// and has a task hand out the replies and then free `slot`. Gives both back when the
    /// destination does not know streams.
    async fn stream_batch(
        &self,
        addr: &str,
        conn: &mut Option<StreamConn>,
        batch: Vec<Queued>,
        slot: OwnedSemaphorePermit,
    ) -> Option<(Vec<Queued>, OwnedSemaphorePermit)> {
        if conn.as_ref().is_none_or(StreamConn::is_ended) {
            *conn = None;
            match self.open_stream(addr).await {
                Ok(c) => *conn = Some(c),
                Err(OpenError::Unsupported) => return Some((batch, slot)),
                Err(OpenError::Failed(e)) => {
                    fail(addr, batch, &e);
                    return None;
                }
            }
        }
        let stream = conn.as_mut()?;
        let body = AppendBatch::encode(batch.iter().map(|q| (q.partition, q.frame.as_slice())));
        let sent = match tokio::time::timeout(self.timeout, stream.send(&body)).await {
            Ok(Ok(rx)) => rx,
            Ok(Err(e)) => {
                *conn = None;
                fail(addr, batch, &stream_error(addr, e.to_string()));
                return None;
            }
            Err(_) => {
                *conn = None;
                fail(
                    addr,
                    batch,
                    &stream_error(addr, "sending a batch timed out".into()),
                );
                return None;
            }
        };
        let ender = stream.ender();
        let (client, addr) = (self.clone(), addr.to_owned());
        tokio::spawn(async move {
            match tokio::time::timeout(client.timeout, sent).await {
                Ok(Ok(reply)) if reply.status == STATUS_OK => {
                    let outcome = decode_batch_reply(&addr, &reply.body, batch.len());
                    hand_out(&addr, batch, outcome);
                }
                Ok(Ok(reply)) if reply.status == STATUS_TOO_LARGE => {
                    client.send_each(&addr, batch).await;
                }
                Ok(Ok(reply)) => {
                    let e = PeerError::Status {
                        addr: addr.clone(),
                        kind: "append batch",
                        status: reply.status,
                    };
                    fail(&addr, batch, &e);
                }
                Ok(Err(_)) => fail(
                    &addr,
                    batch,
                    &stream_error(&addr, "the stream ended".into()),
                ),
                Err(_) => {
                    // The member may be gone without a word: no later reply can be trusted
                    // to come either, so the stream ends and the next batch opens a new one.
                    ender.cancel();
                    let reason = format!("no answer within {:?}", client.timeout);
                    fail(&addr, batch, &stream_error(&addr, reason));
                }
            }
            drop(slot);
        });
        None
    }

    /// Opens an append stream to `addr`: an HTTP/1.1 upgrade carrying the peer token.
    async fn open_stream(&self, addr: &str) -> Result<StreamConn, OpenError> {
        let kind = "append stream";
        let url = format!("{}://{addr}{STREAM_PATH}", self.scheme);
        let request = self
            .streams
            .get(url)
            .bearer_auth(&self.token)
            .header(PEER_PROTOCOL_HEADER, "1")
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, STREAM_PROTOCOL)
            .send();
        let failed = |reason: String| {
            OpenError::Failed(PeerError::Batch {
                addr: addr.to_owned(),
                reason,
            })
        };
        let resp = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(OpenError::Failed(PeerError::Send {
                    addr: addr.to_owned(),
                    kind,
                    source,
                }));
            }
            Err(_) => return Err(failed("opening an append stream timed out".into())),
        };
        match resp.status().as_u16() {
            101 => {}
            404 | 405 => return Err(OpenError::Unsupported),
            status => {
                return Err(OpenError::Failed(PeerError::Status {
                    addr: addr.to_owned(),
                    kind,
                    status,
                }));
            }
        }
        match tokio::time::timeout(self.timeout, resp.upgrade()).await {
            Ok(Ok(io)) => Ok(StreamConn::new(io, self.open_streams.clone())),
            Ok(Err(source)) => Err(OpenError::Failed(PeerError::Send {
                addr: addr.to_owned(),
                kind,
                source,
            })),
            Err(_) => Err(failed("the append stream's upgrade timed out".into())),
        }
    }

    /// Sends `batch` to `addr` and hands every append its outcome.
    async fn send_batch(&self, addr: &str, batch: Vec<Queued>, single: &AtomicBool) {
        if batch.len() == 1 || single.load(Ordering::Relaxed) {
            return self.send_each(addr, batch).await;
        }
        let body = AppendBatch::encode(batch.iter().map(|q| (q.partition, q.frame.as_slice())));
        let outcome = match self
            .post(addr, "/peer/v1/appends", "append batch", body)
            .await
        {
            Ok(bytes) => decode_batch_reply(addr, &bytes, batch.len()),
            Err(PeerError::Status { status, .. }) if status == 404 || status == 413 => {
                // 404: a node that predates batches. 413: the batch is over the member's
                // body limit although each append alone may not be.
                if status == 404 {
                    tracing::info!(
                        to = addr,
                        "peer does not take batched appends: sending them one by one"
                    );
                    single.store(true, Ordering::Relaxed);
                }
                return self.send_each(addr, batch).await;
            }
            Err(e) => Err(e),
        };
        hand_out(addr, batch, outcome);
    }

    /// Sends every append of `batch` in its own request, at once.
    async fn send_each(&self, addr: &str, batch: Vec<Queued>) {
        futures::future::join_all(batch.into_iter().map(|q| async move {
            let r = self
                .call(addr, q.partition, "append", q.frame, Reply::decode)
                .await;
            let _ = q.reply.send(r);
        }))
        .await;
    }

    /// POSTs `body` to `/peer/v1/partitions/{p}/{kind}` and decodes the answer with `decode`.
    pub async fn call<T>(
        &self,
        addr: &str,
        partition: PartitionId,
        kind: &'static str,
        body: Vec<u8>,
        decode: fn(&[u8]) -> Result<T, CodecError>,
    ) -> Result<T, PeerError> {
        let path = format!("/peer/v1/partitions/{partition}/{kind}");
        let bytes = self.post(addr, &path, kind, body).await?;
        decode(&bytes).map_err(|source| PeerError::Decode {
            addr: addr.to_owned(),
            kind,
            source,
        })
    }

    /// POSTs `body` to `path` on `addr`; the answer's body when it is a success.
    async fn post(
        &self,
        addr: &str,
        path: &str,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Result<bytes::Bytes, PeerError> {
        let scheme = self.scheme;
        let url = format!("{scheme}://{addr}{path}");
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(PEER_PROTOCOL_HEADER, "1")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|source| PeerError::Send {
                addr: addr.to_owned(),
                kind,
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(PeerError::Status {
                addr: addr.to_owned(),
                kind,
                status: status.as_u16(),
            });
        }
        resp.bytes().await.map_err(|source| PeerError::Send {
            addr: addr.to_owned(),
            kind,
            source,
        })
    }
}

/// The items of a batch's reply, checked to be one per append sent.
fn decode_batch_reply(
    addr: &str,
    bytes: &[u8],
    sent: usize,
) -> Result<Vec<Result<Reply, u16>>, PeerError> {
    let r = BatchReply::decode(bytes).map_err(|source| PeerError::Decode {
        addr: addr.to_owned(),
        kind: "append batch",
        source,
    })?;
    if r.items.len() != sent {
        return Err(PeerError::Batch {
            addr: addr.to_owned(),
            reason: format!("{} answers to {sent} appends", r.items.len()),
        });
    }
    Ok(r.items)
}

/// Hands every append of `batch` its item of `outcome`, or the batch's failure.
fn hand_out(addr: &str, batch: Vec<Queued>, outcome: Result<Vec<Result<Reply, u16>>, PeerError>) {
    match outcome {
        Ok(items) => {
            for (q, item) in batch.into_iter().zip(items) {
                let _ = q.reply.send(item.map_err(|status| PeerError::Status {
                    addr: addr.to_owned(),
                    kind: "append",
                    status,
                }));
            }
        }
        Err(e) => fail(addr, batch, &e),
    }
}

/// Fails every append of `batch` with `e`.
fn fail(addr: &str, batch: Vec<Queued>, e: &PeerError) {
    let reason = e.to_string();
    for q in batch {
        let _ = q.reply.send(Err(PeerError::Batch {
            addr: addr.to_owned(),
            reason: reason.clone(),
        }));
    }
}

fn stream_error(addr: &str, reason: String) -> PeerError {
    PeerError::Batch {
        addr: addr.to_owned(),
        reason: format!("append stream: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_api::LogPosition;
    use crate::replication::frame::{Append, Status};
    use std::sync::atomic::AtomicUsize;
    use warp::Filter;

    /// A peer port that counts requests: batches are answered 404 when `batches` is off (a
    /// node older than batches), as the node does otherwise; single appends get `Ok`. It
    /// answers no append until the returned gate has permits.
    async fn peer(
        batches: bool,
    ) -> (
        String,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let (batched, single) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (b, s) = (batched.clone(), single.clone());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let opened = warp::any()
            .and_then(move || {
                let g = g.clone();
                async move {
                    drop(g.acquire().await);
                    Ok::<(), warp::Rejection>(())
                }
            })
            .untuple_one();
        let reply = |a: &Append| Reply {
            status: Status::Ok,
            epoch: a.epoch,
            last: LogPosition {
                last_epoch: a.epoch,
                last_seq: a.prev.last_seq + a.entries.len() as u64,
            },
        };
        let filter = warp::post()
            .and(opened)
            .and(warp::path::full())
            .and(warp::body::bytes())
            .map(move |path: warp::path::FullPath, body: bytes::Bytes| {
                let answer = |status: u16, body: Vec<u8>| {
                    let mut r = http::Response::new(body);
                    *r.status_mut() = http::StatusCode::from_u16(status)
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    r
                };
                if path.as_str() == "/peer/v1/appends" {
                    b.fetch_add(1, Ordering::SeqCst);
                    if !batches {
                        return answer(404, Vec::new());
                    }
                    let Ok(batch) = AppendBatch::decode(&body) else {
                        return answer(400, Vec::new());
                    };
                    let items = batch
                        .items
                        .iter()
                        .map(|(_, f)| Append::decode(f).map(|a| reply(&a)).map_err(|_| 400))
                        .collect();
                    return answer(200, BatchReply { items }.encode());
                }
                s.fetch_add(1, Ordering::SeqCst);
                match Append::decode(&body) {
                    Ok(a) => answer(200, reply(&a).encode()),
                    Err(_) => answer(400, Vec::new()),
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        tokio::spawn(warp::serve(filter).incoming(listener).run());
        (addr, batched, single, gate)
    }

    fn frame(partition: u64, entries: u64) -> Vec<u8> {
        use crate::storage::codec::{LogEntry, Op};
        Append {
            epoch: 1,
            leader: "n".into(),
            truncate_to: None,
            prev: LogPosition {
                last_epoch: 1,
                last_seq: partition * 100,
            },
            commit_seq: 0,
            in_flight: 1,
            entries: (1..=entries)
                .map(|i| {
                    Arc::new(LogEntry {
                        epoch: 1,
                        seq: partition * 100 + i,
                        op: Op::Delete { key: vec![1] },
                    })
                })
                .collect(),
            session: 1,
        }
        .encode()
    }

    /// Appends of many partitions at once: every one gets its own reply (by its position in
    /// the batch), and against a node without batches they all still arrive, one by one.
    async fn many_appends(batches: bool) -> (usize, usize) {
        let (addr, batched, single, gate) = peer(batches).await;
        let client =
            PeerClient::new("t".into(), Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        // All 64 are queued (`append` queues when called) while the peer answers nothing, so
        // at most the window's first batches leave before the rest are queued: otherwise the
        // batching task could take each append as soon as it is queued, one per batch, when
        // this thread is descheduled between them.
        let frames: Vec<(u64, Vec<u8>)> = (0..64u64).map(|p| (p, frame(p, p % 3))).collect();
        let calls: Vec<_> = frames
            .into_iter()
            .map(|(p, f)| {
                let reply = client.append(&addr, p as u32, f);
                async move { (p, reply.await.map(|r| r.last.last_seq)) }
            })
            .collect();
        gate.add_permits(1 << 20);
        for (p, r) in futures::future::join_all(calls).await {
            assert_eq!(r.ok(), Some(p * 100 + p % 3), "partition {p}");
        }
        (
            batched.load(Ordering::SeqCst),
            single.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_of_many_partitions_share_requests_and_each_gets_its_reply() {
        let (batched, single) = many_appends(true).await;
        // 64 appends queued at once: at most the window's first requests leave alone.
        assert!(batched >= 1, "no batch sent");
        assert!(
            batched + single < 64,
            "{batched} batches and {single} single appends"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_batches_gets_every_append_one_by_one() {
        let (batched, single) = many_appends(false).await;
        // Tried until the first 404 comes back (the requests already in flight get one too).
        assert!((1..=BATCH_WINDOW).contains(&batched), "{batched} batches");
        assert_eq!(single, 64);
    }
}
